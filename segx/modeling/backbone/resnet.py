"""ResNet in torchvision's layout: the ResNet of YOLACT and of CenterNet (one implementation for both).

torchvision's layout, which the official YOLACT (dbolya/yolact ``backbone.py``) and CenterNet
(xingyizhou/CenterNet ``msra_resnet.py``) checkpoints share: stride in the 3×3 conv, a ``conv1``/``bn1`` stem with
a 3×3 stride-2 max-pool, ``layer1``..``layer4``, each block ``conv1``/``bn1``/``conv2``/``bn2``(/``conv3``/``bn3``) and
a ``downsample`` (1×1 conv, norm) where the shape changes. Not detectron2's ResNet (``stem``/``res2``.. names,
stride in the 1×1 conv by default). Optional modulated deformable 3×3 convs (YOLACT++'s choice of blocks) with
DCNv2's sigmoid mask, so official weights load unchanged.

``build_tv_resnet_backbone`` reads ``cfg.MODEL.TV_RESNET``; CenterNet's ResNet + deconvolutions is
``segx/modeling/backbone/resnet_deconv.py`` on top of this class.
"""
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

from segx.layers.deform_conv import DeformConvWithOffset

__all__ = ["ResNet", "BasicBlock", "Bottleneck", "RESNET_SPECS", "dcn_block_flags", "build_tv_resnet_backbone"]


def _conv3x3(in_channels, out_channels, stride, deformable):
    if deformable:  # DCNv2 as YOLACT++ uses it: mask = sigmoid(m), bias on
        return DeformConvWithOffset(in_channels, out_channels, 3, stride=stride, bias=True, modulated=True,
                                    mask_scale=1.0)
    return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False)


def _downsample(in_channels, out_channels, stride, norm):
    if stride == 1 and in_channels == out_channels:
        return None
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False), get_norm(norm, out_channels))


