"""Face datasets with 5 landmarks: WIDER FACE in RetinaFace's ``label.txt`` format, COCO-keypoints-style face
files (e.g. WFLW's 98 points reduced to 5), and the builtin synthetic faces.

Records are detectron2 dataset dicts with one class ("face", id 0), ``bbox`` in XYWH_ABS and ``keypoints``
(5 × (x, y, v) in the order ``FACE_KEYPOINT_NAMES``). A face without landmarks has all five v = 0; RetinaFace
leaves such faces out of its landmark loss. Metadata: ``evaluator_type="face"``, ``keypoint_names``,
``keypoint_flip_map`` (horizontal flips swap left/right) and, optionally, ``face_size_split``
(``{"easy": min_height, "medium": ..., "hard": ...}`` in pixels, WIDER-style cumulative subsets for the
evaluator) and ``wider_face_gt_dir`` (the official WIDER FACE ``.mat`` files: the evaluator's official view).

Coordinate convention (both loaders): landmarks are the file's numbers as they are, in the frame of the file's
box ``x, y, w, h`` (the box spans x .. x + w). This is RetinaFace's convention: the official code trains on
``label.txt`` as written (box x2 = x + w, flips as ``width - x``, resizes as ``x · scale``) and its models
predict landmarks in that frame. So the COCO face loader does not keep the half pixel that detectron2's
``load_coco_json`` adds to COCO keypoints (it reads them back from the file). Person keypoints
(``keypoints.py``) keep detectron2's COCO convention.

| builtin name | what |
|---|---|
| ``segx_faces_train`` / ``segx_faces_val`` | synthetic faces (``segx.data.synthetic_faces``), 800 / 100 images at 128×128 |
| ``wider_face_retinaface_train`` / ``_val`` | ``$SEGX_DATASETS/widerface/{train,val}/label.txt`` (user-provided) |
"""
import logging
import math
import os

from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json
from detectron2.structures import BoxMode

from segx.data import synthetic_faces
from segx.data.datasets.coco import DatasetValidationError, _load_json, inspect_image_file, validate_coco_json
from segx.data.synthetic import data_cache_dir

__all__ = [
    "FACE_SYNTHETIC_SPECS",
    "WFLW_5POINT_INDICES",
    "face_metadata",
    "load_wider_face_retinaface",
    "register_wider_face_retinaface",
    "load_face_keypoints_coco",
    "register_face_keypoints_coco",
    "ensure_faces_dataset",
]

logger = logging.getLogger(__name__)

# WFLW's 98 points → RetinaFace's 5: left/right eye centre, nose tip, left/right mouth corner.
WFLW_5POINT_INDICES = (96, 97, 54, 76, 82)

FACE_SYNTHETIC_SPECS = {
    "segx_faces_train": synthetic_faces.FaceSpec(num_images=800, seed=11),
    "segx_faces_val": synthetic_faces.FaceSpec(num_images=100, seed=12),
}
# Synthetic faces are 12–64 px wide (≈14–86 px high): three cumulative subsets by box height.
SYNTHETIC_SIZE_SPLIT = {"easy": 48, "medium": 24, "hard": 0}


def face_metadata(**extra):
    """Metadata shared by the face datasets (class, keypoint names and flip pairs, evaluator)."""
    meta = {
        "thing_classes": ["face"],
        "keypoint_names": list(synthetic_faces.FACE_KEYPOINT_NAMES),
        "keypoint_flip_map": [tuple(p) for p in synthetic_faces.FACE_KEYPOINT_FLIP_MAP],
        "evaluator_type": "face",
    }
    meta.update(extra)
    return meta


