"""Backward warping of a feature map by a dense optical flow (YolactEdge, VPSNet)."""
import torch
import torch.nn.functional as F

from segx.layers._dispatch import check_same, check_tensor, quiet_tracer_warnings, use_kernel

__all__ = ["flow_warp", "flow_warp_reference"]


def _check(x, flow):
    check_tensor(x, "x", "flow_warp")
    check_tensor(flow, "flow", "flow_warp")
    if x.dim() != 4:
        raise ValueError(f"flow_warp: x must be [B,C,H,W], got shape {tuple(x.shape)}")
    B, _, H, W = x.shape
    if flow.dim() != 4 or tuple(flow.shape) != (B, 2, H, W):
        raise ValueError(f"flow_warp: flow must be [B,2,H,W] = {(B, 2, H, W)} to match x, got {tuple(flow.shape)}")
    check_same(x, flow, "x", "flow", "flow_warp")


def flow_warp(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """Samples ``x`` [B,C,H,W] at each pixel displaced by ``flow`` [B,2,H,W] (dx, dy in pixels of x).

    out[b,c,y,x] = bilinear(x[b,c], x + dx[b,y,x], y + dy[b,y,x]), with zeros outside the map; equal to
    ``grid_sample(x, grid, align_corners=True, padding_mode="zeros")`` on the matching grid.
    Differentiable w.r.t. x and flow.
    """
    with quiet_tracer_warnings():
        _check(x, flow)
    if use_kernel("flow_warp_forward", x):
        return torch.ops.segx.flow_warp_forward(x, flow)
    return flow_warp_reference(x, flow)


def flow_warp_reference(x: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``grid_sample`` formulation of :func:`flow_warp`. A size-1 axis is padded with a zero row/column
    first: with align_corners=True grid_sample cannot address a size-1 axis by pixel, and the zero
    padding reproduces padding_mode="zeros" exactly."""
    _check(x, flow)
    B, C, H, W = x.shape
    ph, pw = max(0, 2 - H), max(0, 2 - W)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph))
    Hp, Wp = H + ph, W + pw
    xs = torch.arange(W, device=x.device, dtype=flow.dtype).view(1, 1, W)
    ys = torch.arange(H, device=x.device, dtype=flow.dtype).view(1, H, 1)
    gx = (xs + flow[:, 0]) * (2.0 / (Wp - 1)) - 1.0
    gy = (ys + flow[:, 1]) * (2.0 / (Hp - 1)) - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=True)
