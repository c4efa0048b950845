"""Config keys of CornerNet and CenterNet (keypoint triplets) (``cfg.MODEL.*``), and of the hourglass
backbone they share (``cfg.MODEL.HOURGLASS_NET``, also usable by other heads, e.g. CenterNet objects-as-points).

Defaults are the papers' settings (princeton-vl/CornerNet ``config/CornerNet.json`` and Duankaiwen/CenterNet
``config/CenterNet-104.json``); the small CPU configs override the sizes.
"""
from detectron2.config import CfgNode as CN


def add_cornernet_config(cfg):
    """Adds the hourglass-backbone, CornerNet and CenterNet (keypoint triplets) keys to ``cfg`` in place."""
    # ---- Hourglass backbone (``build_hourglass_net_backbone``), stride 4, one feature per stack.
    cfg.MODEL.HOURGLASS_NET = CN()
    # Channels of the stem: 7x7/2 conv-norm-ReLU to STEM_CHANNELS, then a stride-2 residual to DIMS[0].
    cfg.MODEL.HOURGLASS_NET.STEM_CHANNELS = 128
    # Channels of each hourglass level, outermost first; len(DIMS) - 1 down-samplings (Hourglass-104: 5).
    cfg.MODEL.HOURGLASS_NET.DIMS = [256, 256, 384, 384, 384, 512]
    # Residual blocks per level (same length as DIMS); the last entry is the innermost (bottleneck) level.
    cfg.MODEL.HOURGLASS_NET.MODULES = [2, 2, 2, 2, 2, 4]
    # Number of stacked hourglasses; every stack's output is a feature ("hg0", "hg1", ...) for
    # intermediate supervision.
    cfg.MODEL.HOURGLASS_NET.NUM_STACKS = 2
    # Channels of each stack's output feature (the 3x3 conv-norm-ReLU after each hourglass).
    cfg.MODEL.HOURGLASS_NET.OUT_CHANNELS = 256
    # Norm of every conv: "BN" (official), "GN", "SyncBN".
    cfg.MODEL.HOURGLASS_NET.NORM = "BN"

    # ---- CornerNet (Law & Deng, ECCV 2018).
    cfg.MODEL.CORNERNET = CN()
    cfg.MODEL.CORNERNET.NUM_CLASSES = 80
    # Channels of the two 3x3 branches inside each corner-pooling module (official: 128).
    cfg.MODEL.CORNERNET.POOL_CHANNELS = 128
    # Hidden channels of the heatmap / embedding / offset heads (official: the hourglass's DIMS[0], 256).
    cfg.MODEL.CORNERNET.HEAD_CHANNELS = 256
    # Initial bias of the heatmap logits: -2.19 = logit(0.1).
    cfg.MODEL.CORNERNET.HEATMAP_BIAS_INIT = -2.19
    # Targets: gaussian_radius(ceil(h), ceil(w), MIN_OVERLAP, variant) on the output map; CornerNet's
    # config/CornerNet.json uses gaussian_iou 0.3 and its repo's corrected formula.
    cfg.MODEL.CORNERNET.GAUSSIAN_MIN_OVERLAP = 0.3
    cfg.MODEL.CORNERNET.GAUSSIAN_RADIUS_VARIANT = "corrected"
    # Focal loss exponents (positive alpha, negative beta).
    cfg.MODEL.CORNERNET.FOCAL_ALPHA = 2.0
    cfg.MODEL.CORNERNET.FOCAL_BETA = 4.0
    # Associative-embedding weights and push margin; pull / push are summed over the images of a batch
    # (as the official _ae_loss does), offsets use smooth-L1 divided by the number of objects.
    cfg.MODEL.CORNERNET.PULL_WEIGHT = 0.1
    cfg.MODEL.CORNERNET.PUSH_WEIGHT = 0.1
    cfg.MODEL.CORNERNET.PUSH_MARGIN = 1.0
    cfg.MODEL.CORNERNET.OFFSET_WEIGHT = 1.0
    # Decoding: top-K per corner heatmap (after 3x3 peak NMS), corner pairs farther apart than
    # EMBEDDING_THRESHOLD in embedding are rejected, NUM_CANDIDATES best pairs go to soft-NMS.
    cfg.MODEL.CORNERNET.TOPK = 100
    cfg.MODEL.CORNERNET.NMS_KERNEL = 3
    cfg.MODEL.CORNERNET.EMBEDDING_THRESHOLD = 0.5
    cfg.MODEL.CORNERNET.NUM_CANDIDATES = 1000
    # Gaussian soft-NMS per class (weight exp(-IoU^2 / sigma)), boxes decayed below SCORE_THRESH dropped.
    cfg.MODEL.CORNERNET.SOFT_NMS_SIGMA = 0.5
    cfg.MODEL.CORNERNET.SOFT_NMS_SCORE_THRESH = 0.001
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
    cfg.MODEL.CENTERNET_TRIPLETS.CENTER_TOPK = 70
    # Central region: the middle 1/n of the box, n = 3 for boxes of area <= AREA_THRESHOLD (input pixels),
    # else 5.
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_AREA_THRESHOLD = 22500.0
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_N_SMALL = 3
    cfg.MODEL.CENTERNET_TRIPLETS.REGION_N_LARGE = 5
