"""ResNet as YOLACT builds it (dbolya/yolact ``backbone.py``): stride in the 3×3 conv, trainable norms,
optional modulated deformable 3×3 convs (YOLACT++), and parameter names that mirror the official ones
(``conv1``, ``bn1``, ``layers.<stage>.<block>.conv2`` ...) so ``tools/convert_yolact_to_d2.py`` is a renaming.

Registered as ``build_yolact_resnet_backbone`` (outputs ``res2``..``res5``); YOLACT's FPN on top of it lives
in ``yolact_fpn.py``.
"""
import torch.nn.functional as F
from torch import nn

from detectron2.layers import get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.layers.deform_conv import DeformConvWithOffset

__all__ = ["YolactResNet", "OfficialDeformConv", "build_yolact_resnet_backbone", "dcn_block_flags"]

_DEPTHS = {18: ("basic", [2, 2, 2, 2]), 34: ("basic", [3, 4, 6, 3]), 50: ("bottleneck", [3, 4, 6, 3]),
           101: ("bottleneck", [3, 4, 23, 3]), 152: ("bottleneck", [3, 8, 36, 3])}


class OfficialDeformConv(DeformConvWithOffset):
    """Modulated 3×3 deformable conv with DCNv2's modulation as YOLACT++ uses it (``external/DCNv2``):
    mask = sigmoid(m), not segx's default 2·sigmoid(m), so official weights load unchanged. With the
    zero-initialised offset conv the layer starts as half the plain conv, as the official one does."""

    def __init__(self, in_channels, out_channels, stride=1, dilation=1):
        super().__init__(in_channels, out_channels, kernel_size=3, stride=stride, dilation=dilation, bias=True,
                         modulated=True)

    def forward(self, x):
        from torchvision.ops import deform_conv2d

        out = self.offset_conv(x)
        n_off = 2 * self.weight.shape[-1] ** 2
        return deform_conv2d(x, out[:, :n_off], self.weight, self.bias, stride=self.stride, padding=self.padding,
                             dilation=self.dilation, mask=out[:, n_off:].sigmoid())


def _conv3x3(cin, cout, stride, use_dcn):
    if use_dcn:
        return OfficialDeformConv(cin, cout, stride=stride)
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)


class _Basic(nn.Module):
    expansion = 1

    def __init__(self, cin, planes, stride, norm, use_dcn):
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, 1, use_dcn)
        self.bn2 = get_norm(norm, planes)
        self.downsample = None
        if stride != 1 or cin != planes:
            self.downsample = nn.Sequential(nn.Conv2d(cin, planes, 1, stride=stride, bias=False), get_norm(norm, planes))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class _Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin, planes, stride, norm, use_dcn):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, planes, 1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride, use_dcn)  # stride in the 3×3 (torchvision / YOLACT)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = get_norm(norm, planes * 4)
        self.downsample = None
        if stride != 1 or cin != planes * 4:
            self.downsample = nn.Sequential(
                nn.Conv2d(cin, planes * 4, 1, stride=stride, bias=False), get_norm(norm, planes * 4)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


def dcn_block_flags(num_blocks, dcn_layers, interval):
    """Which blocks of a stage get a deformable 3×3 conv, as YOLACT++ picks them: the last ``dcn_layers``
    blocks, of those only every ``interval``-th block index (block 0 whenever the whole stage is deformable)."""
    flags = [dcn_layers >= num_blocks]
    flags += [(i + dcn_layers) >= num_blocks and i % interval == 0 for i in range(1, num_blocks)]
    return flags


class YolactResNet(Backbone):
    """``[B,3,H,W]`` → ``{"res2": /4, "res3": /8, "res4": /16, "res5": /32}``.

    Args:
        depth: 18/34 (basic blocks) or 50/101/152 (bottlenecks).
        width: stem channels (64 for the standard nets); stage widths scale with it.
        norm: detectron2 norm name ("BN" trainable, "GN", "FrozenBN", "SyncBN").
        dcn_layers: per stage, how many trailing blocks may be deformable; dcn_interval: see ``dcn_block_flags``.
    """

    def __init__(self, depth=101, width=64, norm="BN", dcn_layers=(0, 0, 0, 0), dcn_interval=1,
                 out_features=("res3", "res4", "res5")):
        super().__init__()
        if depth not in _DEPTHS:
            raise ValueError(f"YolactResNet: depth must be one of {sorted(_DEPTHS)}, got {depth}")
        if len(dcn_layers) != 4:
            raise ValueError(f"YolactResNet: dcn_layers needs one entry per stage (4), got {list(dcn_layers)}")
        kind, blocks = _DEPTHS[depth]
        block = _Basic if kind == "basic" else _Bottleneck
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, width)
        self.layers = nn.ModuleList()
        cin = width
        self._out_feature_channels, self._out_feature_strides = {}, {}
        for s, (n, n_dcn) in enumerate(zip(blocks, dcn_layers)):
            planes = width * 2**s
            flags = dcn_block_flags(n, n_dcn, dcn_interval)
            stage = []
            for b in range(n):
                stage.append(block(cin, planes, 2 if (b == 0 and s > 0) else 1, norm, flags[b]))
                cin = planes * block.expansion
            self.layers.append(nn.Sequential(*stage))
            name = f"res{s + 2}"
            self._out_feature_channels[name] = cin
            self._out_feature_strides[name] = 2 ** (s + 2)
        for name in out_features:
            if name not in self._out_feature_channels:
                raise ValueError(f"YolactResNet: unknown out feature {name!r}; choose from res2..res5")
        self._out_features = list(out_features)
        offset_convs = {id(m.offset_conv) for m in self.modules() if isinstance(m, DeformConvWithOffset)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in offset_convs:  # offset convs stay zero
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), kernel_size=3, stride=2, padding=1)
        out = {}
        for s, layer in enumerate(self.layers):
            x = layer(x)
            if f"res{s + 2}" in self._out_features:
                out[f"res{s + 2}"] = x
        return out


@BACKBONE_REGISTRY.register()
def build_yolact_resnet_backbone(cfg, input_shape=None):
    """YOLACT's ResNet from ``cfg.MODEL.YOLACT.RESNET``."""
    c = cfg.MODEL.YOLACT.RESNET
    return YolactResNet(depth=c.DEPTH, width=c.WIDTH, norm=c.NORM, dcn_layers=tuple(c.DCN_LAYERS),
                        dcn_interval=c.DCN_INTERVAL, out_features=tuple(cfg.MODEL.YOLACT.FPN.IN_FEATURES))
