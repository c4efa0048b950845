"""The "face" evaluator: box AP (COCO-style 101-point, WIDER-style size subsets) and landmark NME."""
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from segx.evaluation import EVALUATOR_TYPES
from segx.evaluation.face import FaceEvaluator, face_ap, match_detections

# image 0: a big face (height 60) with landmarks; image 1: a small face (height 12) without landmarks
GT = [
    {"image_id": 0, "height": 100, "width": 100, "annotations": [
        {"bbox": [10, 10, 50, 60], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
         "keypoints": [25, 30, 2, 45, 30, 2, 35, 45, 2, 27, 55, 2, 43, 55, 2]}]},
    {"image_id": 1, "height": 100, "width": 100, "annotations": [
        {"bbox": [70, 70, 10, 12], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
         "keypoints": [0] * 15}]},
]


@pytest.fixture
def face_set():
    name = "_test_face_eval"
    DatasetCatalog.register(name, lambda: [dict(d) for d in GT])
    MetadataCatalog.get(name).set(thing_classes=["face"], evaluator_type="face",
                                  face_size_split={"easy": 30, "hard": 0})
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _instances(boxes, scores, keypoints=None):
    inst = Instances((100, 100))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores, dtype=torch.float32)
    inst.pred_classes = torch.zeros(len(scores), dtype=torch.long)
    kp = torch.zeros(len(scores), 5, 2) if keypoints is None else torch.tensor(keypoints, dtype=torch.float32)
    inst.pred_keypoints = torch.cat([kp, inst.scores[:, None, None].expand(-1, 5, 1)], dim=2)
    return inst


def _run(name, per_image):
    ev = FaceEvaluator(name, distributed=False)
    ev.reset()
    for image_id, inst in per_image.items():
        ev.process([{"image_id": image_id}], [{"instances": inst}])
    return ev.evaluate()["face"]


GT_KP = np.array([[25, 30], [45, 30], [35, 45], [27, 55], [43, 55]], np.float32)


def test_perfect_predictions(face_set):
    res = _run(face_set, {
        0: _instances([[10, 10, 60, 70]], [0.9], [GT_KP]),
        1: _instances([[70, 70, 80, 82]], [0.8]),
    })
    assert res["AP"] == pytest.approx(100) and res["AP50"] == pytest.approx(100)
    assert res["AP50_easy"] == pytest.approx(100) and res["AP50_hard"] == pytest.approx(100)
    assert res["NME"] == pytest.approx(0) and res["NME_io"] == pytest.approx(0)
    assert res["NME_coverage"] == pytest.approx(100)  # the one face with landmarks was found


def test_nme_normalisers(face_set):
    res = _run(face_set, {0: _instances([[10, 10, 60, 70]], [0.9], [GT_KP + np.array([3.0, 4.0])])})
    assert res["NME"] == pytest.approx(100 * 5 / np.sqrt(50 * 60), rel=1e-5)  # 5 px over sqrt(w·h)
    assert res["NME_io"] == pytest.approx(100 * 5 / 20, rel=1e-5)  # over the 20 px between the eyes


def test_ap_by_hand_and_size_subsets(face_set):
    res = _run(face_set, {
        0: _instances([[10, 10, 60, 70], [0, 0, 5, 5]], [0.9, 0.8], [GT_KP, GT_KP]),  # TP, FP
        1: _instances([[70, 70, 80, 82]], [0.7]),  # TP on the small face
    })
    # sorted: TP, FP, TP over 2 faces → precision 1 up to recall 0.5, 2/3 after; 101 recall samples
    assert res["AP50"] == pytest.approx(100 * (51 + 50 * 2 / 3) / 101)
    # "easy" keeps faces ≥ 30 px high: the small face becomes an ignore region, its detection is not an FP
    assert res["AP50_easy"] == pytest.approx(100.0)
    # a box at IoU 2/3 is a TP at 0.5 but an FP at 0.75 (then: FP, TP → precision 0.5 up to recall 0.5)
    res2 = _run(face_set, {0: _instances([[10, 10, 60, 50]], [0.9]), 1: _instances([[70, 70, 80, 82]], [0.7])})
    assert res2["AP50"] == pytest.approx(100) and res2["AP75"] == pytest.approx(100 * 51 * 0.5 / 101)


def test_matching_helpers():
    state, gt = match_detections(np.array([[0, 0, 10, 10], [0, 0, 10, 10.5]], float), np.array([0.5, 0.9]),
                                 np.array([[0, 0, 10, 10]], float), np.array([False]), 0.5)
    assert state.tolist() == [0, 1] and gt.tolist() == [-1, 0]  # the higher score takes the face
    assert np.isnan(face_ap(np.array([0.5]), np.array([0]), 0))
    assert "face" in EVALUATOR_TYPES


def test_wflw_sample_evaluates_with_ground_truth_as_predictions(real_data):
    import os

    from segx.data.datasets.faces import WFLW_5POINT_INDICES, register_face_keypoints_coco

    root = os.path.join(real_data, "wflw")
    name = "_test_wflw_eval"
    register_face_keypoints_coco(name, os.path.join(root, "test_wflw.json"), root, landmark_indices=WFLW_5POINT_INDICES)
    try:
        preds = {}
        for d in DatasetCatalog.get(name):
            boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
            kps = [np.asarray(a["keypoints"]).reshape(5, 3)[:, :2] for a in d["annotations"]]
            preds[d["image_id"]] = _instances(boxes, [0.9] * len(boxes), np.stack(kps))
        res = _run(name, preds)
        assert res["AP"] == pytest.approx(100) and res["NME"] == pytest.approx(0, abs=1e-4)
        assert res["NME_coverage"] == pytest.approx(100)
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
