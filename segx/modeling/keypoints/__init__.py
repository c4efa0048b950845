"""The keypoint (heatmap) detectors' family: CornerNet, CenterNet (keypoint triplets) and CenterNet (objects as
points), and the heatmap mechanics they share with the landmark models (``segx.modeling.landmarks``).

* ``heatmaps``: Gaussian radius and drawing, the penalty-reduced focal loss, peak NMS, top-K, gathering, arg-max;
* ``corner_pooling``: corner, cascade corner and center pooling modules;
* ``heads``: the per-stack corner branches and CenterNet's hm / wh / reg heads;
* ``targets``: per-image target builders (run by ``segx.data.mappers`` in the loader workers) and their batch
  collation;
* ``losses``: pull / push, the corner detectors' and CenterNet's loss totals;
* ``decoding``: corner pairing, the central-region check, Gaussian soft-NMS, centre + size boxes.
"""
from .corner_pooling import CORNER_DIRECTIONS, CascadeCornerPoolModule, CenterPoolModule, CornerPoolModule
from .decoding import (
    center_region_check,
    centernet_decode,
    clip_boxes,
    decode_center_keypoints,
    decode_corner_pairs,
    finite_clamp,
    soft_nms_gaussian,
)
from .heads import KeypointHead, build_centernet_heads, build_corner_branches, centernet_head
from .heatmaps import (
    GAUSSIAN_RADIUS_VARIANTS,
    argmax_decode,
    draw_gaussian,
    gather_at,
    gaussian_kernel,
    gaussian_radius,
    heatmap_focal_loss,
    heatmap_peak_nms,
    landmark_heatmaps,
    topk_peaks,
)
from .losses import associative_embedding_loss, centernet_losses, corner_losses, l1_at_centers
from .targets import CenterTargets, CornerTargets, HeatmapTargets, padded_map_size

__all__ = [
    "CORNER_DIRECTIONS", "CornerPoolModule", "CascadeCornerPoolModule", "CenterPoolModule",
    "decode_corner_pairs", "decode_center_keypoints", "center_region_check", "soft_nms_gaussian", "centernet_decode",
    "clip_boxes", "finite_clamp", "KeypointHead", "build_corner_branches", "centernet_head", "build_centernet_heads",
    "GAUSSIAN_RADIUS_VARIANTS", "gaussian_radius", "gaussian_kernel", "draw_gaussian", "landmark_heatmaps",
    "heatmap_focal_loss", "heatmap_peak_nms", "topk_peaks", "gather_at", "argmax_decode",
    "associative_embedding_loss", "corner_losses", "l1_at_centers", "centernet_losses",
    "HeatmapTargets", "CornerTargets", "CenterTargets", "padded_map_size",
]
