"""Config keys of UPSNet (``cfg.MODEL.UPSNET``) and the keys it renamed."""
from detectron2.config import CfgNode as CN

__all__ = ["add_upsnet_config", "RENAMED_KEYS"]

# Old key → new key (issue 12: detectron2's semantic-head keys where they mean the same; *_TEST for inference).
RENAMED_KEYS = {
    "MODEL.UPSNET.SEM_CONV_DIM": "MODEL.SEM_SEG_HEAD.CONVS_DIM",
    "MODEL.UPSNET.SEM_NORM": "MODEL.SEM_SEG_HEAD.NORM",
    "MODEL.UPSNET.SEM_LOSS_WEIGHT": "MODEL.SEM_SEG_HEAD.LOSS_WEIGHT",
    "MODEL.UPSNET.PANOPTIC_NMS_THRESH": "MODEL.UPSNET.PANOPTIC_NMS_THRESH_TEST",
    "MODEL.UPSNET.PANOPTIC_SCORE_THRESH": "MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST",
    "MODEL.UPSNET.PANOPTIC_TOPK": "MODEL.UPSNET.PANOPTIC_TOPK_TEST",
    "MODEL.UPSNET.MASK_REMOVAL_THRESH": "MODEL.UPSNET.MASK_REMOVAL_THRESH_TEST",
}


def add_upsnet_config(cfg):
    """Adds the UPSNet keys to ``cfg`` in place.

    The backbone, RPN and ROI heads are detectron2's (``cfg.MODEL.BACKBONE/RPN/ROI_*``, ``ROI_HEADS.NAME``
    ``SinglePassROIHeads``). The semantic head (``MODEL.SEM_SEG_HEAD.NAME: UPSNetSemanticHead``) reads detectron2's
    ``MODEL.SEM_SEG_HEAD`` keys IN_FEATURES, NUM_CLASSES (the "things" label 0 of detectron2's separated semantic
    PNGs plus the stuff classes, as for PanopticFPN), IGNORE_VALUE, CONVS_DIM, NORM and LOSS_WEIGHT, at UPSNet's
    values in ``configs/UPSNet/Base-UPSNet.yaml`` (detectron2's own defaults there are PanopticFPN's and stay).
    Defaults follow the official COCO config (uber-research/UPSNet ``upsnet_resnet50_coco_*.yaml``).
    """
    cfg.MODEL.UPSNET = CN()
    # Semantic head: one subnet of SEM_NUM_CONVS 3x3 convs (SEM_SEG_HEAD.CONVS_DIM channels, ReLU) shared over P2-P5.
    cfg.MODEL.UPSNET.SEM_NUM_CONVS = 3  # official COCO: 3 (its default), Cityscapes config: 2
    # Deformable 3x3 convs (offsets from a zero-initialised 3x3 conv) as in the paper; False = plain convs,
    # whose graph exports to ONNX (torchvision's deform_conv2d has no ONNX symbolic).
    cfg.MODEL.UPSNET.SEM_DEFORMABLE = True
    # Loss weights (the semantic pixel loss: SEM_SEG_HEAD.LOSS_WEIGHT). Official COCO: semantic 0.2 (+ RoI semantic
    # loss), panoptic 0.1; Cityscapes: semantic 1.0 (no RoI loss), panoptic 0.5.
    cfg.MODEL.UPSNET.SEM_ROI_LOSS = True  # cross-entropy of the semantic logits inside the GT boxes as well
    cfg.MODEL.UPSNET.SEM_ROI_LOSS_WEIGHT = 0.2  # official: the RoI term is added with the semantic weight
    cfg.MODEL.UPSNET.SEM_ROI_SIZE = 28  # RoIAlign output side of the RoI semantic loss
    cfg.MODEL.UPSNET.PANOPTIC_LOSS_WEIGHT = 0.1
    # Fraction of GT boxes kept for the panoptic head in training; < 1 enables the unknown channel and the
    # pixels of dropped instances are its target.
    cfg.MODEL.UPSNET.BOX_KEEP_FRACTION = 0.7
    # Inference: instances entering the panoptic head (class-agnostic NMS IoU, score threshold, at most TOPK).
    cfg.MODEL.UPSNET.PANOPTIC_NMS_THRESH_TEST = 0.5
    cfg.MODEL.UPSNET.PANOPTIC_SCORE_THRESH_TEST = 0.6
    cfg.MODEL.UPSNET.PANOPTIC_TOPK_TEST = 100
    # Inference: an instance whose binary mask (prob > 0.5) lies more than this fraction on higher-scored kept
    # masks is removed before the panoptic head (official MaskRemoval).
    cfg.MODEL.UPSNET.MASK_REMOVAL_THRESH_TEST = 0.3
    # Inference: stuff segments smaller than this (pixels, at output resolution) become unlabelled (detectron2's
    # name, MODEL.PANOPTIC_FPN.COMBINE.STUFF_AREA_LIMIT). Official: 4096 for COCO at 800 px, 2048 for Cityscapes
    # at 1024 px.
    cfg.MODEL.UPSNET.STUFF_AREA_LIMIT = 4096
    # Panoptic head (training and inference): "official" = uber-research/UPSNet's SegTerm/MaskTerm/MaskRemoval. Boxes
    # in its inclusive convention (detectron2's x1, y1 minus 1 px); the semantic term spans trunc(x0)..round(x1), the
    # mask logits are resized to trunc(x1)-trunc(x0)+1 px and pasted at trunc(x0)..trunc(x1) (rows alike); unknown =
    # max thing semantic logit - max semantic term, -(-10) with no instance. "segx" = segx's earlier head: pixel-centre
    # box test, grid_sample paste over the box, unknown = max thing semantic logit - max (semantic term + mask logits),
    # -0 with no instance.
    cfg.MODEL.UPSNET.PANOPTIC_HEAD_MODE = "official"
    return cfg
