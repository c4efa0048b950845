# segx: two commands.  `make demo` (set-up + the main job)  and  `make test` (set-up + the tests).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.14.1 torchvision==0.29.1
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export SEGX_DATA_CACHE ?= $(CURDIR)/.cache/segx
export MAX_JOBS ?= 2

EXT_SOURCES := setup.py $(shell find csrc -name '*.cpp' -o -name '*.cu' -o -name '*.h' -o -name '*.cuh' 2>/dev/null)
DEPS_STAMP := $(VENV)/.segx-deps
EXT_STAMP := $(VENV)/.segx-ext
# Rebuild the extension when its .so is missing, even if the stamp is newer than the sources.
ifeq ($(wildcard segx/_C*.so),)
EXT_FORCE := FORCE
endif

.PHONY: setup demo test bench clean FORCE
setup: $(EXT_STAMP)
	@$(PY) -c "import segx, detectron2, torch; print('[segx setup] ready: segx', segx.__version__, '| detectron2', detectron2.__version__, '| torch', torch.__version__, '| segx._C', segx._ext.HAS_EXTENSION)"

$(PY):
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): requirements.txt scripts/install_detectron2.sh | $(PY)
	@echo "[segx setup] installing Python dependencies into $(VENV)"
	$(PY) -m pip install -q "pip<=25.2" "setuptools<81" wheel
	$(if $(TORCH_SPEC),$(PY) -m pip install -q $(TORCH_SPEC))
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps panopticapi-lite
	bash scripts/install_detectron2.sh $(PY)
	touch $@

$(EXT_STAMP): $(DEPS_STAMP) $(EXT_SOURCES) $(EXT_FORCE)
	@echo "[segx setup] building segx and its C++ extension (segx._C)"
	$(PY) -m pip install -q -e . --no-build-isolation --no-deps
	touch $@

DEMO_CONFIG := configs/MaskRCNN/demo_mask_rcnn_R_18_FPN.yaml
demo: setup
	$(PY) tools/demo.py --config-file $(DEMO_CONFIG) --output output/demo
	@echo "[segx demo] the user path: the trained model on new images (not in its training set)"
	$(PY) tools/predict.py --config-file $(DEMO_CONFIG) --weights output/demo/train/model_final.pth \
		--input output/demo/new_images --output output/demo/predict --json --scale 3 --score-threshold 0.3

test: setup
	$(PY) -m pytest -q tests

bench: setup
	$(PY) benchmarks/kernels.py

clean:
	rm -rf build segx/_C*.so $(EXT_STAMP) output/demo
