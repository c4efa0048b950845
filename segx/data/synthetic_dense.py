"""Deterministic synthetic dense-surface data: segx's embedded set for DensePose R-CNN.

Each scene holds 1–3 articulated "figures" (one category, "person") on a textured background, with a few
featureless distractor blobs. A figure is a fixed template body (``TEMPLATE``) posed by joint angles and a
global similarity transform; every body part is a flat shape with an *affine* UV chart known in closed form,
so the ground truth (part index I, U, V) of any image point is exact, and so is the distance between two
surface points of one part (the chart's scale is known: ``PART_CHART_SIZE``).

Parts use DensePose-COCO's numbering and semantics (``segx.data.datasets.densepose.PART_NAMES``): torso front
(2), hands (3/4), feet (5/6), upper / lower legs front (9/10, 13/14), upper / lower arms front (15/16, 19/20),
head right / left halves (23/24): 15 of the 24 parts. The person's right side is drawn on the image's left
(figures face the camera). Coarse masks (``dp_masks``) use the 14 coarse parts of the format.

Charts are mirror-consistent: the chart of a left part is the mirror image of its right twin's, and the torso's
U runs across the body. So a horizontal flip of an image is again a valid scene of the same generator when
left/right part ids are swapped (the format's part flip) and, for the one part that is its own mirror image
(torso front, 2), U becomes 1 - U; every other U/V stays (``flip_uv``). This is exact, unlike the table lookup
real DensePose-COCO data needs.

Units: template units, in which the body is about 1.7 tall (about SMPL's height in metres), so GPS's kappa
(0.255) means the same fraction of the body here as in the paper.

Files: JPEG images and ``densepose.json`` (COCO instances + DensePose-COCO ``dp_*`` fields, RLE part masks on
256×256 over the box), under ``$SEGX_DATA_CACHE`` (``segx.data.synthetic.data_cache_dir``).
"""
import hashlib
import json
import logging
import math
import os
import tempfile
from dataclasses import asdict, dataclass, field

import cv2
import numpy as np

from segx.data.synthetic import _background, _publish, data_cache_dir, mask_to_polygons

__all__ = [
    "DenseSpec",
    "DenseScene",
    "TEMPLATE",
    "PART_CHART_SIZE",
    "SYNTHETIC_PARTS",
    "render_dense_scene",
    "surface_at",
    "flip_uv",
    "write_dense_dataset",
]

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
DP_GRID = 256  # dp_x / dp_y and dp_masks live on a 256-cell grid over the box

# Template body (x to the image's right, y down, pelvis centre at the origin), template units.
TEMPLATE = {
    "torso_half_width": 0.18, "shoulder_y": -0.6,  # torso: x in [-0.18, 0.18], y in [-0.6, 0]
    "head_centre_y": -0.75, "head_radius": 0.13,
    "shoulder_x": 0.21, "shoulder_joint_y": -0.55,
    "upper_arm": (0.30, 0.09), "lower_arm": (0.28, 0.075), "hand_radius": 0.05,  # (length, width)
    "hip_x": 0.1,
    "upper_leg": (0.42, 0.14), "lower_leg": (0.42, 0.11), "foot_radius": 0.065,
}
_T = TEMPLATE
# part id -> (side, kind); side -1 = the person's right (image left), +1 = left, 0 = on the axis.
SYNTHETIC_PARTS = {
    2: (0, "torso"), 3: (-1, "hand"), 4: (1, "hand"), 5: (1, "foot"), 6: (-1, "foot"),
    9: (-1, "upper_leg"), 10: (1, "upper_leg"), 13: (-1, "lower_leg"), 14: (1, "lower_leg"),
    15: (1, "upper_arm"), 16: (-1, "upper_arm"), 19: (1, "lower_arm"), 20: (-1, "lower_arm"),
    23: (-1, "head"), 24: (1, "head"),
}
# coarse mask part (1..14 of the format) of each fine part
COARSE_OF_PART = {2: 1, 3: 2, 4: 3, 5: 4, 6: 5, 9: 6, 10: 7, 13: 8, 14: 9, 15: 10, 16: 11, 19: 12, 20: 13, 23: 14,
                  24: 14}
# size of each chart in template units: distance = hypot(dU * size_u, dV * size_v) within a part
PART_CHART_SIZE = {
    2: (2 * _T["torso_half_width"], -_T["shoulder_y"]),
    3: (2 * _T["hand_radius"],) * 2, 4: (2 * _T["hand_radius"],) * 2,
    5: (2 * _T["foot_radius"],) * 2, 6: (2 * _T["foot_radius"],) * 2,
    9: _T["upper_leg"], 10: _T["upper_leg"], 13: _T["lower_leg"], 14: _T["lower_leg"],
    15: _T["upper_arm"], 16: _T["upper_arm"], 19: _T["lower_arm"], 20: _T["lower_arm"],
    23: (_T["head_radius"], 2 * _T["head_radius"]), 24: (_T["head_radius"], 2 * _T["head_radius"]),
}
# drawing order (later parts cover earlier ones)
_Z_ORDER = (9, 10, 13, 14, 5, 6, 2, 23, 24, 16, 15, 20, 19, 3, 4)


