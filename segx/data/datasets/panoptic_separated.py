"""COCO-panoptic data in detectron2's "separated" form, the form PanopticFPN and UPSNet train on.

detectron2 trains PanopticFPN on ``coco_2017_train_panoptic_separated`` (``register_coco_panoptic_separated``):
instance annotations from the COCO instances JSON, plus semantic PNGs converted from the panoptic PNGs with
every thing pixel labelled 0 and stuff categories ``1..S`` (``datasets/prepare_panoptic_fpn.py``). This module
writes those semantic PNGs for any COCO-panoptic set (once, atomically, next to the panoptic PNGs) and
registers the set through detectron2's own loaders (``load_coco_json`` + ``load_sem_seg`` + ``merge_to_panoptic``)
and metadata layout, so the stock ``DatasetMapper`` yields ``instances`` and ``sem_seg`` and
``COCOPanopticEvaluator`` evaluates the output.

| name | what |
|---|---|
| ``segx_shapes_panoptic_train_separated`` / ``segx_shapes_panoptic_val_separated`` | the synthetic panoptic set, separated |
"""
import json
import logging
import os
import shutil
import tempfile

import numpy as np
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.datasets import load_coco_json, load_sem_seg
from detectron2.data.datasets.coco_panoptic import merge_to_panoptic

__all__ = [
    "separated_panoptic_metadata",
    "write_separated_semantic_pngs",
    "register_coco_panoptic_separated_dataset",
    "register_synthetic_panoptic_separated",
]

logger = logging.getLogger(__name__)


def separated_panoptic_metadata(categories, reserve_things_id=True):
    """detectron2's "separated" metadata (``builtin_meta._get_coco_panoptic_separated_meta``) from panoptic
    categories: things contiguous ``0..K-1`` in category order; stuff ``1..S`` with 0 = "things". With
    ``reserve_things_id`` dataset id 0 maps to stuff 0 ("things"), as in detectron2's COCO metadata; sets whose
    category 0 is a real class (Cityscapes-VPS's road) pass False."""
    things = [c for c in categories if c.get("isthing")]
    stuff = [c for c in categories if not c.get("isthing")]
    stuff_map = {c["id"]: i + 1 for i, c in enumerate(stuff)}
    if reserve_things_id:
        stuff_map[0] = 0
    colour = lambda i, c: list(c.get("color", [(37 * i) % 256, (91 * i) % 256, (173 * i) % 256]))  # noqa: E731
    return {
        "thing_classes": [c["name"] for c in things],
        "thing_colors": [colour(i, c) for i, c in enumerate(things)],
        "thing_dataset_id_to_contiguous_id": {c["id"]: i for i, c in enumerate(things)},
        "stuff_classes": ["things"] + [c["name"] for c in stuff],
        "stuff_colors": [[82, 18, 128]] + [colour(i + len(things), c) for i, c in enumerate(stuff)],
        "stuff_dataset_id_to_contiguous_id": stuff_map,
    }


def _rgb2id(rgb):
    rgb = rgb.astype(np.int64)
    return rgb[..., 0] + 256 * rgb[..., 1] + 256 * 256 * rgb[..., 2]


