"""YOLACT's FPN (dbolya/yolact ``yolact.py`` ``FPN``): 1×1 laterals on C3–C5, bilinear top-down sum,
3×3 output convs followed by ReLU on P3–P5, then P6 and P7 as stride-2 3×3 convs on the P5 *output*
(not on C5, unlike RetinaNet's FPN) with no ReLU after them.

Registered as ``build_yolact_fpn_backbone``; the bottom-up net is ``cfg.MODEL.YOLACT.FPN.BOTTOM_UP``.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.modeling.backbone.yolact_resnet import build_yolact_resnet_backbone

__all__ = ["YolactFPN", "build_yolact_fpn_backbone"]


class YolactFPN(Backbone):
    """``bottom_up`` features ``in_features`` (C3..C5, finest first) → ``{"p3": /8, ..., "p7": /128}``, each
    ``out_channels`` wide. Laterals are stored finest-first (the official file stores them C5-first; the
    converter reverses them)."""

    def __init__(self, bottom_up, in_features=("res3", "res4", "res5"), out_channels=256, num_downsample=2):
        super().__init__()
        shapes = bottom_up.output_shape()
        for f in in_features:
            if f not in shapes:
                raise ValueError(f"YolactFPN: bottom-up net has no feature {f!r} (has {sorted(shapes)})")
        self.bottom_up = bottom_up
        self.in_features = list(in_features)
        self.lateral_convs = nn.ModuleList(nn.Conv2d(shapes[f].channels, out_channels, 1) for f in in_features)
        self.output_convs = nn.ModuleList(nn.Conv2d(out_channels, out_channels, 3, padding=1) for _ in in_features)
        self.downsample_convs = nn.ModuleList(
            nn.Conv2d(out_channels, out_channels, 3, stride=2, padding=1) for _ in range(num_downsample)
        )
        first = int(shapes[in_features[0]].stride).bit_length() - 1
        n = len(in_features) + num_downsample
        self._out_features = [f"p{first + i}" for i in range(n)]
        self._out_feature_channels = {f: out_channels for f in self._out_features}
        self._out_feature_strides = {f"p{first + i}": 2 ** (first + i) for i in range(n)}
        for m in [*self.lateral_convs, *self.output_convs, *self.downsample_convs]:
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        feats = self.bottom_up(x)
        c = [feats[f] for f in self.in_features]
        x = self.lateral_convs[-1](c[-1])
        outs = [x]
        for i in range(len(c) - 2, -1, -1):
            x = F.interpolate(x, size=c[i].shape[-2:], mode="bilinear", align_corners=False) + self.lateral_convs[i](c[i])
            outs.insert(0, x)
        outs = [F.relu(conv(o)) for conv, o in zip(self.output_convs, outs)]
        for conv in self.downsample_convs:
            outs.append(conv(outs[-1]))
        return dict(zip(self._out_features, outs))


@BACKBONE_REGISTRY.register()
def build_yolact_fpn_backbone(cfg, input_shape=None):
    """YOLACT's FPN from ``cfg.MODEL.YOLACT.FPN`` on the bottom-up backbone it names."""
    c = cfg.MODEL.YOLACT.FPN
    if c.BOTTOM_UP != "build_yolact_resnet_backbone":
        bottom_up = BACKBONE_REGISTRY.get(c.BOTTOM_UP)(cfg, input_shape or ShapeSpec(channels=3))
    else:
        bottom_up = build_yolact_resnet_backbone(cfg, input_shape)
    return YolactFPN(bottom_up, in_features=tuple(c.IN_FEATURES), out_channels=c.OUT_CHANNELS,
                     num_downsample=c.NUM_DOWNSAMPLE)
