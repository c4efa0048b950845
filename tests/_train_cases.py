"""The architectures' small configs for the device tests: ``tests/test_cuda_training.py`` (on a GPU) and
``tests/test_device_placement.py`` (on a fake second device, CPU only) train each of them through its own data
and mapper. Each case is a key of ``conftest.TINY``, an optional config file of the same architecture, and
overrides."""
import torch

from detectron2.structures import Instances

from conftest import tiny_cfg
from test_yolact import PLUS as YOLACT_PLUS  # YOLACT++ parts on the tiny model (DCN, 3 scales per level, re-scoring)

TRIPLETS = "configs/CenterNetTriplets/centernet_triplets_hg_small_shapes.yaml"
HOURGLASS_REGRESSION = "configs/Hourglass/hg2_regression_figures.yaml"
# the figures data has 16 landmarks (the tiny model's 4 suit the hand-made inputs of tests/test_hourglass.py)
FIGURES = {"MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS": 16}
# inference: let a random model's detections through, so postprocessing runs on boxes
OPEN = {
    "yolact": {"MODEL.YOLACT.SCORE_THRESH_TEST": 0.0},
    "retinaface": {"MODEL.RETINAFACE.SCORE_THRESH_TEST": 0.0},
    "upsnet": {"MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST": 0.0, "MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0},
}

# name -> (conftest.TINY key, config file or None, overrides)
TRAIN_CASES = {
    "yolact": ("yolact", None, OPEN["yolact"]),
    "yolact_plus": ("yolact", None, dict(YOLACT_PLUS, **OPEN["yolact"])),
    "cornernet": ("cornernet", None, {}),
    "centernet_triplets": ("cornernet", TRIPLETS, {}),
    "centernet": ("centernet", None, {}),
    "hourglass": ("hourglass", None, FIGURES),
    "hourglass_regression": ("hourglass", HOURGLASS_REGRESSION, FIGURES),
    "retinaface": ("retinaface", None, OPEN["retinaface"]),
    "upsnet": ("upsnet", None, OPEN["upsnet"]),
    "vpsnet": ("vpsnet", None, dict(OPEN["upsnet"], **{"MODEL.VPSNET.TRAIN_STAGE": "video"})),  # pairs + track loss
    "densepose": ("densepose", None, {"MODEL.ROI_HEADS.SCORE_THRESH_TEST": 0.0}),
}


def train_case_cfg(name, output_dir=None, **overrides):
    """The config of ``TRAIN_CASES[name]`` with ``overrides``; it trains on its validation set (``DATASETS.TEST``,
    100 images: quick to write on a fresh machine; the mapper is the training one all the same)."""
    arch, config, case = TRAIN_CASES[name]
    cfg = tiny_cfg(arch, config=config, output_dir=output_dir, **dict(case, **overrides))
    cfg.DATASETS.TRAIN = tuple(cfg.DATASETS.TEST)
    return cfg


def output_tensors(x):
    """Every tensor in a model output (dicts, lists, tuples, ``Instances``, ``Boxes``-like ``.tensor``)."""
    if isinstance(x, torch.Tensor):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from output_tensors(v)
    elif isinstance(x, (list, tuple)):
        for v in x:
            yield from output_tensors(v)
    elif isinstance(x, Instances):
        for v in x.get_fields().values():
            yield from output_tensors(v)
    elif isinstance(getattr(x, "tensor", None), torch.Tensor):
        yield x.tensor
