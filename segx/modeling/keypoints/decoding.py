"""Box decoding of the keypoint detectors: corner pairing (CornerNet), the central-region check with centre
keypoints (CenterNet: keypoint triplets), Gaussian soft-NMS, and centre + size boxes (CenterNet: objects as
points).

Follows princeton-vl/CornerNet ``models/py_utils/kp_utils.py`` (``_decode``) and ``test/coco.py``,
Duankaiwen/CenterNet ``test/coco.py`` (centre matching) and xingyizhou/CenterNet ``models/decode.py``
(``ctdet_decode``). Everything works on tensors with static shapes so
``torch.jit.trace`` / ONNX export record it; soft-NMS runs a fixed number of greedy steps (the detections
kept), stopping early only in eager mode, where it gives the same result.
"""
import torch

from detectron2.structures import Boxes, pairwise_iou

from segx.modeling.keypoints.heatmaps import gather_at, heatmap_peak_nms, topk_peaks, topk_size

__all__ = [
    "decode_corner_pairs", "decode_center_keypoints", "center_region_check", "soft_nms_gaussian", "centernet_decode",
    "clip_boxes", "finite_clamp", "REGRESSION_CLAMP",
]

# Bound (heatmap pixels) on every regressed box quantity before it becomes a coordinate: CenterNet's sizes and
# offsets, the corner and centre offsets. As detectron2 clamps its box deltas (``Box2BoxTransform``'s scale_clamp),
# so that no model emits non-finite boxes; a trained model's values are far inside it (a map side is ≤ ~10³ px),
# so the official outputs are unchanged. NaN becomes 0, ±inf the bound.
REGRESSION_CLAMP = 1e4


def finite_clamp(x, bound=REGRESSION_CLAMP):
    """``x`` with NaN → 0 and every value clamped to [−bound, bound] (traceable; ONNX: Equal, Where, Clip)."""
    x = torch.where(x == x, x, torch.zeros_like(x))
    return x.clamp(min=-bound, max=bound)


def decode_corner_pairs(
    tl_heat, br_heat, tl_emb, br_emb, tl_off, br_off, *, k=100, nms_kernel=3, embedding_threshold=0.5,
    num_candidates=1000,
):
    """Pairs the top-``k`` top-left and bottom-right corners of each image into boxes.

    Args:
        tl_heat, br_heat: ``[B,C,H,W]`` corner probabilities (after sigmoid).
        tl_emb, br_emb: ``[B,1,H,W]`` embeddings. tl_off, br_off: ``[B,2,H,W]`` (dx, dy) sub-pixel offsets.
        k: corners kept per map (after ``nms_kernel``×``nms_kernel`` peak NMS, top-k per class then overall).
        embedding_threshold: pairs whose embeddings differ by more are rejected.
        num_candidates: best pairs returned per image.
    Returns:
        boxes ``[B,N,4]`` (x0, y0, x1, y1 in heatmap pixels), scores ``[B,N]`` (mean of the two corner scores;
        −1 for rejected pairs: different classes, embedding distance > threshold, x1 < x0 or y1 < y0, or a
        corner suppressed by the peak NMS that only fills the top-k),
        classes ``[B,N]`` long; N = min(num_candidates, k'²).
    """
    tl_heat = heatmap_peak_nms(tl_heat, nms_kernel)
    br_heat = heatmap_peak_nms(br_heat, nms_kernel)
    tl_s, tl_c, tl_i, tl_y, tl_x = topk_peaks(tl_heat, k)
    br_s, br_c, br_i, br_y, br_x = topk_peaks(br_heat, k)
    b, kk = tl_s.shape
    tl_o, br_o = finite_clamp(gather_at(tl_off, tl_i)), finite_clamp(gather_at(br_off, br_i))  # [B,K,2]
    tl_x, tl_y = tl_x + tl_o[..., 0], tl_y + tl_o[..., 1]
    br_x, br_y = br_x + br_o[..., 0], br_y + br_o[..., 1]
    tl_e, br_e = gather_at(tl_emb, tl_i)[..., 0], gather_at(br_emb, br_i)[..., 0]

    # rows: top-left corner, columns: bottom-right corner
    x0, y0 = tl_x[:, :, None].expand(b, kk, kk), tl_y[:, :, None].expand(b, kk, kk)
    x1, y1 = br_x[:, None, :].expand(b, kk, kk), br_y[:, None, :].expand(b, kk, kk)
    boxes = torch.stack([x0, y0, x1, y1], dim=3).reshape(b, kk * kk, 4)
    scores = (tl_s[:, :, None] + br_s[:, None, :]) / 2
    # A map with fewer than k peaks fills its top-k with NMS-suppressed positions (score 0, in an arbitrary
    # order that differs between PyTorch and ONNX); they are not corners. With >= k peaks this never applies.
    reject = (
        (tl_s[:, :, None] <= 0)
        | (br_s[:, None, :] <= 0)
        | (tl_c[:, :, None] != br_c[:, None, :])
        | ~((tl_e[:, :, None] - br_e[:, None, :]).abs() <= embedding_threshold)  # NaN embeddings: rejected
        | (x1 < x0)
        | (y1 < y0)
    )
    scores = torch.where(reject, torch.full_like(scores, -1.0), scores).reshape(b, kk * kk)
    classes = tl_c[:, :, None].expand(b, kk, kk).reshape(b, kk * kk)
    scores, top = torch.topk(scores, topk_size(num_candidates, kk * kk), dim=1)
    boxes = boxes.gather(1, top[..., None].expand(b, top.shape[1], 4))
    return boxes, scores, classes.gather(1, top)


