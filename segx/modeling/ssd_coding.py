"""SSD-style prior boxes: box/landmark coding with variances, prior matching, hard-negative mining.

Shared by YOLACT (dbolya/yolact ``layers/box_utils.py``) and RetinaFace (biubug6/Pytorch_Retinaface
``utils/box_utils.py``), which both follow SSD (Liu et al. 2016). Priors are ``[P,4]`` (cx, cy, w, h) and
boxes ``[N,4]`` (x0, y0, x1, y1), in the same units (pixels or fractions of the image).
"""
import math

import torch
from torchvision.ops import box_iou

__all__ = [
    "priors_to_xyxy",
    "encode_boxes",
    "decode_boxes",
    "encode_landmarks",
    "decode_landmarks",
    "match_priors",
    "hard_negative_mining",
    "NEGATIVE",
    "IGNORE",
    "DEFAULT_SCALE_CLAMP",
]

NEGATIVE = -1  # match_priors: the prior is background
IGNORE = -2  # match_priors: the prior is neither (neutral IoU band or crowd); no classification loss
# decode_boxes: largest log(size / prior size), as detectron2's Box2BoxTransform (_DEFAULT_SCALE_CLAMP)
DEFAULT_SCALE_CLAMP = math.log(1000.0 / 16)


def priors_to_xyxy(priors):
    """``[P,4]`` (cx, cy, w, h) → ``[P,4]`` (x0, y0, x1, y1)."""
    return torch.cat([priors[:, :2] - priors[:, 2:] / 2, priors[:, :2] + priors[:, 2:] / 2], dim=1)


def encode_boxes(boxes, priors, variances=(0.1, 0.2)):
    """Regression targets ``[P,4]``: ((c − c_prior) / (v0·wh_prior), log(wh / wh_prior) / v1) for ``boxes``
    ``[P,4]`` xyxy matched to ``priors`` ``[P,4]`` cxcywh."""
    center = (boxes[:, :2] + boxes[:, 2:]) / 2
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    return torch.cat(
        [(center - priors[:, :2]) / (variances[0] * priors[:, 2:]), torch.log(wh / priors[:, 2:]) / variances[1]], dim=1
    )


def decode_boxes(deltas, priors, variances=(0.1, 0.2), scale_clamp=DEFAULT_SCALE_CLAMP):
    """Inverse of ``encode_boxes``: ``deltas`` ``[..., P, 4]`` → boxes ``[..., P, 4]`` xyxy.

    The log size ratio ``deltas[..., 2:] · v1`` is clamped at ``scale_clamp`` before ``exp`` (detectron2's
    ``Box2BoxTransform``: log(1000/16), a box at most 62.5× its prior's side), so no prediction decodes to an
    infinite box. ``None`` turns the clamp off (the official SSD-style code has none).
    """
    center = priors[:, :2] + deltas[..., :2] * variances[0] * priors[:, 2:]
    log_ratio = deltas[..., 2:] * variances[1]
    if scale_clamp is not None:
        log_ratio = log_ratio.clamp(max=scale_clamp)
    wh = priors[:, 2:] * torch.exp(log_ratio)
    x0y0 = center - wh / 2
    return torch.cat([x0y0, x0y0 + wh], dim=-1)  # x1 = x0 + w, as the official SSD-style decode rounds it


def encode_landmarks(points, priors, variances=(0.1, 0.2)):
    """Landmark targets: ``points`` ``[P,K,2]`` (x, y) → ``[P,K,2]`` offsets (p − c_prior) / (v0·wh_prior)."""
    return (points - priors[:, None, :2]) / (variances[0] * priors[:, None, 2:])


def decode_landmarks(deltas, priors, variances=(0.1, 0.2)):
    """Inverse of ``encode_landmarks``: ``deltas`` ``[..., P, K, 2]`` → points ``[..., P, K, 2]``."""
    return priors[:, None, :2] + deltas * variances[0] * priors[:, None, 2:]


