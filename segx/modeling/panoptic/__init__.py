"""The panoptic family (UPSNet, VPSNet): UPSNet's semantic head (registered in detectron2's
``SEM_SEG_HEADS_REGISTRY``), the parameter-free panoptic head, its training targets and losses, the selection of
the instances that enter it at inference, and the merge into detectron2's ``panoptic_seg``; VPSNet's feature fusion
(``fusion.py``) and track head (``track_head.py``).

Follows UPSNet (Xiong et al., CVPR 2019; uber-research/UPSNet). Conventions:

* Semantic logits have the stuff channels first, then one channel per thing class: ``[S + K, H, W]``.
* Semantic labels are detectron2's "separated" labels (``register_coco_panoptic_separated``): 0 = any thing,
  ``1..S`` = stuff, ``ignore`` (255) = unlabelled. Stuff label ``l`` is semantic channel ``l - 1``.
* Panoptic logits are ``[S + N (+ 1), H, W]``: stuff, one channel per instance, and the optional unknown
  channel last.
* Boxes are ``x0, y0, x1, y1`` in pixels of the map they are used on. Where the panoptic head places them depends on
  its mode (``MODEL.UPSNET.PANOPTIC_HEAD_MODE``, ``panoptic_head.py``): the official code's integer spans of
  inclusive-convention boxes (default), or segx's pixel-centre rule ``x0 <= j + 0.5 < x1``, ``y0 <= i + 0.5 < y1``.
"""
from segx.modeling.panoptic.losses import cross_entropy_with_ignore, semantic_roi_loss, upsnet_panoptic_loss
from segx.modeling.panoptic.merge import mask_removal_keep, merge_panoptic_logits
from segx.modeling.panoptic.panoptic_head import (
    PANOPTIC_HEAD_MODES,
    boxes_to_pixel_masks,
    official_box_spans,
    panoptic_frame_boxes,
    paste_mask_logits,
    paste_mask_logits_official,
    upsnet_panoptic_logits,
)
from segx.modeling.panoptic.selection import select_panoptic_instances
from segx.modeling.panoptic.fusion import FeatureFusion  # VPSNet
from segx.modeling.panoptic.track_head import TrackHead, TrackMatcher  # VPSNet
from segx.modeling.panoptic.semantic_head import UPSNetSemanticHead
from segx.modeling.panoptic.targets import (
    gt_bitmasks,
    sample_kept_instances,
    sample_labels_in_boxes,
    thing_semantic_targets,
    upsnet_panoptic_targets,
)

__all__ = [
    "UPSNetSemanticHead",
    "PANOPTIC_HEAD_MODES",
    "boxes_to_pixel_masks",
    "official_box_spans",
    "panoptic_frame_boxes",
    "paste_mask_logits",
    "paste_mask_logits_official",
    "upsnet_panoptic_logits",
    "gt_bitmasks",
    "thing_semantic_targets",
    "upsnet_panoptic_targets",
    "sample_labels_in_boxes",
    "sample_kept_instances",
    "cross_entropy_with_ignore",
    "semantic_roi_loss",
    "upsnet_panoptic_loss",
    "select_panoptic_instances",
    "mask_removal_keep",
    "merge_panoptic_logits",
    "FeatureFusion",
    "TrackHead",
    "TrackMatcher",
]
