"""RetinaFace's neck: a 3-level top-down FPN and the SSH context module (biubug6/Pytorch_Retinaface layout)."""
import torch
import torch.nn.functional as F
from torch import nn

from segx.layers.conv import conv_norm_act

__all__ = ["RetinaFaceFPN", "SSH", "default_leaky"]


def default_leaky(out_channels):
    """The official slope rule: LeakyReLU(0.1) for narrow (≤ 64 channel) FPN/SSH, plain ReLU otherwise."""
    return 0.1 if out_channels <= 64 else 0.0


def _conv(in_channels, out_channels, kernel_size, norm, leaky):
    """No-bias conv → norm → LeakyReLU(``leaky``) (None: no activation); keys ``weight``, ``norm.*``."""
    return conv_norm_act(in_channels, out_channels, kernel_size, norm=norm, activation=leaky, bias=False)


class RetinaFaceFPN(nn.Module):
    """Top-down FPN over 3 levels: 1×1 lateral conv (``output{1,2,3}``) per level, nearest upsampling of the
    coarser merged map added to the finer lateral, then a 3×3 conv (``merge{1,2}``). Convs carry norm +
    LeakyReLU. ``forward(list of 3 [B,C_i,H_i,W_i], finest first)`` → list of 3 ``[B,out_channels,H_i,W_i]``."""

    def __init__(self, in_channels_list, out_channels, norm="BN", leaky=None):
        super().__init__()
        if len(in_channels_list) != 3:
            raise ValueError(f"RetinaFaceFPN: needs 3 input levels, got in_channels_list={in_channels_list}")
        leaky = default_leaky(out_channels) if leaky is None else leaky
        self.output1 = _conv(in_channels_list[0], out_channels, 1, norm, leaky)
        self.output2 = _conv(in_channels_list[1], out_channels, 1, norm, leaky)
        self.output3 = _conv(in_channels_list[2], out_channels, 1, norm, leaky)
        self.merge1 = _conv(out_channels, out_channels, 3, norm, leaky)
        self.merge2 = _conv(out_channels, out_channels, 3, norm, leaky)

    def forward(self, features):
        p1, p2, p3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """SSH context module (Najibi et al. 2017): concatenation of a 3×3 branch (out/2 channels) and 5×5- and
    7×7-receptive-field branches built from stacked 3×3 convs (out/4 each, the 7×7 one reusing the first conv
    of the 5×5 one), then ReLU. ``[B,C,H,W]`` → ``[B,out_channels,H,W]``."""

    def __init__(self, in_channels, out_channels, norm="BN", leaky=None):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH: out_channels must be divisible by 4, got {out_channels}")
        leaky = default_leaky(out_channels) if leaky is None else leaky
        q = out_channels // 4
        self.conv3X3 = _conv(in_channels, out_channels // 2, 3, norm, None)
        self.conv5X5_1 = _conv(in_channels, q, 3, norm, leaky)
        self.conv5X5_2 = _conv(q, q, 3, norm, None)
        self.conv7X7_2 = _conv(q, q, 3, norm, leaky)
        self.conv7x7_3 = _conv(q, q, 3, norm, None)

    def forward(self, x):
        mid = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], dim=1)
        return F.relu(out)
