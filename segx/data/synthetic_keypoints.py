"""Deterministic synthetic keypoint data: articulated stick figures with MPII's 16 named, ordered joints.

Each image is a single-person crop (like MPII's centre/scale crops): one figure on a cluttered background
(``synthetic._background``), its limbs drawn as thick segments, the head as a disc. The figure's right-side
limbs are warm-coloured and its left-side limbs cool-coloured (with jitter), so left and right are decidable
from the pixels; a horizontal flip swaps the colours too, so these sets are meant to be trained without
flip augmentation (the flip pairs are still declared for metadata and test-time use).

Visibility follows COCO: 2 = visible, 1 = annotated but hidden behind an occluder (random boxes drawn over
the figure), 0 = not annotated (outside the image; x = y = 0 in the file). The person box (``bbox``) covers
all joints plus the limb width, clipped to the image.

Files: ``images/*.jpg`` and ``person_keypoints.json`` (COCO keypoints format: keypoints as pixel indices,
``num_keypoints``, category ``person`` with ``keypoints`` names and ``skeleton``), under the cache folder of
``synthetic.data_cache_dir()``, written once and renamed into place. Every figure is a pure function of
``(seed, index)``.
"""
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass

import cv2
import numpy as np

from segx.data.synthetic import _background, _publish, data_cache_dir

__all__ = [
    "JOINT_NAMES",
    "FLIP_PAIRS",
    "SKELETON",
    "FigureSpec",
    "Figure",
    "render_figure",
    "write_keypoints_dataset",
    "keypoint_categories",
]

logger = logging.getLogger(__name__)

# MPII's joint order (so a model trained here has MPII's output layout).
JOINT_NAMES = (
    "right_ankle", "right_knee", "right_hip", "left_hip", "left_knee", "left_ankle",
    "pelvis", "thorax", "upper_neck", "head_top",
    "right_wrist", "right_elbow", "right_shoulder", "left_shoulder", "left_elbow", "left_wrist",
)
FLIP_PAIRS = ((0, 5), (1, 4), (2, 3), (10, 15), (11, 14), (12, 13))
# Limbs (0-based joint indices) drawn as segments; also the skeleton of the JSON (1-based there, as COCO).
SKELETON = (
    (0, 1), (1, 2), (2, 6), (3, 6), (3, 4), (4, 5), (6, 7), (7, 8), (8, 9),
    (10, 11), (11, 12), (12, 7), (13, 7), (13, 14), (14, 15),
)
_RIGHT = {0, 1, 2, 10, 11, 12}
_LEFT = {3, 4, 5, 13, 14, 15}
FORMAT_VERSION = 1


