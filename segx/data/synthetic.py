"""Deterministic synthetic datasets: segx's embedded default data (no download, real learning signal).

Scenes of coloured shapes (``SHAPE_CLASSES``) on textured backgrounds, drawn with occlusion (later shapes
cover earlier ones) at sizes from small to large. Colour is independent of class, so a model must learn
shape. The panoptic variant paints stuff regions (``STUFF_CLASSES``) with distinct textures under the
shapes. Every scene is a pure function of ``(seed, index)``.

Files are written in the formats users bring: JPEG images, COCO instances JSON (polygons), and
COCO-panoptic PNG (rgb2id) + JSON, under a cache folder (``$SEGX_DATA_CACHE``, default
``~/.cache/segx``), written once into a temporary folder and renamed into place.
"""
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

__all__ = [
    "SHAPE_CLASSES",
    "STUFF_CLASSES",
    "SyntheticSpec",
    "Scene",
    "render_scene",
    "write_instances_dataset",
    "write_panoptic_dataset",
    "data_cache_dir",
]

logger = logging.getLogger(__name__)

SHAPE_CLASSES = ("circle", "square", "triangle", "star")
STUFF_CLASSES = ("sky", "grass", "water")
# COCO-style category ids: things 1..4, stuff 11..13 (non-contiguous on purpose, as in real COCO).
THING_IDS = (1, 2, 3, 4)
STUFF_IDS = (11, 12, 13)
FORMAT_VERSION = 1  # bump when rendering changes, so caches are rebuilt


