"""Deterministic synthetic video panoptic data: the panoptic shapes of ``segx.data.synthetic`` moving over the stuff
classes (sky, grass, water), with segment ids kept across the frames of a video (segx's embedded VPSNet data).

A video is a stuff canvas (``synthetic._stuff_layer``: bands with wavy borders, one texture per stuff class) seen
through a camera that pans at constant velocity, and 1–4 shapes that each move at constant velocity, bouncing off the
frame's borders, drawn in a fixed depth order (later ones occlude earlier ones). Every layer only translates, so the
flow between any two frames is exact (``segx.data.synthetic_video.known_flow`` on the motion file). A video is a pure
function of ``(seed, index)``.

Files (``write_video_panoptic_dataset``), in the Cityscapes-VPS layout that
``segx.data.datasets.cityscapes_vps.register_cityscapes_vps`` reads:

* ``images/<VVVV>_<FFFF>_shapes.jpg``: frame ``FFFF`` of video ``VVVV`` (the ids are parsed from the name, as in
  Cityscapes-VPS);
* ``panoptic/<VVVV>_<FFFF>_shapes.png``: COCO-panoptic PNG (``id = R + 256 G + 256² B``). A segment keeps its id over
  the video: stuff class ``c`` is ``1000·c`` (its category id times 1000), object ``i`` is
  ``1000·category + i + 1``; 0 = void (pixels of an object too occluded to annotate in that frame);
* ``panoptic_video.json``: ``images`` (``id``, ``file_name``, ``height``, ``width``), ``annotations`` (``image_id``,
  ``file_name``, ``segments_info``: ``id``, ``category_id``, ``iscrowd``, ``area``, ``bbox``) and ``categories``
  (``isthing``);
* ``motion/<VVVV>.npz``: ``layer_ids [T,H,W]`` (0 = the stuff canvas, ``i + 1`` = object ``i``) and
  ``positions [T,L,2]`` (the translation of each layer), what the flow stage trains on.
"""
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import ClassVar

import cv2
import numpy as np

from segx.data.synthetic import (
    STUFF_IDS,
    THING_IDS,
    _categories_stuff,
    _categories_things,
    _id2rgb,
    _publish,
    _stuff_layer,
    data_cache_dir,
)
from segx.data.synthetic_video import VideoSpec, _random_velocity, moving_objects

__all__ = ["VideoPanopticSpec", "PanopticVideo", "render_panoptic_video", "write_video_panoptic_dataset",
           "frame_stem", "segment_id"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1  # bump when rendering changes, so caches are rebuilt


@dataclass(frozen=True)
class VideoPanopticSpec(VideoSpec):
    """``VideoSpec`` with the panoptic videos' defaults (stuff canvas pan instead of a background pan); an object
    showing fewer than ``min_visible_area`` pixels in a frame is void there."""

    format_version: ClassVar[int] = FORMAT_VERSION
    max_size: int = 52
    max_speed: float = 4.0
    max_camera_speed: float = 2.0


@dataclass
class PanopticVideo:
    """``frames [T,H,W,3]`` uint8 RGB; ``ids [T,H,W]`` int64 panoptic segment ids (0 = void); ``segments``: per frame
    a list of ``segments_info`` dicts; ``layer_ids [T,H,W]`` uint8 and ``positions [T,L,2]`` float32 (the motion:
    layer 0 = stuff canvas, ``i + 1`` = object ``i``); ``classes``: per object an index into ``SHAPE_CLASSES``."""

    frames: np.ndarray
    ids: np.ndarray
    segments: list
    layer_ids: np.ndarray
    positions: np.ndarray
    classes: list


def frame_stem(video, frame):
    """File stem of frame ``frame`` of video ``video``: ``VVVV_FFFF_shapes`` (Cityscapes-VPS's id prefix)."""
    return f"{video:04d}_{frame:04d}_shapes"


def segment_id(category_id, object_index=None):
    """Segment id kept over a video: ``1000·category_id`` for stuff, ``1000·category_id + i + 1`` for object i."""
    return 1000 * int(category_id) + (0 if object_index is None else int(object_index) + 1)


def _bbox_xywh(mask):
    ys, xs = np.nonzero(mask)
    return [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)]


