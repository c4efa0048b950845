"""Deformable convolution with its own offset branch, on ``torchvision.ops.deform_conv2d``.

Used by YOLACT++ (backbone 3×3 convs), CenterNet's DLA-34 and UPSNet's semantic head. The offset (and, when
modulated, mask) conv is zero-initialised, so the layer starts as a plain convolution (offsets 0, mask 0.5
→ scaled by 2 so the start equals the plain conv as well). During ONNX export the layer records
``segx.layers.deform_conv_reference`` (pure PyTorch) instead of torchvision's op, which has no ONNX symbolic.
"""
import math

import torch
from torch import nn
from torchvision.ops import deform_conv2d

from segx.layers.deform_conv_reference import deform_conv2d_reference

__all__ = ["DeformConvWithOffset"]


class DeformConvWithOffset(nn.Module):
    """``[B,Cin,H,W] -> [B,Cout,H',W']``: a k×k deformable conv whose per-pixel sampling offsets
    (2·k·k channels, in input pixels) and, if ``modulated``, masks (k·k channels, sigmoid) come from a
    k×k conv on the same input (DCNv1 / DCNv2).

    Args:
        deformable_groups: offset groups over the input channels (``Cin`` must divide by it).
        mask_scale: the modulation mask is ``mask_scale``·sigmoid(m): 2 (default) makes a fresh layer equal the
            plain conv; 1 is DCNv2's own (official YOLACT++ / CenterNet weights load unchanged with it).
        norm: optional module applied after the conv (e.g. ``nn.GroupNorm``); ``activation`` after that.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, dilation=1,
                 groups=1, deformable_groups=1, bias=True, modulated=False, norm=None, activation=None, mask_scale=2.0):
        super().__init__()
        if in_channels % groups or out_channels % groups:
            raise ValueError(f"DeformConvWithOffset: channels {in_channels}->{out_channels} not divisible by groups={groups}")
        if in_channels % deformable_groups:
            raise ValueError(
                f"DeformConvWithOffset: in_channels={in_channels} not divisible by deformable_groups={deformable_groups}"
            )
        k = kernel_size
        self.stride, self.dilation = stride, dilation
        self.padding = dilation * (k - 1) // 2 if padding is None else padding
        self.modulated = modulated
        self.mask_scale = float(mask_scale)
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels // groups, k, k))
        self.bias = nn.Parameter(torch.zeros(out_channels)) if bias else None
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        per_group = (3 if modulated else 2) * k * k
        self.offset_conv = nn.Conv2d(
            in_channels, deformable_groups * per_group, k, stride=stride, padding=self.padding, dilation=dilation
        )
        nn.init.zeros_(self.offset_conv.weight)
        nn.init.zeros_(self.offset_conv.bias)
        self.deformable_groups = deformable_groups
        self.norm = norm
        self.activation = activation

    def forward(self, x):
        out = self.offset_conv(x)
        mask = None
        if self.modulated:
            n_off = 2 * self.deformable_groups * self.weight.shape[-1] ** 2
            offset, mask = out[:, :n_off], self.mask_scale * torch.sigmoid(out[:, n_off:])
        else:
            offset = out
        # torchvision's op has no ONNX symbolic: ONNX export records the pure-PyTorch one (same semantics)
        op = deform_conv2d_reference if torch.onnx.is_in_onnx_export() else deform_conv2d
        y = op(x, offset, self.weight, self.bias, stride=self.stride, padding=self.padding, dilation=self.dilation,
               mask=mask)
        if self.norm is not None:
            y = self.norm(y)
        if self.activation is not None:
            y = self.activation(y)
        return y
