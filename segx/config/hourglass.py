"""Config keys of Stacked Hourglass landmarks (``cfg.MODEL.STACKED_HOURGLASS``) and of its network, registered as
a backbone (``cfg.MODEL.STACKED_HOURGLASS_NET``, read by ``build_stacked_hourglass_backbone``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_hourglass_config", "RENAMED_KEYS"]

# Keys renamed by the config-vocabulary alignment (issue 12): old full key -> new full key. ``add_segx_config``
# registers them, so a YAML (or command-line override) with an old key fails with an error naming the new one.
# The network's keys moved to the backbone's own node (no backbone reads an architecture's node).
_NET_KEYS = ("NUM_STACKS", "NUM_FEATURES", "DEPTH", "NUM_MODULES", "NUM_KEYPOINTS", "MERGE_PREDICTIONS")
RENAMED_KEYS = {f"MODEL.STACKED_HOURGLASS.{k}": f"MODEL.STACKED_HOURGLASS_NET.{k}" for k in _NET_KEYS}


def add_hourglass_config(cfg):
    """Adds the Stacked Hourglass landmarks keys to ``cfg`` in place."""
    # ---- The network (build_stacked_hourglass_backbone): stacked hourglasses with a heatmap head per stack.
    cfg.MODEL.STACKED_HOURGLASS_NET = CN()
    # Number of hourglasses in sequence, each supervised (the paper's 2- and 8-stack models).
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_STACKS = 2
    # Width of the hourglasses and of the stem's output (256 in the paper).
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_FEATURES = 256
    # Recursion depth of each hourglass (4: 64x64 heatmaps pooled down to 4x4).
    cfg.MODEL.STACKED_HOURGLASS_NET.DEPTH = 4
    # Residual modules per hourglass level and after each hourglass (1 in the paper).
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_MODULES = 1
    # Number of landmarks K (16 for MPII and the synthetic figures, 17 for COCO): the heatmaps per stack (and
    # the points of the regression head).
    cfg.MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS = 16
    # Build a 1x1 heatmap head per stack ("heatmap{i}" outputs). False for MODEL.STACKED_HOURGLASS.HEAD
    # "regression", whose heads sit on the features ("hg{i}") instead.
    cfg.MODEL.STACKED_HOURGLASS_NET.PREDICT_HEATMAPS = True
    # Add the 1x1-mapped heatmap predictions into the next stack's input (the paper's merge); the mapped
    # features are always added.
    cfg.MODEL.STACKED_HOURGLASS_NET.MERGE_PREDICTIONS = True
    # Widths [C0, C1] of the stem (7x7 conv to C0, residuals C0 -> C1 -> C1 -> NUM_FEATURES). Empty: NUM_FEATURES/4,
    # /2 for widths >= 128 (the official 64, 128 at 256), NUM_FEATURES/2 below. The official pytorch_stacked_hourglass
    # PoseNet uses [64, 128] at every width (configs/Hourglass/hg*_256_official.yaml).
    cfg.MODEL.STACKED_HOURGLASS_NET.STEM_CHANNELS = []
    # Run the network in channels-last memory format (NHWC; the input crops are converted, the outputs keep the
    # format). Same values up to float rounding; on the CPU it is what makes segx as fast as the official
    # pytorch_stacked_hourglass, whose PoseNet permutes NHWC input and so runs channels-last
    # (benchmarks/hourglass.py official). False: contiguous NCHW.
    cfg.MODEL.STACKED_HOURGLASS_NET.CHANNELS_LAST = True

    # ---- The meta-architecture (StackedHourglass): person crops, targets, losses, decoding.
    cfg.MODEL.STACKED_HOURGLASS = CN()
    # Side of the square person crop fed to the network, in pixels; heatmaps are INPUT_SIZE / 4.
    cfg.MODEL.STACKED_HOURGLASS.INPUT_SIZE = 256
    # "heatmap": per-landmark heatmaps decoded by arg-max; "regression": the seed's baseline, (x, y) regressed
    # from each stack's features by a small conv + fc head on the same backbone (needs
    # STACKED_HOURGLASS_NET.PREDICT_HEATMAPS False).
    cfg.MODEL.STACKED_HOURGLASS.HEAD = "heatmap"
    # Heatmap encoding of the targets: "gaussian" exp(-d²/2σ²) or "cauchy" σ/(d²+σ²)^1.5, both on a
    # (6σ+1)² window around the rounded landmark (segx.modeling.heatmaps.landmark_heatmaps).
    cfg.MODEL.STACKED_HOURGLASS.HEATMAP_KIND = "gaussian"
    # σ in heatmap pixels (1 at 64x64 in the paper).
    cfg.MODEL.STACKED_HOURGLASS.SIGMA = 1.0
    # Multiplier on each stack's loss, for both heads (the heatmap head's loss is the paper's MSE, a mean over
    # all heatmap pixels). The mean of mostly-zero maps is tiny, which RMSprop (the paper's optimiser) does not
    # mind but detectron2's SGD does: CPU configs raise this instead of the learning rate.
    cfg.MODEL.STACKED_HOURGLASS.LOSS_WEIGHT = 1.0
    # Regression loss on normalised crop coordinates: "l1" or "l2".
    cfg.MODEL.STACKED_HOURGLASS.REGRESSION_LOSS = "l1"
    # Landmarks with visibility 0 (not annotated) get weight 0 in the loss (mmpose's target weights) when
    # True; False supervises them as all-zero heatmaps, as pose-hg-train does.
    cfg.MODEL.STACKED_HOURGLASS.USE_TARGET_WEIGHT = True
    # The crop is the person box's longer side times this, centred on the box (1.25: pose-hg-train's
    # margin around MPII's centre/scale boxes).
    cfg.MODEL.STACKED_HOURGLASS.BOX_PADDING = 1.25
    # Training jitter of the crop (applied by StackedHourglassMapper in the loader workers, or by the model
    # for inputs without "targets"): scale factor drawn from [1-s, 1+s]; rotation in degrees drawn from
    # [-r, r] with probability AUG_ROTATION_PROB (pose-hg-train: 0.25, 30°, 0.4).
    cfg.MODEL.STACKED_HOURGLASS.AUG_SCALE = 0.25
    cfg.MODEL.STACKED_HOURGLASS.AUG_ROTATION = 30.0
    cfg.MODEL.STACKED_HOURGLASS.AUG_ROTATION_PROB = 0.4
    # Heatmap decoding at test time (segx.modeling.landmarks.decoding):
    # "official": princeton-vl/pytorch_stacked_hourglass's (maps clamped at 1; peak of the 3x3-max-suppressed map,
    #   confidence 0 when it is not positive; then always ±0.25 px toward the larger neighbour, ties -0.25, borders
    #   compared with the peak itself; +0.5 px only for positive peaks);
    # "segx": arg-max of the raw maps, confidence = the raw maximum, 0.25 px toward a strictly larger neighbour,
    #   no shift at ties or borders (pose-hg-train's rule, except its (0, 0) for non-positive maxima). The synthetic
    #   figures configs use it (their model-card table was measured with it).
    cfg.MODEL.STACKED_HOURGLASS.DECODING = "official"
    # Truncate the final landmark coordinates to integer pixels, as the official MPII post-processing does
    # (pose-hg-train's transformPreds: trunc after the 1-based offsets), reported as that pixel's centre
    # trunc(x) + 0.5 in detectron2's continuous coordinates. Applied after rescaling to the input's size; the
    # traced decode (inference(..., do_postprocess=False)) stays continuous. The MPII paper configs set it.
    cfg.MODEL.STACKED_HOURGLASS.TRUNCATE_COORDS_TEST = False
