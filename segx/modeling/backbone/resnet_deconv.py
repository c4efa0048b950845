"""ResNet + three deconvolution layers ("msra" / Simple Baselines style): the ResNet backbone of CenterNet.

Follows Xiao et al., "Simple Baselines for Human Pose Estimation" (2018) as used by xingyizhou/CenterNet
(``src/lib/models/networks/msra_resnet.py``): a torchvision-layout ResNet (conv1/bn1/layer1..4, stride 32)
followed by three [ConvTranspose 4×4 stride 2 (no bias) → norm → ReLU] layers of 256 channels, giving one
stride-4 map. Module names follow that layout (``conv1``, ``bn1``, ``layerN.M.conv1`` …, ``deconv_layers.i``)
so the official checkpoints map onto it by a prefix (``tools/convert_centernet_to_d2.py``).
"""
from torch import nn
from torch.nn import functional as F

from detectron2.layers import ShapeSpec, get_norm
from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["ResNetDeconv", "build_resnet_deconv_backbone", "RESNET_SPECS"]


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes, planes, stride, norm):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), get_norm(norm, planes)
            )

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


class Bottleneck(nn.Module):
    """1×1 → 3×3 (carries the stride, as torchvision's / msra_resnet's) → 1×1 ×4."""

    expansion = 4

    def __init__(self, inplanes, planes, stride, norm):
        super().__init__()
        out = planes * self.expansion
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = get_norm(norm, planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn2 = get_norm(norm, planes)
        self.conv3 = nn.Conv2d(planes, out, 1, bias=False)
        self.bn3 = get_norm(norm, out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv2d(inplanes, out, 1, stride=stride, bias=False), get_norm(norm, out))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = F.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(out + shortcut)


# depth -> (block, blocks per stage)
RESNET_SPECS = {
    18: (BasicBlock, (2, 2, 2, 2)),
    34: (BasicBlock, (3, 4, 6, 3)),
    50: (Bottleneck, (3, 4, 6, 3)),
    101: (Bottleneck, (3, 4, 23, 3)),
    152: (Bottleneck, (3, 8, 36, 3)),
}


class ResNetDeconv(Backbone):
    """``forward(x [B,3,H,W])`` → ``{"deconv": [B, deconv_channels[-1], H/4, W/4]}`` (H, W multiples of 32).

    Args:
        depth: 18, 34, 50, 101 or 152.
        width: channels of conv1 / layer1 (64 = the standard ResNet; smaller values slim every stage
            proportionally, for CPU training).
        deconv_channels, deconv_kernels: the up-sampling layers (official: (256, 256, 256), (4, 4, 4)).
        norm: detectron2 norm name ("BN", "GN", "FrozenBN", "SyncBN"); the official model uses BN.
    """

    def __init__(self, *, depth=18, width=64, deconv_channels=(256, 256, 256), deconv_kernels=(4, 4, 4), norm="BN"):
        super().__init__()
        if depth not in RESNET_SPECS:
            raise ValueError(f"ResNetDeconv: depth must be one of {sorted(RESNET_SPECS)}, got {depth}")
        if len(deconv_channels) != len(deconv_kernels):
            raise ValueError(
                f"ResNetDeconv: deconv_channels {tuple(deconv_channels)} and deconv_kernels {tuple(deconv_kernels)} differ in length"
            )
        block, layers = RESNET_SPECS[depth]
        self.conv1 = nn.Conv2d(3, width, 7, stride=2, padding=3, bias=False)
        self.bn1 = get_norm(norm, width)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        inplanes = width
        for i, n in enumerate(layers):
            planes = width * 2**i
            blocks = []
            for j in range(n):
                blocks.append(block(inplanes, planes, 2 if (j == 0 and i > 0) else 1, norm))
                inplanes = planes * block.expansion
            self.add_module(f"layer{i + 1}", nn.Sequential(*blocks))
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
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.ConvTranspose2d):
                nn.init.normal_(m.weight, std=0.001)  # msra_resnet's init of the deconvs
        self._out_features = ["deconv"]
        self._out_feature_channels = {"deconv": inplanes}
        self._out_feature_strides = {"deconv": 2 ** (5 - len(deconv_channels))}

    @property
    def size_divisibility(self):
        return 32

    def forward(self, x):
        x = self.maxpool(F.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return {"deconv": self.deconv_layers(x)}

    def output_shape(self):
        return {"deconv": ShapeSpec(channels=self._out_feature_channels["deconv"], stride=self._out_feature_strides["deconv"])}


@BACKBONE_REGISTRY.register()
def build_resnet_deconv_backbone(cfg, input_shape):
    """ResNet-``cfg.MODEL.RESNETS.DEPTH`` + deconvs, from ``cfg.MODEL.CENTERNET.RESNET_DECONV``."""
    c = cfg.MODEL.CENTERNET.RESNET_DECONV
    if input_shape.channels != 3:
        raise ValueError(f"build_resnet_deconv_backbone: expects 3 input channels, got {input_shape.channels}")
    return ResNetDeconv(
        depth=cfg.MODEL.RESNETS.DEPTH, width=c.WIDTH, deconv_channels=tuple(c.DECONV_CHANNELS),
        deconv_kernels=tuple(c.DECONV_KERNELS), norm=c.NORM,
    )
