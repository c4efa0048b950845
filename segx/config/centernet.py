"""Config keys of CenterNet (objects as points) (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN


def add_centernet_config(cfg):
    """Adds the CenterNet (objects as points) keys to ``cfg`` in place."""
    _C = cfg
    _C.MODEL.CENTERNET = CN()
    # Number of object classes (channels of the centre heatmap).
    _C.MODEL.CENTERNET.NUM_CLASSES = 80
    # Backbone outputs the heads read (one stride-4 map; several = one set of heads per map, e.g. hourglass
    # stacks, with intermediate supervision: losses averaged over them, inference on the last).
    _C.MODEL.CENTERNET.IN_FEATURES = ["deconv"]
    # Channels of the 3×3 conv of each head (official: 64 for ResNets, 256 for DLA-34 and the hourglass).
    _C.MODEL.CENTERNET.HEAD_CONV = 64
    # Initial bias of the heatmap head's last conv: sigmoid(-2.19) ≈ 0.1 (the official value).
    _C.MODEL.CENTERNET.HM_BIAS = -2.19
    # Gaussian target radius: "original" (CornerNet's first formula, used by xingyizhou/CenterNet, whose
    # numbers depend on it) or "corrected" (princeton-vl/CornerNet's later fix).
    _C.MODEL.CENTERNET.GAUSSIAN_RADIUS = "original"
    # Minimum IoU that a box placed anywhere inside the radius keeps with the ground truth.
    _C.MODEL.CENTERNET.MIN_OVERLAP = 0.7
    # Loss weights: focal heatmap loss, L1 size loss (w, h in output pixels), L1 sub-pixel offset loss.
    _C.MODEL.CENTERNET.HM_WEIGHT = 1.0
    _C.MODEL.CENTERNET.WH_WEIGHT = 0.1
    _C.MODEL.CENTERNET.OFF_WEIGHT = 1.0
    # Focal loss exponents (α on the prediction, β on the 1−target penalty reduction).
    _C.MODEL.CENTERNET.FOCAL_ALPHA = 2.0
    _C.MODEL.CENTERNET.FOCAL_BETA = 4.0
    # Inference: peaks kept by a NMS_KERNEL×NMS_KERNEL max-pool, top-K per class then overall, and the
    # score below which detections are dropped (official: keep all K = 100).
    _C.MODEL.CENTERNET.NMS_KERNEL = 3
    _C.MODEL.CENTERNET.TOPK = 100
    _C.MODEL.CENTERNET.SCORE_THRESH_TEST = 0.0

    # ResNet + deconv backbone (build_resnet_deconv_backbone); depth is MODEL.RESNETS.DEPTH.
    _C.MODEL.CENTERNET.RESNET_DECONV = CN()
    # Channels of conv1 / layer1 (64 = standard ResNet; smaller values slim all stages for CPU training).
    _C.MODEL.CENTERNET.RESNET_DECONV.WIDTH = 64
    # The up-sampling ConvTranspose layers (stride 2 each): output channels and kernel sizes (2, 3 or 4).
    _C.MODEL.CENTERNET.RESNET_DECONV.DECONV_CHANNELS = [256, 256, 256]
    _C.MODEL.CENTERNET.RESNET_DECONV.DECONV_KERNELS = [4, 4, 4]
    # Norm of every layer ("BN" as the official model; "GN" for small batches).
    _C.MODEL.CENTERNET.RESNET_DECONV.NORM = "BN"

    # DLA-34 + deformable up-path backbone (build_dla34_dcn_backbone).
    _C.MODEL.CENTERNET.DLA = CN()
    # Norm of every layer ("BN" as the official model).
    _C.MODEL.CENTERNET.DLA.NORM = "BN"
    # Convs of the up-path (IDA/DLA-up): "dcn" = modulated deformable 3×3 (official, DCNv2), "conv" = plain 3×3
    # (exports to ONNX; torchvision's deform_conv2d has no ONNX symbolic).
    _C.MODEL.CENTERNET.DLA.UP_CONV = "dcn"
    # Divides every DLA channel count (1 = DLA-34; 2 or 4 for small CPU models).
    _C.MODEL.CENTERNET.DLA.WIDTH_DIV = 1
    return cfg
