"""ResNet + three deconvolution layers ("msra" / Simple Baselines style): the ResNet backbone of CenterNet.

Follows Xiao et al., "Simple Baselines for Human Pose Estimation" (2018) as used by xingyizhou/CenterNet:
a torchvision-layout ResNet (conv1/bn1/layer1..4, stride 32) followed by up-sampling stages, giving one stride-4
map. Two official layouts, chosen by ``up_conv``:

* ``"none"`` — ``src/lib/models/networks/msra_resnet.py`` (``res_18``, ``res_101``): per stage a
  ConvTranspose 4×4 stride 2 (no bias) → norm → ReLU, 256 channels each, deconvs initialised N(0, 0.001);
* ``"dcn"`` — ``src/lib/models/networks/resnet_dcn.py`` (``resdcn_18``, ``resdcn_101``, the released ResNet COCO
  models): per stage a modulated deformable 3×3 conv (DCNv2, bias) → norm → ReLU → ConvTranspose 4×4 stride 2
  (no bias) → norm → ReLU, channels 256, 128, 64, each ConvTranspose initialised as that file does (the
  bilinear kernel from every input channel into output channel 0, PyTorch's default init elsewhere);
* ``"conv"`` — as ``"dcn"`` with a plain 3×3 conv (no bias) in place of the deformable one (exports to ONNX).

Module names follow those files (``conv1``, ``bn1``, ``layerN.M.conv1`` …, ``deconv_layers.i``; a deformable
conv's offset/mask branch is ``offset_conv``, the official ``conv_offset_mask``) so the official checkpoints map
onto it by a prefix (``tools/convert_centernet_to_d2.py``).
"""
import math

import torch
from torch import nn

from detectron2.layers import get_norm
from detectron2.modeling import BACKBONE_REGISTRY

from segx.layers.deform_conv import DeformConvWithOffset
from segx.modeling.backbone.resnet import ResNet, check_depth_key

__all__ = ["ResNetDeconv", "build_resnet_deconv_backbone", "UP_CONVS"]

# the conv before each deconv: none (msra_resnet), a modulated deformable 3×3 (resnet_dcn), a plain 3×3
UP_CONVS = ("none", "dcn", "conv")


def _bilinear_channel0_(up):
    """resnet_dcn's init of a ConvTranspose2d (weight ``[in, out, k, k]``): the 2-D bilinear kernel at
    ``weight[:, 0]`` (every input channel into output channel 0); the other output channels keep their init."""
    k = up.weight.shape[-1]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - (torch.arange(k, dtype=torch.float64, device=up.weight.device) / f - c).abs()
    with torch.no_grad():
        up.weight[:, 0] = (r[:, None] * r[None, :]).to(up.weight.dtype)


class ResNetDeconv(ResNet):
    """``forward(x [B,3,H,W])`` → ``{"deconv": [B, deconv_channels[-1], H/4, W/4]}`` (H, W multiples of 32).

    Args:
        depth: 18, 34, 50, 101 or 152.
        width: channels of conv1 / layer1 (64 = the standard ResNet; smaller values slim every stage
            proportionally, for CPU training).
        deconv_channels, deconv_kernels: the up-sampling layers (msra_resnet: (256, 256, 256), (4, 4, 4);
            resnet_dcn: (256, 128, 64), (4, 4, 4)).
        norm: detectron2 norm name ("BN", "GN", "FrozenBN", "SyncBN"); the official model uses BN.
        up_conv: one of ``UP_CONVS`` (module docstring): "none" (msra_resnet), "dcn" (resnet_dcn), "conv".
    """

    def __init__(self, *, depth=18, width=64, deconv_channels=(256, 256, 256), deconv_kernels=(4, 4, 4), norm="BN",
                 up_conv="none"):
        if len(deconv_channels) != len(deconv_kernels):
            raise ValueError(
                f"ResNetDeconv: deconv_channels {tuple(deconv_channels)} and deconv_kernels {tuple(deconv_kernels)} differ in length"
            )
        if up_conv not in UP_CONVS:
            raise ValueError(f"ResNetDeconv: up_conv (MODEL.RESNET_DECONV.UP_CONV) must be one of {UP_CONVS}, "
                             f"got {up_conv!r}")
        super().__init__(depth=depth, width=width, norm=norm, out_features=("res5",))
        inplanes = self._out_feature_channels["res5"]
        ups, deconvs = [], []
        for ch, k in zip(deconv_channels, deconv_kernels):
            # (kernel, padding, output_padding) that exactly double the size, as msra_resnet's _get_deconv_cfg
            pad, out_pad = {4: (1, 0), 3: (1, 1), 2: (0, 0)}.get(k, (None, None))
            if pad is None:
                raise ValueError(f"ResNetDeconv: deconv kernel must be 2, 3 or 4, got {k}")
            if up_conv == "dcn":  # DCNv2 as resnet_dcn's DCN: mask = sigmoid(m), bias on
                ups += [DeformConvWithOffset(inplanes, ch, 3, bias=True, modulated=True, mask_scale=1.0),
                        get_norm(norm, ch), nn.ReLU(inplace=True)]
            elif up_conv == "conv":
                ups += [nn.Conv2d(inplanes, ch, 3, padding=1, bias=False), get_norm(norm, ch), nn.ReLU(inplace=True)]
            deconv_in = inplanes if up_conv == "none" else ch
            deconv = nn.ConvTranspose2d(deconv_in, ch, k, stride=2, padding=pad, output_padding=out_pad, bias=False)
            deconvs.append(deconv)
            ups += [deconv, get_norm(norm, ch), nn.ReLU(inplace=True)]
            inplanes = ch
        self.deconv_layers = nn.Sequential(*ups)
        for deconv in deconvs:
            if up_conv == "none":
                nn.init.normal_(deconv.weight, std=0.001)  # msra_resnet's init of the deconvs
            else:
                _bilinear_channel0_(deconv)  # resnet_dcn's
        self.up_conv = up_conv
        self._out_features = ["deconv"]
        self._out_feature_channels = {"deconv": inplanes}
        self._out_feature_strides = {"deconv": 2 ** (5 - len(deconv_channels))}

    def forward(self, x):
        return {"deconv": self.deconv_layers(self.stages(x)["res5"])}


@BACKBONE_REGISTRY.register()
def build_resnet_deconv_backbone(cfg, input_shape):
    """ResNet of ``cfg.MODEL.TV_RESNET`` (depth, width, norm) + the up-sampling stages of ``cfg.MODEL.RESNET_DECONV``
    (channels, kernels, ``UP_CONV``)."""
    if input_shape.channels != 3:
        raise ValueError(f"build_resnet_deconv_backbone: expects 3 input channels, got {input_shape.channels}")
    check_depth_key(cfg, "build_resnet_deconv_backbone")
    r, d = cfg.MODEL.TV_RESNET, cfg.MODEL.RESNET_DECONV
    return ResNetDeconv(depth=r.DEPTH, width=r.WIDTH, deconv_channels=tuple(d.DECONV_CHANNELS),
                        deconv_kernels=tuple(d.DECONV_KERNELS), norm=r.NORM, up_conv=d.UP_CONV)
