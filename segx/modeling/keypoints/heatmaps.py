"""Heatmap mechanics shared by the keypoint detectors (CornerNet, CenterNet ×2) and the landmark models
(Stacked Hourglass, ``segx.modeling.landmarks``; RetinaFace landmarks): target drawing, the penalty-reduced
focal loss, peak extraction and sub-pixel argmax decoding. Written once; each architecture picks its variant by
a named option.

Coordinates are heatmap pixels: pixel (row i, col j) is the point (x=j, y=i).
"""
import math

import torch
import torch.nn.functional as F

__all__ = [
    "GAUSSIAN_RADIUS_VARIANTS",
    "gaussian_radius",
    "gaussian_kernel",
    "draw_gaussian",
    "landmark_heatmaps",
    "heatmap_focal_loss",
    "heatmap_peak_nms",
    "topk_peaks",
    "topk_size",
    "gather_at",
    "argmax_decode",
]

# "original": the formula of the first CornerNet release, still used by xingyizhou/CenterNet and
# Duankaiwen/CenterNet (their published numbers depend on it): each root is (b ± sqrt(b²−4ac)) / 2, without
# the division by a, and r1/r2 take the larger root. "corrected": princeton-vl/CornerNet's later fix,
# the smaller roots of the three quadratics divided by 2a (also CornerNet-Lite's).
GAUSSIAN_RADIUS_VARIANTS = ("original", "corrected")


def gaussian_radius(height, width, min_overlap=0.7, variant="original"):
    """The radius (heatmap pixels, float) within which a corner/centre may move while a box of ``height`` ×
    ``width`` keeps IoU ≥ ``min_overlap`` with the ground truth: the minimum over CornerNet's three cases
    (one corner inside and one outside; both inside; both outside). Accepts floats or tensors."""
    if variant not in GAUSSIAN_RADIUS_VARIANTS:
        raise ValueError(f"gaussian_radius: variant must be one of {GAUSSIAN_RADIUS_VARIANTS}, got {variant!r}")
    sqrt = torch.sqrt if torch.is_tensor(height) or torch.is_tensor(width) else math.sqrt
    o = min_overlap
    b1, c1 = height + width, width * height * (1 - o) / (1 + o)
    b2, c2 = 2 * (height + width), (1 - o) * width * height
    a3, b3, c3 = 4 * o, -2 * o * (height + width), (o - 1) * width * height
    sq1 = sqrt(b1**2 - 4 * c1)
    sq2 = sqrt(b2**2 - 16 * c2)
    sq3 = sqrt(b3**2 - 4 * a3 * c3)
    if variant == "original":
        r1, r2, r3 = (b1 + sq1) / 2, (b2 + sq2) / 2, (b3 + sq3) / 2
    else:
        r1, r2, r3 = (b1 - sq1) / 2, (b2 - sq2) / 8, (b3 + sq3) / (2 * a3)
    if torch.is_tensor(r1):
        return torch.minimum(torch.minimum(r1, r2), r3)
    return min(r1, r2, r3)


def gaussian_kernel(radius, sigma=None, device=None):
    """``[2r+1, 2r+1]`` exp(−(x²+y²)/2σ²), σ = diameter/6 by default; values below eps·max are set to 0
    (as the official drawers do, so far tails do not count as 'near a peak' in the focal loss)."""
    radius = int(radius)
    sigma = (2 * radius + 1) / 6 if sigma is None else sigma
    r = torch.arange(-radius, radius + 1, dtype=torch.float32, device=device)
    g = torch.exp(-(r[None, :] ** 2 + r[:, None] ** 2) / (2 * sigma * sigma))
    g[g < torch.finfo(g.dtype).eps * g.max()] = 0
    return g


def draw_gaussian(heatmap, center, radius, k=1.0, sigma=None):
    """Draws ``k·gaussian_kernel(radius)`` centred on integer pixel ``center`` (x, y) into ``heatmap``
    ``[H,W]`` in place, combining with what is there by max; clipped at the borders. Returns ``heatmap``."""
    radius = max(0, int(radius))
    x, y = int(center[0]), int(center[1])
    h, w = heatmap.shape[-2:]
    if not (0 <= x < w and 0 <= y < h):
        return heatmap
    g = gaussian_kernel(radius, sigma, device=heatmap.device).to(heatmap.dtype) * k
    left, right = min(x, radius), min(w - x, radius + 1)
    top, bottom = min(y, radius), min(h - y, radius + 1)
    region = heatmap[y - top : y + bottom, x - left : x + right]
    torch.maximum(region, g[radius - top : radius + bottom, radius - left : radius + right], out=region)
    return heatmap


