"""Video instance segmentation data: the YouTube-VIS format and segx's synthetic moving shapes.

    from segx.data.datasets.youtube_vis import register_youtube_vis
    register_youtube_vis("my_videos_train", "annotations/train.json", "JPEGImages")

YouTube-VIS (2019/2021) JSON: ``videos`` (``id``, ``width``, ``height``, ``length``, ``file_names``: one image path
per frame, relative to the image root), ``categories``, and ``annotations``, one per object instance (its id is the
instance id) with ``video_id``, ``category_id``, ``iscrowd`` and per-frame lists ``segmentations`` (RLE or
polygons, ``null`` where the object is absent), ``bboxes`` ([x, y, w, h] or ``null``) and ``areas``. Sets
without ``annotations`` (YouTube-VIS "valid") load as frames without objects.

The dataset is a list of frame records, videos in file order and frames in order: ``file_name``, ``height``,
``width``, ``image_id`` (unique over the dataset), ``video_id``, ``frame_index``, ``video_length``,
``video_frames`` (every frame path of the video, for training pairs), and ``annotations`` with ``instance_id``
(detectron2's fields; masks as compressed RLE). Validation runs on load and names the file, the video id and the
frame of every problem: missing frames, frames of another size, empty videos, per-frame lists of the wrong length,
bad RLE / polygons / boxes, unknown videos or categories, duplicate ids.

Embedded (registered on import, written on first use): ``segx_videos_train`` (40 videos × 15 frames) and
``segx_videos_val`` (10 × 20), 128×128, the four shape classes; their records also carry ``motion_file`` (the
exact motion, ``segx.data.synthetic_video``), which the flow stage of YolactEdge trains on.
"""
import logging
import os

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode
from pycocotools import mask as mask_util

from segx.data import synthetic_video
from segx.data.datasets.builtin import THING_COLORS
from segx.data.datasets.coco import MAX_REPORTED, DatasetValidationError, _check_segmentation, _load_json

__all__ = ["validate_youtube_vis_json", "load_youtube_vis_json", "register_youtube_vis", "VIDEO_SPECS",
           "ensure_builtin_video_dataset"]

logger = logging.getLogger(__name__)

VIDEO_SPECS = {
    "segx_videos_train": synthetic_video.VideoSpec(num_videos=40, num_frames=15, seed=21),
    "segx_videos_val": synthetic_video.VideoSpec(num_videos=10, num_frames=20, seed=22),
}


def _image_size(path):
    from PIL import Image

    with Image.open(path) as im:  # reads the header only
        return im.height, im.width


def _check_box(box, where):
    if not isinstance(box, (list, tuple)) or len(box) != 4 or not all(isinstance(v, (int, float)) for v in box):
        return [f"{where}: bbox must be 4 numbers [x, y, w, h], got {box}"]
    if box[2] < 0 or box[3] < 0:
        return [f"{where}: bbox has negative width/height {box}"]
    return []


