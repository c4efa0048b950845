"""DLA-34 with a deformable up-path (``dla_34`` of CenterNet, "Objects as Points").

Deep Layer Aggregation (Yu et al. 2018): a stem, two conv levels and four aggregation trees (hierarchical
merging of blocks by "root" 1×1 convs), down to stride 32. CenterNet (xingyizhou/CenterNet,
``src/lib/models/networks/pose_dla_dcn.py``) adds an iterative up-path — DLA-up then a final IDA-up — in
which every 3×3 conv is a modulated deformable conv (DCNv2) followed by BN + ReLU, and the up-sampling is a
grouped ConvTranspose initialised to bilinear; the output is one 64-channel stride-4 map. Module names follow
that file (``base.*``, ``dla_up.ida_<i>.{proj,up,node}_<j>``, ``ida_up.*``) so its checkpoints convert by
renaming only (``tools/convert_centernet_to_d2.py``).

Deformable convs use ``segx.layers.deform_conv.DeformConvWithOffset`` (modulated). Its mask is 2·sigmoid (so
a fresh layer equals a plain conv); DCNv2's is sigmoid, so converted weights are halved (exactly equivalent:
the output is linear in the mask).
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.layers.deform_conv import DeformConvWithOffset

__all__ = ["DLABase", "DLASeg", "build_dla34_dcn_backbone", "DLA34_LEVELS", "DLA34_CHANNELS"]

DLA34_LEVELS = (1, 1, 1, 2, 2, 1)
DLA34_CHANNELS = (16, 32, 64, 128, 256, 512)


class _Block(nn.Module):
    """DLA BasicBlock: two 3×3 conv-norm, plus a residual given by the caller (the tree's projection)."""

    def __init__(self, inplanes, planes, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)

    def forward(self, x, residual=None):
        residual = x if residual is None else residual
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + residual)


class _Root(nn.Module):
    """Aggregation node: 1×1 conv-norm over the concatenated children (+ first child if residual), ReLU."""

    def __init__(self, in_channels, out_channels, norm, residual=False):
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, 1, bias=False)
        self.bn = get_norm(norm, out_channels)
        self.residual = residual

    def forward(self, *children):
        x = self.bn(self.conv(torch.cat(children, 1)))
        if self.residual:
            x = x + children[0]
        return F.relu(x)


class _Tree(nn.Module):
    """A DLA aggregation tree of ``levels`` levels of blocks. ``level_root``: the tree's (down-sampled) input
    also feeds its deepest root; ``root_dim``: channels that root concatenates (default 2·out)."""

    def __init__(self, levels, in_channels, out_channels, stride, norm, level_root=False, root_dim=0):
        super().__init__()
        root_dim = (root_dim or 2 * out_channels) + (in_channels if level_root else 0)
        if levels == 1:
            self.tree1 = _Block(in_channels, out_channels, stride, norm)
            self.tree2 = _Block(out_channels, out_channels, 1, norm)
            self.root = _Root(root_dim, out_channels, norm)
        else:
            self.tree1 = _Tree(levels - 1, in_channels, out_channels, stride, norm)
            self.tree2 = _Tree(levels - 1, out_channels, out_channels, 1, norm, root_dim=root_dim + out_channels)
        self.levels, self.level_root = levels, level_root
        self.downsample = nn.MaxPool2d(stride, stride=stride) if stride > 1 else None
        self.project = None
        if in_channels != out_channels:
            self.project = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), get_norm(norm, out_channels))

    def forward(self, x, residual=None, children=None):
        children = [] if children is None else children
        bottom = x if self.downsample is None else self.downsample(x)
        residual = bottom if self.project is None else self.project(bottom)
        if self.level_root:
            children.append(bottom)
        x1 = self.tree1(x, residual)
        if self.levels == 1:
            return self.root(self.tree2(x1), x1, *children)
        children.append(x1)
        return self.tree2(x1, children=children)


def _conv_level(inplanes, planes, convs, stride, norm):
    mods = []
    for i in range(convs):
        mods += [nn.Conv2d(inplanes, planes, 3, stride=stride if i == 0 else 1, padding=1, bias=False), get_norm(norm, planes), nn.ReLU(inplace=True)]
        inplanes = planes
    return nn.Sequential(*mods)


class DLABase(nn.Module):
    """The DLA trunk: ``forward(x)`` → list of the 6 levels (strides 1, 2, 4, 8, 16, 32; ``channels``)."""

    def __init__(self, levels=DLA34_LEVELS, channels=DLA34_CHANNELS, norm="BN"):
        super().__init__()
        self.channels = list(channels)
        self.base_layer = nn.Sequential(nn.Conv2d(3, channels[0], 7, padding=3, bias=False), get_norm(norm, channels[0]), nn.ReLU(inplace=True))
        self.level0 = _conv_level(channels[0], channels[0], levels[0], 1, norm)
        self.level1 = _conv_level(channels[0], channels[1], levels[1], 2, norm)
        for i in range(2, 6):
            tree = _Tree(levels[i], channels[i - 1], channels[i], 2, norm, level_root=i > 2)
            self.add_module(f"level{i}", tree)

    def forward(self, x):
        x = self.base_layer(x)
        outs = []
        for i in range(6):
            x = getattr(self, f"level{i}")(x)
            outs.append(x)
        return outs