def match_priors(gt_boxes, priors, pos_iou, neg_iou=None, force="greedy", min_force_iou=0.0, crowd_boxes=None,
                 crowd_iou=0.7):
    """Assigns each prior a ground-truth box, background, or ignore.

    Args:
        gt_boxes: ``[G,4]`` xyxy; priors: ``[P,4]`` cxcywh (same units).
        pos_iou: IoU ≥ this → positive. neg_iou: IoU < this → background; in between → ``IGNORE``
            (``None``: same as ``pos_iou``, no neutral band).
        force: how each GT gets at least its best prior. ``"greedy"`` (YOLACT): repeatedly take the largest
            remaining IoU of the G×P matrix, assign that pair, remove both, so the G forced priors are distinct.
            ``"per_gt"`` (SSD / RetinaFace): every GT's arg-max prior is forced to it (a later GT wins a shared
            prior). ``None``: no forcing.
        min_force_iou: GTs whose best IoU is below this are not forced (RetinaFace: 0.2); they can still match.
        crowd_boxes: ``[C,4]`` xyxy; a background prior covered by a crowd box for more than ``crowd_iou`` of
            its own area becomes ``IGNORE`` (YOLACT).
    Returns:
        ``matched`` ``[P]`` long: the GT index for positives, ``NEGATIVE`` (-1) or ``IGNORE`` (-2);
        ``best_iou`` ``[P]``: each prior's largest IoU with any GT (0 when G == 0).
    """
    num_priors = priors.shape[0]
    neg_iou = pos_iou if neg_iou is None else neg_iou
    if neg_iou > pos_iou:
        raise ValueError(f"match_priors: neg_iou={neg_iou} must be <= pos_iou={pos_iou}")
    matched = torch.full((num_priors,), NEGATIVE, dtype=torch.long, device=priors.device)
    best_iou = torch.zeros(num_priors, device=priors.device)
    prior_boxes = priors_to_xyxy(priors)
    if gt_boxes.shape[0] > 0:
        iou = box_iou(gt_boxes, prior_boxes)  # [G,P]
        best_iou, best_gt = iou.max(dim=0)
        matched = torch.where(best_iou >= pos_iou, best_gt, matched)
        matched = torch.where((best_iou >= neg_iou) & (best_iou < pos_iou), torch.full_like(matched, IGNORE), matched)
        if force == "greedy":
            work = iou.clone()
            for _ in range(gt_boxes.shape[0]):
                flat = int(work.argmax())
                g, p = divmod(flat, num_priors)
                if work[g, p] < max(min_force_iou, 0.0) or work[g, p] < 0:
                    break
                matched[p] = g
                best_iou[p] = iou[g, p]
                work[g, :] = -1
                work[:, p] = -1
        elif force == "per_gt":
            gt_best_iou, gt_best_prior = iou.max(dim=1)
            for g in range(gt_boxes.shape[0]):
                if gt_best_iou[g] >= min_force_iou:
                    matched[gt_best_prior[g]] = g
                    best_iou[gt_best_prior[g]] = iou[g, gt_best_prior[g]]
        elif force is not None:
            raise ValueError(f"match_priors: force must be 'greedy', 'per_gt' or None, got {force!r}")
    if crowd_boxes is not None and crowd_boxes.shape[0] > 0:
        lt = torch.max(prior_boxes[:, None, :2], crowd_boxes[None, :, :2])
        rb = torch.min(prior_boxes[:, None, 2:], crowd_boxes[None, :, 2:])
        inter = (rb - lt).clamp(min=0).prod(dim=2)
        area = (prior_boxes[:, 2:] - prior_boxes[:, :2]).prod(dim=1).clamp(min=1e-12)
        covered = (inter / area[:, None]).max(dim=1).values > crowd_iou
        matched = torch.where((matched == NEGATIVE) & covered, torch.full_like(matched, IGNORE), matched)
    return matched, best_iou


def hard_negative_mining(background_loss, positive, negative_candidates, neg_pos_ratio):
    """Picks, per image, the ``neg_pos_ratio × #positives`` background candidates with the largest loss (OHEM).

    Args:
        background_loss: ``[B,P]`` the loss of calling each prior background (e.g. −log softmax[:, 0]).
        positive: ``[B,P]`` bool; negative_candidates: ``[B,P]`` bool (priors labelled background).
    Returns:
        ``[B,P]`` bool: the selected negatives (at most ``P − 1`` per image, as SSD's implementations clamp).
    """
    loss = background_loss.detach().masked_fill(~negative_candidates, float("-inf"))
    num_neg = (positive.sum(dim=1, keepdim=True) * neg_pos_ratio).clamp(max=positive.shape[1] - 1)
    num_neg = torch.minimum(num_neg, negative_candidates.sum(dim=1, keepdim=True))
    order = loss.argsort(dim=1, descending=True)
    rank = order.argsort(dim=1)
    return (rank < num_neg) & negative_candidates
