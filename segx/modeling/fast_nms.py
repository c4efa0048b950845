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
    ``[C,K]`` (``[K]``): box j survives iff IoU(i, j) ≤ ``iou_threshold`` for every i < j (K may be 0)."""
    single = sorted_boxes.dim() == 2
    boxes = sorted_boxes[None] if single else sorted_boxes
    iou = _batched_iou(boxes).triu(diagonal=1)
    # "no box above j overlaps it by more than the threshold": the column max ≤ threshold, written as a count so
    # that it also holds for K = 0 (a max over an empty dimension is an error)
    keep = (iou > iou_threshold).sum(dim=1) == 0
    return keep[0] if single else keep


def multiclass_fast_nms(boxes, scores, score_threshold=0.05, iou_threshold=0.5, top_k=200, max_detections=100):
    """YOLACT's ``Detect`` for one image, step for step as dbolya/yolact's ``Detect.fast_nms``.

    Args:
        boxes: ``[P,4]`` xyxy decoded boxes; scores: ``[P,C]`` foreground class probabilities.
        score_threshold: a prior is a candidate when its best class score exceeds this (official ``conf_thresh``);
            a candidate then competes in every class.
        top_k: candidates per class entering Fast NMS; max_detections: kept overall, by score.
    Returns:
        ``(prior_idx [N], classes [N], scores [N])`` sorted by descending score, N ≤ ``max_detections``.

    The sorts run on the same tensors as the official ones (the candidates' ``[C,Pc]`` class scores, then the kept
    scores in class-major order), so detections with exactly equal scores come out in the official order on the
    same device and PyTorch build (``torch.sort`` orders ties by its own rule, which differs between CPU and
    GPU). Shapes depend on the data (candidates, kept boxes); tracing records them as dynamic.
    """
    num_classes = scores.shape[1]
    candidate = scores.max(dim=1).values > score_threshold  # [P]
    cand_idx = candidate.nonzero()[:, 0]  # [Pc]
    cls_scores, order = scores.t()[:, candidate].sort(dim=1, descending=True)  # [C,Pc]
    cls_scores, order = cls_scores[:, :top_k], order[:, :top_k]  # [C,K]
    idx = cand_idx[order]  # prior index of each [C,K] entry
    keep = fast_nms_keep(boxes[idx], iou_threshold)  # [C,K]
    classes = torch.arange(num_classes, device=scores.device)[:, None].expand_as(keep)[keep]
    kept_scores, order = cls_scores[keep].sort(dim=0, descending=True)
    order = order[:max_detections]
    return idx[keep][order], classes[order], kept_scores[:max_detections]
