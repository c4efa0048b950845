"""Register a user's COCO-format dataset in one line, with validation that names the bad file and record.

    from segx.data import register_coco_dataset
    register_coco_dataset("my_train", "annotations/train.json", "images/train")

Validation runs when the dataset is first loaded (``DatasetCatalog.get``), or directly through
``validate_coco_json``. It reports every problem it finds (up to a limit), each with the JSON file, the
annotation id and the image id: missing image files (optionally unreadable ones: ``check_images="header"`` or
``"decode"``), malformed polygons/RLE, negative boxes, unknown category ids, duplicate annotation ids, and a
file with no annotations at all. Boxes with zero width or height are listed in a warning with their
annotation and image ids (``zero_area_boxes="error"`` refuses them): detectron2 drops them from training, and
COCO evaluation counts them as objects no detection can match. Images without annotations are legal
(negatives); their count is logged.

Fields beyond COCO instances: DensePose-COCO annotations (``dp_*``) are loaded into the records, checked
(``segx.data.datasets.densepose.check_densepose_annotation``) and given DensePose metadata (DensePose R-CNN trains
on them); a file with ``videos`` is registered frame by frame as independent images, with each image's
``video_id`` / ``frame_id`` kept in its record. Both are logged at registration.
"""
import json
import logging
import math
import os

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, register_coco_panoptic

from segx.data.rle import rle_problems