def validate_youtube_vis_json(json_file, image_root, check_images=True, check_image_sizes=True,
                              require_annotations=False):
    """Checks a YouTube-VIS JSON; raises ``DatasetValidationError`` (``segx.data.datasets.coco``) listing every
    problem with the video id and frame. ``check_images``: every frame file exists; ``check_image_sizes``: and
    has the video's height × width (reads image headers). Returns the parsed JSON."""
    data = _load_json(json_file)
    problems = [f"missing top-level key '{k}'" for k in ("videos", "categories") if k not in data]
    if require_annotations and not data.get("annotations"):
        problems.append("'annotations' is missing or empty: no objects to train on")
    if problems:
        raise DatasetValidationError(json_file, problems)
    cat_ids = {c.get("id") for c in data["categories"]}
    videos = {}
    for v in data["videos"]:
        vid = v.get("id")
        where = f"video id {vid}"
        if vid is None or "file_names" not in v:
            problems.append(f"{where}: a video needs 'id' and 'file_names'")
            continue
        if vid in videos:
            problems.append(f"{where}: duplicate video id")
        videos[vid] = v
        names = v["file_names"]
        if not names:
            problems.append(f"{where}: the video is empty ('file_names' has no frames)")
            continue
        if "length" in v and v["length"] != len(names):
            problems.append(f"{where}: 'length' is {v['length']} but 'file_names' lists {len(names)} frames")
        if "height" not in v or "width" not in v:
            problems.append(f"{where}: the video needs 'height' and 'width'")
        for f, name in enumerate(names):
            path = os.path.join(image_root, name)
            if not check_images:
                break
            if not os.path.isfile(path):
                problems.append(f"{where}, frame {f}: image file {path} does not exist (missing frame)")
            elif check_image_sizes and "height" in v and "width" in v:
                h, w = _image_size(path)
                if (h, w) != (v["height"], v["width"]):
                    problems.append(f"{where}, frame {f}: image {path} is {h}x{w}, the video is "
                                    f"{v['height']}x{v['width']} (a frame of another size)")
        if len(problems) > 4 * MAX_REPORTED:
            break
    ann_ids = set()
    for ann in data.get("annotations", []):
        aid, vid = ann.get("id"), ann.get("video_id")
        where = f"annotation (instance) id {aid} (video id {vid})"
        if aid in ann_ids:
            problems.append(f"{where}: duplicate annotation id")
        ann_ids.add(aid)
        if vid not in videos:
            problems.append(f"{where}: video id not in 'videos'")
            continue
        if ann.get("category_id") not in cat_ids:
            problems.append(f"{where}: unknown category id {ann.get('category_id')} (known: {sorted(cat_ids)})")
        video = videos[vid]
        T = len(video["file_names"])
        segs = ann.get("segmentations")
        if not isinstance(segs, list):
            problems.append(f"{where}: 'segmentations' must be a list with one entry per frame")
            continue
        if len(segs) != T:
            problems.append(f"{where}: 'segmentations' has {len(segs)} entries, the video has {T} frames")
        boxes = ann.get("bboxes")
        if boxes is not None and len(boxes) != len(segs):
            problems.append(f"{where}: 'bboxes' has {len(boxes)} entries, 'segmentations' {len(segs)}")
            boxes = None
        for f, seg in enumerate(segs):
            if seg is None:
                continue
            fwhere = f"{where}, frame {f}"
            size = (video.get("height"), video.get("width"))
            problems += _check_segmentation(seg, fwhere, size if all(isinstance(v, int) for v in size) else None)
            if boxes is not None and boxes[f] is not None:
                problems += _check_box(boxes[f], fwhere)
    if problems:
        raise DatasetValidationError(json_file, problems)
    return data


def _to_rle(seg, h, w):
    """Any COCO segmentation (polygons, uncompressed or compressed RLE) → compressed RLE with str counts."""
    if isinstance(seg, list):
        rle = mask_util.merge(mask_util.frPyObjects(seg, h, w))
    elif isinstance(seg["counts"], list):
        rle = mask_util.frPyObjects(seg, h, w)
    else:
        rle = dict(seg)
    if isinstance(rle["counts"], bytes):
        rle["counts"] = rle["counts"].decode("ascii")
    return rle


def load_youtube_vis_json(json_file, image_root, dataset_name=None, validate=True, check_image_sizes=True,
                          extra_video_fields=None):
    """Frame records of a YouTube-VIS JSON (module docstring). ``extra_video_fields(video) -> dict`` adds fields
    to each frame record of a video (the synthetic set's ``motion_file``)."""
    data = validate_youtube_vis_json(json_file, image_root, check_image_sizes=check_image_sizes) if validate \
        else _load_json(json_file)
    cats = sorted(data["categories"], key=lambda c: c["id"])
    id_map = {c["id"]: i for i, c in enumerate(cats)}
    by_video = {}
    for ann in data.get("annotations", []):
        by_video.setdefault(ann["video_id"], []).append(ann)
    records, image_id, hidden = [], 0, 0
    for v in data["videos"]:
        h, w = v["height"], v["width"]
        frames = [os.path.join(image_root, n) for n in v["file_names"]]
        extra = extra_video_fields(v) if extra_video_fields else {}
        for f, path in enumerate(frames):
            image_id += 1
            annos = []
            for ann in by_video.get(v["id"], []):
                seg = ann["segmentations"][f]
                if seg is None:
                    continue
                rle = _to_rle(seg, h, w)
                box = (ann.get("bboxes") or [None] * len(frames))[f]
                if box is None:
                    box = mask_util.toBbox(rle).tolist()
                if mask_util.area(rle) == 0:
                    hidden += 1
                    continue
                annos.append({"bbox": list(map(float, box)), "bbox_mode": BoxMode.XYWH_ABS,
                              "category_id": id_map[ann["category_id"]], "segmentation": rle,
                              "iscrowd": int(ann.get("iscrowd", 0)), "instance_id": ann["id"]})
            records.append({"file_name": path, "height": h, "width": w, "image_id": image_id, "video_id": v["id"],
                            "frame_index": f, "video_length": len(frames), "video_frames": frames,
                            "annotations": annos, **extra})
    if hidden:
        logger.info("%s: %d per-frame masks with zero area skipped", json_file, hidden)
    logger.info("Loaded %d videos, %d frames from %s", len(data["videos"]), len(records), json_file)
    return records


