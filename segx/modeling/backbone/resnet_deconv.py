"""ResNet + three deconvolution layers ("msra" / Simple Baselines style): the ResNet backbone of CenterNet.

Follows Xiao et al., "Simple Baselines for Human Pose Estimation" (2018) as used by xingyizhou/CenterNet
(``src/lib/models/networks/msra_resnet.py``): a torchvision-layout ResNet (conv1/bn1/layer1..4, stride 32)
followed by three [ConvTranspose 4×4 stride 2 (no bias) → norm → ReLU] layers of 256 channels, giving one
stride-4 map. Module names follow that layout (``conv1``, ``bn1``, ``layerN.M.conv1`` …, ``deconv_layers.i``)
so the official checkpoints map onto it by a prefix (``tools/convert_centernet_to_d2.py``).
"""
from torch import nn

from detectron2.layers import get_norm
from detectron2.modeling import BACKBONE_REGISTRY

from segx.modeling.backbone.resnet import ResNet, check_depth_key

__all__ = ["ResNetDeconv", "build_resnet_deconv_backbone"]


class ResNetDeconv(ResNet):
    """``forward(x [B,3,H,W])`` → ``{"deconv": [B, deconv_channels[-1], H/4, W/4]}`` (H, W multiples of 32).

    Args:
        depth: 18, 34, 50, 101 or 152.
        width: channels of conv1 / layer1 (64 = the standard ResNet; smaller values slim every stage
            proportionally, for CPU training).
        deconv_channels, deconv_kernels: the up-sampling layers (official: (256, 256, 256), (4, 4, 4)).
        norm: detectron2 norm name ("BN", "GN", "FrozenBN", "SyncBN"); the official model uses BN.
    """

    def __init__(self, *, depth=18, width=64, deconv_channels=(256, 256, 256), deconv_kernels=(4, 4, 4), norm="BN"):
        if len(deconv_channels) != len(deconv_kernels):
            raise ValueError(
                f"ResNetDeconv: deconv_channels {tuple(deconv_channels)} and deconv_kernels {tuple(deconv_kernels)} differ in length"
            )
        super().__init__(depth=depth, width=width, norm=norm, out_features=("res5",))
        inplanes = self._out_feature_channels["res5"]
        ups = []
        for ch, k in zip(deconv_channels, deconv_kernels):
            # (kernel, padding, output_padding) that exactly double the size, as msra_resnet's _get_deconv_cfg
            pad, out_pad = {4: (1, 0), 3: (1, 1), 2: (0, 0)}.get(k, (None, None))
            if pad is None:
                raise ValueError(f"ResNetDeconv: deconv kernel must be 2, 3 or 4, got {k}")
            ups += [
                nn.ConvTranspose2d(inplanes, ch, k, stride=2, padding=pad, output_padding=out_pad, bias=False),
                get_norm(norm, ch),
                nn.ReLU(inplace=True),
            ]
            inplanes = ch
        self.deconv_layers = nn.Sequential(*ups)
        for m in self.deconv_layers.modules():
            if isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)  # msra_resnet's init of the deconvs
        self._out_features = ["deconv"]
        self._out_feature_channels = {"deconv": inplanes}
        self._out_feature_strides = {"deconv": 2 ** (5 - len(deconv_channels))}

    def forward(self, x):
        return {"deconv": self.deconv_layers(self.stages(x)["res5"])}


@BACKBONE_REGISTRY.register()
def build_resnet_deconv_backbone(cfg, input_shape):
    """ResNet of ``cfg.MODEL.TV_RESNET`` (depth, width, norm) + the deconvolutions of ``cfg.MODEL.RESNET_DECONV``."""
    if input_shape.channels != 3:
        raise ValueError(f"build_resnet_deconv_backbone: expects 3 input channels, got {input_shape.channels}")
    check_depth_key(cfg, "build_resnet_deconv_backbone")
    r, d = cfg.MODEL.TV_RESNET, cfg.MODEL.RESNET_DECONV
    return ResNetDeconv(depth=r.DEPTH, width=r.WIDTH, deconv_channels=tuple(d.DECONV_CHANNELS),
                        deconv_kernels=tuple(d.DECONV_KERNELS), norm=r.NORM)
