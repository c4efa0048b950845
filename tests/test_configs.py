"""Every YAML under configs/ loads (with add_segx_config) and builds its model."""
import glob
import os

import pytest
import torch

from detectron2.config import get_cfg
from detectron2.modeling import build_model

from conftest import REPO_ROOT
from segx.config import add_segx_config

CONFIGS = sorted(
    os.path.relpath(p, REPO_ROOT)
    for p in glob.glob(os.path.join(REPO_ROOT, "configs", "**", "*.yaml"), recursive=True)
    if not os.path.basename(p).startswith("Base-")
)


def test_configs_found():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS)
def test_config_loads_and_builds(path):
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, path))
    cfg.MODEL.DEVICE = "cpu"
    model = build_model(cfg)
    assert sum(p.numel() for p in model.parameters()) > 0
    for ds in cfg.DATASETS.TRAIN + cfg.DATASETS.TEST:
        from detectron2.data import DatasetCatalog

        assert ds in DatasetCatalog.list(), f"{path}: dataset {ds} is not registered"


def test_add_segx_config_is_idempotent_and_leaves_detectron2_defaults():
    base = get_cfg()
    cfg = add_segx_config(add_segx_config(get_cfg()))
    assert cfg.SEGX.ATOMIC_CHECKPOINTS is True
    assert "SEGX" not in get_cfg()
    for key in base:
        assert cfg[key] == base[key]
