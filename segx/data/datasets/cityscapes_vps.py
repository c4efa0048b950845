"""Video panoptic data in the Cityscapes-VPS format (Kim et al., "Video Panoptic Segmentation", CVPR 2020), and segx's
synthetic video panoptic set in the same format.

    from segx.data.datasets.cityscapes_vps import register_cityscapes_vps
    register_cityscapes_vps("my_vps_val", "panoptic_gt_val_city_vps.json", "val/panoptic_video", "val/img")

The format (mcahny/vps ``prepare_data/create_panoptic_video_labels.py``): a COCO-panoptic JSON whose ``images``
(``id``, ``file_name``, ``height``, ``width``) are the annotated frames, ``annotations`` (``image_id``, ``file_name``
of the panoptic PNG, ``segments_info``: ``id``, ``category_id``, ``iscrowd``, ``area``) and ``categories`` (with
``isthing``), and one panoptic PNG per annotated frame (``id = R + 256 G + 256² B``, 0 = void) in which **a segment
keeps its id over the frames of its video** (an instance's track). The video and the frame of an image come from its
``video_id`` / ``frame_id`` fields when it has them, else from its id (or file name) ``VVVV_FFFF_...`` (Cityscapes-VPS
names frames ``<video>_<frame>_<city>_...``). Cityscapes-VPS annotates every 5th frame; ``all_frames_json`` (its
``im_all_info_*.json``) and ``all_frames_root`` (``img_all/``) add the frames in between, which a video model runs on
and the VPQ evaluator skips.

Records (one per frame, videos in order, frames in order): ``file_name``, ``height``, ``width``, ``image_id``,
``video_id``, ``frame_index``, ``video_length``; annotated frames also ``pan_seg_file_name`` and ``segments_info``
(detectron2's panoptic convention: ``category_id`` contiguous — things ``0..K-1``, stuff the "separated" labels
``1..S`` that UPSNet / VPSNet predict — with ``isthing``, ``id``, ``iscrowd``, ``area``); every record also has
``video_frames``, the annotated frames of its video (``frame_index``, ``file_name``, ``pan_seg_file_name``,
``segments_info``): where training pairs take their reference frame from.

Validation (on load) names the JSON file, the video and the frame of every problem: a frame whose video or frame
cannot be told, a frame listed twice, missing images or PNGs, frames of one video with different sizes (JSON, and the
image files' headers with ``check_image_sizes``), unknown categories, repeated or zero segment ids, a segment id that
changes category within a video, and with ``check_png_ids`` (reads every PNG) ids in a PNG that its JSON does not
list, listed segments absent from the PNG and areas that disagree with the PNG. The mapper and the VPQ evaluator run
the PNG checks on every PNG they read.

Embedded (registered on import, written on first use): ``segx_vps_shapes_train`` (40 videos × 12 frames) and
``segx_vps_shapes_val`` (10 × 16), 128×128, every frame annotated, the 4 shape things + 3 stuff classes of
``segx_shapes_panoptic_*``; their records also carry ``motion_file`` (the exact motion), which VPSNet's flow stage
trains on. ``cityscapes_vps_{train,val}`` point at ``$DETECTRON2_DATASETS/cityscapes_vps`` (nothing is read until
used).
"""
import logging
import os
import re

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog

from segx.data import synthetic_video_panoptic as svp
from segx.data.datasets.coco import DatasetValidationError, MAX_REPORTED, _load_json
from segx.data.datasets.panoptic_separated import separated_panoptic_metadata

__all__ = [
    "VPS_SPECS",
    "vps_metadata",
    "parse_video_frame",
    "read_panoptic_ids",
    "check_panoptic_png",
    "validate_cityscapes_vps_json",
    "load_cityscapes_vps_json",
    "register_cityscapes_vps",
    "ensure_builtin_vps_dataset",
]

logger = logging.getLogger(__name__)

VPS_SPECS = {
    "segx_vps_shapes_train": svp.VideoPanopticSpec(num_videos=40, num_frames=12, seed=31),
    "segx_vps_shapes_val": svp.VideoPanopticSpec(num_videos=10, num_frames=16, seed=32),
}

