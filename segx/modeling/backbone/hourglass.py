"""Hourglass network of CornerNet / CenterNet (Hourglass-104 and smaller variants).

Follows the layout of princeton-vl/CornerNet ``models/py_utils/kp.py`` (also Duankaiwen/CenterNet and
xingyizhou/CenterNet's ``large_hourglass.py``): a 7×7/2 conv-norm-ReLU stem and a stride-2 residual block
(output stride 4), then ``NUM_STACKS`` hourglasses. Each hourglass level keeps a skip branch of residual
blocks at full resolution and a low branch that halves the resolution with a *stride-2 residual* (no
max-pool), recurses, returns to the level's width with residual blocks and is upsampled ×2 (nearest) and
added to the skip. After each hourglass a 3×3 conv-norm-ReLU gives the stack's output feature; between stacks
the next stack's input is ``ReLU(norm(1×1 conv(x)) + norm(1×1 conv(feature)))`` followed by a residual block.

Every stack's output is returned (``"hg0"``, ``"hg1"``, …; stride 4, ``OUT_CHANNELS`` channels) so heads
can be supervised on all stacks and use the last one at test time.
"""
from torch import nn
from torch.nn import functional as F

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.layers.conv import conv_norm_act

__all__ = ["HourglassResidual", "HourglassModule", "HourglassNet", "build_hourglass_net_backbone"]


class HourglassResidual(nn.Module):
    """3×3 conv-norm-ReLU (carries the stride) → 3×3 conv-norm, plus the input (1×1 conv-norm when the
    shape changes), ReLU."""

    def __init__(self, in_channels, out_channels, stride=1, norm="BN"):
        super().__init__()
        self.conv1 = conv_norm_act(in_channels, out_channels, 3, stride, norm=norm, activation="relu")
        self.conv2 = conv_norm_act(out_channels, out_channels, 3, 1, norm=norm, activation=None)
        self.skip = (
            conv_norm_act(in_channels, out_channels, 1, stride, norm=norm, activation=None)
            if stride != 1 or in_channels != out_channels
            else None
        )

    def forward(self, x):
        skip = x if self.skip is None else self.skip(x)
        return F.relu(self.conv2(self.conv1(x)) + skip)


def _blocks(in_channels, out_channels, n, stride=1, norm="BN", change_last=False):
    """``n`` residual blocks from ``in_channels`` to ``out_channels``; the change happens at the first block
    (``change_last=False``) or the last one (the up branch's reverse order)."""
    if n < 1:
        raise ValueError(f"hourglass: every level needs at least one residual block, got {n}")
    layers = []
    for i in range(n):
        if change_last:
            cin, cout = in_channels, (out_channels if i == n - 1 else in_channels)
        else:
            cin, cout = (in_channels if i == 0 else out_channels), out_channels
        layers.append(HourglassResidual(cin, cout, stride if i == 0 else 1, norm))
    return nn.Sequential(*layers)


class HourglassModule(nn.Module):
    """One recursive hourglass: ``dims[0]`` channels in and out, spatial size divisible by 2^(len(dims)-1)."""

    def __init__(self, dims, modules, norm="BN"):
        super().__init__()
        if len(dims) != len(modules) or len(dims) < 2:
            raise ValueError(f"hourglass: DIMS and MODULES need the same length >= 2, got {dims} and {modules}")
        cur, nxt = dims[0], dims[1]
        self.up1 = _blocks(cur, cur, modules[0], norm=norm)
        self.low1 = _blocks(cur, nxt, modules[0], stride=2, norm=norm)
        if len(dims) > 2:
            self.low2 = HourglassModule(dims[1:], modules[1:], norm)
        else:
            self.low2 = _blocks(nxt, nxt, modules[1], norm=norm)
        self.low3 = _blocks(nxt, cur, modules[0], norm=norm, change_last=True)

    def forward(self, x):
        low = self.low3(self.low2(self.low1(x)))
        return self.up1(x) + F.interpolate(low, scale_factor=2, mode="nearest")


class HourglassNet(Backbone):
    """Stacked hourglass backbone; ``forward(x [B,3,H,W])`` → ``{"hg<i>": [B,out_channels,H/4,W/4]}``."""

    def __init__(self, *, dims, modules, num_stacks=2, stem_channels=128, out_channels=256, norm="BN"):
        super().__init__()
        if num_stacks < 1:
            raise ValueError(f"hourglass: NUM_STACKS must be >= 1, got {num_stacks}")
        self.num_stacks = num_stacks
        self.num_levels = len(dims) - 1
        cur = dims[0]
        self.stem = nn.Sequential(
            conv_norm_act(3, stem_channels, 7, 2, norm=norm, activation="relu"), HourglassResidual(stem_channels, cur, 2, norm)
        )
        self.hourglasses = nn.ModuleList([HourglassModule(dims, modules, norm) for _ in range(num_stacks)])
        self.features = nn.ModuleList([conv_norm_act(cur, out_channels, 3, 1, norm=norm, activation="relu") for _ in range(num_stacks)])
        self.inter_skip = nn.ModuleList(
            [conv_norm_act(cur, cur, 1, 1, norm=norm, activation=None) for _ in range(num_stacks - 1)]
        )
        self.inter_feat = nn.ModuleList(
            [conv_norm_act(out_channels, cur, 1, 1, norm=norm, activation=None) for _ in range(num_stacks - 1)]
        )
        self.inter_res = nn.ModuleList([HourglassResidual(cur, cur, 1, norm) for _ in range(num_stacks - 1)])
        self._out_features = [f"hg{i}" for i in range(num_stacks)]
        self._out_feature_channels = {k: out_channels for k in self._out_features}
        self._out_feature_strides = {k: 4 for k in self._out_features}

    @property
    def size_divisibility(self):
        return 4 * 2**self.num_levels

    def forward(self, x):
        inter = self.stem(x)
        outs = {}
        for i in range(self.num_stacks):
            feat = self.features[i](self.hourglasses[i](inter))
            outs[f"hg{i}"] = feat
            if i < self.num_stacks - 1:
                inter = self.inter_res[i](F.relu(self.inter_skip[i](inter) + self.inter_feat[i](feat)))
        return outs


@BACKBONE_REGISTRY.register()
def build_hourglass_net_backbone(cfg, input_shape):
    """Hourglass backbone from ``cfg.MODEL.HOURGLASS_NET`` (see ``segx/config/cornernet.py``)."""
    c = cfg.MODEL.HOURGLASS_NET
    if input_shape.channels != 3:
        raise ValueError(f"build_hourglass_net_backbone: expects 3 input channels, got {input_shape.channels}")
    return HourglassNet(
        dims=list(c.DIMS), modules=list(c.MODULES), num_stacks=c.NUM_STACKS, stem_channels=c.STEM_CHANNELS,
        out_channels=c.OUT_CHANNELS, norm=c.NORM,
    )