__all__ = [
    "DatasetValidationError",
    "IMAGE_CHECKS",
    "check_image_file",
    "inspect_image_file",
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


# How much of each image validation reads: nothing, existence, the header (format, size), the whole file.
IMAGE_CHECKS = ("none", "exists", "header", "decode")


def _image_check_level(check_images):
    level = {True: "exists", False: "none", None: "none"}.get(check_images, check_images)
    if level not in IMAGE_CHECKS:
        raise ValueError(f"check_images must be one of {IMAGE_CHECKS} (or True/False), got {check_images!r}")
    return level


def check_image_file(path, level="exists", expected_size=None):
    """The problem with image file ``path`` as a message naming it, or None.

    ``level``: "exists"; "header" (opens it: catches zero-byte and non-image files and, with
    ``expected_size=(width, height)``, a size that disagrees with the annotations); "decode" (decodes all of
    it: also catches truncated and corrupt image data; slow).
    """
    return inspect_image_file(path, level, expected_size)[0]


def inspect_image_file(path, level="exists", expected_size=None):
    """``(problem or None, (width, height) or None)``: ``check_image_file`` that also returns the size read from
    the header (levels "header" and "decode")."""
    level = _image_check_level(level)
    if level == "none":
        return None, None
    if not os.path.isfile(path):
        return f"image file {path} does not exist", None
    if level == "exists":
        return None, None
    if os.path.getsize(path) == 0:
        return f"image file {path} is empty (0 bytes)", None
    try:
        with Image.open(path) as im:
            size = im.size
            if level == "decode":
                im.load()
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, zlib.error ... on bad files
        return f"image file {path} is truncated or corrupt ({type(e).__name__}: {e})", None
    if expected_size and all(expected_size) and tuple(size) != tuple(expected_size):
        return f"image file {path} is {size[0]}x{size[1]}, the annotations say {expected_size[0]}x{expected_size[1]}", size
    return None, size


def _check_segmentation(segm, where, image_size=None):
    """Problems with one COCO segmentation (polygons, or RLE checked by ``segx.data.rle.rle_problems``, against
    ``image_size`` (h, w) when given)."""
    if isinstance(segm, dict):  # RLE
        return [f"{where}: {p}" for p in rle_problems(segm, image_size)]
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


def validate_coco_json(json_file, image_root, require_annotations=True, check_images=True, zero_area_boxes="warn"):
    """Checks a COCO instances/keypoints JSON; raises ``DatasetValidationError`` listing every bad record.

    Args:
        check_images: "exists" (or True), "header", "decode" or "none" (or False); see ``check_image_file``.
        zero_area_boxes: "warn" (log each with its ids) or "error" (a validation problem).
    Returns the parsed JSON.
    """
    if zero_area_boxes not in ("warn", "error"):
        raise ValueError(f"validate_coco_json: zero_area_boxes must be 'warn' or 'error', got {zero_area_boxes!r}")
    level = _image_check_level(check_images)
    data = _load_json(json_file)
    problems = []
    if not isinstance(data, dict):
        raise DatasetValidationError(json_file, [f"expected a COCO JSON object, got a {type(data).__name__}"])
    for key in ("images", "categories") + (("annotations",) if require_annotations else ()):
        if key not in data:
            problems.append(f"missing top-level key '{key}'")
    if "images" not in data and "videos" in data:
        problems.append("a video file ('videos' without 'images', e.g. YouTube-VIS): register_coco_dataset reads "
                        "COCO images; register_youtube_vis (segx.data.datasets.youtube_vis) reads this layout")
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
        problem = check_image_file(os.path.join(image_root, img["file_name"]), level,
                                   (img.get("width"), img.get("height")))
        if problem:
            problems.append(f"{where}: {problem}")
    has_ann = set()
    seen_ids, zero_area = set(), []
    for ann in anns:
        where = f"annotation id {ann.get('id')} (image id {ann.get('image_id')})"
        if "id" not in ann:
            problems.append(f"{where}: annotation without an 'id'")
        elif ann["id"] in seen_ids:
            problems.append(f"{where}: annotation id is used more than once")
        else:
            seen_ids.add(ann["id"])
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
        elif bbox[2] == 0 or bbox[3] == 0:
            zero_area.append(f"{where}: bbox has zero width or height {bbox}")
        if "segmentation" in ann:
            img = images.get(ann.get("image_id"), {})
            hw = (img.get("height"), img.get("width"))
            problems += _check_segmentation(ann["segmentation"], where,
                                            hw if all(isinstance(v, int) for v in hw) else None)
        if "keypoints" in ann and len(ann["keypoints"]) % 3 != 0:
            problems.append(f"{where}: keypoints length {len(ann['keypoints'])} is not a multiple of 3")
        if any(k.startswith("dp_") for k in ann):  # DensePose-COCO fields
            from segx.data.datasets.densepose import check_densepose_annotation

            problems += [f"{where}: {p}" for p in check_densepose_annotation(ann)]
    if zero_area_boxes == "error":
        problems += zero_area
    elif zero_area:
        shown = "\n  ".join(zero_area[:MAX_REPORTED])
        more = f"\n  ... and {len(zero_area) - MAX_REPORTED} more" if len(zero_area) > MAX_REPORTED else ""
        logger.warning(
            "%s: %d annotation(s) with a zero-area box (detectron2 drops them from training; COCO evaluation counts "
            "them as objects no detection can match; zero_area_boxes='error' refuses them):\n  %s%s",
            json_file, len(zero_area), shown, more,
        )
    if problems:
        raise DatasetValidationError(json_file, problems)
    numeric_ids = [i for i in seen_ids if isinstance(i, (int, float))]
    if numeric_ids and min(numeric_ids) <= 0:
        logger.info("%s: annotation ids start at %s; segx's COCO evaluator re-numbers them 1..N on a copy for "
                    "pycocotools (which cannot match an annotation with id 0)", json_file, min(numeric_ids))
    n_empty = len(images) - len(has_ann)
    if n_empty:
        logger.info("%s: %d of %d images have no annotations (kept as negatives)", json_file, n_empty, len(images))
    return data


def keypoint_names_for(data, json_file, keypoint_names=None):
    """The keypoint names of a COCO keypoints file: ``keypoint_names`` when given, else the (one) category's
    ``keypoints``, else, when that list is empty (mmpose's face files, e.g. 300-W), ``keypoint_<i>`` for the count
    the annotations carry. None when nothing has keypoints. Counts that disagree raise, naming the annotations."""
    counts = {}
    for ann in data.get("annotations", []):
        if ann.get("keypoints"):
            counts.setdefault(len(ann["keypoints"]) // 3, []).append(ann)
    named = [c for c in data.get("categories", []) if c.get("keypoints")]
    if keypoint_names is not None:
        names, source = list(keypoint_names), "keypoint_names="
    elif named:
        names, source = list(named[0]["keypoints"]), "category"
    elif counts:
        if len(counts) > 1:
            raise DatasetValidationError(json_file, [
                f"annotation id {anns[0].get('id')} (image id {anns[0].get('image_id')}) and {len(anns) - 1} more: "
                f"{k} keypoints" for k, anns in sorted(counts.items())] + [
                "the category lists no keypoint names and the annotations disagree on the count"])
        k = next(iter(counts))
        logger.info("%s: the category's 'keypoints' list is empty; %d keypoints per annotation, named keypoint_0.."
                    "keypoint_%d (pass keypoint_names= to name them)", json_file, k, k - 1)
        return [f"keypoint_{i}" for i in range(k)]
    else:
        return None
    bad = [f"annotation id {a.get('id')} (image id {a.get('image_id')}): {k} keypoints, {source} has {len(names)}"
           for k, anns in counts.items() if k != len(names) for a in anns]
    if bad:
        raise DatasetValidationError(json_file, bad)
    return names


def _keypoint_metadata(names, json_file=None):
    """keypoint_names / keypoint_flip_map (``left_*``/``right_*`` pairs) for a list of keypoint names."""
    if not names:
        return {}
    flip = [(n, "right_" + n[5:]) for n in names if n.startswith("left_") and "right_" + n[5:] in names]
    if not flip:
        logger.warning("%s: no left_*/right_* keypoint pairs, so horizontal flips keep each point's index; pass "
                       "metadata keypoint_flip_map=[(a, b), ...] or set INPUT.RANDOM_FLIP none", json_file)
    return {"keypoint_names": list(names), "keypoint_flip_map": flip}


def _extra_fields(data, json_file):
    """Annotation keys (DensePose ``dp_*``) and image keys (video ``video_id``/``frame_id``) to keep in the
    records; logs what is done with them."""
    dp_keys = sorted({k for a in data.get("annotations", []) for k in a if k.startswith("dp_")})
    if dp_keys:
        n = sum(1 for a in data["annotations"] if any(k in a for k in dp_keys))
        logger.info("%s: %d annotations carry DensePose fields (%s): loaded into the records as DensePose-COCO "
                    "annotations (DensePose R-CNN, configs/DensePose/, trains and evaluates on them; other models "
                    "ignore them)", json_file, n, ", ".join(dp_keys))
    image_keys = []
    if "videos" in data:
        image_keys = sorted({k for img in data.get("images", []) for k in img
                             if k in ("video_id", "frame_id", "frame_index")})
        logger.warning("%s: %d 'videos': every frame is registered as an independent image (%s kept in its record); "
                       "no clip sampling or video evaluation on this dataset", json_file, len(data["videos"]),
                       ", ".join(image_keys) or "no video ids")
    return dp_keys, image_keys


def register_coco_dataset(name, json_file, image_root, metadata=None, validate=True, check_images="exists",
                          keypoint_names=None, zero_area_boxes="warn"):
    """Registers a COCO instances (or keypoints) dataset as ``name`` in detectron2's catalogs.

    Args:
        name: the dataset name to use in ``cfg.DATASETS.TRAIN/TEST``.
        json_file: COCO JSON. image_root: folder that ``file_name`` entries are relative to.
        metadata: extra metadata; ``thing_classes`` are read from the JSON's categories.
        validate: check the file (see ``validate_coco_json``) each time the dataset is loaded.
        check_images: how much of each image validation reads ("exists", "header", "decode", "none").
        zero_area_boxes: "warn" (list them in the log) or "error" (refuse the file).
        keypoint_names: names of the keypoints when the category's ``keypoints`` list is empty (default:
            ``keypoint_<i>`` for the count the annotations carry).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    _image_check_level(check_images)
    extra = {"annotation_keys": [], "image_keys": []}

    def load():
        if validate:
            validate_coco_json(json_file, image_root, check_images=check_images, zero_area_boxes=zero_area_boxes)
        keys = extra["annotation_keys"] + ["id"] if extra["annotation_keys"] else None  # ids name DensePose errors
        records = load_coco_json(json_file, image_root, name, extra_annotation_keys=keys)
        if extra["image_keys"]:
            images = {img["id"]: img for img in _load_json(json_file)["images"]}
            for rec in records:
                img = images.get(rec["image_id"], {})
                rec.update({k: img[k] for k in extra["image_keys"] if k in img})
        return records

    DatasetCatalog.register(name, load)
    meta = {"json_file": json_file, "image_root": image_root, "evaluator_type": "coco"}
    if os.path.isfile(json_file):
        data = _load_json(json_file)
        if isinstance(data, dict):
            cats = sorted(data.get("categories", []), key=lambda c: c["id"])
            meta["thing_classes"] = [c["name"] for c in cats]
            meta.update(_keypoint_metadata(keypoint_names_for(data, json_file, keypoint_names), json_file))
            extra["annotation_keys"], extra["image_keys"] = _extra_fields(data, json_file)
            if extra["annotation_keys"]:
                from segx.data.datasets.densepose import densepose_metadata

                meta.update(densepose_metadata(thing_classes=meta["thing_classes"]))
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
