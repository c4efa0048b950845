"""CenterNet: keypoint triplets (Duan et al., "CenterNet: Keypoint Triplets for Object Detection", ICCV 2019).

CornerNet plus a third keypoint, the box centre: a centre heatmap (with offsets, no embedding) after a center
pooling module (max over the full row + full column), and cascade corner pooling for the corners. At test
time a CornerNet box survives only if a centre keypoint of its class falls strictly inside its central region
(the middle third of the box, the middle fifth for boxes larger than 150×150), and its score becomes
(2·s + s_center)/3.

Follows Duankaiwen/CenterNet (``models/py_utils/kp.py``, ``kp_utils.py``, ``sample/coco.py``,
``test/coco.py``); differences are listed in ``projects/CenterNetTriplets/README.md``.
"""
import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from segx.modeling.keypoints import center_region_check, decode_center_keypoints
from segx.modeling.meta_arch.cornernet import CornerNet

__all__ = ["CenterNetTriplets"]


@META_ARCH_REGISTRY.register()
class CenterNetTriplets(CornerNet):
    """CornerNet with a centre-keypoint branch ("ct": center pooling, heatmap, offset; targets with
    σ = diameter / ``center_sigma_divisor``) and the central-region check in ``decode_boxes``."""

    keypoint_kinds = ("tl", "br", "ct")

    @configurable
    def __init__(
        self, *, center_sigma_divisor=5.0, center_topk_test=70, region_area_thresh_test=22500.0, region_n_small=3,
        region_n_large=5, **kwargs,
    ):
        """
        Args:
            center_sigma_divisor: centre Gaussian σ = diameter / this (Duankaiwen's ``delte=5``).
            center_topk_test: centre keypoints considered by the check.
            region_area_thresh_test, region_n_small, region_n_large: central region = middle 1/n of the box,
                n = ``region_n_small`` for area ≤ threshold (input pixels), else ``region_n_large``.
            kwargs: ``CornerNet`` arguments (``cascade_corner_pool=True`` for the paper's model).
        """
        super().__init__(**kwargs)
        self.target_builder.center_sigma_divisor = float(center_sigma_divisor)
        self.center_topk_test = center_topk_test
        self.region_area_thresh_test = region_area_thresh_test
        self.region_n_small, self.region_n_large = region_n_small, region_n_large

    @classmethod
    def from_config(cls, cfg):
        t = cfg.MODEL.CENTERNET_TRIPLETS
        ret = cls._common_config(cfg, t)
        ret.update(
            cascade_corner_pool=t.CASCADE_CORNER_POOL,
            center_sigma_divisor=t.CENTER_SIGMA_DIVISOR,
            center_topk_test=t.CENTER_TOPK_TEST,
            region_area_thresh_test=t.REGION_AREA_THRESH_TEST,
            region_n_small=t.REGION_N_SMALL,
            region_n_large=t.REGION_N_LARGE,
        )
        return ret

    def decode_boxes(self, outputs):
        """CornerNet's candidates, re-scored (or rejected) by the central-region check."""
        boxes, scores, classes = super().decode_boxes(outputs)
        ct = outputs["ct"]
        centers, center_scores, center_classes = decode_center_keypoints(
            torch.sigmoid(ct["heatmap"]), ct["offset"], k=self.center_topk_test, nms_kernel=self.nms_kernel
        )
        scores = center_region_check(
            boxes, scores, classes, centers * self.stride, center_scores, center_classes,
            area_threshold=self.region_area_thresh_test, n_small=self.region_n_small, n_large=self.region_n_large,
        )
        return boxes, scores, classes
