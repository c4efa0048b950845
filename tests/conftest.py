"""Shared fixtures. Tests run on the CPU; CUDA tests skip without a GPU."""
import os
import random

import numpy as np
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
def _seeded():
    """Every test starts from the same random state (torch, numpy: detectron2's augmentations and segx's mappers
    draw from numpy's global generator; Python's random), whatever ran before it."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    yield


# The one table of tiny CPU models for the tests: architecture -> (config file, overrides). Each shrinks the
# architecture's CPU config to a model that builds and runs a step in seconds.
TINY = {
    "mask_rcnn": ("configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml", {
        "SOLVER.IMS_PER_BATCH": 4, "SOLVER.WARMUP_ITERS": 5}),
    "yolact": ("configs/YOLACT/yolact_R_18_FPN_scratch.yaml", {
        "MODEL.TV_RESNET.WIDTH": 8, "MODEL.YOLACT.FPN.OUT_CHANNELS": 32, "MODEL.YOLACT.PROTO_CHANNELS": 32,
        "MODEL.YOLACT.HEAD_CHANNELS": 32, "MODEL.YOLACT.NUM_PROTOTYPES": 8}),
    "yolact_edge": ("configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml", {
        "MODEL.TV_RESNET.WIDTH": 8, "MODEL.YOLACT.FPN.OUT_CHANNELS": 32, "MODEL.YOLACT.PROTO_CHANNELS": 32,
        "MODEL.YOLACT.HEAD_CHANNELS": 32, "MODEL.YOLACT.NUM_PROTOTYPES": 8, "MODEL.WEIGHTS": "",
        "MODEL.YOLACT_EDGE.FLOW.REDUCE_CHANNELS": [16], "MODEL.YOLACT_EDGE.FLOW.ENCODE_CHANNELS": 8,
        "SOLVER.IMS_PER_BATCH": 4}),
    "cornernet": ("configs/CornerNet/cornernet_hg_small_shapes.yaml", {
        "MODEL.HOURGLASS_NET.STEM_CHANNELS": 8, "MODEL.HOURGLASS_NET.DIMS": [16, 16, 24],
        "MODEL.HOURGLASS_NET.MODULES": [1, 1, 1], "MODEL.HOURGLASS_NET.NUM_STACKS": 2,
        "MODEL.HOURGLASS_NET.OUT_CHANNELS": 16, "MODEL.CORNERNET.POOL_CHANNELS": 8,
        "MODEL.CORNERNET.HEAD_CHANNELS": 16, "MODEL.CORNERNET.TOPK_TEST": 20, "MODEL.CORNERNET.NUM_CANDIDATES_TEST": 40,
        "MODEL.CORNERNET.DETECTIONS_PER_IMAGE": 20}),
    "centernet": ("configs/CenterNet/centernet_R_18_shapes.yaml", {
        "MODEL.TV_RESNET.WIDTH": 8, "MODEL.RESNET_DECONV.DECONV_CHANNELS": [16, 16, 16],
        "MODEL.CENTERNET.HEAD_CHANNELS": 16}),
    "hourglass": ("configs/Hourglass/hg2_gaussian_figures.yaml", {
        "MODEL.STACKED_HOURGLASS_NET.NUM_FEATURES": 16, "MODEL.STACKED_HOURGLASS_NET.DEPTH": 3,
        "MODEL.STACKED_HOURGLASS.INPUT_SIZE": 32, "MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS": 4}),
    "retinaface": ("configs/RetinaFace/retinaface_mnet025_synthetic.yaml", {}),
    "upsnet": ("configs/UPSNet/upsnet_R_18_FPN_scratch.yaml", {
        "SOLVER.IMS_PER_BATCH": 4, "SOLVER.WARMUP_ITERS": 5, "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 64, "MODEL.ROI_MASK_HEAD.CONV_DIM": 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32, "INPUT.MIN_SIZE_TRAIN": (96,), "INPUT.MIN_SIZE_TEST": 96,
        "INPUT.RANDOM_FLIP": "none", "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "MODEL.UPSNET.PANOPTIC_TOPK_TEST": 10,
        "TEST.DETECTIONS_PER_IMAGE": 10}),
    "densepose": ("configs/DensePose/densepose_rcnn_R_18_FPN_synthetic.yaml", {
        "SOLVER.IMS_PER_BATCH": 4, "SOLVER.WARMUP_ITERS": 5, "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 64, "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32,
        "MODEL.ROI_DENSEPOSE_HEAD.NUM_CONVS": 2, "MODEL.ROI_DENSEPOSE_HEAD.HEAD_CHANNELS": 32,
        "MODEL.ROI_DENSEPOSE_HEAD.POOLER_RESOLUTION": 7, "MODEL.ROI_DENSEPOSE_HEAD.OUTPUT_SIZE": 28,
        "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "TEST.DETECTIONS_PER_IMAGE": 10}),
    "vpsnet": ("configs/VPSNet/vpsnet_R_18_FPN_shapes.yaml", {
        "SOLVER.IMS_PER_BATCH": 2, "SOLVER.WARMUP_ITERS": 5, "MODEL.FPN.OUT_CHANNELS": 32,
        "MODEL.ROI_BOX_HEAD.FC_DIM": 64, "MODEL.ROI_MASK_HEAD.CONV_DIM": 32, "MODEL.SEM_SEG_HEAD.CONVS_DIM": 32,
        "MODEL.ROI_HEADS.BATCH_SIZE_PER_IMAGE": 32, "INPUT.MIN_SIZE_TRAIN": (96,), "INPUT.MIN_SIZE_TEST": 96,
        "INPUT.RANDOM_FLIP": "none", "MODEL.RPN.POST_NMS_TOPK_TEST": 50, "MODEL.UPSNET.PANOPTIC_TOPK_TEST": 10,
        "TEST.DETECTIONS_PER_IMAGE": 10, "MODEL.VPSNET.FLOW.ENCODE_CHANNELS": [8, 8, 16, 16, 16],
        "MODEL.VPSNET.FUSE.SEARCH_RANGE": 2, "MODEL.VPSNET.TRACK.FC_DIM": 32}),
}


def load_cfg(config, output_dir=None, **overrides):
    """``config`` (a path relative to the repository) with segx's keys, on the CPU, loader in the main process,
    and ``overrides`` ("A.B.C": value, values set as given)."""
    from detectron2.config import get_cfg

    from segx.config import add_segx_config

    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(os.path.join(REPO_ROOT, config))
    cfg.MODEL.DEVICE = "cpu"
    cfg.DATALOADER.NUM_WORKERS = 0
    if output_dir is not None:
        cfg.OUTPUT_DIR = str(output_dir)
    for k, v in overrides.items():
        node = cfg
        *parents, leaf = k.split(".")
        for p in parents:
            node = getattr(node, p)
        if leaf not in node:
            raise KeyError(f"load_cfg: {k} is not a config key")
        setattr(node, leaf, v)
    return cfg


def tiny_cfg(arch, config=None, output_dir=None, **overrides):
    """The tiny CPU model of ``arch`` (a key of ``TINY``): its config (or ``config``, e.g. a paper config of the
    same architecture) with the table's overrides, then ``overrides``."""
    default_config, tiny = TINY[arch]
    return load_cfg(config or default_config, output_dir=output_dir, **dict(tiny, **overrides))


@pytest.fixture
def make_tiny_cfg():
    """The ``tiny_cfg`` function, for tests that prefer a fixture."""
    return tiny_cfg


def small_rcnn_cfg(config="configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml", output_dir=None, **overrides):
    """A config for fast CPU tests: the R-18 baseline with a short schedule (``TINY["mask_rcnn"]``)."""
    return tiny_cfg("mask_rcnn", config=config, output_dir=output_dir, **overrides)


_dataset_counter = [0]


def unique_dataset_name(prefix):
    """A dataset name no other test uses: ``_test_<prefix>_<n>`` (register it, append it to ``cleanup``)."""
    _dataset_counter[0] += 1
    return f"_test_{prefix}_{_dataset_counter[0]}"


@pytest.fixture
def cleanup():
    """A list the test appends the dataset names it registers to; they leave both catalogs afterwards."""
    names = []
    yield names
    from detectron2.data import DatasetCatalog, MetadataCatalog

    for n in names:
        if n in DatasetCatalog.list():
            DatasetCatalog.remove(n)
        MetadataCatalog.remove(n)
