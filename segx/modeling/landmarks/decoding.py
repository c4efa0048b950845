"""Landmarks from the crop outputs back in image pixels (traceable)."""
import torch

from detectron2.structures import Boxes, Instances

from segx.modeling.keypoints.heatmaps import argmax_decode
from segx.modeling.landmarks.crops import crop_to_image

__all__ = ["decode_crop_landmarks", "landmark_instances"]


def decode_crop_landmarks(output, centres, half, heatmap_size=None):
    """Image points ``[N,K,2]`` and confidences ``[N,K]`` of ``N`` unrotated crops.

    ``output``: heatmaps ``[N,K,H_m,H_m]`` (``heatmap_size`` = H_m; arg-max with the quarter-pixel shift,
    confidence = the maximum) or regressed crop coordinates ``[N,K,2]`` (``heatmap_size`` None; confidence 1).
    """
    if heatmap_size is not None:
        coords, scores = argmax_decode(output)
        u = (coords * 2 + 1) / heatmap_size - 1
    else:
        u, scores = output, torch.ones_like(output[..., 0])
    return crop_to_image(u, centres, half), scores


def landmark_instances(image_size, boxes, points, scores):
    """``Instances`` of one image: ``pred_boxes`` (the person boxes), ``scores`` (mean landmark confidence),
    ``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y, confidence)."""
    res = Instances(image_size)
    res.pred_boxes = Boxes(boxes)
    res.scores = scores.mean(dim=1)
    res.pred_classes = torch.zeros_like(scores[:, 0], dtype=torch.int64)
    res.pred_keypoints = torch.cat([points, scores[..., None]], dim=-1)
    return res