def write_separated_semantic_pngs(panoptic_json, panoptic_root, sem_seg_root, categories=None):
    """Writes one semantic PNG per panoptic annotation into ``sem_seg_root`` (uint8: things 0, stuff ``1..S``
    in stuff-category order, unlabelled 255), as detectron2's ``prepare_panoptic_fpn.py`` does. Skipped when
    ``sem_seg_root`` exists; written into a temporary folder and renamed, so a killed run leaves nothing half
    done. Returns ``sem_seg_root``."""
    if os.path.isdir(sem_seg_root):
        return sem_seg_root
    with open(panoptic_json) as f:
        data = json.load(f)
    categories = categories or data.get("categories")
    if not categories:
        raise ValueError(f"{panoptic_json}: no 'categories' to tell things from stuff")
    meta = separated_panoptic_metadata(categories)
    label_of = {cid: (0 if cid in meta["thing_dataset_id_to_contiguous_id"] else meta["stuff_dataset_id_to_contiguous_id"][cid])
                for cid in (c["id"] for c in categories)}
    parent = os.path.dirname(os.path.abspath(sem_seg_root))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".semseg_", dir=parent)
    try:
        for ann in data["annotations"]:
            png = os.path.join(panoptic_root, ann["file_name"])
            if not os.path.isfile(png):
                raise FileNotFoundError(f"{panoptic_json}: image id {ann['image_id']}: panoptic PNG {png} does not exist")
            ids = _rgb2id(np.asarray(Image.open(png).convert("RGB")))
            sem = np.full(ids.shape, 255, dtype=np.uint8)
            for seg in ann["segments_info"]:
                if seg["category_id"] not in label_of:
                    raise ValueError(
                        f"{panoptic_json}: image id {ann['image_id']}: segment {seg['id']} has unknown category "
                        f"{seg['category_id']}"
                    )
                sem[ids == seg["id"]] = label_of[seg["category_id"]]
            out = os.path.join(tmp, os.path.splitext(ann["file_name"])[0] + ".png")
            os.makedirs(os.path.dirname(out), exist_ok=True)
            Image.fromarray(sem).save(out)
        os.replace(tmp, sem_seg_root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    logger.info("wrote %d semantic PNGs (things=0, stuff 1..%d) to %s", len(data["annotations"]),
                len(meta["stuff_classes"]) - 1, sem_seg_root)
    return sem_seg_root


def _load_separated(name, instances_json, image_root, panoptic_json, panoptic_root, sem_seg_root, categories, prepare):
    if prepare is not None:
        prepare()
    write_separated_semantic_pngs(panoptic_json, panoptic_root, sem_seg_root, categories)
    return merge_to_panoptic(load_coco_json(instances_json, image_root, name), load_sem_seg(sem_seg_root, image_root))


def register_coco_panoptic_separated_dataset(
    name, panoptic_json, panoptic_root, image_root, instances_json, sem_seg_root=None, categories=None, prepare=None
):
    """Registers ``name`` as detectron2's ``register_coco_panoptic_separated`` does (same loaders, same metadata
    keys, ``evaluator_type="coco_panoptic_seg"``), writing the semantic PNGs on first load if
    ``sem_seg_root`` (default: ``<panoptic_root>_semseg_separated``) does not exist.

    ``categories``: panoptic categories (with ``isthing``); default: the panoptic JSON's. ``prepare``: an
    optional callable run before loading (e.g. to generate a synthetic set).
    """
    sem_seg_root = sem_seg_root or panoptic_root.rstrip("/") + "_semseg_separated"
    if categories is None:
        if not os.path.isfile(panoptic_json):
            raise FileNotFoundError(f"register_coco_panoptic_separated_dataset({name!r}): {panoptic_json} does not exist")
        with open(panoptic_json) as f:
            categories = json.load(f).get("categories")
    DatasetCatalog.register(
        name,
        lambda: _load_separated(
            name, instances_json, image_root, panoptic_json, panoptic_root, sem_seg_root, categories, prepare
        ),
    )
    MetadataCatalog.get(name).set(
        panoptic_root=panoptic_root,
        image_root=image_root,
        panoptic_json=panoptic_json,
        sem_seg_root=sem_seg_root,
        json_file=instances_json,
        evaluator_type="coco_panoptic_seg",
        ignore_label=255,
        **separated_panoptic_metadata(categories),
    )
    return name


def register_synthetic_panoptic_separated():
    """``segx_shapes_panoptic_{train,val}_separated``: the builtin synthetic panoptic sets, separated."""
    from segx.data import synthetic
    from segx.data.datasets.builtin import _root, ensure_builtin_dataset

    cats = synthetic._categories_things() + synthetic._categories_stuff()
    for base in ("segx_shapes_panoptic_train", "segx_shapes_panoptic_val"):
        name = base + "_separated"
        if name in DatasetCatalog.list():
            continue
        root = _root(base)
        register_coco_panoptic_separated_dataset(
            name,
            panoptic_json=os.path.join(root, "panoptic.json"),
            panoptic_root=os.path.join(root, "panoptic"),
            image_root=os.path.join(root, "images"),
            instances_json=os.path.join(root, "instances.json"),
            sem_seg_root=os.path.join(root, "semseg_separated"),
            categories=cats,
            prepare=lambda b=base: ensure_builtin_dataset(b),
        )
        MetadataCatalog.get(name).set(segx_builtin=True)


register_synthetic_panoptic_separated()