def load_wider_face_retinaface(label_txt, image_root=None, check_images="exists"):
    """Parses RetinaFace's WIDER FACE ``label.txt``.

    Format: a ``# relative/path.jpg`` line per image, followed by one line per face:
    ``x y w h`` (the validation file) or ``x y w h  l0x l0y f0  l1x l1y f1 ... l4x l4y f4  [blur]`` (the training
    file; 19 or 20 numbers). Landmarks are −1 for faces without them (RetinaFace's rule: l0x < 0); they are
    kept as written (see the module doc). Records get ``height``/``width`` from the image header. Faces with
    w ≤ 0 or h ≤ 0 are kept as ignore regions (``iscrowd=1``, no landmarks; counted in the log): the official
    evaluation ignores detections on them, and detectron2's mappers leave crowd faces out of training.
    Malformed lines and images that do not exist raise ``DatasetValidationError`` naming the file and each bad
    line number.

    Args:
        image_root: folder the paths are relative to (default: ``images/`` beside ``label_txt``, the layout of
            the official release).
        check_images: "exists" (default), "header", "decode" or "none": how much of each image is checked
            (``segx.data.datasets.coco.check_image_file``).
    """
    label_txt = os.fspath(label_txt)
    if image_root is None:
        image_root = os.path.join(os.path.dirname(label_txt), "images")
    if not os.path.isfile(label_txt):
        raise DatasetValidationError(label_txt, ["label file does not exist"])
    records, problems, lines = [], [], []
    current = None
    ignored = no_landmarks = 0
    with open(label_txt) as f:
        for lineno, raw in enumerate(f, 1):
            line = raw.strip()
            if not line:
                continue
            if line.startswith("#"):
                path = line[1:].strip()
                if not path:
                    problems.append(f"line {lineno}: '#' line without an image path")
                    current = None
                    continue
                current = {"file_name": os.path.join(image_root, path), "image_id": len(records), "annotations": []}
                records.append(current)
                lines.append(lineno)
                continue
            if current is None:
                problems.append(f"line {lineno}: face line before any '# image path' line")
                continue
            try:
                vals = [float(v) for v in line.split()]
            except ValueError:
                problems.append(f"line {lineno}: not a list of numbers: {line[:80]!r}")
                continue
            if len(vals) not in (4, 19, 20):
                problems.append(
                    f"line {lineno}: {len(vals)} numbers; expected 4 (x y w h) or 19/20 (x y w h, 5 × (x y flag), blur)"
                )
                continue
            if not all(math.isfinite(v) for v in vals):
                problems.append(f"line {lineno}: non-finite number in {line[:80]!r}")
                continue
            x, y, w, h = vals[:4]
            if w <= 0 or h <= 0:  # an ignore region: a detection on it is neither right nor wrong
                ignored += 1
                current["annotations"].append(
                    {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 1,
                     "keypoints": [0.0] * 15}
                )
                continue
            if len(vals) >= 19 and vals[4] >= 0:
                kpts = []
                for i in range(5):
                    kpts += [vals[4 + 3 * i], vals[5 + 3 * i], 2.0]
            else:
                kpts = [0.0] * 15
                no_landmarks += 1
            current["annotations"].append(
                {"bbox": [x, y, w, h], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
                 "keypoints": kpts}
            )
    # original sizes, so that predictions on resized inputs are mapped back: the header is read anyway, so
    # "exists" also catches empty and non-image files
    level = {True: "header", "exists": "header", False: "none", None: "none"}.get(check_images, check_images)
    for rec, lineno in zip(records, lines):
        if level == "none":
            if os.path.isfile(rec["file_name"]):
                with Image.open(rec["file_name"]) as im:
                    rec["width"], rec["height"] = im.size
            continue
        problem, size = inspect_image_file(rec["file_name"], level)
        if problem:
            problems.append(f"line {lineno}: {problem}")
        else:
            rec["width"], rec["height"] = size
    if problems:
        raise DatasetValidationError(label_txt, problems)
    n_faces = sum(len(r["annotations"]) for r in records) - ignored
    logger.info(
        "%s: %d images, %d faces (%d without landmarks); %d faces with w <= 0 or h <= 0 kept as ignore regions",
        label_txt, len(records), n_faces, no_landmarks, ignored,
    )
    return records


