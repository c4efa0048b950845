"""The Stacked Hourglass network (Newell, Yang & Deng, ECCV 2016, "Stacked Hourglass Networks for Human Pose
Estimation"), written after the paper and the layer layout of princeton-vl/pose-hg-train and
princeton-vl/pytorch_stacked_hourglass.

Not the CornerNet Hourglass-104 (``segx/modeling/backbone/hourglass.py``): that one uses post-activation
residuals with strided convs; this one pre-activation bottlenecks, max-pool down and nearest up.

Shapes: input ``[B,3,S,S]`` → stem (7×7 stride-2 conv, residual, max-pool, 2 residuals) → ``[B,F,S/4,S/4]``
→ ``num_stacks`` hourglasses, each followed by a residual, a 1×1 conv+BN+ReLU ("lin") and a 1×1 conv to the
K heatmaps; between stacks the features and the predictions are mapped back by 1×1 convs and added
(intermediate supervision).

Registered as ``build_stacked_hourglass_backbone`` (keys in ``MODEL.STACKED_HOURGLASS_NET``); the meta-arch
``StackedHourglass`` runs it on person crops, not on whole images. The coordinate-regression head of the
baseline is not part of it (``segx.modeling.landmarks.RegressionHead``).
"""
import torch
from torch import nn
import torch.nn.functional as F

from detectron2.modeling import BACKBONE_REGISTRY, Backbone

__all__ = ["PreActResidual", "Hourglass", "StackedHourglassNet", "build_stacked_hourglass_backbone"]


def _bn(channels):
    return nn.BatchNorm2d(channels)


class PreActResidual(nn.Module):
    """Pre-activation bottleneck: BN-ReLU-1×1(C/2) → BN-ReLU-3×3(C/2) → BN-ReLU-1×1(C), plus the input
    (through a 1×1 conv when the widths differ). ``[B,Cin,H,W]`` → ``[B,Cout,H,W]``."""

    def __init__(self, in_channels, out_channels):
        super().__init__()
        mid = out_channels // 2
        self.bn1, self.conv1 = _bn(in_channels), nn.Conv2d(in_channels, mid, 1)
        self.bn2, self.conv2 = _bn(mid), nn.Conv2d(mid, mid, 3, padding=1)
        self.bn3, self.conv3 = _bn(mid), nn.Conv2d(mid, out_channels, 1)
        self.skip = nn.Conv2d(in_channels, out_channels, 1) if in_channels != out_channels else None

    def forward(self, x):
        y = self.conv1(F.relu(self.bn1(x)))
        y = self.conv2(F.relu(self.bn2(y)))
        y = self.conv3(F.relu(self.bn3(y)))
        return y.add_(x if self.skip is None else self.skip(x))  # in place, as the official `out += residual`


def _residuals(channels, n):
    return nn.Sequential(*[PreActResidual(channels, channels) for _ in range(n)])


class Hourglass(nn.Module):
    """One hourglass of recursion ``depth``: ``up = res(x)``; ``low = res(maxpool2(x))`` → inner hourglass
    (or residuals at the bottom) → res → nearest ×2 upsample; out = up + low. Spatial sizes must be
    divisible by 2**depth. ``[B,C,H,W]`` → ``[B,C,H,W]``."""

    def __init__(self, depth, channels, num_modules=1):
        super().__init__()
        self.up1 = _residuals(channels, num_modules)
        self.low1 = _residuals(channels, num_modules)
        self.low2 = Hourglass(depth - 1, channels, num_modules) if depth > 1 else _residuals(channels, num_modules)
        self.low3 = _residuals(channels, num_modules)

    def forward(self, x):
        up = self.up1(x)
        low = self.low3(self.low2(self.low1(F.max_pool2d(x, 2, stride=2))))
        return up + F.interpolate(low, scale_factor=2.0, mode="nearest")


