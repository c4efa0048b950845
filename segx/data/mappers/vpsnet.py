"""VPSNet's dataset mapper: frames of a Cityscapes-VPS-format set (``segx.data.datasets.cityscapes_vps``) → UPSNet's
training inputs built from the frame's panoptic PNG, and the reference frame of a training pair.

Registered in ``MAPPER_REGISTRY`` as ``"VPSNet"``. detectron2's ``DatasetMapper`` augmentations (resize, flip) apply
to the image and, nearest, to the panoptic PNG, from which come:

* ``instances``: one per non-crowd thing segment left after the transform: ``gt_boxes`` (of the mask), ``gt_classes``,
  ``gt_masks`` (``BitMasks``) and ``gt_ids`` (the segment id, which the set keeps over a video: the identity the track
  loss pairs by);
* ``sem_seg``: detectron2's "separated" labels UPSNet trains on: stuff ``1..S``, things (crowd too) 0, void 255.

Training stages (``MODEL.VPSNET.TRAIN_STAGE``): "image" maps the frame alone; "flow" and "video" add a reference frame
of the same video (``REF_FRAME_OFFSETS`` frames away, ``pick_reference``) with the same transforms: ``ref_image``,
``ref_frame_index``, ``ref_video_id``, and for "video" ``ref_instances`` (as ``instances``), for "flow" the known
flow ``flow`` ``[2,H,W]`` (pixels of the image: image(p) = ref_image(p + flow(p))) from the record's ``motion_file``.
At test time the image only; the record's other fields (``video_id``, ``frame_index``, ``pan_seg_file_name``,
``segments_info``) pass through for the stream and the VPQ evaluator. A PNG whose ids its JSON does not list stops
with an error naming the file, the video and the frame.
"""
import collections
import logging

import numpy as np
import torch
from PIL import Image

from detectron2.config import configurable
from detectron2.data import DatasetMapper
from detectron2.data import detection_utils as utils
from detectron2.data import transforms as T
from detectron2.structures import BitMasks, Instances

from segx.data.datasets.cityscapes_vps import check_panoptic_png

from .base import MAPPER_REGISTRY
from .flow import known_flow_target

__all__ = ["VPSNetMapper", "pick_reference", "panoptic_targets"]

logger = logging.getLogger(__name__)


def pick_reference(frame_index, annotated_frames, offsets, rng=np.random):
    """The reference frame of a training pair: ``frame_index + o`` for one ``o`` of ``offsets`` drawn at random among
    those that are in ``annotated_frames``; None when none is (official: the ±1 annotated frame of Cityscapes-VPS)."""
    present = set(int(f) for f in annotated_frames)
    choices = [int(frame_index) + int(o) for o in offsets if int(frame_index) + int(o) in present]
    if not choices:
        return None
    return choices[rng.randint(len(choices))]


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def panoptic_targets(ids, segments_info, ignore_value=255):
    """``(instances fields, sem_seg)`` from a panoptic id map ``[H,W]`` and its ``segments_info`` (contiguous
    ``category_id``, ``isthing``, ``iscrowd``): ``gt_classes`` ``[N]``, ``gt_masks`` ``[N,H,W]`` bool, ``gt_ids``
    ``[N]`` of the non-crowd things with pixels, and the separated labels ``[H,W]`` (stuff ``1..S``, things 0, void
    ``ignore_value``)."""
    sem = np.full(ids.shape, ignore_value, dtype=np.int64)
    classes, masks, seg_ids = [], [], []
    for s in segments_info:
        m = ids == s["id"]
        if s["isthing"]:
            sem[m] = 0
            if not s.get("iscrowd", 0) and m.any():
                classes.append(int(s["category_id"]))
                masks.append(m)
                seg_ids.append(int(s["id"]))
        else:
            sem[m] = int(s["category_id"])
    h, w = ids.shape
    masks = np.stack(masks) if masks else np.zeros((0, h, w), bool)
    return (np.asarray(classes, np.int64), masks, np.asarray(seg_ids, np.int64)), sem


def _instances(fields, image_size):
    classes, masks, seg_ids = fields
    inst = Instances(image_size)
    bm = BitMasks(torch.from_numpy(masks))
    inst.gt_boxes = bm.get_bounding_boxes()
    inst.gt_classes = torch.from_numpy(classes)
    inst.gt_masks = bm
    inst.gt_ids = torch.from_numpy(seg_ids)
    return inst


