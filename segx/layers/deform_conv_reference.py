"""A pure-PyTorch deformable convolution with ``torchvision.ops.deform_conv2d``'s signature and semantics.

torchvision's op has no ONNX symbolic, so ``DeformConvWithOffset`` records this one during ONNX export (YOLACT++,
CenterNet DLA-34 / ResNet-DCN, UPSNet's deformable semantic head); it is also the answer key of the tests. It is
made of ops ONNX has (floor, gather, matmul): every sampling point is read by bilinear interpolation from its
four neighbours, a neighbour outside the image counting as 0 (torchvision's ``bilinear_interpolate``), then the
sampled columns are multiplied with the weights as one (grouped) matrix product.
"""
import torch

from segx.layers._dispatch import quiet_tracer_warnings

__all__ = ["deform_conv2d_reference"]


def _pair(v):
    return (int(v[0]), int(v[1])) if isinstance(v, (tuple, list)) else (int(v), int(v))


def deform_conv2d_reference(input, offset, weight, bias=None, stride=(1, 1), padding=(0, 0), dilation=(1, 1),
                            mask=None):
    """Same arguments and result as ``torchvision.ops.deform_conv2d``.

    Args:
        input: ``[B,Cin,H,W]``. offset: ``[B, 2·G·kh·kw, Ho, Wo]`` (per offset group g and kernel tap (i, j):
            channel ``g·2·kh·kw + 2·(i·kw + j)`` is the row offset, the next one the column offset, in pixels).
        weight: ``[Cout, Cin/groups, kh, kw]`` (``groups`` = Cin / weight's second dim). bias: ``[Cout]`` or None.
        mask: ``[B, G·kh·kw, Ho, Wo]`` modulation (DCNv2) or None.
    Returns:
        ``[B,Cout,Ho,Wo]``.
    """
    sh, sw = _pair(stride)
    ph, pw = _pair(padding)
    dh, dw = _pair(dilation)
    b, h, w = input.shape[0], input.shape[2], input.shape[3]  # traced values when exporting: any size
    ho, wo = offset.shape[-2], offset.shape[-1]
    with quiet_tracer_warnings():  # channel counts are fixed by the weights: Python ints in the graph
        cin, n_offset_channels = int(input.shape[1]), int(offset.shape[1])
        cout, cin_g, kh, kw = (int(v) for v in weight.shape)
    groups = cin // cin_g
    taps = kh * kw
    n_off = n_offset_channels // (2 * taps)  # offset groups
    if n_offset_channels != 2 * n_off * taps or n_off == 0 or cin % n_off:
        raise ValueError(f"deform_conv2d_reference: offset has {n_offset_channels} channels, expected 2·G·{kh}·{kw} "
                         f"with G dividing Cin={cin}")
    dtype = input.dtype
    # sampling positions [B, G, taps, Ho, Wo]
    off = offset.reshape(b, n_off, taps, 2, ho, wo)
    tap_y = (torch.arange(kh, dtype=dtype, device=input.device) * dh).repeat_interleave(kw)
    tap_x = (torch.arange(kw, dtype=dtype, device=input.device) * dw).repeat(kh)
    out_y = torch.arange(ho, dtype=dtype, device=input.device) * sh - ph
    out_x = torch.arange(wo, dtype=dtype, device=input.device) * sw - pw
    y = off[:, :, :, 0] + tap_y.view(1, 1, taps, 1, 1) + out_y.view(1, 1, 1, -1, 1)
    x = off[:, :, :, 1] + tap_x.view(1, 1, taps, 1, 1) + out_x.view(1, 1, 1, 1, -1)
    # torchvision: a point with y <= -1, y >= H, x <= -1 or x >= W reads 0
    inside = (y > -1) & (y < h) & (x > -1) & (x < w)
    y0, x0 = torch.floor(y), torch.floor(x)
    ly, lx = y - y0, x - x0
    hy, hx = 1 - ly, 1 - lx
    flat = input.reshape(b * n_off, cin // n_off, h * w)
    n_points = taps * ho * wo
    sampled = torch.zeros((b * n_off, cin // n_off, n_points), dtype=dtype, device=input.device)
    for dy, dx, wt in ((0, 0, hy * hx), (0, 1, hy * lx), (1, 0, ly * hx), (1, 1, ly * lx)):
        yy, xx = y0 + dy, x0 + dx
        valid = inside & (yy >= 0) & (yy <= h - 1) & (xx >= 0) & (xx <= w - 1)
        index = (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1)).long().reshape(b * n_off, 1, n_points)
        values = torch.gather(flat, 2, index.expand(-1, cin // n_off, -1))
        sampled = sampled + values * (wt * valid.to(dtype)).reshape(b * n_off, 1, n_points)
    sampled = sampled.reshape(b, n_off, cin // n_off, taps, ho, wo)
    if mask is not None:
        sampled = sampled * mask.reshape(b, n_off, 1, taps, ho, wo)
    # columns [B, groups, Cin_g·taps, Ho·Wo] (channel-major, taps row-major: weight's flattening)
    cols = sampled.reshape(b, groups, cin_g * taps, ho * wo)
    out = torch.matmul(weight.reshape(groups, cout // groups, cin_g * taps), cols)  # [B, groups, Cout_g, Ho·Wo]
    out = out.reshape(b, cout, ho, wo)
    if bias is not None:
        out = out + bias.view(1, -1, 1, 1)
    return out