_NAME_PATTERN = re.compile(r"^(\d+)_(\d+)_")


def vps_metadata(categories):
    """Metadata of a video panoptic set from its categories (with ``isthing``), in the "separated" layout UPSNet and
    VPSNet predict in: things contiguous ``0..K-1``; stuff ``1..S`` (``stuff_classes[0]`` is "things"). Unlike
    ``separated_panoptic_metadata``, no dataset id is reserved for "things" (Cityscapes-VPS's road is category 0)."""
    return separated_panoptic_metadata(categories, reserve_things_id=False)


def parse_video_frame(image):
    """``(video_id, frame_index)`` of a JSON image entry: its ``video_id`` / ``frame_id`` (or ``frame_index``) fields,
    else the ``VVVV_FFFF_`` prefix of its id or file name (ints); None when neither is there."""
    if "video_id" in image and ("frame_id" in image or "frame_index" in image):
        return image["video_id"], int(image.get("frame_id", image.get("frame_index")))
    for text in (str(image.get("id", "")), os.path.basename(str(image.get("file_name", "")))):
        m = _NAME_PATTERN.match(text)
        if m:
            return int(m.group(1)), int(m.group(2))
    return None


def read_panoptic_ids(path):
    """``[H,W]`` int64 segment ids of a COCO-panoptic PNG (``R + 256 G + 256² B``)."""
    with Image.open(path) as im:
        rgb = np.asarray(im.convert("RGB"), dtype=np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 65536 * rgb[..., 2]


def check_panoptic_png(ids, segments_info, where, check_areas=True):
    """Problems (messages starting with ``where``) between a panoptic id map and its ``segments_info``: ids in the
    PNG the JSON does not list (0 = void is allowed), listed segments absent from the PNG, and (``check_areas``)
    listed areas that differ from the PNG's pixel counts."""
    values, counts = np.unique(ids, return_counts=True)
    in_png = {int(v): int(c) for v, c in zip(values, counts) if v != 0}
    listed = {int(s["id"]): s for s in segments_info}
    problems = []
    unknown = sorted(set(in_png) - set(listed))
    if unknown:
        problems.append(f"{where}: the PNG has segment ids {unknown[:10]}{' ...' if len(unknown) > 10 else ''} "
                        f"({sum(in_png[i] for i in unknown)} pixels) that its JSON 'segments_info' does not list")
    absent = sorted(set(listed) - set(in_png))
    if absent:
        problems.append(f"{where}: segments {absent[:10]} are listed in the JSON but have no pixel in the PNG")
    if check_areas:
        for sid in sorted(set(listed) & set(in_png)):
            area = listed[sid].get("area")
            if area is not None and int(area) != in_png[sid]:
                problems.append(f"{where}: segment {sid} has area {area} in the JSON, {in_png[sid]} pixels in the PNG")
    return problems


def _image_size(path):
    with Image.open(path) as im:  # the header only
        return im.height, im.width


def _frames_by_video(images, json_file, problems):
    """``{video: {frame: image entry}}`` from JSON image entries; problems name the file, video and frame."""
    videos = {}
    for k, img in enumerate(images):
        if "id" not in img or "file_name" not in img:
            problems.append(f"images[{k}]: an image needs 'id' and 'file_name', has {sorted(img)}")
            continue
        vf = parse_video_frame(img)
        if vf is None:
            problems.append(f"image id {img['id']!r} ({img['file_name']}): cannot tell its video and frame: give it "
                            "'video_id' and 'frame_id' fields or name it <video>_<frame>_... (Cityscapes-VPS)")
            continue
        video, frame = vf
        if frame in videos.setdefault(video, {}):
            problems.append(f"video {video}, frame {frame}: listed twice (image ids "
                            f"{videos[video][frame]['id']!r} and {img['id']!r})")
            continue
        videos[video][frame] = img
    return videos


def validate_cityscapes_vps_json(panoptic_json, panoptic_root, image_root, check_images=True, check_image_sizes=True,
                                 check_png_ids=False, all_frames_json=None, all_frames_root=None):
    """Checks a Cityscapes-VPS panoptic JSON and its files; raises ``DatasetValidationError`` listing every problem
    with the video and frame (module docstring). Returns ``(data, all_frames_data or None)``."""
    data = _load_json(panoptic_json)
    problems = [f"missing top-level key '{k}'" for k in ("images", "annotations", "categories") if k not in data]
    if problems:
        raise DatasetValidationError(panoptic_json, problems)
    cats = {c.get("id"): c for c in data["categories"]}
    videos = _frames_by_video(data["images"], panoptic_json, problems)
    where_of = {img["id"]: (v, f, img) for v, frames in videos.items() for f, img in frames.items()}
    seen_ann = set()
    segment_category = {}  # (video, segment id) -> (category, first frame)
    for a, ann in enumerate(data["annotations"]):
        iid = ann.get("image_id")
        if iid not in where_of:
            problems.append(f"annotations[{a}]: image_id {iid!r} is not among the images")
            continue
        video, frame, img = where_of[iid]
        where = f"video {video}, frame {frame} ({img['file_name']})"
        if iid in seen_ann:
            problems.append(f"{where}: more than one annotation")
            continue
        seen_ann.add(iid)
        png = os.path.join(panoptic_root, ann.get("file_name", ""))
        if not ann.get("file_name") or not os.path.isfile(png):
            problems.append(f"{where}: panoptic PNG {png} does not exist")
            png = None
        ids_seen = set()
        for seg in ann.get("segments_info", []):
            sid, cid = seg.get("id"), seg.get("category_id")
            if sid in ids_seen:
                problems.append(f"{where}: segment id {sid} is listed twice")
            ids_seen.add(sid)
            if not isinstance(sid, int) or sid <= 0:
                problems.append(f"{where}: segment id {sid!r} must be a positive integer (0 is void)")
            if cid not in cats:
                problems.append(f"{where}: segment {sid} has unknown category id {cid} (known: {sorted(cats)})")
                continue
            first = segment_category.setdefault((video, sid), (cid, frame))
            if first[0] != cid:
                problems.append(f"{where}: segment {sid} is category {cid}, but category {first[0]} in frame "
                                f"{first[1]} of the same video (an id must keep its category over a video)")
        if check_png_ids and png is not None:
            ids = read_panoptic_ids(png)
            if ids.shape != (img.get("height"), img.get("width")):
                problems.append(f"{where}: panoptic PNG {png} is {ids.shape[0]}x{ids.shape[1]}, the image is "
                                f"{img.get('height')}x{img.get('width')}")
            problems += check_panoptic_png(ids, ann.get("segments_info", []), f"{where}: PNG {png}")
        if len(problems) > 4 * MAX_REPORTED:
            break
    all_data = None
    frame_sets = [(data, image_root, videos, panoptic_json)]
    if all_frames_json is not None:
        all_data = _load_json(all_frames_json)
        if "images" not in all_data:
            raise DatasetValidationError(all_frames_json, ["missing top-level key 'images'"])
        all_problems = []
        all_videos = _frames_by_video(all_data["images"], all_frames_json, all_problems)
        for v, frames in videos.items():
            for f in frames:
                if f not in all_videos.get(v, {}):
                    all_problems.append(f"video {v}, frame {f}: annotated in {panoptic_json} but not listed here")
        if all_problems:
            raise DatasetValidationError(all_frames_json, all_problems)
        frame_sets = [(all_data, all_frames_root or image_root, all_videos, all_frames_json)]
    for _, root, vids, _ in frame_sets:
        for video, frames in vids.items():
            size0 = None
            for frame in sorted(frames):
                img = frames[frame]
                where = f"video {video}, frame {frame} ({img['file_name']})"
                size = (img.get("height"), img.get("width"))
                if None in size:
                    problems.append(f"{where}: the image entry needs 'height' and 'width'")
                    continue
                if size0 is None:
                    size0 = (size, frame)
                elif size != size0[0]:
                    problems.append(f"{where}: {size[0]}x{size[1]}, frame {size0[1]} of the same video is "
                                    f"{size0[0][0]}x{size0[0][1]} (every frame of a video must have one size)")
                path = os.path.join(root, img["file_name"])
                if check_images and not os.path.isfile(path):
                    problems.append(f"{where}: image file {path} does not exist")
                elif check_images and check_image_sizes:
                    hw = _image_size(path)
                    if hw != size:
                        problems.append(f"{where}: image file {path} is {hw[0]}x{hw[1]}, the JSON says "
                                        f"{size[0]}x{size[1]}")
            if len(problems) > 4 * MAX_REPORTED:
                break
    if problems:
        raise DatasetValidationError(panoptic_json, problems)
    return data, all_data


def load_cityscapes_vps_json(panoptic_json, panoptic_root, image_root, dataset_name=None, all_frames_json=None,
                             all_frames_root=None, validate=True, check_image_sizes=True, check_png_ids=False,
                             extra_video_fields=None):
    """Frame records of a Cityscapes-VPS set (module docstring). ``extra_video_fields(video_id) -> dict`` adds fields
    to every frame record of a video (the synthetic set's ``motion_file``)."""
    if validate:
        data, all_data = validate_cityscapes_vps_json(panoptic_json, panoptic_root, image_root, True,
                                                      check_image_sizes, check_png_ids, all_frames_json,
                                                      all_frames_root)
    else:
        data = _load_json(panoptic_json)
        all_data = _load_json(all_frames_json) if all_frames_json else None
    meta = vps_metadata(data["categories"])
    things, stuff = meta["thing_dataset_id_to_contiguous_id"], meta["stuff_dataset_id_to_contiguous_id"]
    crowd_stuff = 0
    anns = {a["image_id"]: a for a in data["annotations"]}
    annotated = {}
    for img in data["images"]:
        video, frame = parse_video_frame(img)
        ann = anns.get(img["id"])
        if ann is None:
            continue
        segments = []
        for s in ann["segments_info"]:
            isthing = s["category_id"] in things
            crowd = int(s.get("iscrowd", 0))
            if crowd and not isthing:
                crowd_stuff += 1
                crowd = 0  # a stuff segment is one region already (panopticapi treats it the same)
            segments.append({"id": int(s["id"]), "isthing": isthing, "iscrowd": crowd, "area": s.get("area"),
                             "category_id": things[s["category_id"]] if isthing else stuff[s["category_id"]]})
        annotated[(video, frame)] = {"frame_index": frame, "file_name": os.path.join(image_root, img["file_name"]),
                                     "pan_seg_file_name": os.path.join(panoptic_root, ann["file_name"]),
                                     "segments_info": segments, "image_id": img["id"]}
    frames_source = all_data if all_data is not None else data
    root = (all_frames_root or image_root) if all_data is not None else image_root
    by_video = {}
    for img in frames_source["images"]:
        video, frame = parse_video_frame(img)
        by_video.setdefault(video, []).append((frame, img))
    records = []
    for video in sorted(by_video, key=lambda v: (str(type(v)), v)):
        frames = sorted(by_video[video], key=lambda x: x[0])
        video_frames = [annotated[(video, f)] for f, _ in frames if (video, f) in annotated]
        extra = extra_video_fields(video) if extra_video_fields else {}
        for frame, img in frames:
            rec = {"file_name": os.path.join(root, img["file_name"]), "height": img["height"], "width": img["width"],
                   "image_id": img["id"], "video_id": video, "frame_index": frame, "video_length": len(frames),
                   "video_frames": video_frames, **extra}
            ann = annotated.get((video, frame))
            if ann is not None:
                rec["pan_seg_file_name"] = ann["pan_seg_file_name"]
                rec["segments_info"] = ann["segments_info"]
            records.append(rec)
    if crowd_stuff:
        logger.info("%s: %d stuff segments marked iscrowd were read as ordinary stuff segments", panoptic_json,
                    crowd_stuff)
    logger.info("Loaded %d videos, %d frames (%d annotated) from %s", len(by_video), len(records), len(annotated),
                panoptic_json)
    return records


def register_cityscapes_vps(name, panoptic_json, panoptic_root, image_root, all_frames_json=None,
                            all_frames_root=None, metadata=None, validate=True, check_image_sizes=True,
                            check_png_ids=False):
    """Registers a Cityscapes-VPS-format set as ``name`` (frame records, module docstring) with ``evaluator_type``
    "video_panoptic_seg" (``segx.evaluation.vpq.VPQEvaluator``: VPQ over k = 0, 5, 10, 15 frames, per-frame PQ,
    ID switches). Categories come from the panoptic JSON (read now when it exists)."""
    panoptic_json, panoptic_root, image_root = map(os.fspath, (panoptic_json, panoptic_root, image_root))
    DatasetCatalog.register(name, lambda: load_cityscapes_vps_json(
        panoptic_json, panoptic_root, image_root, name, all_frames_json, all_frames_root, validate,
        check_image_sizes, check_png_ids))
    meta = {"panoptic_json": panoptic_json, "panoptic_root": panoptic_root, "image_root": image_root,
            "evaluator_type": "video_panoptic_seg", "ignore_label": 255, "label_divisor": 1000}
    if os.path.isfile(panoptic_json):
        meta.update(vps_metadata(_load_json(panoptic_json).get("categories", [])))
    meta.update(metadata or {})
    MetadataCatalog.get(name).set(**meta)
    return name


# ------------------------------------------------------------------------------------------- embedded videos
def _root(name):
    return os.path.join(svp.data_cache_dir(), "synthetic", f"{name}_{VPS_SPECS[name].key()}")


def ensure_builtin_vps_dataset(name):
    """Writes the files of builtin video panoptic set ``name`` if they are not in the cache yet; returns its folder."""
    return svp.write_video_panoptic_dataset(VPS_SPECS[name], _root(name))


def _load_builtin(name):
    root = ensure_builtin_vps_dataset(name)

    def motion(video):
        return {"motion_file": os.path.join(root, "motion", f"{video:04d}.npz")}

    return load_cityscapes_vps_json(os.path.join(root, "panoptic_video.json"), os.path.join(root, "panoptic"),
                                    os.path.join(root, "images"), name, check_image_sizes=False,
                                    extra_video_fields=motion)


def _register_builtin():
    for name in VPS_SPECS:
        if name in DatasetCatalog.list():
            continue
        root = _root(name)
        DatasetCatalog.register(name, lambda n=name: _load_builtin(n))
        MetadataCatalog.get(name).set(
            panoptic_json=os.path.join(root, "panoptic_video.json"), panoptic_root=os.path.join(root, "panoptic"),
            image_root=os.path.join(root, "images"), evaluator_type="video_panoptic_seg", ignore_label=255,
            label_divisor=1000, segx_builtin=True, **vps_metadata(svp.categories()))


def _register_cityscapes_vps():
    """``cityscapes_vps_{train,val}`` under ``$DETECTRON2_DATASETS/cityscapes_vps`` as mcahny/vps lays it out
    (``docs/DATASET.md``), with the panoptic-video labels of ``create_panoptic_video_labels.py`` (run with
    ``--mode train`` for the training split too); the val set runs on every frame (``img_all``)."""
    root = os.path.join(os.getenv("DETECTRON2_DATASETS", "datasets"), "cityscapes_vps")
    splits = {
        "cityscapes_vps_train": dict(panoptic_json="panoptic_gt_train_city_vps.json",
                                     panoptic_root="train/panoptic_video", image_root="train/img"),
        "cityscapes_vps_val": dict(panoptic_json="panoptic_gt_val_city_vps.json", panoptic_root="val/panoptic_video",
                                   image_root="val/img", all_frames_json="im_all_info_val_city_vps.json",
                                   all_frames_root="val/img_all"),
    }
    for name, files in splits.items():
        if name not in DatasetCatalog.list():
            register_cityscapes_vps(name, **{k: os.path.join(root, v) for k, v in files.items()})


_register_builtin()
_register_cityscapes_vps()
