"""The YOLACT family (YOLACT, YOLACT++; YolactEdge next): the parts ``segx.modeling.meta_arch.yolact`` composes.

* ``fpn``: YOLACT's FPN, callable in phases (registers backbone ``build_yolact_fpn_backbone``);
* ``protonet``, ``head``, ``maskiou``: prototype net, the shared prediction head, YOLACT++'s mask re-scoring net;
* ``priors``: anchors; ``crop``: how masks are cropped to boxes;
* ``matching``: training targets; ``losses``: the loss terms;
* ``inference``: the square input resize, decoding (Fast NMS + mask assembly) and output rescaling.
"""
from .crop import CROP_MODES, crop_boxes
from .fpn import YolactFPN, build_yolact_fpn_backbone
from .head import YolactHead
from .inference import (
    BOX_OUTPUT_MODES,
    detect,
    detections_to_instances,
    official_output_boxes,
    rescale_results,
    square_resize,
    upsample_masks,
)
from .losses import (
    DEFAULT_LOSS_WEIGHTS,
    normalized_mask_loss,
    ohem_classification_loss,
    semantic_seg_loss,
    yolact_losses,
)
from .maskiou import MaskIoUNet
from .matching import gt_mask_tensor, match_targets, resize_binary
from .priors import YolactPriors, make_priors, octave_scales
from .protonet import make_protonet

__all__ = [
    "CROP_MODES",
    "crop_boxes",
    "YolactFPN",
    "build_yolact_fpn_backbone",
    "YolactHead",
    "detect",
    "detections_to_instances",
    "rescale_results",
    "square_resize",
    "official_output_boxes",
    "upsample_masks",
    "BOX_OUTPUT_MODES",
    "DEFAULT_LOSS_WEIGHTS",
    "normalized_mask_loss",
    "ohem_classification_loss",
    "semantic_seg_loss",
    "yolact_losses",
    "MaskIoUNet",
    "gt_mask_tensor",
    "match_targets",
    "resize_binary",
    "YolactPriors",
    "make_priors",
    "octave_scales",
    "make_protonet",
]
