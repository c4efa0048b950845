"""Training targets of the top-down landmark models: one jittered square crop per person and its targets.

``CropTargets`` runs in segx's ``StackedHourglassMapper`` (loader workers, on the mapped image's
``instances``) and, with the same settings, inside ``StackedHourglass`` when an input has no ``"targets"``
(plain ``DatasetMapper`` output): both paths give equal targets for equal random draws.
"""
import torch

from detectron2.config import configurable

from segx.modeling.keypoints.heatmaps import landmark_heatmaps
from segx.modeling.landmarks.crops import crop_jitter, image_to_crop, square_crops

__all__ = ["CropTargets", "heatmap_targets", "HEATMAP_KINDS"]

HEATMAP_KINDS = ("gaussian", "cauchy")


def heatmap_targets(points, size, sigma, kind="gaussian"):
    """Heatmaps ``[N,K,size,size]`` (on ``points``' device) for crop points ``[N,K,3]`` (normalised crop x, y,
    visibility); invisible landmarks (visibility 0) and landmarks outside the crop get all-zero maps."""
    n, k = points.shape[:2]
    pix = (points[..., :2] + 1) * (size / 2) - 0.5
    visible = points[..., 2] > 0
    maps = landmark_heatmaps(pix.reshape(-1, 2), (size, size), sigma, kind=kind, visible=visible.reshape(-1))
    return maps.reshape(n, k, size, size)


class CropTargets:
    """One image's person crops (with training jitter) and their targets.

    ``__call__(instances)`` (``gt_boxes`` ``[N,4]`` and ``gt_keypoints`` ``[N,K,3]`` in image pixels) returns a
    dict of tensors on the instances' device:

    * ``centres`` ``[N,2]``, ``half`` ``[N]`` (image pixels, jitter applied), ``cos``/``sin`` ``[N]``: the crops;
    * ``points`` ``[N,K,3]``: landmarks in normalised crop coordinates + visibility;
    * ``heatmaps`` ``[N,K,S/4,S/4]`` (when ``heatmaps``): the heatmap targets.
    """

    @configurable
    def __init__(self, *, num_keypoints, input_size, box_padding=1.25, heatmaps=True, heatmap_kind="gaussian",
                 sigma=1.0, aug_scale=0.0, aug_rotation=0.0, aug_rotation_prob=0.0):
        """
        Args:
            num_keypoints: K. input_size: crop side S in pixels (heatmaps are S/4).
            box_padding: crop side = longer box side × this.
            heatmaps: also draw heatmap targets (``heatmap_kind`` "gaussian" or "cauchy", ``sigma`` in heatmap
                pixels; see ``segx.modeling.heatmaps.landmark_heatmaps``); off for the regression head.
            aug_scale, aug_rotation (degrees), aug_rotation_prob: jitter of the crop (``crop_jitter``).
        """
        if heatmap_kind not in HEATMAP_KINDS:
            raise ValueError(f"CropTargets: heatmap_kind must be one of {HEATMAP_KINDS}, got {heatmap_kind!r}")
        self.num_keypoints = num_keypoints
        self.heatmap_size = input_size // 4
        self.box_padding = box_padding
        self.heatmaps = heatmaps
        self.heatmap_kind = heatmap_kind
        self.sigma = sigma
        self.jitter = (aug_scale, aug_rotation, aug_rotation_prob)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STACKED_HOURGLASS
        return {
            "num_keypoints": cfg.MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS,
            "input_size": c.INPUT_SIZE,
            "box_padding": c.BOX_PADDING,
            "heatmaps": c.HEAD == "heatmap",
            "heatmap_kind": c.HEATMAP_KIND,
            "sigma": c.SIGMA,
            "aug_scale": c.AUG_SCALE,
            "aug_rotation": c.AUG_ROTATION,
            "aug_rotation_prob": c.AUG_ROTATION_PROB,
        }

    def __call__(self, instances):
        boxes = instances.gt_boxes.tensor
        n, k = boxes.shape[0], self.num_keypoints
        if n and not instances.has("gt_keypoints"):
            raise ValueError("StackedHourglass: training instances have no gt_keypoints (set MODEL.KEYPOINT_ON True)")
        kps = instances.gt_keypoints.tensor if n else boxes.new_zeros(0, k, 3)
        if kps.shape[1] != k:
            raise ValueError(f"StackedHourglass: model has {k} keypoints, data has {kps.shape[1]}")
        centres, half = square_crops(boxes, self.box_padding)
        scale, cos, sin = crop_jitter(n, *self.jitter, device=boxes.device)
        half = half * scale
        u = image_to_crop(kps[..., :2], centres, half, cos, sin)
        points = torch.cat([u, kps[..., 2:3]], dim=-1)
        targets = {"centres": centres, "half": half, "cos": cos, "sin": sin, "points": points}
        if self.heatmaps:
            targets["heatmaps"] = heatmap_targets(targets["points"], self.heatmap_size, self.sigma, self.heatmap_kind)
        return targets
