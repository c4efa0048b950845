"""RetinaFace's inference: SSD decoding, top-k, score threshold and NMS per image (traceable)."""
import torch
import torch.nn.functional as F

from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

from segx.modeling.ssd_coding import decode_boxes, decode_landmarks

__all__ = ["decode_faces", "face_detections"]


def decode_faces(logits, box_deltas, landmark_deltas, priors, image_sizes, *, variances=(0.1, 0.2), **limits):
    """``Instances`` per image from the head outputs ``[B,P,2]``, ``[B,P,4]``, ``[B,P,2K]`` and pixel priors
    ``[P,4]``; ``limits``: the keyword arguments of ``face_detections``."""
    scores = F.softmax(logits, dim=-1)[..., 1]
    boxes = decode_boxes(box_deltas, priors, variances)
    b, p = landmark_deltas.shape[:2]
    landmarks = decode_landmarks(landmark_deltas.reshape(b, p, -1, 2), priors, variances)
    return [face_detections(scores[i], boxes[i], landmarks[i], size, **limits) for i, size in enumerate(image_sizes)]


def face_detections(scores, boxes, landmarks, image_size, *, score_thresh=0.02, topk_candidates=5000, nms_thresh=0.4,
                    max_detections=750):
    """One image: ``scores`` ``[P]``, ``boxes`` ``[P,4]`` and ``landmarks`` ``[P,K,2]`` (input pixels) → ``Instances``
    with ``pred_boxes``, ``scores``, ``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y, face score)."""
    # Top-k before the score threshold keeps the same set as the official threshold-then-top-k and keeps
    # the number of candidates a function of the input size only (traceable).
    k = min(topk_candidates, scores.shape[0])
    scores, idx = scores.topk(k)
    boxes, landmarks = boxes[idx], landmarks[idx]
    keep = scores > score_thresh
    scores, boxes, landmarks = scores[keep], boxes[keep], landmarks[keep]
    classes = torch.zeros_like(scores, dtype=torch.long)
    keep = batched_nms(boxes, scores, classes, nms_thresh)[:max_detections]
    scores, boxes, landmarks, classes = scores[keep], boxes[keep], landmarks[keep], classes[keep]
    res = Instances(image_size)
    res.pred_boxes = Boxes(boxes)
    res.scores = scores
    res.pred_classes = classes
    res.pred_keypoints = torch.cat([landmarks, scores[:, None, None].expand(-1, landmarks.shape[1], 1)], dim=2)
    return res