def landmark_heatmaps(points, size, sigma, kind="gaussian", visible=None):
    """One heatmap per landmark, for heatmap regression (Stacked Hourglass).

    Args:
        points: ``[K,2]`` (x, y) heatmap pixels; drawn around the rounded point (Newell et al.'s convention).
        size: (H, W). sigma: spread in pixels.
        kind: ``"gaussian"`` exp(−d²/2σ²) (peak 1) or ``"cauchy"`` σ/(d²+σ²)^1.5 (peak 1/σ²), each on a
            (6σ+1)² window around the point and 0 outside it.
        visible: ``[K]`` bool; invisible or out-of-map landmarks get an all-zero map.
    Returns:
        ``[K,H,W]`` float32, on the device of ``points`` (the CPU for lists / arrays).
    """
    if kind not in ("gaussian", "cauchy"):
        raise ValueError(f"landmark_heatmaps: kind must be 'gaussian' or 'cauchy', got {kind!r}")
    h, w = size
    device = points.device if torch.is_tensor(points) else torch.device("cpu")
    points = torch.as_tensor(points, dtype=torch.float32, device=device)
    centre = torch.floor(points + 0.5)
    ys = torch.arange(h, dtype=torch.float32, device=device)[None, :, None]
    xs = torch.arange(w, dtype=torch.float32, device=device)[None, None, :]
    dx, dy = xs - centre[:, 0, None, None], ys - centre[:, 1, None, None]
    d2 = dx * dx + dy * dy
    half = 3 * sigma
    window = (dx.abs() <= half) & (dy.abs() <= half)
    maps = torch.exp(-d2 / (2 * sigma * sigma)) if kind == "gaussian" else sigma / (d2 + sigma * sigma) ** 1.5
    inside = (centre[:, 0] >= 0) & (centre[:, 0] < w) & (centre[:, 1] >= 0) & (centre[:, 1] < h)
    if visible is not None:
        inside &= torch.as_tensor(visible, dtype=torch.bool, device=device)
    return maps * window * inside[:, None, None]


def heatmap_focal_loss(pred, target, alpha=2.0, beta=4.0, eps=1e-4):
    """CornerNet's penalty-reduced focal loss, summed over the batch and divided by the number of positives.

    Args:
        pred: ``[B,C,H,W]`` probabilities (after sigmoid); clamped to [eps, 1−eps] as the official code does.
        target: ``[B,C,H,W]`` in [0,1]; pixels equal to 1 are positives.
    Returns: scalar; pos log(p)(1−p)^α, neg log(1−p)p^α(1−y)^β; −(pos + neg)/#pos (−neg when #pos = 0).
    """
    pred = pred.clamp(eps, 1 - eps)
    pos = target.eq(1).to(pred.dtype)
    neg = 1 - pos
    pos_loss = (torch.log(pred) * (1 - pred) ** alpha * pos).sum()
    neg_loss = (torch.log(1 - pred) * pred**alpha * (1 - target) ** beta * neg).sum()
    num_pos = pos.sum()
    return -(pos_loss + neg_loss) / num_pos.clamp(min=1)


def heatmap_peak_nms(heat, kernel=3):
    """Keeps only local maxima (``heat == max_pool(heat)``, a ``kernel``×``kernel`` window), zeroing the rest."""
    hmax = F.max_pool2d(heat, kernel, stride=1, padding=(kernel - 1) // 2)
    return heat * (hmax == heat).to(heat.dtype)


def topk_size(k, n):
    """min(``k``, ``n``) for a top-k whose ``n`` comes from a tensor's shape: a Python int eagerly, a traced value
    while tracing, so an exported graph also takes maps with fewer than ``k`` positions than the traced one had."""
    if torch.jit.is_tracing() and torch.is_tensor(n):
        return torch.clamp(n, max=k)
    return min(k, int(n))


def topk_peaks(heat, k):
    """Top ``k`` of ``heat`` ``[B,C,H,W]``: top-k per class first, then over all classes (CenterNet's order).

    Returns (each ``[B,k']`` with k' = min(k, C·min(k, H·W))): scores, classes (long), flat index into H·W
    (long), ys, xs (float, heatmap pixels).
    """
    b, c, h, w = heat.shape
    k_class = topk_size(k, h * w)
    scores, index = torch.topk(heat.reshape(b, c, h * w), k_class)  # [B,C,kc]
    k_all = topk_size(k, c * k_class)
    top_scores, top = torch.topk(scores.reshape(b, -1), k_all)
    classes = torch.div(top, k_class, rounding_mode="floor")
    index = index.reshape(b, -1).gather(1, top)
    ys = torch.div(index, w, rounding_mode="floor").to(heat.dtype)
    xs = (index % w).to(heat.dtype)
    return top_scores, classes, index, ys, xs


def gather_at(feature, index):
    """``feature`` ``[B,C,H,W]`` read at flat positions ``index`` ``[B,K]`` (into H·W) → ``[B,K,C]``."""
    b, c = feature.shape[:2]
    flat = feature.reshape(b, c, -1)
    return flat.gather(2, index[:, None, :].expand(b, c, index.shape[1])).permute(0, 2, 1)


def argmax_decode(heatmaps, quarter_offset=True):
    """Landmark positions from heatmaps ``[B,K,H,W]``: the arg-max pixel, moved 0.25 px toward the larger
    neighbour along x and along y (Newell et al.; not at the border). Traceable.

    Returns: coords ``[B,K,2]`` (x, y) heatmap pixels, maxvals ``[B,K]``.
    """
    b, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(b, k, h * w)
    maxvals, index = flat.max(dim=2)
    x = index % w
    y = torch.div(index, w, rounding_mode="floor")
    coords = torch.stack([x, y], dim=2).to(heatmaps.dtype)
    if quarter_offset:

        def at(xx, yy):
            return flat.gather(2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None])[..., 0]

        dx = torch.sign(at(x + 1, y) - at(x - 1, y)) * ((x > 0) & (x < w - 1)).to(heatmaps.dtype)
        dy = torch.sign(at(x, y + 1) - at(x, y - 1)) * ((y > 0) & (y < h - 1)).to(heatmaps.dtype)
        coords = coords + 0.25 * torch.stack([dx, dy], dim=2)
    return coords, maxvals
