"""Deterministic synthetic faces with 5 landmarks: segx's embedded data for RetinaFace.

Each scene is a textured background with 0–4 cartoon faces (skin-coloured ellipses with two eyes, a nose
and a mouth whose corners are the landmarks) at log-uniform sizes, plus face-coloured ellipses without
features as distractors, so a detector has to learn the facial layout and not just the colour. Some faces
(``no_landmark_prob``) are annotated without landmarks (all five points with visibility 0: the −1 faces of
RetinaFace's WIDER FACE labels). Every scene is a pure function of ``(seed, index)``.

Files are COCO-keypoints-style: JPEG images and ``faces.json`` (category "face", 5 keypoints in the order
``FACE_KEYPOINT_NAMES``), under ``$SEGX_DATA_CACHE`` (see ``segx.data.synthetic.data_cache_dir``).
Keypoint x, y are written as they are drawn (the frame of the boxes), which is what the face loaders return
(``segx.data.datasets.faces``: landmarks are the file's numbers, RetinaFace's convention).
"""
import hashlib
import json
import logging
import os
import tempfile
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from segx.data.synthetic import _background, _publish, data_cache_dir

__all__ = [
    "FACE_KEYPOINT_NAMES",
    "FACE_KEYPOINT_FLIP_MAP",
    "FaceSpec",
    "FaceScene",
    "render_face_scene",
    "write_faces_dataset",
]

logger = logging.getLogger(__name__)

# "left"/"right" as seen in the image (left = smaller x), RetinaFace's landmark order.
FACE_KEYPOINT_NAMES = ("left_eye", "right_eye", "nose", "left_mouth", "right_mouth")
FACE_KEYPOINT_FLIP_MAP = (("left_eye", "right_eye"), ("left_mouth", "right_mouth"))
FORMAT_VERSION = 2  # 2: landmarks written in the boxes' frame (1: minus 0.5)


@dataclass(frozen=True)
class FaceSpec:
    """What to generate. ``min_size``/``max_size``: face width in pixels (height is 1.2–1.35× the width)."""

    num_images: int
    seed: int
    height: int = 128
    width: int = 128
    max_faces: int = 4
    empty_prob: float = 0.05  # scenes without faces
    min_size: int = 12
    max_size: int = 64
    max_distractors: int = 2
    no_landmark_prob: float = 0.15

    def key(self):
        blob = json.dumps({**asdict(self), "v": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


@dataclass
class FaceScene:
    """``image`` HxWx3 uint8 RGB; ``boxes`` [N,4] xyxy (continuous pixel coordinates); ``landmarks`` [N,5,2];
    ``has_landmarks`` [N] bool (False: annotated without landmarks)."""

    image: np.ndarray
    boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0, 5, 2)))
    has_landmarks: np.ndarray = field(default_factory=lambda: np.zeros((0,), bool))


def _overlap(a, b):
    """Intersection of two xyxy boxes over the smaller one's area."""
    lt = np.maximum(a[:2], b[:2])
    rb = np.minimum(a[2:], b[2:])
    inter = np.prod(np.clip(rb - lt, 0, None))
    return inter / (min(np.prod(a[2:] - a[:2]), np.prod(b[2:] - b[:2])) + 1e-9)


def _ellipse(img, cx, cy, ax, ay, angle_deg, colour):
    s = 16  # cv2 sub-pixel shift
    cv2.ellipse(img, (int(round(cx * s)), int(round(cy * s))), (int(round(ax * s)), int(round(ay * s))),
                angle_deg, 0, 360, colour, -1, cv2.LINE_AA, 4)


def _skin(rng):
    base = np.array([224, 172, 105], np.float64) * rng.uniform(0.45, 1.1)
    return np.clip(base + rng.normal(0, 12, 3), 0, 255)


