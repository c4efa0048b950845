"""Corner pooling (CornerNet): a running max along one axis of a feature map."""
import torch

from segx.layers._dispatch import check_tensor, quiet_tracer_warnings, use_kernel

__all__ = ["corner_pool", "corner_pool_reference", "DIRECTIONS"]

DIRECTIONS = ("top", "bottom", "left", "right")
# direction -> (axis, whether the scan runs from the last index towards 0)
_AXIS = {"top": (2, True), "bottom": (2, False), "left": (3, True), "right": (3, False)}


def _check(x, direction):
    check_tensor(x, "x", "corner_pool")
    if x.dim() != 4:
        raise ValueError(f"corner_pool: x must be [B,C,H,W], got shape {tuple(x.shape)}")
    if direction not in DIRECTIONS:
        raise ValueError(f"corner_pool: direction must be one of {DIRECTIONS}, got {direction!r}")


def corner_pool(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Directional running max of ``x`` [B,C,H,W] -> [B,C,H,W].

    "top": out[i,j] = max_{i'>=i} x[i',j]; "bottom": max_{i'<=i}; "left": max_{j'>=j} x[i,j'];
    "right": max_{j'<=j}. The max is scanned from the far end (e.g. from the last row for "top") and
    only moves on a strictly greater value, so on ties the gradient goes to the tied element met first in
    that scan, i.e. the one farthest from the output position.
    """
    with quiet_tracer_warnings():
        _check(x, direction)
    if use_kernel("corner_pool_forward", x):
        return torch.ops.segx.corner_pool_forward(x, direction)
    return corner_pool_reference(x, direction)


def _prefix_max(y: torch.Tensor, dim: int, lowest) -> torch.Tensor:
    """Inclusive running max along ``dim``; cummax eagerly, log-step doubling when exporting to ONNX
    (which has no cummax). The doubling takes enough steps for ``_DOUBLING_LENGTH`` positions whatever the traced
    size, and each step shifts by padding then slicing to the input's (dynamic) length, so the exported graph is
    right at any size up to that length, not only at the traced one."""
    if not torch.onnx.is_in_onnx_export() and not _FORCE_DOUBLING:
        return torch.cummax(y, dim)[0]
    n = y.shape[dim]
    step = 1
    while step < max(int(n), _DOUBLING_LENGTH):
        shape = list(y.shape)
        shape[dim] = step
        pad = y.new_full(shape, lowest)
        y = torch.maximum(y, torch.cat([pad, y], dim).narrow(dim, 0, n))
        step *= 2
    return y


_DOUBLING_LENGTH = 4096  # feature-map positions the exported scan covers (16384 input px at stride 4)


_FORCE_DOUBLING = False  # tests flip this to check the ONNX path eagerly


def corner_pool_reference(x: torch.Tensor, direction: str) -> torch.Tensor:
    """Pure-PyTorch corner pool with the same values and the same tie-breaking gradient as the kernel.

    The scan is made to run forwards (flip for top/left); the arg-max of each position is the last
    position up to it where the running max strictly increased, and the output gathers x there, so
    autograd sends each gradient to exactly that element.
    """
    _check(x, direction)
    dim, backwards = _AXIS[direction]
    y = x.flip(dim) if backwards else x
    n = y.shape[dim]
    if n == 0 or y.numel() == 0:
        return x.clone()
    vals = _prefix_max(y.detach(), dim, float("-inf"))
    prev = torch.cat([torch.full_like(vals.narrow(dim, 0, 1), float("-inf")), vals.narrow(dim, 0, n - 1)], dim)
    shape = [1, 1, 1, 1]
    shape[dim] = n
    pos = torch.arange(n, device=x.device).view(shape)
    arg = _prefix_max(torch.where(vals > prev, pos, torch.zeros_like(pos)).expand_as(y), dim, 0)
    out = y.gather(dim, arg)
    return out.flip(dim) if backwards else out