class StackedHourglassNet(Backbone):
    """``forward(x [B,C,S,S])`` → ``{"hg{i}": [B,F,S/4,S/4], "heatmap{i}": [B,K,S/4,S/4]}`` for each stack ``i``
    (the features after the stack's "lin" conv, and its heatmaps; no ``heatmap{i}`` without heatmap heads).

    Args:
        num_stacks: hourglasses in sequence (2 and 8 in the paper).
        num_features: width F of the hourglasses (256 in the paper).
        num_keypoints: K output maps.
        depth: recursion depth of each hourglass (4: 64×64 → 4×4).
        num_modules: residuals per hourglass level (1 in the paper's 8-stack model).
        merge_predictions: add the 1×1-mapped predictions back into the next stack's input (the paper's
            intermediate supervision merge). Off without heatmap heads, which leave nothing to merge.
        predict_heatmaps: build the 1×1 heatmap head of each stack (off for the coordinate-regression head).
        in_channels: channels of the input crops.
        stem_channels: (C0, C1), the widths of the stem's 7×7 conv and of its first residuals (C0 → C1, C1 → C1,
            then C1 → F). None: F/4, F/2 for F ≥ 128 (the official 64, 128 at F = 256), F/2 throughout below.
            The official PoseNet uses (64, 128) at every width.
        channels_last: run in channels-last memory format (the input is converted; outputs keep the format).
            Equal up to float rounding; on the CPU as fast as the official PoseNet, which runs channels-last
            because it permutes its NHWC input (contiguous NCHW is 1.1–1.4× slower there).
    """

    def __init__(self, *, num_stacks, num_features, num_keypoints, depth=4, num_modules=1, merge_predictions=True,
                 predict_heatmaps=True, in_channels=3, stem_channels=None, channels_last=True):
        super().__init__()
        f = num_features
        if stem_channels:
            c0, stem_mid = stem_channels
        else:
            stem_mid = max(f // 2, 16)
            c0 = stem_mid // 2 if f >= 128 else stem_mid
        self.stem = nn.Sequential(nn.Conv2d(in_channels, c0, 7, stride=2, padding=3), _bn(c0), nn.ReLU(inplace=True))
        self.stem_res = nn.Sequential(PreActResidual(c0, stem_mid), nn.MaxPool2d(2, 2),
                                      PreActResidual(stem_mid, stem_mid), PreActResidual(stem_mid, f))
        self.num_stacks = num_stacks
        self.num_keypoints = num_keypoints
        self.depth = depth
        self.hourglasses = nn.ModuleList([Hourglass(depth, f, num_modules) for _ in range(num_stacks)])
        self.post = nn.ModuleList([_residuals(f, num_modules) for _ in range(num_stacks)])
        self.lin = nn.ModuleList(
            [nn.Sequential(nn.Conv2d(f, f, 1), _bn(f), nn.ReLU(inplace=True)) for _ in range(num_stacks)]
        )
        self.predict_heatmaps = predict_heatmaps
        self.merge_predictions = merge_predictions and predict_heatmaps
        self.heads = None
        if predict_heatmaps:
            self.heads = nn.ModuleList([nn.Conv2d(f, num_keypoints, 1) for _ in range(num_stacks)])
            for head in self.heads:  # near-zero maps at the start (mmpose's final-layer init, std 0.001)
                nn.init.normal_(head.weight, std=0.001)
                nn.init.zeros_(head.bias)
        self.merge_features = nn.ModuleList([nn.Conv2d(f, f, 1) for _ in range(num_stacks - 1)])
        self.merge_preds = None
        if self.merge_predictions:
            self.merge_preds = nn.ModuleList([nn.Conv2d(num_keypoints, f, 1) for _ in range(num_stacks - 1)])
        self._out_features = [f"hg{i}" for i in range(num_stacks)]
        self._out_feature_channels = {name: f for name in self._out_features}
        if predict_heatmaps:
            self._out_features += [f"heatmap{i}" for i in range(num_stacks)]
            self._out_feature_channels.update({f"heatmap{i}": num_keypoints for i in range(num_stacks)})
        self._out_feature_strides = {name: 4 for name in self._out_features}
        self.channels_last = channels_last

    def forward(self, x):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x = self.stem_res(self.stem(x))
        out = {}
        for i in range(self.num_stacks):
            y = self.lin[i](self.post[i](self.hourglasses[i](x)))
            out[f"hg{i}"] = y
            pred = self.heads[i](y) if self.predict_heatmaps else None
            if pred is not None:
                out[f"heatmap{i}"] = pred
            if i < self.num_stacks - 1:  # summed in the official PoseNet's order (float rounding equal to it)
                if self.merge_predictions:
                    x = x + self.merge_preds[i](pred) + self.merge_features[i](y)
                else:
                    x = x + self.merge_features[i](y)
        return out


@BACKBONE_REGISTRY.register()
def build_stacked_hourglass_backbone(cfg, input_shape):
    """``StackedHourglassNet`` from ``cfg.MODEL.STACKED_HOURGLASS_NET``."""
    c = cfg.MODEL.STACKED_HOURGLASS_NET
    return StackedHourglassNet(
        num_stacks=c.NUM_STACKS,
        num_features=c.NUM_FEATURES,
        num_keypoints=c.NUM_KEYPOINTS,
        depth=c.DEPTH,
        num_modules=c.NUM_MODULES,
        merge_predictions=c.MERGE_PREDICTIONS,
        predict_heatmaps=c.PREDICT_HEATMAPS,
        in_channels=input_shape.channels,
        stem_channels=tuple(c.STEM_CHANNELS) or None,
        channels_last=c.CHANNELS_LAST,
    )