def render_face_scene(spec: FaceSpec, index: int) -> FaceScene:
    """Renders scene ``index`` of ``spec``; the same arguments always give the same scene."""
    rng = np.random.default_rng([spec.seed, index, 7])
    h, w = spec.height, spec.width
    img = _background(rng, h, w)
    n = 0 if rng.random() < spec.empty_prob else int(rng.integers(1, spec.max_faces + 1))
    boxes, landmarks, has_ldm = [], [], []
    for _ in range(int(rng.integers(0, spec.max_distractors + 1))):  # featureless blobs, drawn first (behind)
        fw = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size))))
        _ellipse(img, rng.uniform(0, w), rng.uniform(0, h), fw / 2, fw * rng.uniform(0.4, 0.8), rng.uniform(0, 180),
                 tuple(float(v) for v in _skin(rng)))
    tries = 0
    while len(boxes) < n and tries < 50:
        tries += 1
        fw = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size))))
        fh = fw * rng.uniform(1.2, 1.35)
        cx = rng.uniform(fw / 2 + 1, w - fw / 2 - 1)
        cy = rng.uniform(fh / 2 + 1, h - fh / 2 - 1)
        box = np.array([cx - fw / 2, cy - fh / 2, cx + fw / 2, cy + fh / 2])
        if any(_overlap(box, b) > 0.2 for b in boxes):  # little occlusion: landmarks stay visible
            continue
        skin = _skin(rng)
        _ellipse(img, cx, cy, fw / 2, fh / 2, 0, tuple(float(v) for v in skin))
        yaw = rng.uniform(-0.08, 0.08) * fw  # interior features shift sideways as the head turns
        eye_dx, eye_y = fw * rng.uniform(0.18, 0.24), cy - fh * rng.uniform(0.08, 0.16)
        mouth_dx, mouth_y = fw * rng.uniform(0.13, 0.2), cy + fh * rng.uniform(0.2, 0.28)
        pts = np.array([
            [cx + yaw - eye_dx, eye_y],
            [cx + yaw + eye_dx, eye_y],
            [cx + 1.5 * yaw, cy + fh * rng.uniform(0.0, 0.08)],
            [cx + yaw - mouth_dx, mouth_y],
            [cx + yaw + mouth_dx, mouth_y],
        ])
        dark = tuple(float(v) for v in skin * rng.uniform(0.1, 0.3))
        r_eye = max(0.8, fw * 0.07)
        for p in pts[:2]:
            _ellipse(img, p[0], p[1], r_eye * 1.3, r_eye, 0, (245.0, 245.0, 245.0))
            _ellipse(img, p[0], p[1], r_eye * 0.7, r_eye * 0.7, 0, dark)
        nose = tuple(float(v) for v in skin * 0.7)
        _ellipse(img, pts[2, 0], pts[2, 1], max(0.6, fw * 0.05), max(0.6, fw * 0.06), 0, nose)
        s = 16
        lip = tuple(float(v) for v in np.array([150.0, 40.0, 50.0]) * rng.uniform(0.6, 1.1))
        mid = (pts[3] + pts[4]) / 2 + [0, fh * rng.uniform(0.0, 0.06)]
        curve = np.array([pts[3], mid, pts[4]])
        cv2.polylines(img, [np.round(curve * s).astype(np.int32)], False, lip, max(1, int(round(fw * 0.05))),
                      cv2.LINE_AA, 4)
        boxes.append(box)
        landmarks.append(pts)
        has_ldm.append(bool(rng.random() >= spec.no_landmark_prob))
    img += rng.normal(0, 4, size=img.shape).astype(np.float32)
    scene = FaceScene(image=np.clip(img, 0, 255).astype(np.uint8))
    if boxes:
        scene.boxes = np.array(boxes)
        scene.landmarks = np.array(landmarks)
        scene.has_landmarks = np.array(has_ldm)
    return scene


def faces_categories():
    """COCO categories entry of the face class (5 keypoints, no skeleton)."""
    return [{"id": 1, "name": "face", "supercategory": "face", "keypoints": list(FACE_KEYPOINT_NAMES), "skeleton": []}]


def write_faces_dataset(spec: FaceSpec, root=None):
    """Writes (once) ``images/*.jpg`` and ``faces.json`` (COCO keypoints style) for ``spec``; returns the folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"faces_{spec.key()}")
    if os.path.isfile(os.path.join(root, "faces.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    os.makedirs(os.path.join(tmp, "images"))
    images, annotations = [], []
    no_ldm = 0
    for idx in range(spec.num_images):
        scene = render_face_scene(spec, idx)
        file_name = f"{idx:06d}.jpg"
        cv2.imwrite(os.path.join(tmp, "images", file_name), scene.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": idx + 1, "file_name": file_name, "height": spec.height, "width": spec.width})
        for box, pts, has in zip(scene.boxes, scene.landmarks, scene.has_landmarks):
            if has:
                kpts = np.concatenate([pts, np.full((5, 1), 2.0)], axis=1).flatten().round(3).tolist()
            else:
                kpts, no_ldm = [0.0] * 15, no_ldm + 1
            bw, bh = box[2] - box[0], box[3] - box[1]
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": 1,
                "bbox": [round(float(box[0]), 3), round(float(box[1]), 3), round(float(bw), 3), round(float(bh), 3)],
                "area": float(bw * bh), "iscrowd": 0, "keypoints": kpts, "num_keypoints": 5 if has else 0,
            })
    with open(os.path.join(tmp, "faces.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": faces_categories(),
                   "info": {"description": "segx synthetic faces", "spec": asdict(spec)}}, f)
    logger.info("segx synthetic faces: %d images, %d faces (%d without landmarks) -> %s",
                len(images), len(annotations), no_ldm, root)
    _publish(tmp, root)
    return root
