"""Deterministic synthetic videos: the shapes of ``segx.data.synthetic`` moving over a panning background, with
instance ids and the exact motion of every pixel (segx's embedded video data, YolactEdge's default).

Each video has a textured background (gradient, noise, lines, blotches) seen through a camera that pans at constant
velocity, and 1–4 shapes (``SHAPE_CLASSES``) that each move at constant velocity, bouncing off the frame's borders,
drawn in a fixed depth order (later ones occlude earlier ones). Every layer (0 = background, i + 1 = object i) only
translates, so the flow between any two frames is known exactly: a pixel ``p`` of frame ``t`` showing layer ``l`` is
at ``p + positions[s, l] - positions[t, l]`` in frame ``s`` (``known_flow``). A video is a pure function of
``(seed, index)``.

Files (``write_video_dataset``), in the YouTube-VIS 2019 format that ``register_youtube_vis`` reads:
``JPEGImages/<video>/<frame>.jpg``, ``instances.json`` (``videos`` with ``file_names``; ``annotations`` = one per
object with per-frame RLE ``segmentations``, ``bboxes``, ``areas``, ``null`` where the object is hidden) and the
motion, ``motion/<video>.npz`` (``layer_ids [T,H,W]`` uint8, ``positions [T,L,2]`` float32 x, y).
"""
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass
from typing import ClassVar

import cv2
import numpy as np
from pycocotools import mask as mask_util

from segx.data.synthetic import SHAPE_CLASSES, THING_IDS, _background, _publish, _shape_polygon, data_cache_dir

__all__ = ["VideoSpec", "Video", "render_video", "known_flow", "write_video_dataset", "load_motion"]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 2  # bump when rendering changes, so caches are rebuilt


@dataclass(frozen=True)
class VideoSpec:
    """What to generate. Sizes in pixels; speeds in pixels per frame. ``key()``: the cache key (the fields and
    ``format_version``, bumped when rendering changes)."""

    format_version: ClassVar[int] = FORMAT_VERSION

    num_videos: int
    num_frames: int
    seed: int
    height: int = 128
    width: int = 128
    min_objects: int = 1
    max_objects: int = 4
    min_size: int = 16
    max_size: int = 56
    max_speed: float = 5.0  # objects
    max_camera_speed: float = 3.0  # background pan
    min_visible_area: int = 24  # an object showing fewer pixels in a frame is not annotated in that frame

    def key(self):
        blob = json.dumps({**asdict(self), "v": self.format_version}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


@dataclass
class Video:
    """``frames [T,H,W,3]`` uint8 RGB; ``layer_ids [T,H,W]`` uint8, the layer each pixel shows (0 background,
    i + 1 object i); ``positions [T,L,2]`` float32, the translation (x, y) of each layer in each frame;
    ``classes``: per object, an index into ``SHAPE_CLASSES``."""

    frames: np.ndarray
    layer_ids: np.ndarray
    positions: np.ndarray
    classes: list

    def object_mask(self, t, i):
        return self.layer_ids[t] == i + 1


def _bounce(start, velocity, lo, hi, num_frames):
    """Positions ``[T,2]`` of a point moving at ``velocity`` from ``start``, reflected at ``lo``/``hi`` per axis."""
    pos, v, out = np.array(start, np.float64), np.array(velocity, np.float64), []
    for _ in range(num_frames):
        out.append(pos.copy())
        pos += v
        for a in range(2):
            if pos[a] < lo[a] or pos[a] > hi[a]:
                v[a] = -v[a]
                pos[a] = 2 * (lo[a] if pos[a] < lo[a] else hi[a]) - pos[a]
    return np.array(out)


def _random_velocity(rng, max_speed):
    angle, speed = rng.uniform(0, 2 * np.pi), rng.uniform(0.3, 1.0) * max_speed
    return np.array([np.cos(angle), np.sin(angle)]) * speed


def moving_objects(rng, spec, background_mean, min_contrast):
    """Random objects of ``spec`` (its count, size and speed ranges) for a ``spec.num_frames``-frame video: per
    object ``(class index, track [T,2] centre positions bouncing inside the frame, polygon around (0, 0), RGB
    colour at least ``min_contrast`` (L1) from ``background_mean``, stripe texture (frequency, phase))``."""
    T, H, W = spec.num_frames, spec.height, spec.width
    objects = []
    for _ in range(int(rng.integers(spec.min_objects, spec.max_objects + 1))):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        size = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size))))
        r = size / 2
        lo, hi = (0.6 * r, 0.6 * r), (W - 0.6 * r, H - 0.6 * r)  # mostly inside the frame
        track = _bounce(rng.uniform(lo, hi), _random_velocity(rng, spec.max_speed), lo, hi, T)
        poly = _shape_polygon(SHAPE_CLASSES[cls], 0.0, 0.0, r, rng.uniform(0, 2 * np.pi))
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - background_mean).sum() < min_contrast:
            colour = rng.uniform(0, 255, size=3)
        texture = (rng.uniform(0.15, 0.35) / r, rng.uniform(0, 2 * np.pi))  # stripes that move with the object
        objects.append((cls, track, poly, colour, texture))
    return objects


