"""Real annotated samples (COCO person instances + keypoints, COCO panoptic) from ../shared/data/real.

They are read in place (never copied into the repo) and the tests skip where the folder is absent.
"""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog, detection_utils
from detectron2.structures import Boxes, BoxMode, Instances
from detectron2.utils.visualizer import Visualizer

from segx.data import register_coco_dataset, register_coco_panoptic_dataset


def _register_once(name, fn):
    if name not in DatasetCatalog.list():
        fn()
    return name


@pytest.fixture
def coco_person(real_data):
    root = os.path.join(real_data, "coco_person")
    return _register_once(
        "segx_real_coco_person",
        lambda: register_coco_dataset("segx_real_coco_person", os.path.join(root, "test_coco.json"), root),
    )


@pytest.fixture
def coco_panoptic(real_data):
    root = os.path.join(real_data, "coco_panoptic_sample")
    return _register_once(
        "segx_real_coco_panoptic",
        lambda: register_coco_panoptic_dataset(
            "segx_real_coco_panoptic",
            panoptic_json=os.path.join(root, "panoptic_examples.json"),
            panoptic_root=os.path.join(root, "panoptic"),
            image_root=os.path.join(root, "images"),
            categories=os.path.join(root, "panoptic_coco_categories.json"),
            instances_json=os.path.join(root, "instances_detection_format.json"),
        ),
    )


def test_coco_person_registers_with_keypoint_metadata(coco_person):
    dicts = DatasetCatalog.get(coco_person)
    assert len(dicts) == 4 and sum(len(d["annotations"]) for d in dicts) == 14
    meta = MetadataCatalog.get(coco_person)
    assert meta.thing_classes == ["person"]
    assert len(meta.keypoint_names) == 17 and ("left_eye", "right_eye") in meta.keypoint_flip_map
    # flip map is complete enough for detectron2's keypoint training augmentation
    assert len(detection_utils.create_keypoint_hflip_indices([coco_person])) == 17


def test_coco_person_draws_with_visualizer(coco_person):
    meta = MetadataCatalog.get(coco_person)
    for d in DatasetCatalog.get(coco_person):
        img = detection_utils.read_image(d["file_name"], format="RGB")
        drawn = Visualizer(img, meta).draw_dataset_dict(d).get_image()
        assert drawn.shape == img.shape
        assert np.abs(drawn.astype(int) - img.astype(int)).mean() > 1.0  # masks, boxes, keypoints were drawn


def _gt_as_prediction(d):
    h, w = d["height"], d["width"]
    anns = d["annotations"]
    inst = Instances((h, w))
    boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.ones(len(anns))
    inst.pred_classes = torch.tensor([a["category_id"] for a in anns])
    inst.pred_masks = torch.stack(
        [torch.from_numpy(detection_utils.polygons_to_bitmask(a["segmentation"], h, w)) for a in anns]
    )
    kps = torch.tensor([a["keypoints"] for a in anns], dtype=torch.float32).view(len(anns), -1, 3)
    inst.pred_keypoints = kps
    return {"instances": inst}


def test_coco_evaluator_on_ground_truth_gives_ap_100(coco_person, tmp_path):
    from detectron2.evaluation import COCOEvaluator

    ev = COCOEvaluator(coco_person, tasks=("bbox", "segm"), output_dir=str(tmp_path), distributed=False)
    # COCO ignores people without a visible keypoint in keypoint AP: a prediction for one would be a false
    # positive, so the keypoint run gets only the people with keypoints.
    kp_ev = COCOEvaluator(coco_person, tasks=("keypoints",), output_dir=str(tmp_path), distributed=False)
    ev.reset()
    kp_ev.reset()
    for d in DatasetCatalog.get(coco_person):
        inp = [{"image_id": d["image_id"], "height": d["height"], "width": d["width"]}]
        pred = _gt_as_prediction(d)
        ev.process(inp, [pred])
        inst = pred["instances"]
        kp_ev.process(inp, [{"instances": inst[(inst.pred_keypoints[:, :, 2] > 0).any(dim=1)]}])
    res = ev.evaluate()
    assert res["bbox"]["AP"] == pytest.approx(100.0)
    assert res["segm"]["AP"] == pytest.approx(100.0)
    assert kp_ev.evaluate()["keypoints"]["AP"] == pytest.approx(100.0)


def test_coco_panoptic_sample_loads_through_detectron2_registration(coco_panoptic):
    from panopticapi.utils import rgb2id

    dicts = DatasetCatalog.get(coco_panoptic)
    meta = MetadataCatalog.get(coco_panoptic)
    assert len(dicts) == 2 and meta.evaluator_type == "coco_panoptic_seg" and len(meta.stuff_classes) == 133
    for d in dicts:
        assert os.path.isfile(d["file_name"])
        ids = rgb2id(np.asarray(Image.open(d["pan_seg_file_name"])))
        assert {s["id"] for s in d["segments_info"]} <= set(np.unique(ids).tolist())
        for s in d["segments_info"]:
            assert 0 <= s["category_id"] < 133
            assert s["isthing"] == (s["category_id"] in meta.thing_dataset_id_to_contiguous_id.values())


def test_panoptic_evaluator_on_ground_truth_gives_pq_100(coco_panoptic, tmp_path):
    from detectron2.evaluation import COCOPanopticEvaluator
    from panopticapi.utils import rgb2id

    meta = MetadataCatalog.get(coco_panoptic)
    ev = COCOPanopticEvaluator(coco_panoptic, str(tmp_path))
    ev.reset()
    for d in DatasetCatalog.get(coco_panoptic):
        ids = torch.from_numpy(rgb2id(np.asarray(Image.open(d["pan_seg_file_name"]))).astype(np.int64))
        segments = [{"id": s["id"], "category_id": s["category_id"], "isthing": s["isthing"]} for s in d["segments_info"]]
        drawn = Visualizer(detection_utils.read_image(d["file_name"], "RGB"), meta).draw_panoptic_seg(ids, segments)
        assert drawn.get_image().shape[:2] == tuple(ids.shape)
        ev.process([{"file_name": d["file_name"], "image_id": d["image_id"]}], [{"panoptic_seg": (ids, segments)}])
    res = ev.evaluate()["panoptic_seg"]
    assert res["PQ"] == pytest.approx(100.0) and res["PQ_th"] == pytest.approx(100.0) and res["PQ_st"] == pytest.approx(100.0)