def _video_metadata(categories):
    cats = sorted(categories, key=lambda c: c["id"])
    return {"thing_classes": [c["name"] for c in cats],
            "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(cats)}}


def register_youtube_vis(name, json_file, image_root, metadata=None, validate=True, check_image_sizes=True):
    """Registers a YouTube-VIS-format dataset as ``name`` (frame records, module docstring) with
    ``evaluator_type`` "coco_video": per-frame COCO mask AP over all frames + key / non-key frame times."""
    json_file, image_root = os.fspath(json_file), os.fspath(image_root)
    DatasetCatalog.register(name, lambda: load_youtube_vis_json(json_file, image_root, name, validate,
                                                                check_image_sizes))
    meta = {"image_root": image_root, "video_json_file": json_file, "evaluator_type": "coco_video"}
    if os.path.isfile(json_file):
        meta.update(_video_metadata(_load_json(json_file).get("categories", [])))
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
    return name


# ------------------------------------------------------------------------------------------- embedded videos
def _root(name):
    return os.path.join(synthetic_video.data_cache_dir(), "synthetic", f"{name}_videos_{VIDEO_SPECS[name].key()}")


def ensure_builtin_video_dataset(name):
    """Writes the files of builtin video dataset ``name`` if they are not in the cache yet; returns its folder."""
    return synthetic_video.write_video_dataset(VIDEO_SPECS[name], _root(name))


def _load_builtin(name):
    root = ensure_builtin_video_dataset(name)
    def motion(video):
        return {"motion_file": os.path.join(root, "motion", os.path.dirname(video["file_names"][0]) + ".npz")}

    return load_youtube_vis_json(os.path.join(root, "instances.json"), os.path.join(root, "JPEGImages"), name,
                                 check_image_sizes=False, extra_video_fields=motion)


def _register_builtin():
    from segx.data.synthetic import SHAPE_CLASSES, THING_IDS

    for name in VIDEO_SPECS:
        if name in DatasetCatalog.list():
            continue
        root = _root(name)
        DatasetCatalog.register(name, lambda n=name: _load_builtin(n))
        MetadataCatalog.get(name).set(
            image_root=os.path.join(root, "JPEGImages"), video_json_file=os.path.join(root, "instances.json"),
            evaluator_type="coco_video", thing_classes=list(SHAPE_CLASSES), thing_colors=THING_COLORS,
            thing_dataset_id_to_contiguous_id={cid: i for i, cid in enumerate(THING_IDS)}, segx_builtin=True)


def _register_ytvis_2019():
    """``ytvis_2019_train`` / ``ytvis_2019_val`` under ``$DETECTRON2_DATASETS/ytvis_2019`` (``train.json`` +
    ``train/JPEGImages``, ``valid.json`` + ``valid/JPEGImages``), as detectron2 registers COCO; nothing is read
    until used."""
    root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "ytvis_2019")
    for name, (js, images) in {"ytvis_2019_train": ("train.json", "train/JPEGImages"),
                               "ytvis_2019_val": ("valid.json", "valid/JPEGImages")}.items():
        if name not in DatasetCatalog.list():
            register_youtube_vis(name, os.path.join(root, js), os.path.join(root, images))


_register_builtin()
_register_ytvis_2019()
