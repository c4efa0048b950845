"""DensePose R-CNN's mapper: detectron2's ``DatasetMapper`` that also carries each person's DensePose-COCO
annotation through the augmentation into ``instances.gt_densepose`` (``DensePoseTargets``).

Registered as "DensePose" (``SEGX.DATA.MAPPER DensePose``; the model is detectron2's ``GeneralizedRCNN``).

What it supports: every axis-aligned transform detectron2's augmentations make here (resize, scale, crop, extent,
padding, horizontal flip). Points are mapped to input-image pixels through the transforms; the 256×256 coarse
part masks keep their grid and get the transformed (unclipped) box as their frame. Under a horizontal flip the
points' part ids and the masks' labels swap left/right (the dataset's ``densepose_part_flip`` /
``densepose_mask_part_flip`` metadata), the masks are mirrored, and U/V move to the mirrored chart with the
dataset's ``densepose_uv_flip`` map (``segx.data.datasets.densepose``). Rotations and vertical flips are refused
(an error names the transform): DensePose-COCO has no meaning for a vertically flipped body, and rotating a
256-grid mask in its box is not implemented.
"""
import logging

import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import DatasetMapper, MetadataCatalog
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BoxMode

from segx.data.datasets.densepose import DP_GRID, MASK_PART_FLIP, NUM_MASK_PARTS, PART_FLIP, resolve_uv_flip
from segx.data.mappers.base import MAPPER_REGISTRY
from segx.modeling.roi_heads.densepose import DensePoseInstanceTarget, DensePoseTargets

__all__ = ["DensePoseMapper", "densepose_target", "decode_dp_masks"]

logger = logging.getLogger(__name__)

FLIP_POLICIES = ("error", "drop_uv")
_SUPPORTED = (T.ResizeTransform, T.HFlipTransform, T.NoOpTransform, T.CropTransform, T.ExtentTransform)


def _supported(t):
    return isinstance(t, _SUPPORTED) or type(t).__name__ in ("ScaleTransform", "PadTransform")


def decode_dp_masks(masks):
    """The 14 coarse part masks (RLE or []) as one ``[256,256]`` uint8 label map (0 = background, k + 1 = part k;
    later parts win where masks overlap); None when ``masks`` is absent."""
    if masks is None:
        return None
    from pycocotools import mask as mask_utils

    labels = np.zeros((DP_GRID, DP_GRID), np.uint8)
    for k, rle in enumerate(masks):
        if not rle:
            continue
        if isinstance(rle.get("counts"), list):  # uncompressed RLE
            rle = mask_utils.frPyObjects(rle, *rle["size"])
        m = mask_utils.decode(rle)
        if m.shape != labels.shape:  # any other grid is resampled onto the 256 grid
            import cv2

            m = cv2.resize(m, (DP_GRID, DP_GRID), interpolation=cv2.INTER_NEAREST)
        labels[m > 0] = k + 1
    return labels


def densepose_target(ann, transforms, part_flip=PART_FLIP, mask_part_flip=MASK_PART_FLIP, uv_flip=None,
                     on_missing_uv_flip="error", where=""):
    """A ``DensePoseInstanceTarget`` of one annotation (with its original ``bbox``/``bbox_mode``) after
    ``transforms`` (a ``TransformList``), or None when the annotation has no DensePose points or masks."""
    has_points = "dp_x" in ann
    has_masks = any(bool(m) for m in ann.get("dp_masks") or [])  # 14 empty entries: no mask annotation
    if not has_points and not has_masks:
        return None
    tlist = transforms.transforms if hasattr(transforms, "transforms") else [transforms]
    bad = [type(t).__name__ for t in tlist if not _supported(t)]
    if bad:
        raise ValueError(f"{where}: DensePose annotations support resize, crop and horizontal flip; the augmentation "
                         f"made {', '.join(bad)} (remove it from the DensePose training augmentation)")
    flipped = sum(isinstance(t, T.HFlipTransform) for t in tlist) % 2 == 1
    x0, y0, x1, y1 = BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS)
    w, h = x1 - x0, y1 - y0
    if has_points:
        dx, dy = np.asarray(ann["dp_x"], np.float64), np.asarray(ann["dp_y"], np.float64)
        pts = np.stack([x0 + dx * w / DP_GRID, y0 + dy * h / DP_GRID], 1)
        pts = transforms.apply_coords(pts.copy()) if len(pts) else pts.reshape(0, 2)
        parts = np.asarray(ann["dp_I"], np.int64)
        u, v = np.asarray(ann["dp_U"], np.float64), np.asarray(ann["dp_V"], np.float64)
        uv_valid = np.ones(len(parts), bool)
        if flipped:
            if uv_flip is not None:
                u, v = uv_flip(parts, u, v)
            elif on_missing_uv_flip == "drop_uv":
                uv_valid[:] = False
            else:
                raise ValueError(f"{where}: horizontal flip of DensePose points without the dataset's U/V symmetry "
                                 f"(metadata densepose_uv_flip)")
            parts = np.asarray(part_flip, np.int64)[parts]
    else:
        pts, parts, u, v, uv_valid = np.zeros((0, 2)), np.zeros(0, np.int64), np.zeros(0), np.zeros(0), np.zeros(0, bool)
    segm = segm_box = None
    if has_masks:
        segm = decode_dp_masks(ann["dp_masks"])
        if flipped:
            segm = np.asarray(mask_part_flip, np.uint8)[segm[:, ::-1]]
        segm_box = torch.as_tensor(transforms.apply_box(np.array([[x0, y0, x1, y1]], np.float64))[0], dtype=torch.float32)
        segm = torch.as_tensor(np.ascontiguousarray(segm))
    return DensePoseInstanceTarget(
        points=torch.as_tensor(np.asarray(pts, np.float32)).reshape(-1, 2),
        parts=torch.as_tensor(parts, dtype=torch.long),
        uv=torch.as_tensor(np.stack([np.asarray(u, np.float32), np.asarray(v, np.float32)], 1).reshape(-1, 2)),
        uv_valid=torch.as_tensor(uv_valid, dtype=torch.bool),
        segm=segm, segm_box=segm_box,
    )