@dataclass(frozen=True)
class DenseSpec:
    """What to generate. ``min_height``/``max_height``: figure height in pixels; ``points_per_person``: annotated
    points per visible figure (DensePose-COCO has up to ~100)."""

    num_images: int
    seed: int
    height: int = 128
    width: int = 128
    max_figures: int = 3
    min_height: int = 48
    max_height: int = 110
    max_rotation: float = 0.35  # radians, global figure rotation
    max_distractors: int = 2
    points_per_person: int = 64
    min_visible_area: int = 150  # pixels; figures occluded below this are not annotated

    def key(self):
        blob = json.dumps({**asdict(self), "v": FORMAT_VERSION}, sort_keys=True).encode()
        return hashlib.sha1(blob).hexdigest()[:10]


@dataclass
class Figure:
    """A posed figure: template → image is ``centre + scale * R(angle) @ p``; joints in template units."""

    centre: np.ndarray
    scale: float
    angle: float
    joints: dict = field(default_factory=dict)  # name -> (start [2], direction [2]) of each limb, template frame
    colours: dict = field(default_factory=dict)  # part id -> RGB


@dataclass
class DenseScene:
    """``image`` HxWx3 uint8 RGB; ``figures``: the posed figures (drawing order); ``annotated``: indices of the
    figures that are annotated (visible enough), with ``boxes`` [N,4] XYWH of their visible pixels."""

    image: np.ndarray
    figures: list = field(default_factory=list)
    annotated: list = field(default_factory=list)
    boxes: list = field(default_factory=list)
    masks: list = field(default_factory=list)  # visible pixel masks (HxW bool) of the annotated figures


def _unit(a):
    return np.array([math.sin(a), math.cos(a)])


def _pose(rng):
    """Limb starts and directions in the template frame; angles mirror-symmetric in distribution."""
    joints = {}
    for side in (-1, 1):
        phi = rng.uniform(0.15, 2.3)  # 0 = arm hanging down, pi/2 = horizontal, outward
        bend = rng.uniform(-0.3, 1.6)
        d1 = _unit(phi) * [side, 1]
        d2 = _unit(phi + bend) * [side, 1]
        s = np.array([side * _T["shoulder_x"], _T["shoulder_joint_y"]])
        e = s + _T["upper_arm"][0] * d1
        joints[("upper_arm", side)] = (s, d1)
        joints[("lower_arm", side)] = (e, d2)
        joints[("hand", side)] = (e + _T["lower_arm"][0] * d2 + _T["hand_radius"] * 0.8 * d2, d2)
        psi = rng.uniform(-0.12, 0.5)
        knee = rng.uniform(-0.5, 0.15)
        d1 = _unit(psi) * [side, 1]
        d2 = _unit(psi + knee) * [side, 1]
        h = np.array([side * _T["hip_x"], 0.0])
        k = h + _T["upper_leg"][0] * d1
        joints[("upper_leg", side)] = (h, d1)
        joints[("lower_leg", side)] = (k, d2)
        joints[("foot", side)] = (k + _T["lower_leg"][0] * d2 + _T["foot_radius"] * 0.8 * d2, d2)
    return joints


def _normal(d, side):
    """Across-direction of a limb with direction ``d`` [...,2]: outward-pointing for a limb hanging down, mirrored
    between the sides so that mirrored twins share one chart."""
    return np.stack([-d[..., 1], d[..., 0]], -1) if side < 0 else np.stack([d[..., 1], -d[..., 0]], -1)


def _part_chart(fig, part, p):
    """(inside [P] bool, u [P], v [P]) of template-frame points ``p`` [P,2] for one part of ``fig``."""
    side, kind = SYNTHETIC_PARTS[part]
    x, y = p[:, 0], p[:, 1]
    if kind == "torso":
        hw = _T["torso_half_width"]
        u, v = (x + hw) / (2 * hw), (y - _T["shoulder_y"]) / -_T["shoulder_y"]
        return (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1), u, v
    if kind == "head":
        r, cy = _T["head_radius"], _T["head_centre_y"]
        u, v = side * x / r, (y - cy + r) / (2 * r)
        inside = (np.hypot(x, y - cy) <= r) & (u >= 0)
        return inside, u, v
    start, d = fig.joints[(kind, side)]
    n = _normal(d, side)
    q = p - start
    if kind in ("hand", "foot"):
        r = _T[f"{kind}_radius"]
        u, v = q @ d / (2 * r) + 0.5, q @ n / (2 * r) + 0.5
        return np.hypot(q[:, 0], q[:, 1]) <= r, u, v
    length, width = _T[kind]
    u, v = q @ d / length, q @ n / width + 0.5
    return (u >= 0) & (u <= 1) & (v >= 0) & (v <= 1), u, v