def render_panoptic_video(spec: VideoPanopticSpec, index: int) -> PanopticVideo:
    """Renders video ``index`` of ``spec``; the same arguments always give the same video."""
    rng = np.random.default_rng([spec.seed, index, 11])
    T, H, W = spec.num_frames, spec.height, spec.width
    margin = int(np.ceil(spec.max_camera_speed * T)) + 2
    stuff_canvas, canvas = _stuff_layer(rng, H + 2 * margin, W + 2 * margin)
    cam = _random_velocity(rng, spec.max_camera_speed)
    cam_pos = np.array([margin, margin], np.float64) - cam * (T - 1) / 2  # the pan stays inside the canvas
    objects = moving_objects(rng, spec, canvas.mean(axis=(0, 1)), min_contrast=120)  # visible against the stuff
    n = len(objects)
    frames = np.zeros((T, H, W, 3), np.uint8)
    ids = np.zeros((T, H, W), np.int64)
    layer_ids = np.zeros((T, H, W), np.uint8)
    positions = np.zeros((T, n + 1, 2), np.float32)
    segments = []
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for t in range(T):
        c = cam_pos + cam * t
        affine = np.array([[1, 0, c[0]], [0, 1, c[1]]], np.float64)  # frame pixel p shows canvas point p + c
        img = cv2.warpAffine(canvas, affine, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        stuff = cv2.warpAffine(stuff_canvas.astype(np.float32), affine, (W, H),
                               flags=cv2.INTER_NEAREST | cv2.WARP_INVERSE_MAP).astype(np.int64)
        positions[t, 0] = -c
        owner = np.full((H, W), -1, np.int64)
        for i, (cls, track, poly, colour, (freq, phase)) in enumerate(objects):
            p = track[t]
            shape = np.zeros((H, W), np.uint8)
            cv2.fillPoly(shape, [np.round((poly + p) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            on = shape.astype(bool)
            stripes = 0.85 + 0.15 * np.cos(freq * ((xx - p[0]) + 0.5 * (yy - p[1])) * 6 + phase)
            img[on] = (colour[None, None] * stripes[..., None])[on]
            owner[on] = i
            layer_ids[t][on] = i + 1
            positions[t, i + 1] = p
        img += rng.normal(0, 2, size=img.shape).astype(np.float32)  # sensor noise, independent per frame
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
        seg_map = np.zeros((H, W), np.int64)
        infos = []
        for s, cat in enumerate(STUFF_IDS):
            region = (stuff == s) & (owner < 0)
            if region.any():
                seg_map[region] = segment_id(cat)
                infos.append({"id": segment_id(cat), "category_id": cat, "iscrowd": 0, "area": int(region.sum()),
                              "bbox": _bbox_xywh(region)})
        for i, (cls, *_rest) in enumerate(objects):
            visible = owner == i
            if visible.sum() < spec.min_visible_area:
                continue  # void in this frame (id 0)
            sid = segment_id(THING_IDS[cls], i)
            seg_map[visible] = sid
            infos.append({"id": sid, "category_id": THING_IDS[cls], "iscrowd": 0, "area": int(visible.sum()),
                          "bbox": _bbox_xywh(visible)})
        ids[t] = seg_map
        segments.append(infos)
    return PanopticVideo(frames=frames, ids=ids, segments=segments, layer_ids=layer_ids, positions=positions,
                         classes=[o[0] for o in objects])


def categories():
    """The panoptic categories (things 1..4, stuff 11..13), with colours."""
    colours = [(230, 25, 75), (60, 180, 75), (0, 130, 200), (245, 130, 48), (135, 206, 235), (34, 139, 34), (0, 0, 139)]
    cats = _categories_things() + _categories_stuff()
    for c, colour in zip(cats, colours):
        c["color"] = list(colour)
    return cats


def write_video_panoptic_dataset(spec: VideoPanopticSpec, root=None):
    """Writes (once) the frames, panoptic PNGs, ``panoptic_video.json`` and ``motion/*.npz`` of ``spec`` (module
    docstring); returns the folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"video_panoptic_{spec.key()}")
    if os.path.isfile(os.path.join(root, "panoptic_video.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    for sub in ("images", "panoptic", "motion"):
        os.makedirs(os.path.join(tmp, sub))
    images, annotations, void_frames = [], [], 0
    for v in range(spec.num_videos):
        video = render_panoptic_video(spec, v)
        vid = v + 1
        for t in range(spec.num_frames):
            stem = frame_stem(vid, t)
            cv2.imwrite(os.path.join(tmp, "images", stem + ".jpg"), video.frames[t][:, :, ::-1],
                        [cv2.IMWRITE_JPEG_QUALITY, 95])
            cv2.imwrite(os.path.join(tmp, "panoptic", stem + ".png"), _id2rgb(video.ids[t])[:, :, ::-1])
            images.append({"id": stem, "file_name": stem + ".jpg", "height": spec.height, "width": spec.width})
            annotations.append({"image_id": stem, "file_name": stem + ".png", "segments_info": video.segments[t]})
            void_frames += int((video.ids[t] == 0).any())
        np.savez_compressed(os.path.join(tmp, "motion", f"{vid:04d}.npz"), layer_ids=video.layer_ids,
                            positions=video.positions)
    with open(os.path.join(tmp, "panoptic_video.json"), "w") as f:
        json.dump({"info": {"description": "segx synthetic video panoptic shapes", "spec": asdict(spec)},
                   "images": images, "annotations": annotations, "categories": categories()}, f)
    logger.info("segx synthetic video panoptic: %d videos x %d frames (%d frames with void pixels) -> %s",
                spec.num_videos, spec.num_frames, void_frames, root)
    _publish(tmp, root)
    return root