def decode_center_keypoints(ct_heat, ct_off, *, k=70, nms_kernel=3):
    """Top-``k`` centre keypoints: (x, y) ``[B,K,2]`` heatmap pixels (with offsets), scores ``[B,K]``
    (descending), classes ``[B,K]``."""
    ct_heat = heatmap_peak_nms(ct_heat, nms_kernel)
    s, c, i, y, x = topk_peaks(ct_heat, k)
    off = finite_clamp(gather_at(ct_off, i))
    return torch.stack([x + off[..., 0], y + off[..., 1]], dim=2), s, c


def center_region_check(
    boxes, scores, classes, centers, center_scores, center_classes, *, area_threshold=22500.0, n_small=3,
    n_large=5,
):
    """CenterNet's triplet test: a box is kept only if a centre keypoint of its class lies strictly inside its
    central region, the middle 1/n of the box along x and along y (n = ``n_small`` for box area
    ≤ ``area_threshold``, else ``n_large``); its score becomes (2·s + s_center)/3 with the best-scoring such
    centre, otherwise −1.

    Args:
        boxes ``[B,N,4]``, scores ``[B,N]`` (−1 = already rejected), classes ``[B,N]``;
        centers ``[B,K,2]`` in the boxes' units, center_scores ``[B,K]`` sorted descending, center_classes ``[B,K]``.
    Returns: new scores ``[B,N]``.
    """
    x0, y0, x1, y1 = boxes.unbind(-1)
    area = (x1 - x0) * (y1 - y0)
    n = torch.where(
        area <= area_threshold, torch.full_like(area, float(n_small)), torch.full_like(area, float(n_large))
    )
    lo, hi = (n + 1) / (2 * n), (n - 1) / (2 * n)  # weights of the near and far edge
    left, right = lo * x0 + hi * x1, hi * x0 + lo * x1
    top, bottom = lo * y0 + hi * y1, hi * y0 + lo * y1
    cx, cy = centers[..., 0][:, :, None], centers[..., 1][:, :, None]  # [B,K,1]
    inside = (
        (cx > left[:, None, :]) & (cx < right[:, None, :]) & (cy > top[:, None, :]) & (cy < bottom[:, None, :])
        & (center_classes[:, :, None] == classes[:, None, :])
        & (center_scores[:, :, None] > 0)  # NMS-suppressed fillers of the top-k are not centres
    )  # [B,K,N]
    inside = inside.to(scores.dtype)  # float reductions: ONNX has no bool ReduceMax / uint8 ArgMax parity
    matched = inside.amax(dim=1) > 0
    first = inside.argmax(dim=1)  # the first match = the best-scoring matching centre
    s_center = center_scores.gather(1, first)
    new = (2 * scores + s_center) / 3
    return torch.where(matched & (scores > -1), new, torch.full_like(scores, -1.0))


