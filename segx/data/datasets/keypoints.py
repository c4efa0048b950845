"""Keypoint / landmark datasets: the synthetic figures (registered on ``import segx``), MPII and COCO keypoints.

| name | what |
|---|---|
| ``segx_figures_train`` / ``segx_figures_val`` | 1000 / 200 single-figure crops, 128×128, MPII's 16 joints |

Nothing is generated at import: the files are written to the cache the first time a set is loaded.

Dataset dicts follow detectron2 (``load_coco_json``): ``annotations`` with ``bbox`` (XYWH or XYXY abs),
``keypoints`` flat ``[x, y, v] * K`` in continuous image coordinates (pixel index + 0.5), ``category_id`` 0.
MPII records also carry ``head_box`` (x0, y0, x1, y1), the normaliser of PCKh.
"""
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from segx.data import synthetic_keypoints as figs
from segx.data.datasets.coco import DatasetValidationError, _load_json, keypoint_names_for, register_coco_dataset

__all__ = [
    "FIGURE_SPECS",
    "MPII_JOINTS",
    "MPII_FLIP_PAIRS",
    "ensure_figures_dataset",
    "register_mpii",
    "load_mpii_json",
    "register_coco_keypoints",
    "keypoint_metadata",
]

logger = logging.getLogger(__name__)

FIGURE_SPECS = {
    "segx_figures_train": figs.FigureSpec(num_images=1000, seed=21),
    "segx_figures_val": figs.FigureSpec(num_images=200, seed=22),
}
MPII_JOINTS = figs.JOINT_NAMES  # the figures use MPII's order
MPII_FLIP_PAIRS = figs.FLIP_PAIRS
MPII_SKELETON = figs.SKELETON
# MPII's official PCKh: a joint is correct within 0.5 × (0.6 × head box diagonal).
HEAD_SIZE_FACTOR = 0.6


def keypoint_metadata(names, flip_pairs, skeleton, evaluator_type="pck"):
    """detectron2 metadata for a keypoint set: ``keypoint_names``, ``keypoint_flip_map`` (name pairs, what
    ``create_keypoint_hflip_indices`` reads), ``keypoint_connection_rules`` (for ``Visualizer``),
    ``thing_classes`` and ``evaluator_type``."""
    rules = []
    for a, b in skeleton:
        colour = (230, 120, 30) if "right" in names[a] + names[b] else (30, 120, 230) if "left" in names[a] + names[b] else (200, 200, 200)
        rules.append((names[a], names[b], colour))
    return {
        "keypoint_names": list(names),
        "keypoint_flip_map": [(names[a], names[b]) for a, b in flip_pairs],
        "keypoint_connection_rules": rules,
        "thing_classes": ["person"],
        "evaluator_type": evaluator_type,
    }


def _figures_root(name):
    spec = FIGURE_SPECS[name]
    return os.path.join(figs.data_cache_dir(), "synthetic", f"{name}_{spec.key()}")


def ensure_figures_dataset(name):
    """Writes the files of synthetic figure set ``name`` if they are not in the cache yet; returns its folder."""
    return figs.write_keypoints_dataset(FIGURE_SPECS[name], _figures_root(name))


def _load_figures(name):
    root = ensure_figures_dataset(name)
    return load_coco_json(os.path.join(root, "person_keypoints.json"), os.path.join(root, "images"), name)


def register_all_figures():
    for name in FIGURE_SPECS:
        if name in DatasetCatalog.list():
            continue
        root = _figures_root(name)
        DatasetCatalog.register(name, lambda n=name: _load_figures(n))
        MetadataCatalog.get(name).set(
            json_file=os.path.join(root, "person_keypoints.json"),
            image_root=os.path.join(root, "images"),
            segx_builtin=True,
            **keypoint_metadata(MPII_JOINTS, MPII_FLIP_PAIRS, MPII_SKELETON),
        )


def _image_size(path):
    from PIL import Image

    with Image.open(path) as im:
        return im.height, im.width


def _head_box_from_joints(joints, vis, where, json_file):
    """Square centred between upper neck (8) and head top (9) whose 0.6 × diagonal equals their distance, so
    the PCKh normaliser is the neck–head-top length (used when the file has no head boxes)."""
    if not (vis[8] and vis[9]):
        return None
    (x0, y0), (x1, y1) = joints[8], joints[9]
    size = math.hypot(x1 - x0, y1 - y0)
    if size <= 0:
        raise DatasetValidationError(json_file, [f"{where}: upper neck and head top coincide; no head size"])
    half = size / (HEAD_SIZE_FACTOR * math.sqrt(2)) / 2
    cx, cy = (x0 + x1) / 2 + 0.5, (y0 + y1) / 2 + 0.5
    return [cx - half, cy - half, cx + half, cy + half]