@dataclass(frozen=True)
class FigureSpec:
    """What to generate: ``num_images`` single-figure crops of ``size``×``size`` pixels."""

    num_images: int
    seed: int
    size: int = 128
    occluder_prob: float = 0.5  # chance of 1–2 occluding boxes over the figure
    truncation_prob: float = 0.15  # chance that the figure is shifted partly out of the image

    def key(self):
        import hashlib

        blob = json.dumps({**asdict(self), "v": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


@dataclass
class Figure:
    """``image`` HxWx3 uint8 RGB; ``keypoints`` ``[16,3]`` (x, y continuous image coordinates, visibility);
    ``bbox`` (x0, y0, w, h)."""

    image: np.ndarray
    keypoints: np.ndarray
    bbox: tuple


def _unit(angle):
    return np.array([np.cos(angle), np.sin(angle)])


def _pose(rng):
    """Joint positions ``[16,2]`` of a figure with torso length 1, pelvis at the origin (y down)."""
    j = np.zeros((16, 2))
    up = -np.pi / 2 + rng.uniform(-0.35, 0.35)  # torso direction
    j[7] = j[6] + 1.0 * _unit(up)
    j[8] = j[7] + 0.25 * _unit(up + rng.uniform(-0.3, 0.3))
    j[9] = j[8] + 0.45 * _unit(up + rng.uniform(-0.3, 0.3))
    side = _unit(up + np.pi / 2)  # the figure faces the viewer: its right side is on the image's left
    width = rng.uniform(0.28, 0.4)
    j[12], j[13] = j[7] + side * width, j[7] - side * width
    j[2], j[3] = j[6] + side * width * 0.6, j[6] - side * width * 0.6
    for shoulder, elbow, wrist in ((12, 11, 10), (13, 14, 15)):
        a = rng.uniform(0, 2 * np.pi)
        j[elbow] = j[shoulder] + rng.uniform(0.45, 0.6) * _unit(a)
        j[wrist] = j[elbow] + rng.uniform(0.4, 0.55) * _unit(a + rng.uniform(-2.4, 2.4))
    for hip, knee, ankle in ((2, 1, 0), (3, 4, 5)):
        a = np.pi / 2 + rng.uniform(-0.9, 0.9)
        j[knee] = j[hip] + rng.uniform(0.6, 0.75) * _unit(a)
        j[ankle] = j[knee] + rng.uniform(0.55, 0.7) * _unit(a + rng.uniform(-1.0, 1.0))
    return j


def _limb_colour(rng, joint_a, joint_b, torso):
    side = _RIGHT if joint_a in _RIGHT or joint_b in _RIGHT else _LEFT if joint_a in _LEFT or joint_b in _LEFT else None
    if side is _RIGHT:
        return np.array([rng.uniform(190, 255), rng.uniform(40, 140), rng.uniform(0, 60)])  # warm
    if side is _LEFT:
        return np.array([rng.uniform(0, 60), rng.uniform(90, 200), rng.uniform(190, 255)])  # cool
    return torso


def render_figure(spec: FigureSpec, index: int) -> Figure:
    """Renders figure ``index`` of ``spec``; the same arguments always give the same figure."""
    rng = np.random.default_rng([spec.seed, index])
    s = spec.size
    img = _background(rng, s, s)
    pose = _pose(rng)
    extent = pose.max(0) - pose.min(0)
    scale = rng.uniform(0.55, 0.85) * s / max(extent.max(), 1e-6)
    pts = (pose - (pose.min(0) + pose.max(0)) / 2) * scale
    shift = np.array([s / 2, s / 2]) + rng.uniform(-0.08, 0.08, 2) * s
    if rng.random() < spec.truncation_prob:
        shift += _unit(rng.uniform(0, 2 * np.pi)) * rng.uniform(0.2, 0.35) * s
    pts = pts + shift
    thick = max(2, int(round(0.09 * scale)))
    torso = rng.uniform(60, 220, 3)
    limbs = list(SKELETON)
    order = rng.permutation(len(limbs))  # random depth order: limbs cross over each other either way
    for li in order:
        a, b = limbs[li]
        colour = _limb_colour(rng, a, b, torso)
        p0 = tuple(int(v) for v in np.round(pts[a] * 16))
        p1 = tuple(int(v) for v in np.round(pts[b] * 16))
        cv2.line(img, p0, p1, tuple(float(v) for v in colour), thick, cv2.LINE_AA, shift=4)
    head_c = (pts[8] + pts[9]) / 2
    head_r = max(2.0, np.linalg.norm(pts[9] - pts[8]) / 2)
    cv2.circle(img, tuple(int(v) for v in np.round(head_c * 16)), int(round(head_r * 16)),
               tuple(float(v) for v in torso * 0.8), -1, cv2.LINE_AA, shift=4)
    # joints as pixel-centre continuous coordinates: the point drawn at (x, y) is pixel (row y, col x)
    visibility = np.full(16, 2, dtype=np.int64)
    if rng.random() < spec.occluder_prob:
        for _ in range(int(rng.integers(1, 3))):
            target = pts[int(rng.integers(16))]
            half = rng.uniform(0.06, 0.14, 2) * s
            x0, y0 = np.floor(target - half).astype(int)
            x1, y1 = np.ceil(target + half).astype(int)
            colour = rng.uniform(0, 255, 3)
            cv2.rectangle(img, (int(x0), int(y0)), (int(x1), int(y1)), tuple(float(v) for v in colour), -1)
            inside = (pts[:, 0] >= x0 - 0.5) & (pts[:, 0] <= x1 + 0.5) & (pts[:, 1] >= y0 - 0.5) & (pts[:, 1] <= y1 + 0.5)
            visibility[inside] = 1
    img += rng.normal(0, 4, img.shape).astype(np.float32)
    out = (pts[:, 0] < 0) | (pts[:, 0] > s - 1) | (pts[:, 1] < 0) | (pts[:, 1] > s - 1)
    visibility[out] = 0
    keypoints = np.concatenate([pts + 0.5, visibility[:, None]], axis=1)  # +0.5: pixel index → continuous
    keypoints[out, :2] = 0
    lo = np.clip(pts.min(0) - thick, 0, s)
    hi = np.clip(pts.max(0) + 1 + thick, 0, s)
    bbox = (float(lo[0]), float(lo[1]), float(hi[0] - lo[0]), float(hi[1] - lo[1]))
    return Figure(image=np.clip(img, 0, 255).astype(np.uint8), keypoints=keypoints, bbox=bbox)


def keypoint_categories():
    """The COCO ``categories`` entry of the figures (skeleton 1-based, as in COCO files)."""
    return [{"id": 1, "name": "person", "supercategory": "person", "keypoints": list(JOINT_NAMES),
             "skeleton": [[a + 1, b + 1] for a, b in SKELETON]}]


def write_keypoints_dataset(spec: FigureSpec, root=None):
    """Writes (once) ``images/*.jpg`` and ``person_keypoints.json`` for ``spec``; returns the folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"figures_{spec.key()}")
    if os.path.isfile(os.path.join(root, "person_keypoints.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    os.makedirs(os.path.join(tmp, "images"))
    images, annotations = [], []
    counts = np.zeros(3, np.int64)
    for idx in range(spec.num_images):
        fig = render_figure(spec, idx)
        file_name = f"{idx:06d}.jpg"
        cv2.imwrite(os.path.join(tmp, "images", file_name), fig.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": idx + 1, "file_name": file_name, "height": spec.size, "width": spec.size})
        kps = fig.keypoints.copy()
        annotated = kps[:, 2] > 0
        kps[annotated, :2] -= 0.5  # COCO files hold pixel indices; loaders add 0.5 back
        counts += np.bincount(kps[:, 2].astype(int), minlength=3)
        annotations.append({
            "id": idx + 1, "image_id": idx + 1, "category_id": 1, "iscrowd": 0,
            "bbox": [round(v, 2) for v in fig.bbox], "area": float(fig.bbox[2] * fig.bbox[3]),
            "keypoints": [round(float(v), 2) if i % 3 < 2 else int(v) for i, v in enumerate(kps.flatten())],
            "num_keypoints": int(annotated.sum()),
        })
    with open(os.path.join(tmp, "person_keypoints.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": keypoint_categories(),
                   "info": {"description": "segx synthetic figures", "spec": asdict(spec)}}, f)
    logger.info("segx synthetic figures: %d images; joints visible %d, occluded %d, not annotated %d -> %s",
                len(images), counts[2], counts[1], counts[0], root)
    _publish(tmp, root)
    return root
