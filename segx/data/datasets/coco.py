"""Register a user's COCO-format dataset in one line, with validation that names the bad file and record.

    from segx.data import register_coco_dataset
    register_coco_dataset("my_train", "annotations/train.json", "images/train")

Validation runs when the dataset is first loaded (``DatasetCatalog.get``), or directly through
``validate_coco_json``. It reports every problem it finds (up to a limit), each with the JSON file, the
annotation id and the image id: missing image files, malformed polygons/RLE, boxes with no area, unknown
category ids, and a file with no annotations at all. Images without annotations are legal (negatives);
their count is logged.
"""
import json
import logging
import math
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_panoptic

__all__ = [
    "DatasetValidationError",
    "validate_coco_json",
    "register_coco_dataset",
    "register_coco_panoptic_dataset",
    "panoptic_metadata_from_categories",
]

logger = logging.getLogger(__name__)

MAX_REPORTED = 20


class DatasetValidationError(ValueError):
    """A dataset file failed validation; ``problems`` lists one message per bad record."""

    def __init__(self, file, problems):
        self.file = file
        self.problems = problems
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        super().__init__(f"{file}: {len(problems)} problem(s) in this dataset file:\n  {shown}{more}")


def _load_json(json_file):
    if not os.path.isfile(json_file):
        raise DatasetValidationError(json_file, ["annotation file does not exist"])
    try:
        with open(json_file) as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DatasetValidationError(json_file, [f"not valid JSON: {e}"]) from e


def _check_segmentation(segm, where):
    if isinstance(segm, dict):  # RLE
        if "counts" not in segm or "size" not in segm:
            return [f"{where}: RLE segmentation needs 'counts' and 'size', has {sorted(segm)}"]
        return []
    if not isinstance(segm, list):
        return [f"{where}: segmentation must be a list of polygons or an RLE dict, got {type(segm).__name__}"]
    problems = []
    for k, poly in enumerate(segm):
        if not isinstance(poly, list) or not all(isinstance(v, (int, float)) for v in poly):
            problems.append(f"{where}: polygon {k} is not a flat list of numbers")
        elif len(poly) % 2 != 0:
            problems.append(f"{where}: polygon {k} has an odd number of coordinates ({len(poly)})")
        elif len(poly) < 6:
            problems.append(f"{where}: polygon {k} has {len(poly) // 2} points (a polygon needs at least 3)")
        elif not all(math.isfinite(v) for v in poly):
            problems.append(f"{where}: polygon {k} has non-finite coordinates")
    if not segm:
        problems.append(f"{where}: empty segmentation list")
    return problems


def validate_coco_json(json_file, image_root, require_annotations=True, check_images=True):
    """Checks a COCO instances/keypoints JSON; raises ``DatasetValidationError`` listing every bad record.

    Returns the parsed JSON.
    """
    data = _load_json(json_file)
    problems = []
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if key not in data:
            problems.append(f"missing top-level key '{key}'")
    if problems:
        raise DatasetValidationError(json_file, problems)
    anns = data.get("annotations", [])
    if require_annotations and not anns:
        raise DatasetValidationError(json_file, ["'annotations' is empty: no objects to train or evaluate on"])
    cat_ids = {c["id"] for c in data["categories"]}
    images = {}
    for img in data["images"]:
        where = f"image id {img.get('id')}"
        if "id" not in img or "file_name" not in img:
            problems.append(f"{where}: image record needs 'id' and 'file_name'")
            continue
        images[img["id"]] = img
        if check_images:
            path = os.path.join(image_root, img["file_name"])
            if not os.path.isfile(path):
                problems.append(f"{where}: image file {path} does not exist")
    has_ann = set()
    for ann in anns:
        where = f"annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        if ann.get("image_id") not in images:
            problems.append(f"{where}: image id not in 'images'")
        else:
            has_ann.add(ann["image_id"])
        if ann.get("category_id") not in cat_ids:
            problems.append(f"{where}: unknown category id {ann.get('category_id')} (known: {sorted(cat_ids)})")
        bbox = ann.get("bbox")
        if bbox is None or len(bbox) != 4 or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in bbox):
            problems.append(f"{where}: bbox must be 4 finite numbers [x, y, w, h], got {bbox}")
        elif bbox[2] < 0 or bbox[3] < 0:
            problems.append(f"{where}: bbox has negative width/height {bbox}")
        if "segmentation" in ann:
            problems += _check_segmentation(ann["segmentation"], where)
        if "keypoints" in ann and len(ann["keypoints"]) % 3 != 0:
            problems.append(f"{where}: keypoints length {len(ann['keypoints'])} is not a multiple of 3")
    if problems:
        raise DatasetValidationError(json_file, problems)
    n_empty = len(images) - len(has_ann)
    if n_empty:
        logger.info("%s: %d of %d images have no annotations (kept as negatives)", json_file, n_empty, len(images))
    return data