class _ConvNormAct(nn.Module):
    """3×3 conv (modulated deformable, or plain) → norm → ReLU; keys ``conv.*``, ``actf.0.*`` (official)."""

    def __init__(self, in_channels, out_channels, norm, deformable):
        super().__init__()
        if deformable:
            self.conv = DeformConvWithOffset(in_channels, out_channels, 3, modulated=True)
        else:
            self.conv = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.actf = nn.Sequential(get_norm(norm, out_channels), nn.ReLU(inplace=True))

    def forward(self, x):
        return self.actf(self.conv(x))


def _bilinear_(up):
    """Initialises a grouped ConvTranspose2d to bilinear up-sampling."""
    k = up.weight.shape[-1]
    f = math.ceil(k / 2)
    c = (2 * f - 1 - f % 2) / (2.0 * f)
    r = 1 - (torch.arange(k, dtype=torch.float32, device=up.weight.device) / f - c).abs()
    with torch.no_grad():
        up.weight.copy_((r[:, None] * r[None, :]).expand_as(up.weight))


class _IDAUp(nn.Module):
    """Iterative deep aggregation up-step: for j ≥ 1, layer[j] ← node_j(up_j(proj_j(layer[j])) + layer[j−1]),
    bringing each map to channels ``out`` and to the resolution of the first."""

    def __init__(self, out, channels, up_factors, norm, deformable):
        super().__init__()
        for j in range(1, len(channels)):
            f = int(up_factors[j])
            setattr(self, f"proj_{j}", _ConvNormAct(channels[j], out, norm, deformable))
            up = nn.ConvTranspose2d(out, out, 2 * f, stride=f, padding=f // 2, groups=out, bias=False)
            _bilinear_(up)
            setattr(self, f"up_{j}", up)
            setattr(self, f"node_{j}", _ConvNormAct(out, out, norm, deformable))

    def forward(self, layers, start, end):
        for i in range(start + 1, end):
            j = i - start
            up = getattr(self, f"up_{j}")(getattr(self, f"proj_{j}")(layers[i]))
            layers[i] = getattr(self, f"node_{j}")(up + layers[i - 1])


class _DLAUp(nn.Module):
    """DLA-up: IDA-up steps from the deepest level down to ``start``; returns maps from fine to coarse."""

    def __init__(self, start, channels, scales, norm, deformable):
        super().__init__()
        self.start = start
        in_channels, channels, scales = list(channels), list(channels), list(scales)
        for i in range(len(channels) - 1):
            j = -i - 2
            setattr(self, f"ida_{i}", _IDAUp(channels[j], in_channels[j:], [s // scales[j] for s in scales[j:]], norm, deformable))
            scales[j + 1 :] = [scales[j]] * len(scales[j + 1 :])
            in_channels[j + 1 :] = [channels[j]] * len(in_channels[j + 1 :])

    def forward(self, layers):
        layers = list(layers)
        out = [layers[-1]]
        for i in range(len(layers) - self.start - 1):
            getattr(self, f"ida_{i}")(layers, len(layers) - i - 2, len(layers))
            out.insert(0, layers[-1])
        return out


class DLASeg(Backbone):
    """DLA + DLA-up + IDA-up: ``forward(x [B,3,H,W])`` → ``{"dla": [B, channels[2], H/4, W/4]}``
    (H, W multiples of 32).

    Args:
        norm: detectron2 norm name (official: BN).
        deformable: modulated deformable 3×3 convs in the up-path (official) or plain convs.
        width_div: divides every channel count (1 = DLA-34).
    """

    def __init__(self, *, norm="BN", deformable=True, width_div=1, levels=DLA34_LEVELS, channels=DLA34_CHANNELS):
        super().__init__()
        channels = [c // width_div for c in channels]
        if min(channels) < 1:
            raise ValueError(f"DLASeg: width_div={width_div} leaves no channels")
        first, last = 2, 5  # stride 4 output; the final IDA-up merges levels 2..4 (official last_level=5)
        self.base = DLABase(levels, channels, norm)
        self.dla_up = _DLAUp(first, channels[first:], [2**i for i in range(len(channels) - first)], norm, deformable)
        self.ida_up = _IDAUp(channels[first], channels[first:last], [2**i for i in range(last - first)], norm, deformable)
        self.first, self.last = first, last
        self._out_features = ["dla"]
        self._out_feature_channels = {"dla": channels[first]}
        self._out_feature_strides = {"dla": 2**first}

    @property
    def size_divisibility(self):
        return 32

    def forward(self, x):
        x = self.dla_up(self.base(x))
        y = list(x[: self.last - self.first])
        self.ida_up(y, 0, len(y))
        return {"dla": y[-1]}

@BACKBONE_REGISTRY.register()
def build_dla34_dcn_backbone(cfg, input_shape):
    """DLA-34 + (deformable) up-path, from ``cfg.MODEL.DLA``."""
    c = cfg.MODEL.DLA
    if input_shape.channels != 3:
        raise ValueError(f"build_dla34_dcn_backbone: expects 3 input channels, got {input_shape.channels}")
    if c.UP_CONV not in ("dcn", "conv"):
        raise ValueError(f"build_dla34_dcn_backbone: MODEL.DLA.UP_CONV must be 'dcn' or 'conv', got {c.UP_CONV!r}")
    return DLASeg(norm=c.NORM, deformable=c.UP_CONV == "dcn", width_div=c.WIDTH_DIV)