def _to_template(fig, xy):
    """Image points [P,2] (continuous pixel coordinates) → the figure's template frame."""
    c, s = math.cos(fig.angle), math.sin(fig.angle)
    q = (xy - fig.centre) / fig.scale
    return np.stack([c * q[:, 0] + s * q[:, 1], -s * q[:, 0] + c * q[:, 1]], -1)


def surface_at(figures, xy):
    """The exact surface point shown at image points ``xy`` [P,2] (continuous coordinates; pixel (i, j) covers
    [j, j+1) × [i, i+1)) by a scene's ``figures`` drawn in order: (figure index [P] (-1 = background),
    part id [P] (0 = background), u [P], v [P]), U and V in [0, 1]."""
    xy = np.asarray(xy, np.float64).reshape(-1, 2)
    owner = np.full(len(xy), -1, np.int64)
    part = np.zeros(len(xy), np.int64)
    u = np.zeros(len(xy))
    v = np.zeros(len(xy))
    for f, fig in enumerate(figures):
        p = _to_template(fig, xy)
        for pid in _Z_ORDER:
            inside, pu, pv = _part_chart(fig, pid, p)
            owner[inside], part[inside] = f, pid
            u[inside], v[inside] = pu[inside], pv[inside]
    return owner, part, np.clip(u, 0.0, 1.0), np.clip(v, 0.0, 1.0)


def flip_uv(part, u, v):
    """U, V of points after a horizontal image flip, given their part ids *before* the flip (the synthetic charts'
    exact mirror map: the torso front's U is reversed, every other chart is its twin's mirror image)."""
    part, u, v = np.asarray(part), np.asarray(u, np.float64), np.asarray(v, np.float64)
    return np.where(part == 2, 1.0 - u, u), v.copy()


def _colours(rng):
    skin = np.clip(np.array([224, 172, 105]) * rng.uniform(0.45, 1.1) + rng.normal(0, 10, 3), 0, 255)
    top, sleeve, pants, shoes = (rng.uniform(20, 235, 3) for _ in range(4))
    c = {2: top, 15: sleeve, 16: sleeve, 19: skin if rng.random() < 0.5 else sleeve}
    c[20] = c[19]
    c.update({3: skin, 4: skin, 23: skin, 24: skin, 9: pants, 10: pants, 13: pants, 14: pants, 5: shoes, 6: shoes})
    return c


def render_dense_scene(spec: DenseSpec, index: int) -> DenseScene:
    """Renders scene ``index`` of ``spec``; the same arguments always give the same scene."""
    rng = np.random.default_rng([spec.seed, index, 31])
    h, w = spec.height, spec.width
    img = _background(rng, h, w)
    for _ in range(int(rng.integers(0, spec.max_distractors + 1))):  # blobs behind the figures
        colour = tuple(float(c) for c in rng.uniform(0, 255, 3))
        cx, cy = (int(v) for v in rng.uniform(0, [w, h]))
        if rng.random() < 0.5:
            cv2.circle(img, (cx, cy), int(rng.integers(4, 18)), colour, -1)
        else:
            a, b = int(rng.integers(3, 10)), int(rng.integers(10, 30))
            cv2.rectangle(img, (cx - a, cy - b), (cx + a, cy + b), colour, -1)
    figures = []
    for _ in range(int(rng.integers(1, spec.max_figures + 1))):
        height = float(np.exp(rng.uniform(np.log(spec.min_height), np.log(spec.max_height))))
        scale = height / 1.78  # the template spans 1.78 units from head top to feet
        centre = rng.uniform([0.2 * w, 0.25 * h], [0.8 * w, 0.75 * h])
        figures.append(Figure(centre=centre, scale=scale, angle=float(rng.uniform(-1, 1) * spec.max_rotation),
                              joints=_pose(rng), colours=_colours(rng)))
    ys, xs = np.mgrid[0:h, 0:w]
    centres = np.stack([xs.ravel() + 0.5, ys.ravel() + 0.5], -1)
    owner, part, u, v = surface_at(figures, centres)
    owner, part, u, v = owner.reshape(h, w), part.reshape(h, w), u.reshape(h, w), v.reshape(h, w)
    noise = rng.normal(0, 5, (h, w, 3))
    for f, fig in enumerate(figures):
        for pid, colour in fig.colours.items():
            on = (owner == f) & (part == pid)
            if not on.any():
                continue
            # shading across the chart (a cylinder lit from the front) and faint stripes along it
            shade = (0.65 + 0.35 * np.sin(np.pi * v[on])) * (0.9 + 0.1 * np.cos(4 * np.pi * u[on]))
            img[on] = colour[None, :] * shade[:, None] + noise[on]
    scene = DenseScene(image=np.clip(img, 0, 255).astype(np.uint8), figures=figures)
    for f in range(len(figures)):
        visible = owner == f
        if visible.sum() < spec.min_visible_area:
            continue
        ys_, xs_ = np.nonzero(visible)
        scene.annotated.append(f)
        scene.boxes.append([float(xs_.min()), float(ys_.min()), float(xs_.max() - xs_.min() + 1),
                            float(ys_.max() - ys_.min() + 1)])
        scene.masks.append(visible)
    return scene


