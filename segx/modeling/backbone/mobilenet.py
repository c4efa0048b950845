"""MobileNet-V1 with width multiplier 0.25: the light backbone of RetinaFace.

Follows the layout of biubug6/Pytorch_Retinaface ``models/net.py`` (``MobileNetV1``): a stride-2 3×3 conv
with 8 channels, then depthwise-separable blocks in three stages whose outputs (64, 128, 256 channels at
strides 8, 16, 32) feed RetinaFace's FPN. Every conv is followed by a norm and LeakyReLU(0.1).
"""
from torch import nn

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.layers.conv import conv_norm_act

__all__ = ["MobileNetV1", "build_mobilenet_v1_backbone", "DepthwiseSeparable"]


def _cna(in_channels, out_channels, kernel_size, stride, norm, leaky, groups=1):
    """No-bias conv → norm → LeakyReLU(``leaky``) (keys ``weight``, ``norm.*``)."""
    return conv_norm_act(in_channels, out_channels, kernel_size, stride, norm=norm, activation=leaky, groups=groups,
                         bias=False)


class DepthwiseSeparable(nn.Module):
    """3×3 depthwise conv (``dw``, carries the stride) → 1×1 pointwise conv (``pw``), each norm + LeakyReLU."""

    def __init__(self, in_channels, out_channels, stride, norm, leaky=0.1):
        super().__init__()
        self.dw = _cna(in_channels, in_channels, 3, stride, norm, leaky, groups=in_channels)
        self.pw = _cna(in_channels, out_channels, 1, 1, norm, leaky)

    def forward(self, x):
        return self.pw(self.dw(x))


# (out_channels, stride) of the blocks of each stage at width 1.0 / 4 (i.e. 0.25 → these numbers).
_STAGES = {
    "stage1": [("conv", 8, 2), ("dw", 16, 1), ("dw", 32, 2), ("dw", 32, 1), ("dw", 64, 2), ("dw", 64, 1)],
    "stage2": [("dw", 128, 2)] + [("dw", 128, 1)] * 5,
    "stage3": [("dw", 256, 2), ("dw", 256, 1)],
}


class MobileNetV1(Backbone):
    """MobileNet-V1 ×0.25. ``forward(x [B,3,H,W])`` → dict of the stages in ``out_features``
    (stage1: 64 ch stride 8, stage2: 128 ch stride 16, stage3: 256 ch stride 32); spatial size
    ceil(H / stride) since every stride-2 conv pads by 1.

    ``width`` scales every channel count (1.0 = the RetinaFace "mobilenet0.25" network).
    """

    def __init__(self, *, norm="BN", out_features=("stage1", "stage2", "stage3"), width=1.0, in_channels=3):
        super().__init__()
        for f in out_features:
            if f not in _STAGES:
                raise ValueError(f"MobileNetV1: unknown out_feature {f!r}; choose from {list(_STAGES)}")
        self._out_features = list(out_features)
        self._out_feature_channels, self._out_feature_strides = {}, {}
        channels, stride = in_channels, 1
        for name, blocks in _STAGES.items():
            layers = []
            for kind, out, s in blocks:
                out = max(1, int(round(out * width)))
                if kind == "conv":
                    layers.append(_cna(channels, out, 3, s, norm, 0.1))
                else:
                    layers.append(DepthwiseSeparable(channels, out, s, norm))
                channels, stride = out, stride * s
            self.add_module(name, nn.Sequential(*layers))
            self._out_feature_channels[name] = channels
            self._out_feature_strides[name] = stride
        self._stage_names = list(_STAGES)

    def forward(self, x):
        out = {}
        for name in self._stage_names:
            x = getattr(self, name)(x)
            if name in self._out_features:
                out[name] = x
        return out


@BACKBONE_REGISTRY.register()
def build_mobilenet_v1_backbone(cfg, input_shape):
    """MobileNet-V1 ×0.25 from ``cfg.MODEL.MOBILENET`` (``NORM``, ``WIDTH``, ``OUT_FEATURES``)."""
    c = cfg.MODEL.MOBILENET
    return MobileNetV1(
        norm=c.NORM,
        out_features=c.OUT_FEATURES,
        width=c.WIDTH,
        in_channels=input_shape.channels,
    )
