"""Which detections enter the panoptic head at inference (UPSNet's selection, before mask removal)."""
import torch
from torchvision.ops import nms

from detectron2.structures import Boxes, Instances

__all__ = ["select_panoptic_instances"]


def select_panoptic_instances(boxes, scores, image_size, score_thresh=0.6, nms_thresh=0.5, topk=100):
    """The (box, class) pairs of the box head's output that enter the panoptic head, best first.

    Args:
        boxes: ``[R, K*4]`` per-class boxes of R proposals (input pixels, clipped here to ``image_size``).
        scores: ``[R, K+1]`` class probabilities (background last).
        image_size: ``(h, w)``.
        score_thresh, nms_thresh, topk: every pair scoring over ``score_thresh``, then class-agnostic NMS at
            ``nms_thresh`` IoU, at most ``topk``.
    Returns:
        ``Instances(image_size)`` with ``pred_boxes``, ``scores`` and ``pred_classes`` (``0..K-1``), by score.
    """
    num_classes = scores.shape[1] - 1
    boxes = Boxes(boxes.reshape(-1, 4))
    boxes.clip(image_size)
    boxes = boxes.tensor.view(-1, num_classes, 4)
    fg = scores[:, :-1]
    idx = torch.nonzero(fg > score_thresh)
    cand_boxes = boxes[idx[:, 0], idx[:, 1]]
    cand_scores = fg[idx[:, 0], idx[:, 1]]
    keep = nms(cand_boxes, cand_scores, nms_thresh)[:topk]
    selected = Instances(image_size)
    selected.pred_boxes = Boxes(cand_boxes[keep])
    selected.scores = cand_scores[keep]
    selected.pred_classes = idx[keep, 1]
    return selected