@dataclass(frozen=True)
class SyntheticSpec:
    """What to generate. ``min_size``/``max_size``: object diameter in pixels."""

    num_images: int
    seed: int
    height: int = 128
    width: int = 128
    min_objects: int = 1
    max_objects: int = 6
    min_size: int = 10
    max_size: int = 72
    min_visible_area: int = 24  # pixels; objects occluded below this are not annotated (counted in the log)
    stuff: bool = False

    def key(self):
        blob = json.dumps({**asdict(self), "v": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


@dataclass
class Scene:
    """One rendered scene. ``image``: HxWx3 uint8 RGB; ``masks``: visible masks, HxW bool, one per object;
    ``classes``: index into SHAPE_CLASSES; ``stuff_map``: HxW int, index into STUFF_CLASSES (-1 = none)."""

    image: np.ndarray
    masks: list = field(default_factory=list)
    classes: list = field(default_factory=list)
    stuff_map: np.ndarray = None
    void: np.ndarray = None  # HxW bool: pixels of drawn objects that are not annotated (too occluded)
    num_hidden: int = 0  # objects drawn but occluded below min_visible_area


def data_cache_dir():
    return os.environ.get("SEGX_DATA_CACHE", os.path.join(os.path.expanduser("~"), ".cache", "segx"))


def _shape_polygon(kind, cx, cy, radius, angle):
    """Outline of a shape as an (P, 2) float array of x, y pixel coordinates."""
    if kind == "circle":
        t = np.linspace(0, 2 * np.pi, 48, endpoint=False)
        r = np.full_like(t, radius)
    elif kind == "square":
        t = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        r = np.full(4, radius)
    elif kind == "triangle":
        t = np.array([0.5, 0.5 + 2 / 3, 0.5 + 4 / 3]) * np.pi
        r = np.full(3, radius)
    elif kind == "star":
        t = np.arange(10) * np.pi / 5
        r = np.where(np.arange(10) % 2 == 0, radius, radius * 0.45)
    else:
        raise ValueError(f"unknown shape {kind!r}")
    t = t + angle
    return np.stack([cx + r * np.cos(t), cy + r * np.sin(t)], axis=1)


def _background(rng, h, w):
    """Smooth colour gradient plus noise and a few thin clutter lines: HxWx3 float32 in [0, 255]."""
    c0, c1 = rng.uniform(40, 200, size=(2, 3)).astype(np.float32)
    if rng.random() < 0.5:
        t = np.linspace(0, 1, w, dtype=np.float32)[None, :, None]
    else:
        t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    img = np.broadcast_to(c0 + (c1 - c0) * t, (h, w, 3)).copy()
    img += rng.normal(0, 8, size=(h, w, 3)).astype(np.float32)
    for _ in range(rng.integers(0, 4)):
        p0 = tuple(int(v) for v in rng.integers(0, [w, h]))
        p1 = tuple(int(v) for v in rng.integers(0, [w, h]))
        cv2.line(img, p0, p1, tuple(float(v) for v in rng.uniform(0, 255, 3)), 1)
    return img


def _stuff_layer(rng, h, w):
    """Stuff label map (bands with wavy borders, each a STUFF_CLASSES index) and its textured image."""
    n_bands = int(rng.integers(2, 4))
    order = rng.permutation(len(STUFF_CLASSES))[:n_bands]
    cuts = np.sort(rng.uniform(0.2, 0.8, size=n_bands - 1)) * h
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)[:, None]
    label = np.full((h, w), order[-1], dtype=np.int32)
    for b in range(n_bands - 2, -1, -1):
        amp, freq, phase = rng.uniform(2, 8), rng.uniform(0.03, 0.12), rng.uniform(0, 2 * np.pi)
        border = cuts[b] + amp * np.sin(freq * xs + phase)
        label[ys < border[None, :]] = order[b]
    img = np.zeros((h, w, 3), np.float32)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    textures = {
        0: lambda: np.dstack([150 + 40 * yy / h, 190 + 30 * yy / h, 245 + 0 * yy]) + rng.normal(0, 4, (h, w, 3)),
        1: lambda: np.array([60, 150, 50], np.float32) + rng.normal(0, 25, (h, w, 3)),
        2: lambda: np.array([30, 80, 160], np.float32) + 25 * np.sin(0.6 * yy + 0.2 * xx)[..., None],
    }
    for s in np.unique(label):
        img[label == s] = textures[int(s)]()[label == s]
    return label, img


def render_scene(spec: SyntheticSpec, index: int) -> Scene:
    """Renders scene ``index`` of ``spec``; the same arguments always give the same scene."""
    rng = np.random.default_rng([spec.seed, index])
    h, w = spec.height, spec.width
    if spec.stuff:
        stuff_map, img = _stuff_layer(rng, h, w)
    else:
        stuff_map, img = None, _background(rng, h, w)
    n = int(rng.integers(spec.min_objects, spec.max_objects + 1))
    owner = np.full((h, w), -1, dtype=np.int32)  # which object each pixel shows (last drawn wins)
    classes = []
    for i in range(n):
        cls = int(rng.integers(len(SHAPE_CLASSES)))
        # log-uniform sizes: as many small objects as large ones
        size = float(np.exp(rng.uniform(np.log(spec.min_size), np.log(spec.max_size))))
        cx, cy = rng.uniform(0.1, 0.9) * w, rng.uniform(0.1, 0.9) * h
        poly = _shape_polygon(SHAPE_CLASSES[cls], cx, cy, size / 2, rng.uniform(0, 2 * np.pi))
        colour = rng.uniform(0, 255, size=3)
        while np.abs(colour - img[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))]).sum() < 90:
            colour = rng.uniform(0, 255, size=3)  # keep the shape visible against what is under its centre
        shape_mask = np.zeros((h, w), np.uint8)
        cv2.fillPoly(shape_mask, [np.round(poly * 16).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=4)
        shade = colour * rng.uniform(0.85, 1.0) + rng.normal(0, 6, size=(h, w, 3))
        on = shape_mask.astype(bool)
        img[on] = shade[on]
        owner[on] = i
        classes.append(cls)
    scene = Scene(image=np.clip(img, 0, 255).astype(np.uint8), stuff_map=stuff_map, void=np.zeros((h, w), bool))
    for i, cls in enumerate(classes):
        visible = owner == i
        if visible.sum() < spec.min_visible_area:
            scene.num_hidden += 1
            scene.void |= visible
            continue
        scene.masks.append(visible)
        scene.classes.append(cls)
    return scene


def mask_to_polygons(mask):
    """Outer contours of a binary mask as COCO polygons ([x0, y0, x1, y1, ...] in pixel-edge coordinates)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) < 3:
            continue
        # contour points are pixel centres of boundary pixels; +0.5 moves them to the pixel's centre in
        # COCO's continuous coordinates, where pixel (i, j) covers [j, j+1) x [i, i+1).
        polys.append((c.reshape(-1, 2).astype(np.float64) + 0.5).flatten().round(2).tolist())
    return polys


def _bbox_xywh(mask):
    ys, xs = np.nonzero(mask)
    return [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _categories_things():
    return [{"id": cid, "name": name, "supercategory": "shape", "isthing": 1} for cid, name in zip(THING_IDS, SHAPE_CLASSES)]


def _categories_stuff():
    return [{"id": cid, "name": name, "supercategory": "stuff", "isthing": 0} for cid, name in zip(STUFF_IDS, STUFF_CLASSES)]


def _publish(tmp, final):
    """Moves a finished folder into place; another process that got there first wins."""
    try:
        os.rename(tmp, final)
    except OSError:
        if not os.path.isdir(final):
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _instances_json(spec, scenes_iter, image_dir):
    images, annotations = [], []
    hidden = 0
    ann_id = 1
    for idx, scene in scenes_iter:
        hidden += scene.num_hidden
        file_name = f"{idx:06d}.jpg"
        cv2.imwrite(os.path.join(image_dir, file_name), scene.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": idx + 1, "file_name": file_name, "height": spec.height, "width": spec.width})
        for mask, cls in zip(scene.masks, scene.classes):
            polys = mask_to_polygons(mask)
            if not polys:
                hidden += 1
                continue
            annotations.append(
                {
                    "id": ann_id,
                    "image_id": idx + 1,
                    "category_id": THING_IDS[cls],
                    "segmentation": polys,
                    "area": float(mask.sum()),
                    "bbox": _bbox_xywh(mask),
                    "iscrowd": 0,
                }
            )
            ann_id += 1
    return images, annotations, hidden


def write_instances_dataset(spec: SyntheticSpec, root=None):
    """Writes (once) ``images/*.jpg`` and ``instances.json`` for ``spec``; returns the folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"instances_{spec.key()}")
    if os.path.isfile(os.path.join(root, "instances.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    os.makedirs(os.path.join(tmp, "images"))
    scenes = ((i, render_scene(spec, i)) for i in range(spec.num_images))
    images, annotations, hidden = _instances_json(spec, scenes, os.path.join(tmp, "images"))
    with open(os.path.join(tmp, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": _categories_things(),
                   "info": {"description": "segx synthetic shapes", "spec": asdict(spec)}}, f)
    logger.info(
        "segx synthetic instances: %d images, %d objects (%d more fully occluded, not annotated) -> %s",
        len(images), len(annotations), hidden, root,
    )
    _publish(tmp, root)
    return root


def _id2rgb(ids):
    ids = ids.astype(np.uint32)
    return np.stack([ids % 256, (ids // 256) % 256, ids // 65536], axis=-1).astype(np.uint8)


def write_panoptic_dataset(spec: SyntheticSpec, root=None):
    """Writes (once) ``images/*.jpg``, ``panoptic/*.png`` (rgb2id), ``panoptic.json`` and the things as
    ``instances.json`` for ``spec`` (which must have ``stuff=True``); returns the folder."""
    if not spec.stuff:
        raise ValueError("write_panoptic_dataset needs SyntheticSpec(stuff=True)")
    root = root or os.path.join(data_cache_dir(), "synthetic", f"panoptic_{spec.key()}")
    if os.path.isfile(os.path.join(root, "panoptic.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    for sub in ("images", "panoptic"):
        os.makedirs(os.path.join(tmp, sub))
    pan_annotations = []
    scenes = []
    for idx in range(spec.num_images):
        scene = render_scene(spec, idx)
        scenes.append((idx, scene))
        seg = np.zeros((spec.height, spec.width), np.int64)
        segments = []
        next_id = 1
        for s, cat_id in enumerate(STUFF_IDS):
            region = (scene.stuff_map == s) & ~scene.void
            for mask in scene.masks:
                region &= ~mask
            if region.sum() == 0:
                continue
            segments.append({"id": next_id, "category_id": cat_id, "iscrowd": 0,
                             "bbox": _bbox_xywh(region), "area": int(region.sum())})
            seg[region] = next_id
            next_id += 1
        for mask, cls in zip(scene.masks, scene.classes):
            segments.append({"id": next_id, "category_id": THING_IDS[cls], "iscrowd": 0,
                             "bbox": _bbox_xywh(mask), "area": int(mask.sum())})
            seg[mask] = next_id
            next_id += 1
        png = f"{idx:06d}.png"
        cv2.imwrite(os.path.join(tmp, "panoptic", png), _id2rgb(seg)[:, :, ::-1])
        pan_annotations.append({"image_id": idx + 1, "file_name": png, "segments_info": segments})
    images, annotations, hidden = _instances_json(spec, scenes, os.path.join(tmp, "images"))
    categories = _categories_things() + _categories_stuff()
    with open(os.path.join(tmp, "panoptic.json"), "w") as f:
        json.dump({"images": images, "annotations": pan_annotations, "categories": categories}, f)
    with open(os.path.join(tmp, "instances.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations, "categories": _categories_things()}, f)
    logger.info("segx synthetic panoptic: %d images (%d objects fully occluded) -> %s", len(images), hidden, root)
    _publish(tmp, root)
    return root
