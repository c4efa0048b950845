"""YOLACT's FPN (Bolya et al. 2019, §4; dbolya/yolact ``FPN``), callable in phases.

1×1 laterals on C3–C5 and a bilinear top-down sum (phase 1), then 3×3 output convs followed by ReLU on P3–P5
and P6, P7 as stride-2 3×3 convs on the P5 *output* (not on C5, unlike RetinaNet's FPN), with no ReLU after
them (phase 2). ``forward`` is bottom-up → phase 1 → phase 2; YolactEdge runs the phases apart (it warps
key-frame features between them).

Registered as backbone ``build_yolact_fpn_backbone``; the bottom-up net is built by name from
``cfg.MODEL.YOLACT.FPN.BOTTOM_UP`` through ``BACKBONE_REGISTRY``.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import ShapeSpec
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["YolactFPN", "build_yolact_fpn_backbone"]


class YolactFPN(Backbone):
    """``bottom_up`` features ``in_features`` (C3..C5, finest first) → ``{"p3": /8, ..., "p7": /128}``, each
    ``out_channels`` wide. Laterals are stored finest-first (the official file stores them C5-first; the
    converter reverses them).

    Phases (each a dict of named ``[B,C,H,W]`` maps):

    * ``self.bottom_up(x)``: ``{"res3", "res4", "res5", ...}`` (C3..C5);
    * ``forward_phase1(bottom_up_features)``: ``{"p3", "p4", "p5"}``, the lateral + top-down sums, before the
      output convs;
    * ``forward_phase2(phase1_features)``: ``{"p3", ..., "p7"}``, the FPN outputs.
    """

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

    @property
    def phase1_features(self):
        """Names of the phase-1 maps (the levels with a lateral: ``p3``, ``p4``, ``p5``)."""
        return self._out_features[: len(self.in_features)]

    def forward_phase1(self, features):
        """Bottom-up ``features`` (dict with ``in_features``) → ``{"p3", "p4", "p5"}``: 1×1 laterals, and each
        level plus the bilinear upsample of the level above it (coarsest first)."""
        c = [features[f] for f in self.in_features]
        x = self.lateral_convs[-1](c[-1])
        outs = [x]
        for i in range(len(c) - 2, -1, -1):
            up = F.interpolate(x, size=c[i].shape[-2:], mode="bilinear", align_corners=False)
            x = up + self.lateral_convs[i](c[i])
            outs.insert(0, x)
        return dict(zip(self.phase1_features, outs))

    def forward_phase2(self, features):
        """Phase-1 ``features`` → ``{"p3", ..., "p7"}``: 3×3 output conv + ReLU per level, then the stride-2
        downsample convs on the last output (no ReLU)."""
        outs = [F.relu(conv(features[f])) for conv, f in zip(self.output_convs, self.phase1_features)]
        for conv in self.downsample_convs:
            outs.append(conv(outs[-1]))
        return dict(zip(self._out_features, outs))

    def forward(self, x):
        return self.forward_phase2(self.forward_phase1(self.bottom_up(x)))


@BACKBONE_REGISTRY.register()
def build_yolact_fpn_backbone(cfg, input_shape=None):
    """YOLACT's FPN from ``cfg.MODEL.YOLACT.FPN`` on the bottom-up backbone it names (``BOTTOM_UP``)."""
    c = cfg.MODEL.YOLACT.FPN
    if c.BOTTOM_UP == "build_yolact_resnet_backbone":
        raise ValueError("MODEL.YOLACT.FPN.BOTTOM_UP: build_yolact_resnet_backbone is now the shared "
                         "build_tv_resnet_backbone (keys in MODEL.TV_RESNET)")
    bottom_up = BACKBONE_REGISTRY.get(c.BOTTOM_UP)(cfg, input_shape or ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
    return YolactFPN(bottom_up, in_features=tuple(c.IN_FEATURES), out_channels=c.OUT_CHANNELS,
                     num_downsample=c.NUM_DOWNSAMPLE)