class VPSNetMapper(DatasetMapper):
    """Frame records of a video panoptic set → VPSNet's inputs (module docstring)."""

    _no_reference = collections.Counter()  # per process: training frames used as their own reference

    @configurable
    def __init__(self, is_train=True, *, train_stage="video", ref_frame_offsets=(-5, 5), ignore_value=255, **kwargs):
        super().__init__(is_train, **kwargs)
        self.train_stage, self.ref_frame_offsets = train_stage, tuple(int(o) for o in ref_frame_offsets)
        if not self.ref_frame_offsets:
            raise ValueError("VPSNetMapper: MODEL.VPSNET.REF_FRAME_OFFSETS is empty; give frame offsets such as [-5, 5]")
        self.ignore_value = ignore_value

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["train_stage"] = cfg.MODEL.VPSNET.TRAIN_STAGE
        ret["ref_frame_offsets"] = cfg.MODEL.VPSNET.REF_FRAME_OFFSETS
        ret["ignore_value"] = cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE
        return ret

    @staticmethod
    def _where(d):
        return f"{d.get('file_name')} (video {d.get('video_id')!r}, frame {d.get('frame_index')})"

    def _read_ids(self, frame, where):
        """Original panoptic id map of an annotated frame, checked against its ``segments_info``."""
        with Image.open(frame["pan_seg_file_name"]) as im:
            rgb = np.asarray(im.convert("RGB"))
        problems = check_panoptic_png(_rgb2id(rgb), frame["segments_info"], f"{where}: {frame['pan_seg_file_name']}")
        if problems:
            raise ValueError("VPSNetMapper: " + "; ".join(problems))
        return rgb

    def _targets(self, frame, transforms, image_shape, where):
        rgb = transforms.apply_segmentation(self._read_ids(frame, where))
        ids = _rgb2id(rgb)
        if ids.shape != tuple(image_shape):
            raise ValueError(f"VPSNetMapper: {where}: the panoptic PNG is {ids.shape}, the image {tuple(image_shape)}")
        fields, sem = panoptic_targets(ids, frame["segments_info"], self.ignore_value)
        return _instances(fields, tuple(image_shape)), torch.as_tensor(sem)

    def __call__(self, dataset_dict):
        d = {k: v for k, v in dataset_dict.items() if k != "video_frames"}
        image = utils.read_image(d["file_name"], format=self.image_format)
        utils.check_image_size(d, image)
        aug_input = T.AugInput(image)
        transforms = self.augmentations(aug_input)
        image = aug_input.image
        d["image"] = torch.as_tensor(np.ascontiguousarray(image.transpose(2, 0, 1)))
        if not self.is_train:
            return d
        where = self._where(d)
        if "pan_seg_file_name" not in d:
            raise ValueError(f"VPSNetMapper: training frame {where} has no panoptic ground truth; train on annotated "
                             "frames (register the training split without all_frames_json)")
        d["instances"], d["sem_seg"] = self._targets(d, transforms, image.shape[:2], where)
        if self.train_stage == "image":
            return d
        frames = {int(f["frame_index"]): f for f in dataset_dict.get("video_frames", ())}
        ref = pick_reference(d["frame_index"], frames, self.ref_frame_offsets)
        if ref is None:
            self._no_reference[where] += 1
            if self._no_reference[where] == 1:
                logger.warning("VPSNetMapper: %s has no annotated frame at offsets %s: it is its own reference (%d "
                               "such frames so far in this process)", where, list(self.ref_frame_offsets),
                               len(self._no_reference))
            ref = int(d["frame_index"])
            frames.setdefault(ref, d)
        ref_frame = frames[ref]
        ref_image = utils.read_image(ref_frame["file_name"], format=self.image_format)
        if ref_image.shape[:2] != (d["height"], d["width"]):
            raise ValueError(f"VPSNetMapper: reference frame {ref} ({ref_frame['file_name']}) of video "
                             f"{d.get('video_id')!r} is {ref_image.shape[0]}x{ref_image.shape[1]}, frame "
                             f"{d['frame_index']} is {d['height']}x{d['width']}: a video's frames must have one size")
        ref_image = transforms.apply_image(ref_image)
        d["ref_image"] = torch.as_tensor(np.ascontiguousarray(ref_image.transpose(2, 0, 1)))
        d["ref_frame_index"], d["ref_video_id"] = ref, d.get("video_id")
        if self.train_stage == "video":
            ref_where = f"{ref_frame['file_name']} (video {d.get('video_id')!r}, frame {ref})"
            d["ref_instances"], _ = self._targets(ref_frame, transforms, image.shape[:2], ref_where)
        else:
            d["flow"] = known_flow_target(d, int(d["frame_index"]), ref, transforms.transforms, image.shape[:2],
                                          "VPSNetMapper", where, "the synthetic segx_vps_shapes_* sets")
        return d


MAPPER_REGISTRY._do_register("VPSNet", VPSNetMapper)
