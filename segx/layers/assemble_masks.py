"""YOLACT mask assembly: sigmoid of a linear combination of prototypes, cropped to each box."""
from typing import Optional

import torch

from segx.layers._dispatch import check_same, check_tensor, quiet_tracer_warnings, use_kernel

__all__ = ["assemble_masks", "assemble_masks_reference"]


def _prepare(protos, coeffs, boxes, batch_idx):
    fn = "assemble_masks"
    check_tensor(protos, "protos", fn)
    check_tensor(coeffs, "coeffs", fn)
    check_tensor(boxes, "boxes", fn)
    if protos.dim() == 3:
        protos = protos.unsqueeze(0)
    if protos.dim() != 4:
        raise ValueError(f"{fn}: protos must be [B,k,H,W] or [k,H,W], got shape {tuple(protos.shape)}")
    B, k = protos.shape[:2]
    if coeffs.dim() != 2 or coeffs.shape[1] != k:
        raise ValueError(f"{fn}: coeffs must be [N,k] with k={k} (protos' channels), got shape {tuple(coeffs.shape)}")
    N = coeffs.shape[0]
    if boxes.dim() != 2 or tuple(boxes.shape) != (N, 4):
        raise ValueError(f"{fn}: boxes must be [N,4] = {(N, 4)} (x0,y0,x1,y1), got shape {tuple(boxes.shape)}")
    check_same(protos, coeffs, "protos", "coeffs", fn)
    check_same(protos, boxes, "protos", "boxes", fn, dtype=False)
    if boxes.dtype in (torch.float16, torch.bfloat16):
        boxes = boxes.float()  # pixel centres j + 0.5 must be exact
    if batch_idx is None:
        if B > 1:
            raise ValueError(f"{fn}: batch_idx is required when protos holds {B} images")
    else:
        check_tensor(batch_idx, "batch_idx", fn, floating=False)
        if batch_idx.is_floating_point() or batch_idx.is_complex() or batch_idx.dtype == torch.bool:
            raise ValueError(f"{fn}: batch_idx must be an integer tensor, got dtype {batch_idx.dtype}")
        if batch_idx.dim() != 1 or batch_idx.shape[0] != N:
            raise ValueError(f"{fn}: batch_idx must be [N] = [{N}], got shape {tuple(batch_idx.shape)}")
        check_same(protos, batch_idx, "protos", "batch_idx", fn, dtype=False)
        # A value check reads the tensor: done on CPU only, and not while tracing (it would bake the
        # inputs' values into the trace); the CPU kernel re-checks, the CUDA kernel asserts.
        if N > 0 and batch_idx.device.type == "cpu" and not torch.jit.is_tracing():
            lo, hi = int(batch_idx.min()), int(batch_idx.max())
            if lo < 0 or hi >= B:
                raise ValueError(f"{fn}: batch_idx values must lie in [0, {B}) (protos' images), got range [{lo}, {hi}]")
        batch_idx = batch_idx.long()
    return protos, boxes, batch_idx


def assemble_masks(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    boxes: torch.Tensor,
    batch_idx: Optional[torch.Tensor] = None,
    crop: bool = True,
) -> torch.Tensor:
    """YOLACT masks [N,H,W] from prototypes and per-detection coefficients.

    Args:
        protos: [B,k,H,W] (or [k,H,W]) prototype maps.
        coeffs: [N,k] mask coefficients, same dtype as protos.
        boxes: [N,4] x0,y0,x1,y1 in prototype pixels. Pixel (i, j) is inside when
            x0 <= j+0.5 < x1 and y0 <= i+0.5 < y1. No gradient.
        batch_idx: [N] integer image index of each detection; optional when B == 1.
        crop: False computes the whole map for every detection.
    Returns:
        [N,H,W]: sigmoid(coeffs[n] . protos[batch_idx[n]]) inside the box, 0 outside.
    """
    with quiet_tracer_warnings():
        protos, boxes, batch_idx = _prepare(protos, coeffs, boxes, batch_idx)
    if use_kernel("assemble_masks_forward", protos):
        return torch.ops.segx.assemble_masks_forward(protos, coeffs, boxes, batch_idx, crop)
    return _reference(protos, coeffs, boxes, batch_idx, crop)


def assemble_masks_reference(
    protos: torch.Tensor,
    coeffs: torch.Tensor,
    boxes: torch.Tensor,
    batch_idx: Optional[torch.Tensor] = None,
    crop: bool = True,
) -> torch.Tensor:
    """Pure-PyTorch :func:`assemble_masks`: matmul + sigmoid over the whole map, then the box mask."""
    protos, boxes, batch_idx = _prepare(protos, coeffs, boxes, batch_idx)
    return _reference(protos, coeffs, boxes, batch_idx, crop)


def _reference(protos, coeffs, boxes, batch_idx, crop):
    B, k, H, W = protos.shape
    N = coeffs.shape[0]
    flat = protos.reshape(B, k, H * W)
    if batch_idx is None:
        logits = coeffs @ flat[0]
    else:
        # [B,N,HW] then pick each detection's image; cheaper than gathering [N,k,HW] prototypes
        logits = (coeffs @ flat)[batch_idx, torch.arange(N, device=coeffs.device)]
    masks = torch.sigmoid(logits).reshape(N, H, W)
    if not crop:
        return masks
    cols = torch.arange(W, device=boxes.device, dtype=boxes.dtype) + 0.5
    rows = torch.arange(H, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_x = (cols >= boxes[:, 0:1]) & (cols < boxes[:, 2:3])  # [N,W]
    in_y = (rows >= boxes[:, 1:2]) & (rows < boxes[:, 3:4])  # [N,H]
    inside = in_y.unsqueeze(2) & in_x.unsqueeze(1)
    return torch.where(inside, masks, torch.zeros_like(masks))
