"""PCK / PCKh evaluator: hand-computed cases, matching of people, the detectron2 evaluator interface."""
import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from segx.evaluation import EVALUATOR_TYPES
from segx.evaluation.pck import PCKEvaluator, match_people, pck_correct


def test_pck_correct_hand_case():
    gt = np.array([[[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [5.0, 5.0]]])
    pred = np.array([[[3.0, 4.0], [10.0, 6.0], [0.0, 10.0], [50.0, 50.0]]])  # distances 5, 6, 0, ~63.6
    vis = np.array([[True, True, True, False]])
    # α·norm = 0.1·50 = 5: the first (exactly 5) and third are correct, the fourth does not count
    assert pck_correct(pred, gt, vis, [50.0], 0.1).tolist() == [[True, False, True, False]]
    assert pck_correct(pred, gt, vis, [50.0], 0.2).tolist() == [[True, True, True, False]]


def test_match_people_greedy_iou():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30], [100, 100, 110, 110]], np.float64)
    pred = np.array([[21, 21, 31, 31], [1, 0, 11, 10]], np.float64)
    assert match_people(gt, pred).tolist() == [1, 0, -1]
    assert match_people(gt, np.zeros((0, 4))).tolist() == [-1, -1, -1]


def _register_hand_dataset(name):
    if name in DatasetCatalog.list():
        return name
    kps = [[10.5, 10.5, 2], [30.5, 10.5, 2], [20.5, 40.5, 1], [0, 0, 0]]
    dicts = [
        {"image_id": 1, "file_name": "a.jpg", "height": 64, "width": 64, "annotations": [
            {"bbox": [0, 0, 40, 50], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "keypoints": sum(kps, []),
             "head_box": [10, 0, 22, 12]},
        ]},
        {"image_id": 2, "file_name": "b.jpg", "height": 64, "width": 64, "annotations": [
            {"bbox": [0, 0, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "keypoints": sum(kps, []),
             "head_box": [10, 0, 22, 12]},
            {"bbox": [40, 40, 20, 20], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "keypoints": sum(kps, []),
             "head_box": [10, 0, 22, 12]},
        ]},
    ]
    DatasetCatalog.register(name, lambda: dicts)
    MetadataCatalog.get(name).set(keypoint_names=["a", "b", "c", "d"], evaluator_type="pck")
    return name


def _output(boxes, keypoints):
    inst = Instances((64, 64))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.pred_keypoints = torch.tensor(keypoints, dtype=torch.float32)
    return {"instances": inst}


def test_evaluator_on_a_hand_case():
    name = _register_hand_dataset("segx_test_pck_hand")
    ev = PCKEvaluator(name, alphas=(0.1, 0.2), distributed=False)
    ev.reset()
    # image 1: box side 50 → thresholds 5 (α=0.1) and 10 (α=0.2); head size 0.6·hypot(12, 12) = 10.18 → 5.09
    # offsets: a 0, b 6, c 12 (d is not annotated)
    ev.process([{"image_id": 1}], [_output([[0, 0, 40, 50]], [[[10.5, 10.5, 1], [36.5, 10.5, 1], [20.5, 52.5, 1], [0, 0, 1]]])])
    # image 2: one prediction for the first person only (box side 20 → thresholds 2 and 4), all exact
    ev.process([{"image_id": 2}], [_output([[0, 0, 20, 20]], [[[10.5, 10.5, 1], [30.5, 10.5, 1], [20.5, 40.5, 1], [0, 0, 1]]])])
    res = ev.evaluate()["keypoints_pck"]
    # 9 counted landmarks: image 1 → α=0.1: a; α=0.2: a, b; PCKh@0.5: a. image 2 → 3 right, 3 unmatched
    assert res["PCK@0.1"] == pytest.approx(100 * 4 / 9)
    assert res["PCK@0.2"] == pytest.approx(100 * 5 / 9)
    assert res["PCKh@0.5"] == pytest.approx(100 * 4 / 9)
    assert res["PCK@0.2/a"] == pytest.approx(100 * 2 / 3) and res["PCK@0.2/b"] == pytest.approx(100 * 2 / 3)
    assert "PCK@0.2/d" not in res and res["num_people"] == 3


def test_evaluator_registered_and_errors_are_clear():
    assert "pck" in EVALUATOR_TYPES
    name = _register_hand_dataset("segx_test_pck_hand")
    ev = EVALUATOR_TYPES["pck"](None, name, None)
    assert isinstance(ev, PCKEvaluator)
    ev._distributed = False
    with pytest.raises(ValueError, match="pred_keypoints"):
        inst = Instances((64, 64))
        inst.pred_boxes = Boxes(torch.zeros(1, 4))
        ev.process([{"image_id": 1}], [{"instances": inst}])
    ev.reset()
    ev.process([{"image_id": 99}], [_output([[0, 0, 1, 1]], [[[0, 0, 1]] * 4])])
    with pytest.raises(KeyError, match="image_id 99"):
        ev.evaluate()
