"""Local correlation (FlowNetC / PWC-Net's cost volume with a 1-pixel kernel), shared by VPSNet's fusion and the
PWC-style image flow network."""
import torch
import torch.nn.functional as F

__all__ = ["local_correlation"]


def local_correlation(a, b, max_displacement):
    """``[B,(2d+1)²,H,W]``: channel-mean of ``a(p)·b(p + δ)`` for every displacement δ with |δx|, |δy| ≤ d (zero where
    ``p + δ`` is outside ``b``), displacements in row-major order (δy outer) — FlowNetC's correlation with a 1-pixel
    kernel. ``a``, ``b``: ``[B,C,H,W]``."""
    d = int(max_displacement)
    H, W = a.shape[-2:]
    padded = F.pad(b, (d, d, d, d))
    out = []
    for dy in range(2 * d + 1):
        for dx in range(2 * d + 1):
            out.append((a * padded[:, :, dy:dy + H, dx:dx + W]).mean(1))
    return torch.stack(out, dim=1)
