"""Config keys of Stacked Hourglass landmarks (``cfg.MODEL.STACKED_HOURGLASS``)."""
from detectron2.config import CfgNode as CN


def add_hourglass_config(cfg):
    """Adds the Stacked Hourglass landmarks keys to ``cfg`` in place."""
    _C = cfg.MODEL.STACKED_HOURGLASS = CN()
    # Number of hourglasses in sequence, each supervised (the paper's 2- and 8-stack models).
    _C.NUM_STACKS = 2
    # Width of the hourglasses and of the stem's output (256 in the paper).
    _C.NUM_FEATURES = 256
    # Recursion depth of each hourglass (4: 64x64 heatmaps pooled down to 4x4).
    _C.DEPTH = 4
    # Residual modules per hourglass level and after each hourglass (1 in the paper).
    _C.NUM_MODULES = 1
    # Number of landmarks K (16 for MPII and the synthetic figures, 17 for COCO).
    _C.NUM_KEYPOINTS = 16
    # Side of the square person crop fed to the network, in pixels; heatmaps are INPUT_SIZE / 4.
    _C.INPUT_SIZE = 256
    # "heatmap": per-landmark heatmaps decoded by arg-max; "regression": the seed's baseline, (x, y) regressed
    # from each stack's features by a small conv + fc head on the same backbone.
    _C.HEAD = "heatmap"
    # Heatmap encoding of the targets: "gaussian" exp(-d²/2σ²) or "cauchy" σ/(d²+σ²)^1.5, both on a
    # (6σ+1)² window around the rounded landmark (segx.modeling.heatmaps.landmark_heatmaps).
    _C.HEATMAP_KIND = "gaussian"
    # σ in heatmap pixels (1 at 64x64 in the paper).
    _C.SIGMA = 1.0
    # Multiplier on the per-stack MSE (the paper's mean over all heatmap pixels). The mean of mostly-zero
    # maps is tiny, which RMSprop (the paper's optimiser) does not mind but detectron2's SGD does: CPU
    # configs raise this instead of the learning rate.
    _C.LOSS_WEIGHT = 1.0
    # Regression loss on normalised crop coordinates: "l1" or "l2".
    _C.REGRESSION_LOSS = "l1"
    # Landmarks with visibility 0 (not annotated) get weight 0 in the loss (mmpose's target weights) when
    # True; False supervises them as all-zero heatmaps, as pose-hg-train does.
    _C.USE_TARGET_WEIGHT = True
    # Add the 1x1-mapped heatmap predictions into the next stack's input (the paper's merge); the mapped
    # features are always added.
    _C.MERGE_PREDICTIONS = True
    # The crop is the person box's longer side times this, centred on the box (1.25: pose-hg-train's
    # margin around MPII's centre/scale boxes).
    _C.BOX_PADDING = 1.25
    # Training augmentation applied to the crop: scale factor drawn from [1-s, 1+s]; rotation in degrees
    # drawn from [-r, r] with probability ROTATION_PROB (pose-hg-train: 0.25, 30°, 0.4).
    _C.AUG_SCALE = 0.25
    _C.AUG_ROTATION = 30.0
    _C.AUG_ROTATION_PROB = 0.4