class BasicBlock(nn.Module):
    """3×3 (stride) → norm → ReLU → 3×3 (deformable if asked) → norm, plus the shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_channels, planes, stride=1, norm="BN", deformable=False):
        super().__init__()
        self.conv1 = _conv3x3(in_channels, planes, stride, False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, 1, deformable)
        self.bn2 = get_norm(norm, planes)
        self.downsample = _downsample(in_channels, planes, stride, norm)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class Bottleneck(nn.Module):
    """1×1 → 3×3 (carries the stride; deformable if asked) → 1×1 (×4 channels), norms, ReLUs, shortcut."""

    expansion = 4

    def __init__(self, in_channels, planes, stride=1, norm="BN", deformable=False):
        super().__init__()
        out_channels = planes * self.expansion
        self.conv1 = nn.Conv2d(in_channels, planes, 1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = _conv3x3(planes, planes, stride, deformable)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, out_channels, 1, bias=False)
        self.bn3 = get_norm(norm, out_channels)
        self.downsample = _downsample(in_channels, out_channels, stride, norm)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


# depth -> (block, blocks per stage)
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


def dcn_block_flags(num_blocks, dcn_layers, interval):
    """Which blocks of a stage get a deformable 3×3 conv, as YOLACT++ picks them: of the last ``dcn_layers``
    blocks, every ``interval``-th block index (block 0 whenever the whole stage is deformable)."""
    flags = [dcn_layers >= num_blocks]
    flags += [(i + dcn_layers) >= num_blocks and i % interval == 0 for i in range(1, num_blocks)]
    return flags


class ResNet(Backbone):
    """``[B,3,H,W]`` → ``{"res2": /4, "res3": /8, "res4": /16, "res5": /32}`` (those in ``out_features``).

    Args:
        depth: 18/34 (basic blocks) or 50/101/152 (bottlenecks).
        width: stem channels (64 = the standard nets); stage ``s`` has ``width·2^s`` planes (×4 out for
            bottlenecks). Smaller values slim every stage, for CPU training.
        norm: detectron2 norm name ("BN" trainable, "GN", "FrozenBN", "SyncBN").
        dcn_layers: per stage, how many trailing blocks may be deformable; dcn_interval: see ``dcn_block_flags``.
        out_features: which of res2..res5 ``forward`` returns.
    """

    def __init__(self, *, depth=50, width=64, norm="BN", dcn_layers=(0, 0, 0, 0), dcn_interval=1,
                 out_features=("res3", "res4", "res5"), in_channels=3):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNet: depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        if len(dcn_layers) != 4:
            raise ValueError(f"ResNet: dcn_layers needs one entry per stage (4), got {list(dcn_layers)}")
        block, blocks = RESNET_SPECS[depth]
        self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        channels = width
        self._out_feature_channels, self._out_feature_strides = {}, {}
        for s, (n, n_dcn) in enumerate(zip(blocks, dcn_layers)):
            planes = width * 2**s
            flags = dcn_block_flags(n, n_dcn, dcn_interval)
            stage = []
            for b in range(n):
                stage.append(block(channels, planes, 2 if (b == 0 and s > 0) else 1, norm, flags[b]))
                channels = planes * block.expansion
            self.add_module(f"layer{s + 1}", nn.Sequential(*stage))
            self._out_feature_channels[f"res{s + 2}"] = channels
            self._out_feature_strides[f"res{s + 2}"] = 2 ** (s + 2)
        for name in out_features:
            if name not in self._out_feature_channels:
                raise ValueError(f"ResNet: unknown out feature {name!r}; choose from res2..res5")
        self._out_features = list(out_features)
        offset_convs = {id(m.offset_conv) for m in self.modules() if isinstance(m, DeformConvWithOffset)}
        for m in self.modules():
            if isinstance(m, nn.Conv2d) and id(m) not in offset_convs:  # offset convs stay zero
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def size_divisibility(self):
        return 32

    def stages(self, x, last="res5"):
        """Every stage's output up to ``last``, ``{"res2": ..., last: ...}`` (YolactEdge's non-key frames stop at
        ``"res3"``)."""
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        out = {}
        for s in range(4):
            x = getattr(self, f"layer{s + 1}")(x)
            out[f"res{s + 2}"] = x
            if f"res{s + 2}" == last:
                break
        return out

    def forward(self, x):
        out = self.stages(x)
        return {k: out[k] for k in self._out_features}


def check_depth_key(cfg, builder):
    """``MODEL.RESNETS.DEPTH`` is detectron2's ResNet's: a config that sets it for this backbone (as segx's
    CenterNet configs did before ``MODEL.TV_RESNET``) would otherwise be ignored silently."""
    d2_depth, depth = cfg.MODEL.RESNETS.DEPTH, cfg.MODEL.TV_RESNET.DEPTH
    if d2_depth != 50 and d2_depth != depth:
        raise ValueError(f"{builder}: MODEL.RESNETS.DEPTH is {d2_depth} but this backbone reads MODEL.TV_RESNET.DEPTH "
                         f"({depth}); set MODEL.TV_RESNET.DEPTH instead")


def resnet_from_config(cfg, input_shape=None, out_features=None):
    """``ResNet`` from ``cfg.MODEL.TV_RESNET`` (``out_features`` overrides its OUT_FEATURES)."""
    check_depth_key(cfg, "build_tv_resnet_backbone")
    c = cfg.MODEL.TV_RESNET
    return ResNet(
        depth=c.DEPTH, width=c.WIDTH, norm=c.NORM, dcn_layers=tuple(c.DCN_LAYERS), dcn_interval=c.DCN_INTERVAL,
        out_features=tuple(out_features or c.OUT_FEATURES),
        in_channels=input_shape.channels if input_shape is not None else 3,
    )


@BACKBONE_REGISTRY.register()
def build_tv_resnet_backbone(cfg, input_shape=None):
    """The torchvision-layout ResNet of ``cfg.MODEL.TV_RESNET``."""
    return resnet_from_config(cfg, input_shape or ShapeSpec(channels=3))
