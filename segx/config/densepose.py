"""Config keys of DensePose R-CNN (``cfg.MODEL.ROI_DENSEPOSE_HEAD``)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_densepose_config"]


def add_densepose_config(cfg):
    """Adds the DensePose keys to ``cfg`` in place.

    DensePose R-CNN is detectron2's ``GeneralizedRCNN`` with ``ROI_HEADS.NAME: DensePoseROIHeads`` (which always has
    the DensePose branch; ``StandardROIHeads`` is the same model without it); the training loader needs the DensePose mapper (``SEGX.DATA.MAPPER: DensePose``). Both
    are set by ``configs/DensePose/Base-DensePose-RCNN-FPN.yaml``. Defaults are DensePose R-CNN's R-50-FPN setting
    as detectron2's DensePose project trains it (``densepose_rcnn_R_50_FPN_s1x``: the "V1ConvX" head, 8 convs of
    512 on 28×28 RoIs, 112×112 outputs). The authors' Detectron release (DensePose_ResNet50_FPN_s1x-e2e) used 14×14
    RoIs and 56×56 outputs, with loss weights 2.0 (masks) / 0.3 (parts) / 0.1 (U/V) under Caffe2's normalisation.
    """
    h = cfg.MODEL.ROI_DENSEPOSE_HEAD = CN()
    h.NAME = "DensePoseConvHead"  # in ROI_DENSEPOSE_HEAD_REGISTRY
    # RoI pooling of ROI_HEADS.IN_FEATURES (one FPN level per box, as the mask head).
    h.POOLER_RESOLUTION = 28
    h.POOLER_SAMPLING_RATIO = 2
    h.POOLER_TYPE = "ROIAlignV2"
    # The conv stack: depth, width, kernel, norm ("" as the paper; "GN" to train from scratch).
    h.NUM_CONVS = 8
    h.HEAD_CHANNELS = 512
    h.CONV_KERNEL = 3
    h.NORM = ""
    # One stride-2 deconvolution (kernel DECONV_KERNEL) to 2 × POOLER_RESOLUTION, then bilinear upsampling to
    # OUTPUT_SIZE × OUTPUT_SIZE per RoI (the side of every dense output).
    h.DECONV_KERNEL = 4
    h.OUTPUT_SIZE = 112
    # Fine parts (I = 1..NUM_PARTS, 0 = background): 24 for DensePose-COCO.
    h.NUM_PARTS = 24
    # Coarse segmentation channels: 2 (person / background) or 15 (the 14 coarse parts of dp_masks + background).
    h.COARSE_SEGM_CHANNELS = 2
    # Training RoIs: foreground proposals with at least this IoU to their matched annotated person.
    h.FG_IOU_THRESHOLD = 0.7
    # Loss weights: part cross-entropy (mean over points), U/V smooth-L1 (summed over points), coarse segmentation
    # cross-entropy (mean over RoI cells).
    h.PART_LOSS_WEIGHT = 1.0
    h.UV_LOSS_WEIGHT = 0.01
    h.COARSE_SEGM_LOSS_WEIGHT = 5.0
    # Training with horizontal flips on a dataset without a U/V symmetry map (metadata densepose_uv_flip):
    # "error" stops when the mapper is built, naming the dataset; "drop_uv" flips parts and masks and leaves the U/V
    # of flipped people out of the loss.
    h.FLIP_WITHOUT_UV_SYMMETRY = "error"
    return cfg
