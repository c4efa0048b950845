"""Config keys of UPSNet (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN


def add_upsnet_config(cfg):
    """Adds the UPSNet keys to ``cfg`` in place.

    The backbone, RPN and ROI heads are detectron2's (``cfg.MODEL.BACKBONE/RPN/ROI_*``); the semantic head
    reads ``cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES`` / ``NUM_CLASSES`` / ``IGNORE_VALUE`` (``NUM_CLASSES`` counts
    the "things" label 0 of detectron2's separated semantic PNGs plus the stuff classes, as PanopticFPN does).
    Defaults follow the official COCO config (uber-research/UPSNet ``upsnet_resnet50_coco_*.yaml``).
    """
    cfg.MODEL.UPSNET = CN()
    # Semantic head: one subnet of NUM_CONVS 3x3 convs (CONV_DIM channels, ReLU) shared over P2-P5.
    cfg.MODEL.UPSNET.SEM_CONV_DIM = 128
    cfg.MODEL.UPSNET.SEM_NUM_CONVS = 3  # official COCO: 3 (its default), Cityscapes config: 2
    # Deformable 3x3 convs (offsets from a zero-initialised 3x3 conv) as in the paper; False = plain convs,
    # whose graph exports to ONNX (torchvision's deform_conv2d has no ONNX symbolic).
    cfg.MODEL.UPSNET.SEM_DEFORMABLE = True
    cfg.MODEL.UPSNET.SEM_NORM = ""  # "" (official) or "GN"
    # Loss weights. Official COCO: semantic 0.2 (+ RoI semantic loss), panoptic 0.1;
    # Cityscapes: semantic 1.0 (no RoI loss), panoptic 0.5.
    cfg.MODEL.UPSNET.SEM_LOSS_WEIGHT = 0.2
    cfg.MODEL.UPSNET.SEM_ROI_LOSS = True  # cross-entropy of the semantic logits inside the GT boxes as well
    cfg.MODEL.UPSNET.SEM_ROI_LOSS_WEIGHT = 0.2  # official: the RoI term is added with the semantic weight
    cfg.MODEL.UPSNET.SEM_ROI_SIZE = 28  # RoIAlign output side of the RoI semantic loss
    cfg.MODEL.UPSNET.PANOPTIC_LOSS_WEIGHT = 0.1
    # Fraction of GT boxes kept for the panoptic head in training; < 1 enables the unknown channel and the
    # pixels of dropped instances are its target.
    cfg.MODEL.UPSNET.BOX_KEEP_FRACTION = 0.7
    # Inference: instances entering the panoptic head (class-agnostic NMS, score threshold, at most TOPK).
    cfg.MODEL.UPSNET.PANOPTIC_NMS_THRESH = 0.5
    cfg.MODEL.UPSNET.PANOPTIC_SCORE_THRESH = 0.6
    cfg.MODEL.UPSNET.PANOPTIC_TOPK = 100
    # An instance whose binary mask (prob > 0.5) lies more than this fraction on higher-scored kept masks is
    # removed before the panoptic head (official MaskRemoval).
    cfg.MODEL.UPSNET.MASK_REMOVAL_THRESH = 0.3
    # Stuff segments smaller than this (pixels, at output resolution) become unlabelled. Official: 4096 for
    # COCO at 800 px, 2048 for Cityscapes at 1024 px.
    cfg.MODEL.UPSNET.STUFF_AREA_LIMIT = 4096
    return cfg
