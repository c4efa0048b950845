"""The embedded synthetic datasets: deterministic, varied, and valid COCO / COCO-panoptic files."""
import json
import os

import numpy as np
import pytest
from PIL import Image

from segx.data import synthetic
from segx.data.synthetic import SyntheticSpec, render_scene

SPEC = SyntheticSpec(num_images=12, seed=7)
PAN_SPEC = SyntheticSpec(num_images=6, seed=7, stuff=True)


def test_scenes_are_deterministic():
    a, b = render_scene(SPEC, 3), render_scene(SPEC, 3)
    np.testing.assert_array_equal(a.image, b.image)
    assert a.classes == b.classes
    for ma, mb in zip(a.masks, b.masks):
        np.testing.assert_array_equal(ma, mb)
    assert not np.array_equal(render_scene(SPEC, 4).image, a.image)
    assert not np.array_equal(render_scene(SyntheticSpec(num_images=12, seed=8), 3).image, a.image)


def test_scenes_cover_classes_sizes_and_occlusion():
    spec = SyntheticSpec(num_images=60, seed=1)
    classes, areas, occluded = [], [], 0
    for i in range(spec.num_images):
        s = render_scene(spec, i)
        classes += s.classes
        areas += [int(m.sum()) for m in s.masks]
        occluded += s.num_hidden
        # visible masks never overlap: later shapes cover earlier ones
        if s.masks:
            assert np.stack(s.masks).sum(0).max() <= 1
    assert set(classes) == set(range(len(synthetic.SHAPE_CLASSES)))
    assert min(areas) < 32**2 and max(areas) > 48**2  # COCO "small" and larger objects
    assert occluded > 0


def test_instances_files_are_valid_coco(tmp_path):
    from pycocotools.coco import COCO

    root = synthetic.write_instances_dataset(SPEC, str(tmp_path / "inst"))
    coco = COCO(os.path.join(root, "instances.json"))
    assert len(coco.getImgIds()) == SPEC.num_images
    assert sorted(coco.getCatIds()) == list(synthetic.THING_IDS)
    for ann in coco.loadAnns(coco.getAnnIds()):
        m = coco.annToMask(ann)
        # polygons rasterise back to the visible mask (up to the contour's boundary pixels)
        assert abs(int(m.sum()) - ann["area"]) <= 0.35 * ann["area"] + 12
        x, y, w, h = ann["bbox"]
        assert w > 0 and h > 0
    img = coco.loadImgs(1)[0]
    assert Image.open(os.path.join(root, "images", img["file_name"])).size == (SPEC.width, SPEC.height)
    # written once: a second call reuses the files
    mtime = os.path.getmtime(os.path.join(root, "instances.json"))
    synthetic.write_instances_dataset(SPEC, root)
    assert os.path.getmtime(os.path.join(root, "instances.json")) == mtime


def test_panoptic_files_are_valid_coco_panoptic(tmp_path):
    from panopticapi.evaluation import pq_compute
    from panopticapi.utils import rgb2id

    root = synthetic.write_panoptic_dataset(PAN_SPEC, str(tmp_path / "pan"))
    with open(os.path.join(root, "panoptic.json")) as f:
        pan = json.load(f)
    cats = {c["id"]: c for c in pan["categories"]}
    assert {c["isthing"] for c in cats.values()} == {0, 1}
    for ann in pan["annotations"]:
        ids = rgb2id(np.array(Image.open(os.path.join(root, "panoptic", ann["file_name"]))))
        seg_ids = {s["id"] for s in ann["segments_info"]}
        assert set(np.unique(ids)) - {0} == seg_ids
        for s in ann["segments_info"]:
            assert (ids == s["id"]).sum() == s["area"]
            assert s["category_id"] in cats
    # ground truth against itself: panopticapi's PQ is 100 for things and stuff
    res = pq_compute(os.path.join(root, "panoptic.json"), os.path.join(root, "panoptic.json"),
                     os.path.join(root, "panoptic"), os.path.join(root, "panoptic"))
    assert res["All"]["pq"] == pytest.approx(1.0)
    assert res["Things"]["n"] == 4 and res["Stuff"]["n"] == 3


def test_builtin_datasets_registered_with_metadata():
    from detectron2.data import DatasetCatalog, MetadataCatalog

    names = DatasetCatalog.list()
    for name in ("segx_shapes_train", "segx_shapes_val", "segx_shapes_panoptic_train", "segx_shapes_panoptic_val"):
        assert name in names
    meta = MetadataCatalog.get("segx_shapes_val")
    assert meta.evaluator_type == "coco" and meta.thing_classes == list(synthetic.SHAPE_CLASSES)
    pmeta = MetadataCatalog.get("segx_shapes_panoptic_val")
    assert pmeta.evaluator_type == "coco_panoptic_seg"
    assert set(pmeta.thing_dataset_id_to_contiguous_id) == set(synthetic.THING_IDS)
    assert set(pmeta.stuff_dataset_id_to_contiguous_id) == set(synthetic.STUFF_IDS)
    dicts = DatasetCatalog.get("segx_shapes_panoptic_val")
    assert len(dicts) == 100 and os.path.isfile(dicts[0]["pan_seg_file_name"])
    assert any(s["isthing"] for s in dicts[0]["segments_info"]) or any(
        s["isthing"] for d in dicts for s in d["segments_info"]
    )