def _keypoint_metadata(categories):
    """keypoint_names / keypoint_flip_map from a COCO category's 'keypoints' (left_*/right_* pairs)."""
    for cat in categories:
        names = cat.get("keypoints")
        if names:
            flip = []
            for n in names:
                if n.startswith("left_") and "right_" + n[5:] in names:
                    flip.append((n, "right_" + n[5:]))
            return {"keypoint_names": list(names), "keypoint_flip_map": flip}
    return {}


def register_coco_dataset(name, json_file, image_root, metadata=None, validate=True):
    """Registers a COCO instances (or keypoints) dataset as ``name`` in detectron2's catalogs.

    Args:
        name: the dataset name to use in ``cfg.DATASETS.TRAIN/TEST``.
        json_file: COCO JSON. image_root: folder that ``file_name`` entries are relative to.
        metadata: extra metadata; ``thing_classes`` are read from the JSON's categories.
        validate: check the file (see ``validate_coco_json``) each time the dataset is loaded.
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)

    def load():
        if validate:
            validate_coco_json(json_file, image_root)
        return load_coco_json(json_file, image_root, name)

    DatasetCatalog.register(name, load)
    meta = {"json_file": json_file, "image_root": image_root, "evaluator_type": "coco"}
    if os.path.isfile(json_file):
        data = _load_json(json_file)
        cats = sorted(data.get("categories", []), key=lambda c: c["id"])
        meta["thing_classes"] = [c["name"] for c in cats]
        meta.update(_keypoint_metadata(cats))
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
    return name


def panoptic_metadata_from_categories(categories):
    """detectron2's "standard" COCO-panoptic metadata from a list of panoptic categories (with ``isthing``):
    thing and stuff classes share one contiguous id space in category order, as in detectron2's builtin COCO."""
    names = [c["name"] for c in categories]
    meta = {
        "thing_classes": names,
        "stuff_classes": names,
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if c.get("isthing")},
        "stuff_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(categories) if not c.get("isthing")},
    }
    meta["stuff_colors"] = [c.get("color", [(37 * i) % 256, (91 * i) % 256, (173 * i) % 256]) for i, c in enumerate(categories)]
    meta["thing_colors"] = meta["stuff_colors"]
    return meta


def _validate_panoptic(panoptic_json, panoptic_root, image_root, data):
    problems = []
    cat_ids = {c["id"] for c in data.get("categories", [])}
    if not data.get("annotations"):
        problems.append("'annotations' is empty")
    for ann in data.get("annotations", []):
        where = f"image id {ann.get('image_id')}"
        png = os.path.join(panoptic_root, ann.get("file_name", ""))
        if not os.path.isfile(png):
            problems.append(f"{where}: panoptic PNG {png} does not exist")
        img = os.path.join(image_root, os.path.splitext(ann.get("file_name", ""))[0] + ".jpg")
        if not os.path.isfile(img):
            problems.append(f"{where}: image file {img} does not exist (detectron2 expects <name>.jpg)")
        for seg in ann.get("segments_info", []):
            if seg.get("category_id") not in cat_ids:
                problems.append(f"{where}: segment {seg.get('id')} has unknown category id {seg.get('category_id')}")
    if problems:
        raise DatasetValidationError(panoptic_json, problems)


def register_coco_panoptic_dataset(
    name, panoptic_json, panoptic_root, image_root, categories=None, instances_json=None, validate=True
):
    """Registers a COCO-panoptic dataset through detectron2's ``register_coco_panoptic`` ("standard" format).

    ``categories``: a list of panoptic category dicts or a path to a JSON list of them (as
    panopticapi's ``panoptic_coco_categories.json``); default: the panoptic JSON's own ``categories``.
    """
    data = _load_json(panoptic_json)
    if categories is None:
        categories = data.get("categories")
    elif isinstance(categories, (str, os.PathLike)):
        with open(categories) as f:
            categories = json.load(f)
    if not categories:
        raise DatasetValidationError(panoptic_json, ["no categories: pass categories= or add them to the JSON"])
    if validate:
        _validate_panoptic(panoptic_json, panoptic_root, image_root, {**data, "categories": categories})
    meta = panoptic_metadata_from_categories(categories)
    register_coco_panoptic(name, meta, image_root, panoptic_root, panoptic_json, instances_json)
    return name
