"""CenterNet's (objects as points) mapper: detectron2's ``DatasetMapper`` + the centre-heatmap targets, built in
the loader workers (``segx.modeling.keypoints.CenterTargets``), and the official test-time letterbox.

Test input (``MODEL.CENTERNET.TEST_INPUT``): ``"letterbox"`` is xingyizhou/CenterNet's test ``pre_process`` with
``fix_res`` (``src/lib/detectors/base_detector.py``, ``utils/image.py`` ``get_affine_transform``): centre
c = (w/2, h/2), scale s = max(h, w), and the affine that maps c to the canvas centre and scales by S/s, applied by
``cv2.warpAffine`` (bilinear, constant 0 border) into an S×S canvas. ``"resize"`` is ``DatasetMapper``'s resize.
"""
import copy

import cv2
import numpy as np
import torch

from detectron2.config import configurable
from detectron2.data import detection_utils as utils

from segx.data.mappers.base import MAPPER_REGISTRY
from segx.data.mappers.cornernet import CornerNetMapper

__all__ = ["CenterNetMapper", "TEST_INPUTS", "letterbox_affine", "letterbox_image"]

TEST_INPUTS = ("letterbox", "resize")


def letterbox_affine(center, scale, size, inverse=False):
    """The 2×3 affine (float64) of the letterbox: image pixel (x, y) → canvas pixel, or back with ``inverse``.

    Built as the official ``get_affine_transform`` (rotation 0) builds it, from three float32 point pairs solved
    by ``cv2.getAffineTransform``: the centre → the canvas centre (W/2, H/2), the point ``scale``/2 above it →
    (W/2, H/2 − W/2), and the point ``scale``/2 left of that → (0, H/2 − W/2); i.e.
    x' = (x − cx)·W/scale + W/2, y' = (y − cy)·W/scale + H/2 (pixel centres at integers, as ``cv2.warpAffine``).

    Args: center (cx, cy) and scale in image pixels; size (H, W) of the canvas.
    """
    cx, cy = float(center[0]), float(center[1])
    h, w = (float(s) for s in size)
    half = float(scale) * 0.5
    src = np.array([[cx, cy], [cx, cy - half], [cx - half, cy - half]], dtype=np.float32)
    dst = np.array([[w * 0.5, h * 0.5], [w * 0.5, h * 0.5 - w * 0.5], [0.0, h * 0.5 - w * 0.5]], dtype=np.float32)
    return cv2.getAffineTransform(dst, src) if inverse else cv2.getAffineTransform(src, dst)


def letterbox_image(image, size):
    """Official test input geometry: ``image`` ``[H,W,C]`` (numpy, any dtype cv2 warps) → (canvas ``[S,S,C]`` of
    the same dtype, record ``{"center": (cx, cy), "scale": s, "size": (S, S)}``), c = (W/2, H/2), s = max(H, W),
    bilinear warp, 0 outside the image."""
    h, w = image.shape[:2]
    side = int(size)
    record = {"center": (w / 2.0, h / 2.0), "scale": float(max(h, w)), "size": (side, side)}
    matrix = letterbox_affine(record["center"], record["scale"], record["size"])
    canvas = cv2.warpAffine(np.ascontiguousarray(image), matrix, (side, side), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    if canvas.ndim == 2:  # cv2 drops a single channel
        canvas = canvas[:, :, None]
    return canvas, record


class CenterNetMapper(CornerNetMapper):
    """Training: adds ``"targets"``: the image's centre heatmap ``[C,h,w]`` (its own padded map), and per kept
    object its integer centre ``[M,2]`` (x, y), size ``[M,2]`` and offset ``[M,2]`` in output pixels (see
    ``CenterTargets``), on the CPU; the model pads and indexes them per batch. Same mechanism as
    ``CornerNetMapper``: the target builder is the model's own.

    Test, ``test_input="letterbox"``: ``image`` is the file's image letterboxed into ``test_input_size``²
    (``letterbox_image``; ``[3,S,S]`` uint8 in ``INPUT.FORMAT``), ``height``/``width`` stay the file's, and
    ``"letterbox"`` holds the record the model maps its boxes back with. ``"resize"``: ``DatasetMapper``'s test
    input.
    """

    @configurable
    def __init__(self, is_train=True, *, test_input="letterbox", test_input_size=512, **kwargs):
        """``test_input``: one of ``TEST_INPUTS`` (``MODEL.CENTERNET.TEST_INPUT``); ``test_input_size``: the
        letterbox side; other arguments: ``CornerNetMapper``'s."""
        super().__init__(is_train, **kwargs)
        if test_input not in TEST_INPUTS:
            raise ValueError(f"CenterNetMapper: test_input (MODEL.CENTERNET.TEST_INPUT) must be one of {TEST_INPUTS}, "
                             f"got {test_input!r}")
        self.test_input = test_input
        self.test_input_size = int(test_input_size)

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["test_input"] = cfg.MODEL.CENTERNET.TEST_INPUT
        ret["test_input_size"] = cfg.MODEL.CENTERNET.TEST_INPUT_SIZE
        return ret

    def __call__(self, dataset_dict):
        if self.is_train or self.test_input != "letterbox":
            return super().__call__(dataset_dict)
        dataset_dict = copy.deepcopy(dataset_dict)
        image = utils.read_image(dataset_dict["file_name"], format=self.image_format)
        utils.check_image_size(dataset_dict, image)
        canvas, record = letterbox_image(image, self.test_input_size)
        dataset_dict["image"] = torch.as_tensor(np.ascontiguousarray(canvas.transpose(2, 0, 1)))
        dataset_dict.setdefault("height", image.shape[0])
        dataset_dict.setdefault("width", image.shape[1])
        dataset_dict["letterbox"] = record
        for key in ("annotations", "sem_seg_file_name", "pan_seg_file_name"):
            dataset_dict.pop(key, None)
        return dataset_dict


MAPPER_REGISTRY._do_register("CenterNet", CenterNetMapper)
