"""Fast NMS (Bolya et al., YOLACT, ICCV 2019 §3.4), shared by YOLACT and YolactEdge.

Per class, the top-K boxes sorted by score; box j is dropped when any box ranked above it (any, not only
kept ones) overlaps it by more than the threshold: the column max of the upper triangle of the IoU matrix.
It keeps a subset of what standard NMS keeps, all in a few batched tensor ops (no sequential loop), and
traces (no Python control flow on tensor values).
"""
import torch

__all__ = ["fast_nms_keep", "multiclass_fast_nms"]


def _batched_iou(boxes):
    """``[C,K,4]`` xyxy → ``[C,K,K]`` pairwise IoU within each row."""
    area = (boxes[..., 2] - boxes[..., 0]).clamp(min=0) * (boxes[..., 3] - boxes[..., 1]).clamp(min=0)
    lt = torch.max(boxes[:, :, None, :2], boxes[:, None, :, :2])
    rb = torch.min(boxes[:, :, None, 2:], boxes[:, None, :, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=-1)
    return inter / (area[:, :, None] + area[:, None, :] - inter).clamp(min=1e-12)


def fast_nms_keep(sorted_boxes, iou_threshold):
    """``sorted_boxes`` ``[C,K,4]`` (or ``[K,4]``), each row sorted by descending score → keep mask
    ``[C,K]`` (``[K]``): box j survives iff IoU(i, j) ≤ ``iou_threshold`` for every i < j."""
    single = sorted_boxes.dim() == 2
    boxes = sorted_boxes[None] if single else sorted_boxes
    iou = _batched_iou(boxes).triu(diagonal=1)
    keep = iou.max(dim=1).values <= iou_threshold
    return keep[0] if single else keep


def multiclass_fast_nms(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=100):
    """YOLACT's ``Detect`` for one image.

    Args:
        boxes: ``[P,4]`` xyxy decoded boxes; scores: ``[P,C]`` foreground class probabilities.
        score_threshold: a prior is a candidate when its best class score exceeds this (official ``conf_thresh``);
            a candidate then competes in every class.
        top_k: candidates per class entering Fast NMS; max_detections: kept overall, by score.
    Returns:
        ``(prior_idx [N], classes [N], scores [N])`` sorted by descending score, N ≤ ``max_detections``.
    """
    num_priors, num_classes = scores.shape
    candidate = scores.max(dim=1).values > score_threshold  # [P]
    # non-candidates sink below every candidate (probabilities are ≥ 0), so each class's top-k equals the
    # top-k among candidates; the filler rows are dropped after NMS and cannot suppress anything above them
    masked = torch.where(candidate[:, None], scores, torch.full_like(scores, -1.0)).t()  # [C,P]
    k = min(top_k, num_priors)
    cls_scores, idx = masked.topk(k, dim=1)  # [C,K], sorted
    keep = fast_nms_keep(boxes[idx], iou_threshold) & (cls_scores >= 0)
    flat_scores = torch.where(keep, cls_scores, torch.full_like(cls_scores, -1.0)).reshape(-1)
    n = min(max_detections, flat_scores.numel())
    top_scores, order = flat_scores.topk(n)
    valid = top_scores >= 0
    order = order[valid]
    classes = torch.div(order, k, rounding_mode="floor")
    return idx.reshape(-1)[order], classes, top_scores[valid]
