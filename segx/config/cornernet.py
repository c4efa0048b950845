"""Config keys of CornerNet and CenterNet (keypoint triplets) (``cfg.MODEL.*``). Their hourglass backbone's
keys (``cfg.MODEL.HOURGLASS_NET``) are in ``segx/config/backbone.py``.

Defaults are the papers' settings (princeton-vl/CornerNet ``config/CornerNet.json`` and Duankaiwen/CenterNet
``config/CenterNet-104.json``); the small CPU configs override the sizes.
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_cornernet_config", "RENAMED_KEYS"]

# Keys renamed by the config-vocabulary alignment (issue 12): old full key -> new full key. ``add_segx_config``
# registers them, so a YAML (or command-line override) with an old key fails with an error naming the new one.
RENAMED_KEYS = {
    "MODEL.CORNERNET.PULL_WEIGHT": "MODEL.CORNERNET.PULL_LOSS_WEIGHT",
    "MODEL.CORNERNET.PUSH_WEIGHT": "MODEL.CORNERNET.PUSH_LOSS_WEIGHT",
    "MODEL.CORNERNET.OFFSET_WEIGHT": "MODEL.CORNERNET.OFFSET_LOSS_WEIGHT",
    "MODEL.CORNERNET.TOPK": "MODEL.CORNERNET.TOPK_TEST",
    "MODEL.CORNERNET.EMBEDDING_THRESHOLD": "MODEL.CORNERNET.EMBEDDING_THRESH_TEST",
    "MODEL.CORNERNET.NUM_CANDIDATES": "MODEL.CORNERNET.NUM_CANDIDATES_TEST",
    "MODEL.CORNERNET.SOFT_NMS_SIGMA": "MODEL.CORNERNET.SOFT_NMS_SIGMA_TEST",
    "MODEL.CORNERNET.SOFT_NMS_SCORE_THRESH": "MODEL.CORNERNET.SCORE_THRESH_TEST",
    "MODEL.CENTERNET_TRIPLETS.CENTER_TOPK": "MODEL.CENTERNET_TRIPLETS.CENTER_TOPK_TEST",
    "MODEL.CENTERNET_TRIPLETS.REGION_AREA_THRESHOLD": "MODEL.CENTERNET_TRIPLETS.REGION_AREA_THRESH_TEST",
}


def add_cornernet_config(cfg):
    """Adds the CornerNet and CenterNet (keypoint triplets) keys to ``cfg`` in place."""
    # ---- CornerNet (Law & Deng, ECCV 2018).
    cfg.MODEL.CORNERNET = CN()
    cfg.MODEL.CORNERNET.NUM_CLASSES = 80
    # Norm of the convs in the corner / center pooling modules: "BN" (official), "GN", "SyncBN". Set it equal to
    # the backbone's norm as the official model does.
    cfg.MODEL.CORNERNET.NORM = "BN"
    # Channels of the two 3x3 branches inside each corner-pooling module (official: 128).
    cfg.MODEL.CORNERNET.POOL_CHANNELS = 128
    # Hidden channels of the heatmap / embedding / offset heads (official: the hourglass's DIMS[0], 256).
    cfg.MODEL.CORNERNET.HEAD_CHANNELS = 256
    # Initial bias of the heatmap logits: -2.19 = logit(0.1).
    cfg.MODEL.CORNERNET.HEATMAP_BIAS_INIT = -2.19
    # Targets: gaussian_radius(ceil(h), ceil(w), GAUSSIAN_MIN_OVERLAP, GAUSSIAN_RADIUS_VARIANT) on the output map;
    # CornerNet's config/CornerNet.json uses gaussian_iou 0.3 and its repo's "corrected" formula.
    cfg.MODEL.CORNERNET.GAUSSIAN_MIN_OVERLAP = 0.3
    cfg.MODEL.CORNERNET.GAUSSIAN_RADIUS_VARIANT = "corrected"
    # Focal loss exponents (positive alpha, negative beta).
    cfg.MODEL.CORNERNET.FOCAL_ALPHA = 2.0
    cfg.MODEL.CORNERNET.FOCAL_BETA = 4.0
    # Loss weights of loss_<kind>_heatmap (focal), loss_pull / loss_push (associative embedding, summed over the
    # images of a batch as the official _ae_loss does; push margin PUSH_MARGIN) and loss_offset (smooth-L1 divided
    # by the number of objects).
    cfg.MODEL.CORNERNET.HEATMAP_LOSS_WEIGHT = 1.0
    cfg.MODEL.CORNERNET.PULL_LOSS_WEIGHT = 0.1
    cfg.MODEL.CORNERNET.PUSH_LOSS_WEIGHT = 0.1
    cfg.MODEL.CORNERNET.PUSH_MARGIN = 1.0
    cfg.MODEL.CORNERNET.OFFSET_LOSS_WEIGHT = 1.0
    # Decoding: top-K per corner heatmap (after NMS_KERNEL x NMS_KERNEL peak NMS), corner pairs farther apart than
    # EMBEDDING_THRESH_TEST in embedding are rejected, the NUM_CANDIDATES_TEST best pairs go to soft-NMS.
    cfg.MODEL.CORNERNET.TOPK_TEST = 100
    cfg.MODEL.CORNERNET.NMS_KERNEL = 3
    cfg.MODEL.CORNERNET.EMBEDDING_THRESH_TEST = 0.5
    cfg.MODEL.CORNERNET.NUM_CANDIDATES_TEST = 1000
    # Gaussian soft-NMS per class (weight exp(-IoU^2 / SOFT_NMS_SIGMA_TEST)); boxes whose (decayed) score is below
    # SCORE_THRESH_TEST are dropped; DETECTIONS_PER_IMAGE are kept.
    cfg.MODEL.CORNERNET.SOFT_NMS_SIGMA_TEST = 0.5
    cfg.MODEL.CORNERNET.SCORE_THRESH_TEST = 0.001
    cfg.MODEL.CORNERNET.DETECTIONS_PER_IMAGE = 100

    # ---- CenterNet: keypoint triplets (Duan et al., ICCV 2019): CornerNet keys above plus these.
    cfg.MODEL.CENTERNET_TRIPLETS = CN()
    # Duankaiwen/CenterNet draws corners and centres with the original gaussian_radius at gaussian_iou 0.7
    # (db/detection.py defaults); its centre Gaussian is wider: sigma = diameter / 5 (not / 6).
    cfg.MODEL.CENTERNET_TRIPLETS.GAUSSIAN_MIN_OVERLAP = 0.7
    cfg.MODEL.CENTERNET_TRIPLETS.GAUSSIAN_RADIUS_VARIANT = "original"
    cfg.MODEL.CENTERNET_TRIPLETS.CENTER_SIGMA_DIVISOR = 5.0
    # Cascade corner pooling (True, the paper's) or CornerNet's plain corner pooling for the corner branches.
    cfg.MODEL.CENTERNET_TRIPLETS.CASCADE_CORNER_POOL = True
    # Top-K centre keypoints used by the central-region check (config/CenterNet-104.json top_k: 70, the
    # same K as the corners).
    cfg.MODEL.CENTERNET_TRIPLETS.CENTER_TOPK_TEST = 70
    # Central region: the middle 1/n of the box, n = REGION_N_SMALL for boxes of area <= REGION_AREA_THRESH_TEST
    # (input pixels), else REGION_N_LARGE.
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_AREA_THRESH_TEST = 22500.0
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_N_SMALL = 3
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_N_LARGE = 5