def register_wider_face_retinaface(name, label_txt, image_root=None, size_split=None, metadata=None,
                                   wider_gt_dir=None, check_images="exists", check_now=True):
    """Registers WIDER FACE with RetinaFace's landmark ``label.txt`` (see ``load_wider_face_retinaface``) as ``name``.

    Args:
        size_split: optional ``{"easy": min_height, ...}`` for the evaluator's per-subset AP (COCO-style view).
        wider_gt_dir: folder of the official ``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``:
            the evaluator adds the official WIDER FACE AP.
        check_images: see ``load_wider_face_retinaface``.
        check_now: parse ``label_txt`` and check its images now (errors at registration, not when training
            starts); they are checked again whenever the dataset is loaded.
    """
    label_txt = os.fspath(label_txt)
    root = image_root if image_root is not None else os.path.join(os.path.dirname(label_txt), "images")
    if check_now:
        load_wider_face_retinaface(label_txt, root, check_images)
    DatasetCatalog.register(name, lambda: load_wider_face_retinaface(label_txt, root, check_images))
    extra = {"label_txt": label_txt, "image_root": root}
    if size_split:
        extra["face_size_split"] = dict(size_split)
    if wider_gt_dir is not None:
        extra["wider_face_gt_dir"] = os.fspath(wider_gt_dir)
    extra.update(metadata or {})
    MetadataCatalog.get(name).set(**face_metadata(**extra))
    return name