def load_mpii_json(annotation_file, image_root, head_box_from="auto", read_image_sizes=True):
    """Loads MPII annotations in the JSON layout of mmpose's MPII files: a list of person records
    ``{"image", "joints" [16][2], "joints_vis" [16], "center" [2], "scale"}`` (scale × 200 = person height
    in pixels; joints as 0-based pixel indices) with an optional ``"headbox"`` [[x0, y0], [x1, y1]] or
    [x0, y0, x1, y1].

    Args:
        head_box_from: "annotation" (every record must have ``headbox``), "joints" (derived from upper neck
            and head top, see ``_head_box_from_joints``) or "auto" (the annotation when present, else joints).
        read_image_sizes: read each image's header for ``height``/``width``.
    Returns: detectron2 dataset dicts, one per image; the person box is centre ± 100·scale (MPII's
        definition of scale), joints with ``joints_vis`` 0 get visibility 0 and (0, 0).
    """
    if head_box_from not in ("auto", "annotation", "joints"):
        raise ValueError(f"load_mpii_json: head_box_from must be 'auto', 'annotation' or 'joints', got {head_box_from!r}")
    data = _load_json(annotation_file)
    if not isinstance(data, list):
        raise DatasetValidationError(annotation_file, [f"expected a list of person records, got {type(data).__name__}"])
    problems, images = [], {}
    k = len(MPII_JOINTS)
    for i, rec in enumerate(data):
        where = f"record {i} (image {rec.get('image') if isinstance(rec, dict) else '?'})"
        if not isinstance(rec, dict):
            problems.append(f"{where}: not an object")
            continue
        missing = [key for key in ("image", "joints", "joints_vis", "center", "scale") if key not in rec]
        if missing:
            problems.append(f"{where}: missing {missing}")
            continue
        joints, vis = rec["joints"], rec["joints_vis"]
        if len(joints) != k or any(len(j) != 2 for j in joints) or len(vis) != k:
            problems.append(f"{where}: needs {k} joints of (x, y) and {k} joints_vis, got {len(joints)} and {len(vis)}")
            continue
        if not (isinstance(rec["scale"], (int, float)) and rec["scale"] > 0) or len(rec["center"]) != 2:
            problems.append(f"{where}: scale must be > 0 and center (x, y), got {rec['scale']} and {rec['center']}")
            continue
        vis = [bool(v) for v in vis]
        keypoints = []
        for (x, y), v in zip(joints, vis):
            keypoints += [x + 0.5, y + 0.5, 2] if v else [0.0, 0.0, 0]
        half = 100.0 * rec["scale"]
        cx, cy = rec["center"][0] + 0.5, rec["center"][1] + 0.5
        ann = {
            "bbox": [cx - half, cy - half, cx + half, cy + half],
            "bbox_mode": BoxMode.XYXY_ABS,
            "category_id": 0,
            "keypoints": keypoints,
            "iscrowd": 0,
        }
        head = rec.get("headbox")
        if head is not None and head_box_from != "joints":
            flat = [float(v) for pair in head for v in (pair if isinstance(pair, (list, tuple)) else [pair])]
            if len(flat) != 4 or flat[2] <= flat[0] or flat[3] <= flat[1]:
                problems.append(f"{where}: headbox must be [x0, y0, x1, y1] with x1 > x0, y1 > y0, got {head}")
                continue
            ann["head_box"] = flat
        elif head_box_from == "annotation":
            problems.append(f"{where}: no 'headbox' (head_box_from='annotation')")
            continue
        else:
            box = _head_box_from_joints(joints, vis, where, annotation_file)
            if box is not None:
                ann["head_box"] = box
        img = images.setdefault(rec["image"], {"file_name": os.path.join(image_root, rec["image"]), "annotations": []})
        img["annotations"].append(ann)
    if problems:
        raise DatasetValidationError(annotation_file, problems)
    dicts = []
    for image_id, (name, img) in enumerate(sorted(images.items())):
        if not os.path.isfile(img["file_name"]):
            raise DatasetValidationError(annotation_file, [f"image {name}: file {img['file_name']} does not exist"])
        img["image_id"] = image_id
        if read_image_sizes:
            img["height"], img["width"] = _image_size(img["file_name"])
        dicts.append(img)
    logger.info("Loaded %d images, %d people from MPII file %s", len(dicts), sum(len(d["annotations"]) for d in dicts),
                annotation_file)
    return dicts


def register_mpii(name, annotation_file, image_root, head_box_from="auto"):
    """Registers an MPII-format set (see ``load_mpii_json``) as ``name``, evaluated with PCK / PCKh."""
    annotation_file, image_root = os.fspath(annotation_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_mpii_json(annotation_file, image_root, head_box_from))
    MetadataCatalog.get(name).set(
        json_file=annotation_file, image_root=image_root, **keypoint_metadata(MPII_JOINTS, MPII_FLIP_PAIRS, MPII_SKELETON)
    )
    return name


def register_coco_keypoints(name, json_file, image_root, evaluator_type="pck", keypoint_names=None):
    """Registers a COCO person-keypoints JSON as ``name`` (``register_coco_dataset`` + keypoint metadata from
    the category's ``keypoints``/``skeleton``). Each annotation's keypoint count must match the names; errors
    name the file and the annotation. ``evaluator_type``: "pck" or "coco" (OKS AP).

    ``keypoint_names``: the names when the category's ``keypoints`` list is empty (mmpose's face files, e.g.
    300-W); without them the count is inferred from the annotations and the points are named ``keypoint_<i>``.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    data = _load_json(json_file)
    cats = [c for c in data.get("categories", []) if c.get("keypoints")]
    if len(cats) > 1:
        raise DatasetValidationError(json_file, [f"needs one category with 'keypoints', found {len(cats)}"])
    names = keypoint_names_for(data, json_file, keypoint_names)
    if not names:
        raise DatasetValidationError(json_file, ["no keypoints: no category lists 'keypoints' and no annotation "
                                                 "has any; pass keypoint_names= for a file of keypoints"])
    index = {n: i for i, n in enumerate(names)}
    flip = [(index[n], index["right_" + n[5:]]) for n in names if n.startswith("left_") and "right_" + n[5:] in index]
    skeleton = [(a - 1, b - 1) for a, b in (cats[0].get("skeleton") or [] if cats else [])]
    meta = keypoint_metadata(names, flip, skeleton, evaluator_type)
    meta["thing_classes"] = [c["name"] for c in sorted(data["categories"], key=lambda c: c["id"])]
    register_coco_dataset(name, json_file, image_root, metadata=meta, keypoint_names=names)
    return name


register_all_figures()