def sample_points(figures, f, box, n, rng):
    """Up to ``n`` points on figure ``f`` visible inside ``box`` (XYWH): dp_x, dp_y (0–256 over the box), I, U, V."""
    x0, y0, bw, bh = box
    cand = rng.uniform(0, DP_GRID, size=(max(8 * n, 64), 2))
    xy = np.stack([x0 + cand[:, 0] * bw / DP_GRID, y0 + cand[:, 1] * bh / DP_GRID], -1)
    owner, part, u, v = surface_at(figures, xy)
    keep = np.nonzero(owner == f)[0][:n]
    return cand[keep, 0], cand[keep, 1], part[keep], u[keep], v[keep]


def coarse_masks(figures, f, box):
    """The 14 coarse part masks of figure ``f`` on the 256×256 grid over ``box`` (XYWH), as RLE dicts ([] where the
    part is not visible)."""
    from pycocotools import mask as mask_utils

    x0, y0, bw, bh = box
    g = (np.arange(DP_GRID) + 0.5) / DP_GRID
    gx, gy = np.meshgrid(x0 + g * bw, y0 + g * bh)
    owner, part, _, _ = surface_at(figures, np.stack([gx.ravel(), gy.ravel()], -1))
    coarse = np.zeros(len(part), np.int64)
    mine = owner == f
    for pid, cid in COARSE_OF_PART.items():
        coarse[mine & (part == pid)] = cid
    coarse = coarse.reshape(DP_GRID, DP_GRID)
    out = []
    for cid in range(1, 15):
        m = coarse == cid
        if not m.any():
            out.append([])
            continue
        rle = mask_utils.encode(np.asfortranarray(m.astype(np.uint8)))
        out.append({"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")})
    return out


def write_dense_dataset(spec: DenseSpec, root=None):
    """Writes (once) ``images/*.jpg`` and ``densepose.json`` for ``spec``; returns the folder."""
    root = root or os.path.join(data_cache_dir(), "synthetic", f"densepose_{spec.key()}")
    if os.path.isfile(os.path.join(root, "densepose.json")):
        return root
    os.makedirs(os.path.dirname(root), exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp_", dir=os.path.dirname(root))
    os.makedirs(os.path.join(tmp, "images"))
    images, annotations = [], []
    n_points = 0
    for idx in range(spec.num_images):
        scene = render_dense_scene(spec, idx)
        rng = np.random.default_rng([spec.seed, idx, 32])
        file_name = f"{idx:06d}.jpg"
        cv2.imwrite(os.path.join(tmp, "images", file_name), scene.image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
        images.append({"id": idx + 1, "file_name": file_name, "height": spec.height, "width": spec.width})
        for f, box, mask in zip(scene.annotated, scene.boxes, scene.masks):
            x, y, i, u, v = sample_points(scene.figures, f, box, spec.points_per_person, rng)
            n_points += len(x)
            annotations.append({
                "id": len(annotations) + 1, "image_id": idx + 1, "category_id": 1, "iscrowd": 0,
                "bbox": box, "area": float(mask.sum()), "segmentation": mask_to_polygons(mask),
                "dp_x": np.round(x, 3).tolist(), "dp_y": np.round(y, 3).tolist(), "dp_I": i.astype(float).tolist(),
                "dp_U": np.round(u, 5).tolist(), "dp_V": np.round(v, 5).tolist(),
                "dp_masks": coarse_masks(scene.figures, f, box),
            })
    with open(os.path.join(tmp, "densepose.json"), "w") as f:
        json.dump({"images": images, "annotations": annotations,
                   "categories": [{"id": 1, "name": "person", "supercategory": "person"}],
                   "info": {"description": "segx synthetic dense figures", "spec": asdict(spec)}}, f)
    logger.info("segx synthetic dense figures: %d images, %d people, %d points -> %s", len(images), len(annotations),
                n_points, root)
    _publish(tmp, root)
    return root
