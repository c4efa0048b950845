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
    def same_on_detectron2_keys(ours, theirs, path="cfg"):
        for key, value in theirs.items():
            if isinstance(value, dict):
                same_on_detectron2_keys(ours[key], value, f"{path}.{key}")
            else:
                assert ours[key] == value, f"{path}.{key} changed: {ours[key]!r} != {value!r}"

    same_on_detectron2_keys(cfg, base)
    # segx's own nodes are new keys: one per architecture under MODEL, plus SEGX
    added = sorted(k for k in cfg.MODEL if k not in base.MODEL)
    assert added and all(isinstance(cfg.MODEL[k], type(cfg.MODEL)) for k in added), added
    assert sorted(k for k in cfg if k not in base) == ["SEGX"]