def soft_nms_gaussian(boxes, scores, classes, *, sigma=0.5, score_threshold=0.001, max_detections=100):
    """Gaussian soft-NMS within each class (Bodla et al. 2017; CornerNet's test setting): repeatedly take the
    highest-scoring remaining box and multiply the scores of same-class boxes by exp(−IoU²/σ); boxes whose
    score falls below ``score_threshold`` are dropped. Boxes are continuous coordinates (detectron2's IoU, no
    +1 pixel).

    Args: boxes ``[N,4]``, scores ``[N]`` (entries < ``score_threshold`` are ignored), classes ``[N]``.
    Returns: (index ``[M]`` into the inputs, decayed scores ``[M]``), M ≤ ``max_detections``, in selection
    order (scores non-increasing), which is also the order of the top ``max_detections`` after full soft-NMS.
    """
    n = boxes.shape[0]
    steps = min(n, max_detections)
    if steps == 0:
        return torch.zeros(0, dtype=torch.long, device=boxes.device), scores[:0]
    iou = pairwise_iou(Boxes(boxes), Boxes(boxes))
    same = classes[:, None] == classes[None, :]
    decay = torch.where(same, torch.exp(-(iou * iou) / sigma), torch.ones_like(iou))
    cur = scores
    alive = scores >= score_threshold
    positions = torch.arange(n, device=boxes.device)
    picked, picked_scores = [], []
    tracing = torch.jit.is_tracing()
    for _ in range(steps):
        masked = torch.where(alive, cur, torch.full_like(cur, -1.0))
        best, j = masked.max(dim=0)
        picked.append(j)
        picked_scores.append(best)
        cur = cur * decay[j]
        alive = alive & (positions != j) & (cur >= score_threshold)
        if not tracing and not bool(alive.any()):
            break
    picked, picked_scores = torch.stack(picked), torch.stack(picked_scores)
    keep = picked_scores >= score_threshold
    return picked[keep], picked_scores[keep]


def centernet_decode(heat, wh, offset, k=100, nms_kernel=3):
    """CenterNet's detections from the head outputs (traceable): peaks, top-``k``, box = centre + offset ± size/2.

    Args:
        heat: ``[B,C,H,W]`` probabilities. wh, offset: ``[B,2,H,W]`` output pixels; the values read at the peaks
            go through ``finite_clamp`` (NaN → 0, |v| ≤ ``REGRESSION_CLAMP``), so the boxes are always finite.
    Returns:
        boxes ``[B,K,4]`` x0,y0,x1,y1 in output pixels, scores ``[B,K]``, classes ``[B,K]`` (long).
    """
    heat = heatmap_peak_nms(heat, nms_kernel)
    scores, classes, index, ys, xs = topk_peaks(heat, k)
    size = finite_clamp(gather_at(wh, index))
    off = finite_clamp(gather_at(offset, index))
    cx, cy = xs + off[..., 0], ys + off[..., 1]
    half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
    return boxes, scores, classes


def clip_boxes(boxes, image_size):
    """``boxes`` ``[N,4]`` clamped to the image (h, w); the sizes may be tensors while tracing."""
    h, w = image_size
    lo = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    hi = torch.stack([torch.as_tensor(v, dtype=boxes.dtype, device=boxes.device) for v in (w, h, w, h)])
    return torch.minimum(torch.maximum(boxes, lo), hi)
