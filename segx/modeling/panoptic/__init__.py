"""The panoptic family (UPSNet, and VPSNet next): UPSNet's semantic head (registered in detectron2's
``SEM_SEG_HEADS_REGISTRY``), the parameter-free panoptic head, its training targets and losses, the selection of
the instances that enter it at inference, and the merge into detectron2's ``panoptic_seg``.

Follows UPSNet (Xiong et al., CVPR 2019; uber-research/UPSNet). Conventions:

* Semantic logits have the stuff channels first, then one channel per thing class: ``[S + K, H, W]``.
* Semantic labels are detectron2's "separated" labels (``register_coco_panoptic_separated``): 0 = any thing,
  ``1..S`` = stuff, ``ignore`` (255) = unlabelled. Stuff label ``l`` is semantic channel ``l - 1``.
* Panoptic logits are ``[S + N (+ 1), H, W]``: stuff, one channel per instance, and the optional unknown
  channel last.
* Boxes are ``x0, y0, x1, y1`` in pixels of the map they are used on; pixel (row i, col j) is inside when
  ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1`` (the rule of ``segx.layers.assemble_masks``).
"""
from segx.modeling.panoptic.losses import cross_entropy_with_ignore, semantic_roi_loss, upsnet_panoptic_loss
from segx.modeling.panoptic.merge import mask_removal_keep, merge_panoptic_logits
from segx.modeling.panoptic.panoptic_head import boxes_to_pixel_masks, paste_mask_logits, upsnet_panoptic_logits
from segx.modeling.panoptic.selection import select_panoptic_instances
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
    "boxes_to_pixel_masks",
    "paste_mask_logits",
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
]
