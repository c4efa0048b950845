#!/usr/bin/env bash
# Installs detectron2 into the Python given as $1 (default: python), in this order:
#   1. keep a detectron2 that already imports (a user's own build, or a previous run of this script);
#   2. the official source from git (needs GitHub; builds detectron2._C);
#   3. the PyPI copy of v0.6's Python sources (pb1-detectron2==0.6), whose C++ part is missing:
#      its detectron2/ package is copied into site-packages and segx/_compat.py bridges the rest.
set -euo pipefail
PY=${1:-python}
D2_GIT=${SEGX_D2_GIT:-git+https://github.com/facebookresearch/detectron2.git}

# Pure-Python dependencies of detectron2 0.6 (its setup.py's install_requires, minus black/caffe2 tools).
D2_DEPS=(Pillow matplotlib "pycocotools>=2.0.2" "termcolor>=1.1" "yacs>=0.1.8" tabulate cloudpickle
         "tqdm>4.29.0" tensorboard "fvcore>=0.1.5,<0.1.6" "iopath>=0.1.7,<0.1.10" "omegaconf>=2.1"
         "hydra-core>=1.1")

if "$PY" -c "import detectron2, sys; sys.exit(0)" 2>/dev/null; then
  echo "[segx setup] detectron2 already importable: $("$PY" -c 'import detectron2, os; print(os.path.dirname(detectron2.__file__))')"
  exit 0
fi

echo "[segx setup] installing detectron2 dependencies"
"$PY" -m pip install -q "${D2_DEPS[@]}"

echo "[segx setup] trying the official detectron2 source: $D2_GIT"
if GIT_TERMINAL_PROMPT=0 timeout 1200 "$PY" -m pip install -q --no-build-isolation "$D2_GIT" 2>/tmp/segx-d2-git.log; then
  echo "[segx setup] installed official detectron2 from git"
  exit 0
fi
echo "[segx setup] official source unavailable ($(grep -m1 -iE 'fatal|could not|error:' /tmp/segx-d2-git.log || tail -n 1 /tmp/segx-d2-git.log)); falling back to PyPI pb1-detectron2==0.6 (v0.6 Python sources)"

# pip 26 refuses this sdist (URL extra in its metadata); its metadata step needs wheel + setuptools<81.
"$PY" -m pip install -q "pip<=25.2" wheel "setuptools<81"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PY" -m pip download -q --no-deps --no-build-isolation -d "$work" pb1-detectron2==0.6
tar -xzf "$work"/pb1-detectron2-0.6.tar.gz -C "$work"
site=$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
rm -rf "$site/detectron2"
cp -r "$work/pb1-detectron2-0.6/detectron2" "$site/detectron2"
# A dist-info so that pip and importlib.metadata know the package (and can uninstall it).
dist="$site/detectron2-0.6.dist-info"
rm -rf "$dist"; mkdir -p "$dist"
printf 'Metadata-Version: 2.1\nName: detectron2\nVersion: 0.6\nSummary: detectron2 v0.6 Python sources from PyPI pb1-detectron2 (no _C extension)\n' > "$dist/METADATA"
echo "segx-install_detectron2.sh" > "$dist/INSTALLER"
(cd "$site" && find detectron2 -type f | sed 's/$/,,/' ; echo "detectron2-0.6.dist-info/METADATA,,"; echo "detectron2-0.6.dist-info/INSTALLER,,"; echo "detectron2-0.6.dist-info/RECORD,,") > "$dist/RECORD"
"$PY" -c "import detectron2; print('[segx setup] detectron2', detectron2.__version__, 'installed from PyPI v0.6 sources (no _C; segx bridges it)')"