class DensePoseMapper(DatasetMapper):
    """``DatasetMapper`` + ``instances.gt_densepose`` in training (see the module doc). At test time it is
    detectron2's ``DatasetMapper`` (annotations dropped)."""

    @configurable
    def __init__(self, is_train=True, *, part_flip=PART_FLIP, mask_part_flip=MASK_PART_FLIP, uv_flip=None,
                 on_missing_uv_flip="error", **kwargs):
        """
        Args:
            part_flip, mask_part_flip: id of each fine / coarse part after a horizontal flip (index 0 = background).
            uv_flip: ``(part, u, v) -> (u, v)`` of flipped points (parts before the flip), or None.
            on_missing_uv_flip: "error" or "drop_uv" when a flip happens without ``uv_flip``.
            kwargs: ``DatasetMapper``'s arguments.
        """
        super().__init__(is_train, **kwargs)
        if on_missing_uv_flip not in FLIP_POLICIES:
            raise ValueError(f"DensePoseMapper: on_missing_uv_flip must be one of {FLIP_POLICIES}, got "
                             f"{on_missing_uv_flip!r}")
        self.part_flip, self.mask_part_flip = list(part_flip), list(mask_part_flip)
        self.uv_flip, self.on_missing_uv_flip = uv_flip, on_missing_uv_flip

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        if not is_train:
            return ret
        names = list(cfg.DATASETS.TRAIN)
        metas = [MetadataCatalog.get(n) for n in names]
        ret["part_flip"] = _one(metas, names, "densepose_part_flip", list(PART_FLIP))
        ret["mask_part_flip"] = _one(metas, names, "densepose_mask_part_flip", list(MASK_PART_FLIP))
        if len(ret["mask_part_flip"]) != NUM_MASK_PARTS + 1:
            raise ValueError(f"datasets {names}: densepose_mask_part_flip needs {NUM_MASK_PARTS + 1} entries")
        specs = {n: m.get("densepose_uv_flip", None) for n, m in zip(names, metas)}
        flips = {n: resolve_uv_flip(s, n) for n, s in specs.items()}
        if len({repr(s) for s in specs.values()}) > 1:
            raise ValueError(f"DensePose training sets disagree on densepose_uv_flip: {specs}; train them separately or "
                             f"give them one U/V symmetry map")
        policy = cfg.MODEL.ROI_DENSEPOSE_HEAD.FLIP_WITHOUT_UV_SYMMETRY
        flips_on = cfg.INPUT.RANDOM_FLIP == "horizontal"
        ret["uv_flip"] = next(iter(flips.values()), None)
        ret["on_missing_uv_flip"] = policy
        missing = [n for n, f in flips.items() if f is None]
        if flips_on and missing:
            if policy == "error":
                raise ValueError(
                    f"INPUT.RANDOM_FLIP horizontal on DensePose data without a U/V symmetry map (datasets {missing}): set "
                    f"their metadata densepose_uv_flip (the path of DensePose's UV_symmetry_transforms.mat), or "
                    f"MODEL.ROI_DENSEPOSE_HEAD.FLIP_WITHOUT_UV_SYMMETRY drop_uv, or INPUT.RANDOM_FLIP none")
            logger.warning("DensePose datasets %s have no U/V symmetry map: flipped people train parts and masks only "
                           "(FLIP_WITHOUT_UV_SYMMETRY drop_uv)", missing)
        if cfg.INPUT.RANDOM_FLIP == "vertical":
            raise ValueError("INPUT.RANDOM_FLIP vertical: DensePose annotations support horizontal flips only")
        return ret

    def _transform_annotations(self, dataset_dict, transforms, image_shape):
        if not self.is_train:
            return super()._transform_annotations(dataset_dict, transforms, image_shape)
        annos, dense = [], []
        for obj in dataset_dict.pop("annotations"):
            if obj.get("iscrowd", 0) != 0:
                continue
            if not self.use_instance_mask:
                obj.pop("segmentation", None)
            if not self.use_keypoint:
                obj.pop("keypoints", None)
            where = f"annotation id {obj.get('id')} (image id {dataset_dict.get('image_id')})"
            dense.append(densepose_target(obj, transforms, self.part_flip, self.mask_part_flip, self.uv_flip,
                                          self.on_missing_uv_flip, where))
            annos.append(utils.transform_instance_annotations(
                obj, transforms, image_shape, keypoint_hflip_indices=self.keypoint_hflip_indices))
        instances = utils.annotations_to_instances(annos, image_shape, mask_format=self.instance_mask_format)
        instances.gt_densepose = DensePoseTargets(dense)
        if self.recompute_boxes:
            instances.gt_boxes = instances.gt_masks.get_bounding_boxes()
        dataset_dict["instances"] = utils.filter_empty_instances(instances)


def _one(metas, names, key, default):
    values = {n: list(m.get(key, default)) for n, m in zip(names, metas)}
    if len({tuple(v) for v in values.values()}) > 1:
        raise ValueError(f"DensePose training sets disagree on {key}: {values}")
    return next(iter(values.values()), default)


MAPPER_REGISTRY._do_register("DensePose", DensePoseMapper)
