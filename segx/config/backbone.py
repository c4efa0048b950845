"""Config keys of the backbones that belong to no single architecture (``segx/modeling/backbone/``).

Each backbone reads only its own node: ``MODEL.TV_RESNET`` (torchvision-layout ResNet of YOLACT and CenterNet),
``MODEL.RESNET_DECONV`` (its deconvolution up-path, CenterNet), ``MODEL.DLA`` (DLA-34 + up-path, CenterNet),
``MODEL.MOBILENET`` (MobileNet-V1 ×0.25, RetinaFace), ``MODEL.HOURGLASS_NET`` (Hourglass-104 and smaller,
CornerNet / CenterNet).
"""
from detectron2.config import CfgNode as CN

__all__ = ["add_backbone_config", "RENAMED_KEYS"]

_RESNET_KEYS = ("DEPTH", "WIDTH", "NORM", "DCN_LAYERS", "DCN_INTERVAL")
RENAMED_KEYS = {
    "MODEL.YOLACT.RESNET": "MODEL.TV_RESNET",
    **{f"MODEL.YOLACT.RESNET.{k}": f"MODEL.TV_RESNET.{k}" for k in _RESNET_KEYS},
    "MODEL.CENTERNET.RESNET_DECONV": "MODEL.TV_RESNET (WIDTH, NORM) and MODEL.RESNET_DECONV (DECONV_CHANNELS, "
                                     "DECONV_KERNELS)",
    "MODEL.CENTERNET.RESNET_DECONV.WIDTH": "MODEL.TV_RESNET.WIDTH",
    "MODEL.CENTERNET.RESNET_DECONV.NORM": "MODEL.TV_RESNET.NORM",
    "MODEL.CENTERNET.RESNET_DECONV.DECONV_CHANNELS": "MODEL.RESNET_DECONV.DECONV_CHANNELS",
    "MODEL.CENTERNET.RESNET_DECONV.DECONV_KERNELS": "MODEL.RESNET_DECONV.DECONV_KERNELS",
    "MODEL.CENTERNET.DLA": "MODEL.DLA",
    **{f"MODEL.CENTERNET.DLA.{k}": f"MODEL.DLA.{k}" for k in ("NORM", "UP_CONV", "WIDTH_DIV")},
    "MODEL.RETINAFACE.BACKBONE_NORM": "MODEL.MOBILENET.NORM",
    "MODEL.RETINAFACE.MOBILENET_WIDTH": "MODEL.MOBILENET.WIDTH",
}


def add_backbone_config(cfg):
    """Adds the backbone nodes to ``cfg`` in place."""
    # ResNet in torchvision's layout (build_tv_resnet_backbone; the ResNet of build_resnet_deconv_backbone and of
    # YOLACT's FPN). Not detectron2's ResNet, which reads MODEL.RESNETS.
    cfg.MODEL.TV_RESNET = CN()
    cfg.MODEL.TV_RESNET.DEPTH = 50  # 18, 34 (basic blocks), 50, 101, 152 (bottlenecks)
    # Stem width (64 = the standard nets); stage s has WIDTH·2^s planes. Smaller values slim every stage.
    cfg.MODEL.TV_RESNET.WIDTH = 64
    # "BN" (trainable, as YOLACT's and CenterNet's official training), "GN", "FrozenBN", "SyncBN".
    cfg.MODEL.TV_RESNET.NORM = "BN"
    cfg.MODEL.TV_RESNET.OUT_FEATURES = ["res3", "res4", "res5"]
    # Modulated deformable 3×3 convs (YOLACT++): per stage, how many trailing blocks may be deformable
    # ([0, 4, 23, 3] for R-101), and the interval between them (3).
    cfg.MODEL.TV_RESNET.DCN_LAYERS = [0, 0, 0, 0]
    cfg.MODEL.TV_RESNET.DCN_INTERVAL = 1

    # The up-sampling ConvTranspose layers after TV_RESNET (build_resnet_deconv_backbone): output channels and
    # kernel sizes (2, 3 or 4), stride 2 each.
    cfg.MODEL.RESNET_DECONV = CN()
    cfg.MODEL.RESNET_DECONV.DECONV_CHANNELS = [256, 256, 256]
    cfg.MODEL.RESNET_DECONV.DECONV_KERNELS = [4, 4, 4]
    # The conv before each deconv: "none" = msra_resnet (CenterNet res_18 / res_101: deconv → norm → ReLU);
    # "dcn" = resnet_dcn (resdcn_18 / resdcn_101, the released ResNet COCO models: modulated deformable 3×3 conv
    # with DCNv2's sigmoid mask → norm → ReLU → deconv → norm → ReLU, deconvs initialised as resnet_dcn; use
    # DECONV_CHANNELS [256, 128, 64]); "conv" = the same with a plain 3×3 conv (exports to ONNX).
    cfg.MODEL.RESNET_DECONV.UP_CONV = "none"

    # DLA-34 + deformable up-path (build_dla34_dcn_backbone).
    cfg.MODEL.DLA = CN()
    cfg.MODEL.DLA.NORM = "BN"  # as the official model
    # Convs of the up-path (IDA/DLA-up): "dcn" = modulated deformable 3×3 (official, DCNv2), "conv" = plain 3×3
    # (exports to ONNX; torchvision's deform_conv2d has no ONNX symbolic).
    cfg.MODEL.DLA.UP_CONV = "dcn"
    # Divides every DLA channel count (1 = DLA-34; 2 or 4 for small CPU models).
    cfg.MODEL.DLA.WIDTH_DIV = 1

    # Hourglass backbone of CornerNet / CenterNet (``build_hourglass_net_backbone``), stride 4, one feature per stack.
    cfg.MODEL.HOURGLASS_NET = CN()
    # Channels of the stem: 7x7/2 conv-norm-ReLU to STEM_CHANNELS, then a stride-2 residual to DIMS[0].
    cfg.MODEL.HOURGLASS_NET.STEM_CHANNELS = 128
    # Channels of each hourglass level, outermost first; len(DIMS) - 1 down-samplings (Hourglass-104: 5).
    cfg.MODEL.HOURGLASS_NET.DIMS = [256, 256, 384, 384, 384, 512]
    # Residual blocks per level (same length as DIMS); the last entry is the innermost (bottleneck) level.
    cfg.MODEL.HOURGLASS_NET.MODULES = [2, 2, 2, 2, 2, 4]
    # Number of stacked hourglasses; every stack's output is a feature ("hg0", "hg1", ...) for
    # intermediate supervision.
    cfg.MODEL.HOURGLASS_NET.NUM_STACKS = 2
    # Channels of each stack's output feature (the 3x3 conv-norm-ReLU after each hourglass).
    cfg.MODEL.HOURGLASS_NET.OUT_CHANNELS = 256
    # Norm of every conv: "BN" (official), "GN", "SyncBN".
    cfg.MODEL.HOURGLASS_NET.NORM = "BN"

    # MobileNet-V1 ×0.25 (build_mobilenet_v1_backbone).
    cfg.MODEL.MOBILENET = CN()
    cfg.MODEL.MOBILENET.NORM = "BN"  # as the official RetinaFace code
    # Channel multiplier on top of MobileNet-0.25 (1.0 = the official "mobilenet0.25").
    cfg.MODEL.MOBILENET.WIDTH = 1.0
    # Stages returned (stage1..3: 64/128/256 channels at strides 8/16/32).
    cfg.MODEL.MOBILENET.OUT_FEATURES = ["stage1", "stage2", "stage3"]
    return cfg
