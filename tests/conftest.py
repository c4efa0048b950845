"""Shared fixtures. Tests run on the CPU; CUDA tests skip without a GPU."""
import os

import pytest
import torch

import segx  # noqa: F401  (bridges + registries before any detectron2 use)

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def real_data_dir():
    """../shared/data/real beside the checkout (or $SEGX_REAL_DATA); None when absent."""
    path = os.environ.get("SEGX_REAL_DATA") or os.path.join(REPO_ROOT, "..", "shared", "data", "real")
    return os.path.abspath(path) if os.path.isdir(path) else None


@pytest.fixture
def real_data():
    path = real_data_dir()
    if path is None:
        pytest.skip("real annotated samples not found: set SEGX_REAL_DATA or place shared/data/real beside the checkout")
    return path


@pytest.fixture(autouse=True)
def _cpu_threads():
    torch.manual_seed(0)
    yield


def small_rcnn_cfg(config="configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml", output_dir=None, **overrides):
    """A config for fast CPU tests: the R-18 baseline with a short schedule."""
    from detectron2.config import get_cfg

    from segx.config import add_segx_config

    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATALOADER.NUM_WORKERS = 0
    cfg.SOLVER.IMS_PER_BATCH = 4
    cfg.SOLVER.WARMUP_ITERS = 5
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    for k, v in overrides.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = getattr(node, p)
        setattr(node, leaf, v)
    return cfg