def render_video(spec: VideoSpec, index: int) -> Video:
    """Renders video ``index`` of ``spec``; the same arguments always give the same video."""
    rng = np.random.default_rng([spec.seed, index, 7])
    T, H, W = spec.num_frames, spec.height, spec.width
    margin = int(np.ceil(spec.max_camera_speed * T)) + 2
    canvas = _background(rng, H + 2 * margin, W + 2 * margin)
    # blotches (blurred noise, ~6 px) so that the background's motion is visible, not only its borders
    blotches = cv2.GaussianBlur(rng.normal(0, 1, canvas.shape[:2]).astype(np.float32), (0, 0), 3)
    canvas += (40 / blotches.std()) * blotches[..., None] * rng.uniform(0.5, 1.0, size=3).astype(np.float32)
    cam = _random_velocity(rng, spec.max_camera_speed)
    cam_pos = np.array([margin, margin], np.float64) - cam * (T - 1) / 2  # the pan stays inside the canvas
    objects = moving_objects(rng, spec, canvas.mean(axis=(0, 1)), min_contrast=90)
    n = len(objects)
    frames = np.zeros((T, H, W, 3), np.uint8)
    layer_ids = np.zeros((T, H, W), np.uint8)
    positions = np.zeros((T, n + 1, 2), np.float32)
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    for t in range(T):
        c = cam_pos + cam * t
        affine = np.array([[1, 0, c[0]], [0, 1, c[1]]], np.float64)  # frame pixel p shows canvas point p + c
        img = cv2.warpAffine(canvas, affine, (W, H), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
        positions[t, 0] = -c
        for i, (cls, track, poly, colour, (freq, phase)) in enumerate(objects):
            p = track[t]
            shape = np.zeros((H, W), np.uint8)
            cv2.fillPoly(shape, [np.round((poly + p) * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
            on = shape.astype(bool)
            stripes = 0.85 + 0.15 * np.cos(freq * ((xx - p[0]) + 0.5 * (yy - p[1])) * 6 + phase)
            img[on] = (colour[None, None] * stripes[..., None])[on]
            layer_ids[t][on] = i + 1
            positions[t, i + 1] = p
        img += rng.normal(0, 2, size=img.shape).astype(np.float32)  # sensor noise, independent per frame
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return Video(frames=frames, layer_ids=layer_ids, positions=positions, classes=[o[0] for o in objects])


def known_flow(layer_ids_t, positions_t, positions_s):
    """The exact flow from frame t to frame s, ``[2,H,W]`` float32 in pixels: frame_t(p) = frame_s(p + flow(p)) for
    every pixel whose layer is visible in both (``layer_ids_t [H,W]``, ``positions_* [L,2]``)."""
    disp = (np.asarray(positions_s, np.float32) - np.asarray(positions_t, np.float32))  # [L,2]
    return np.ascontiguousarray(disp[layer_ids_t].transpose(2, 0, 1))


def load_motion(path):
    """``(layer_ids [T,H,W], positions [T,L,2])`` from a ``motion/<video>.npz`` file."""
    with np.load(path) as z:
        return z["layer_ids"], z["positions"]


def _rle(mask):
    rle = mask_util.encode(np.asfortranarray(mask.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def write_video_dataset(spec: VideoSpec, root=None):
    """Writes (once) the frames, ``instances.json`` (YouTube-VIS) and ``motion/*.npz`` of ``spec``; returns the
    folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"videos_{spec.key()}")
    if os.path.isfile(os.path.join(root, "instances.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    os.makedirs(os.path.join(tmp, "motion"))
    videos, annotations, hidden = [], [], 0
    for v in range(spec.num_videos):
        video = render_video(spec, v)
        folder = f"{v:05d}"
        os.makedirs(os.path.join(tmp, "JPEGImages", folder))
        names = []
        for t, frame in enumerate(video.frames):
            names.append(f"{folder}/{t:05d}.jpg")
            cv2.imwrite(os.path.join(tmp, "JPEGImages", names[-1]), frame[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        videos.append({"id": v + 1, "width": spec.width, "height": spec.height, "length": spec.num_frames,
                       "file_names": names})
        for i, cls in enumerate(video.classes):
            segs, boxes, areas = [], [], []
            for t in range(spec.num_frames):
                m = video.object_mask(t, i)
                if m.sum() < spec.min_visible_area:
                    segs.append(None), boxes.append(None), areas.append(None)
                    hidden += 1
                    continue
                ys, xs = np.nonzero(m)
                segs.append(_rle(m))
                boxes.append([float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1),
                              float(ys.max() - ys.min() + 1)])
                areas.append(float(m.sum()))
            annotations.append({"id": len(annotations) + 1, "video_id": v + 1, "category_id": THING_IDS[cls],
                                "iscrowd": 0, "width": spec.width, "height": spec.height, "length": 1,
                                "segmentations": segs, "bboxes": boxes, "areas": areas})
        np.savez_compressed(os.path.join(tmp, "motion", f"{folder}.npz"), layer_ids=video.layer_ids,
                            positions=video.positions)
    categories = [{"id": cid, "name": name, "supercategory": "shape"} for cid, name in zip(THING_IDS, SHAPE_CLASSES)]
    with open(os.path.join(tmp, "instances.json"), "w") as f:
        json.dump({"info": {"description": "segx synthetic moving shapes", "spec": asdict(spec)}, "licenses": [],
                   "videos": videos, "annotations": annotations, "categories": categories}, f)
    logger.info("segx synthetic videos: %d videos x %d frames, %d object tracks (%d object-frames hidden) -> %s",
                len(videos), spec.num_frames, len(annotations), hidden, root)
    _publish(tmp, root)
    return root
