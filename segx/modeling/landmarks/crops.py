"""Square person crops of the top-down landmark models (Stacked Hourglass): geometry, jitter and sampling.

Coordinates: a crop of side ``s`` centred on ``c`` maps the image point ``p`` to normalised crop coordinates
``u = R⁻¹(p − c)/(s/2)`` ∈ [−1, 1]² (corners of the crop; rotation ``R`` only in training); heatmap pixel
``h`` (its centre) is ``u = (2h + 1)/H_m − 1``. ``half`` is ``s/2`` in image pixels.
"""
import math

import torch
import torch.nn.functional as F

from detectron2.layers.wrappers import shapes_to_tensor

__all__ = [
    "square_crops", "crop_jitter", "crop_grid", "image_to_crop", "crop_to_image", "sample_crops", "whole_image_box",
    "person_boxes",
]


def square_crops(boxes, padding):
    """Boxes ``[N,4]`` (x0, y0, x1, y1) → centres ``[N,2]`` and half-sides ``[N]`` of the square crops
    (longer side × ``padding``)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0) * (0.5 * padding)
    return centres, half


def crop_jitter(n, scale=0.0, rotation=0.0, rotation_prob=0.0, device=None):
    """Training jitter of ``n`` crops: scale factors ``[N]`` drawn from [1−scale, 1+scale] and the cos/sin ``[N]``
    of angles drawn from [−rotation, rotation] degrees with probability ``rotation_prob`` (else 0)."""
    factor = 1 + (torch.rand(n, device=device) * 2 - 1) * scale
    angle = (torch.rand(n, device=device) * 2 - 1) * math.radians(rotation)
    angle = angle * (torch.rand(n, device=device) < rotation_prob).to(angle.dtype)
    return factor, torch.cos(angle), torch.sin(angle)


def _rotate(v, cos, sin):
    """Rotates ``v`` ``[N,M,2]`` by the per-row angle given as ``cos``/``sin`` ``[N]``."""
    x, y = v[..., 0], v[..., 1]
    return torch.stack([cos[:, None] * x - sin[:, None] * y, sin[:, None] * x + cos[:, None] * y], dim=-1)


def crop_grid(centres, half, image_hw, size, cos=None, sin=None):
    """``grid_sample`` grid ``[N,size,size,2]`` for the square crops (``align_corners=False``); ``image_hw``:
    (H, W) numbers or tensors. Output pixel (i, j) samples the image point ``c + R·half·(u_j, u_i)`` with
    ``u_j = (2j+1)/size − 1``."""
    u = (torch.arange(size, dtype=centres.dtype, device=centres.device) * 2 + 1) / size - 1
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), dim=-1).reshape(1, size * size, 2)
    grid = grid.expand(centres.shape[0], -1, -1)
    if cos is not None:
        grid = _rotate(grid, cos, sin)
    points = centres[:, None, :] + grid * half[:, None, None]
    h, w = image_hw
    w = torch.as_tensor(w, dtype=centres.dtype, device=centres.device)
    h = torch.as_tensor(h, dtype=centres.dtype, device=centres.device)
    return (points * torch.stack([2.0 / w, 2.0 / h]) - 1).reshape(-1, size, size, 2)


def image_to_crop(points, centres, half, cos=None, sin=None):
    """Image points ``[N,K,2]`` → normalised crop coordinates ``[N,K,2]``."""
    u = (points - centres[:, None, :]) / half[:, None, None]
    return u if cos is None else _rotate(u, cos, -sin)


def crop_to_image(u, centres, half):
    """Normalised crop coordinates ``[N,K,2]`` (unrotated crops) → image points ``[N,K,2]``."""
    return centres[:, None, :] + u * half[:, None, None]


def sample_crops(image, centres, half, size, cos=None, sin=None):
    """Bilinear crops ``[N,C,size,size]`` of ``image`` ``[C,H,W]`` (zeros outside it)."""
    grid = crop_grid(centres, half, shapes_to_tensor(image.shape[-2:], image.device), size, cos, sin)
    src = image[None].expand(centres.shape[0], -1, -1, -1)
    return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def whole_image_box(image_hw, dtype=torch.float32, device=None):
    """``[1,4]`` box (0, 0, W, H) of an image of size ``image_hw`` (a ``[2]`` tensor: traceable)."""
    zero = torch.zeros_like(image_hw[0]).to(dtype=dtype, device=device)
    return torch.stack([zero, zero, image_hw[1].to(zero), image_hw[0].to(zero)])[None]


def person_boxes(instances, image_hw, device=None):
    """The person boxes ``[N,4]`` of an inference input and whether they were given: ``instances.pred_boxes``
    (or ``gt_boxes``), or, with ``instances`` None, the whole image (``image_hw`` a ``[2]`` tensor)."""
    if instances is None:
        return whole_image_box(image_hw, device=device), False
    field = "pred_boxes" if instances.has("pred_boxes") else "gt_boxes" if instances.has("gt_boxes") else None
    if field is None:
        raise ValueError("StackedHourglass: input 'instances' need pred_boxes or gt_boxes (the person boxes)")
    return instances.get(field).tensor.to(device), True