def load_face_keypoints_coco(json_file, image_root, name=None, landmark_indices=None, validate=True,
                             check_images="exists"):
    """Loads a COCO-keypoints-style face file (one face category); ``landmark_indices`` picks the 5 points
    (e.g. ``WFLW_5POINT_INDICES`` from WFLW's 98), ``None`` keeps them as they are (must be 5), ``"all"``
    keeps every point of the file (any layout, e.g. 300-W's 68; all annotations must have the same count).

    Landmarks are the file's numbers (the face convention of the module doc: no half-pixel shift).
    """
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    data = validate_coco_json(json_file, image_root, check_images=check_images) if validate else _load_json(json_file)
    raw = {a.get("id"): a.get("keypoints") for a in data.get("annotations", [])}
    records = load_coco_json(json_file, image_root, name, extra_annotation_keys=["id"])
    keep_all = isinstance(landmark_indices, str)
    if keep_all and landmark_indices != "all":
        raise ValueError(f"load_face_keypoints_coco({json_file}): landmark_indices must be indices, None or 'all', "
                         f"got {landmark_indices!r}")
    num = len(synthetic_faces.FACE_KEYPOINT_NAMES)
    if keep_all:
        counts = {len(kp) // 3 for kp in raw.values() if kp}
        if len(counts) > 1:
            raise DatasetValidationError(json_file, [f"landmark_indices='all' needs one landmark count, the "
                                                     f"annotations have {sorted(counts)}"])
        num = counts.pop() if counts else num
    problems = []
    for rec in records:
        for ann in rec["annotations"]:
            kp = raw.get(ann.get("id"))  # the file's numbers, without load_coco_json's + 0.5
            kp = list(kp) if kp else kp
            where = f"annotation id {ann.get('id')} (image {rec['file_name']})"
            if not kp:
                ann["keypoints"] = [0.0] * (3 * num)
                continue
            ann["keypoints"] = kp
            k = len(kp) // 3
            if keep_all:
                continue
            if landmark_indices is None:
                if k != num:
                    problems.append(f"{where}: {k} keypoints; pass landmark_indices to pick {num} of them "
                                    f"(or landmark_indices='all' to keep the file's layout)")
                    continue
                continue
            bad = [i for i in landmark_indices if not 0 <= i < k]
            if bad:
                problems.append(f"{where}: landmark_indices {bad} out of range for {k} keypoints")
                continue
            ann["keypoints"] = [v for i in landmark_indices for v in kp[3 * i: 3 * i + 3]]
    if problems:
        raise DatasetValidationError(json_file, problems)
    for rec in records:  # detectron2's contiguous ids: a single class
        for ann in rec["annotations"]:
            ann["category_id"] = 0
            ann.pop("id", None)
    return records


def register_face_keypoints_coco(name, json_file, image_root, landmark_indices=None, metadata=None, validate=True,
                                 check_images="exists", keypoint_names=None):
    """Registers a COCO-keypoints-style face file as ``name`` with the face metadata.

    ``landmark_indices``: which of the file's keypoints are (left eye, right eye, nose, left mouth corner, right
    mouth corner), e.g. ``WFLW_5POINT_INDICES`` = (96, 97, 54, 76, 82); ``None`` when the file has exactly 5;
    ``"all"`` keeps the file's layout (e.g. 68 points; names: ``keypoint_names``, else the category's
    ``keypoints``, else ``keypoint_<i>``; no flip pairs unless ``metadata`` has ``keypoint_flip_map``). The
    evaluator's inter-ocular NME takes the eyes from the layout (``segx.evaluation.face``).
    """
    if landmark_indices == "all":
        indices = "all"
    elif landmark_indices is not None and len(landmark_indices) != len(synthetic_faces.FACE_KEYPOINT_NAMES):
        raise ValueError(f"register_face_keypoints_coco({name!r}): landmark_indices must have 5 entries (or be "
                         f"'all'), got {landmark_indices}")
    else:
        indices = None if landmark_indices is None else tuple(int(i) for i in landmark_indices)
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(
        name, lambda: load_face_keypoints_coco(json_file, image_root, None, indices, validate, check_images)
    )
    extra = {}
    if indices == "all":
        from segx.data.datasets.coco import keypoint_names_for

        names = keypoint_names_for(_load_json(json_file), json_file, keypoint_names) or []
        extra = {"keypoint_names": names, "keypoint_flip_map": []}
    meta = face_metadata(json_file=json_file, image_root=image_root, **extra)
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
    return name


def _synthetic_root(name):
    spec = FACE_SYNTHETIC_SPECS[name]
    return os.path.join(data_cache_dir(), "synthetic", f"{name}_{spec.key()}")


def ensure_faces_dataset(name):
    """Writes the files of builtin face dataset ``name`` if they are not cached yet; returns its folder."""
    return synthetic_faces.write_faces_dataset(FACE_SYNTHETIC_SPECS[name], _synthetic_root(name))


def _load_synthetic(name):
    root = ensure_faces_dataset(name)
    return load_face_keypoints_coco(os.path.join(root, "faces.json"), os.path.join(root, "images"), validate=False)


def register_synthetic_faces():
    for name in FACE_SYNTHETIC_SPECS:
        if name in DatasetCatalog.list():
            continue
        root = _synthetic_root(name)
        DatasetCatalog.register(name, lambda n=name: _load_synthetic(n))
        MetadataCatalog.get(name).set(**face_metadata(
            json_file=os.path.join(root, "faces.json"), image_root=os.path.join(root, "images"),
            face_size_split=dict(SYNTHETIC_SIZE_SPLIT), segx_builtin=True,
        ))


def register_wider_face_builtin(root=None):
    """Registers ``wider_face_retinaface_{train,val}`` from ``<root>/widerface/{train,val}/label.txt`` (the layout
    of RetinaFace's release; ``root``: ``$SEGX_DATASETS``, default ``datasets``). Nothing is read until loaded. The
    val set gets the official evaluation when ``<root>/widerface/ground_truth`` (the four ``.mat`` files) exists."""
    root = root or os.environ.get("SEGX_DATASETS", "datasets")
    for split in ("train", "val"):
        name = f"wider_face_retinaface_{split}"
        if name in DatasetCatalog.list():
            continue
        gt_dir = os.path.join(root, "widerface", "ground_truth")  # the official .mat files, when present
        register_wider_face_retinaface(name, os.path.join(root, "widerface", split, "label.txt"), check_now=False,
                                       wider_gt_dir=gt_dir if split == "val" and os.path.isdir(gt_dir) else None)


register_synthetic_faces()
register_wider_face_builtin()
