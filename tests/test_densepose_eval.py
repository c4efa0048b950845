"""DensePose evaluation: distances, GPS and AP over GPS thresholds on hand-made cases with the exact distance."""
import math

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from segx.data.datasets.densepose import densepose_metadata
from segx.evaluation import build_evaluator_by_type
from segx.evaluation.densepose import (
    GPS_KAPPA,
    DensePoseEvaluator,
    densepose_ap,
    gps_values,
    synthetic_charts_distance,
    uv_standin_distance,
)
from segx.modeling.roi_heads.densepose import DensePoseOutput

TORSO_W, TORSO_H = 0.36, 0.6  # chart size of part 2 (torso front) in the synthetic template


def test_distances_and_gps_by_hand():
    gt_parts = np.array([2, 2, 9, 23])
    gt_uv = np.array([[0.5, 0.5], [0.5, 0.5], [0.2, 0.2], [0.1, 0.1]])
    pred_parts = np.array([2, 2, 10, 23])
    pred_uv = np.array([[0.5, 0.5], [0.6, 0.7], [0.2, 0.2], [0.1, 0.4]])
    d = synthetic_charts_distance(gt_parts, gt_uv, pred_parts, pred_uv)
    assert d[0] == 0 and d[1] == pytest.approx(math.hypot(0.1 * TORSO_W, 0.2 * TORSO_H))
    assert np.isinf(d[2])  # the mirror twin is another patch
    assert d[3] == pytest.approx(0.3 * 2 * 0.13)  # head half: V spans the head's diameter
    g = gps_values(d)
    assert g[0] == 1 and g[2] == 0 and g[1] == pytest.approx(math.exp(-d[1] ** 2 / (2 * GPS_KAPPA ** 2)))
    s = uv_standin_distance(gt_parts, gt_uv, pred_parts, pred_uv)
    assert s[1] == pytest.approx(0.5 * math.hypot(0.1, 0.2)) and np.isinf(s[2])


def _record(gps, scores, ignore=(), iou=None, area=5000.0):
    gps = np.asarray(gps, np.float64).reshape(len(scores), -1)
    n_gt = gps.shape[1]
    return {"scores": np.asarray(scores, np.float64), "gps": gps,
            "box_iou": np.zeros_like(gps) if iou is None else np.asarray(iou, np.float64).reshape(gps.shape),
            "gt_ignore": np.array([g in ignore for g in range(n_gt)]), "gt_area": np.full(n_gt, area),
            "det_area": np.full(len(scores), area)}


def test_ap_over_gps_thresholds_by_hand():
    # one person, one detection with GPS 0.72: matched at thresholds 0.50..0.70 (5 of 10)
    ap = densepose_ap([_record([[0.72]], [0.9])])
    assert ap.tolist() == [1.0] * 5 + [0.0] * 5
    # a false positive scored above the true one: precision 1/2 at recall 1 -> AP50 0.5
    ap = densepose_ap([_record([[0.1], [0.9]], [0.95, 0.5])])
    assert ap[0] == pytest.approx(0.5)
    # the same false positive on an unannotated person (box IoU 0.9 >= 0.8): ignored, AP50 1
    gps = [[0.0, 0.0], [0.0, 0.9]]  # person 0 has no points, person 1 is found by detection 1
    ap = densepose_ap([_record(gps, [0.95, 0.5], ignore={0}, iou=[[0.9, 0.0], [0.0, 0.8]])])
    assert ap[0] == 1.0
    # ... but at box IoU 0.5 it counts as a false positive
    ap = densepose_ap([_record(gps, [0.95, 0.5], ignore={0}, iou=[[0.5, 0.0], [0.0, 0.8]])])
    assert ap[0] == pytest.approx(0.5)
    # in an image without any annotated person, every detection is left out
    ap = densepose_ap([_record([[0.9]], [0.5]), _record([[0.0]], [0.95], ignore={0})])
    assert ap[0] == 1.0
    # a person nobody found: recall 1/2 -> AP50 = 51/101 (COCO's 101 recall points)
    ap = densepose_ap([_record([[0.9, 0.0]], [0.8])])
    assert ap[0] == pytest.approx(51 / 101)


@pytest.fixture
def hand_set():
    """One image (64x64) with one annotated person (box [8, 8, 36, 48] XYWH) and one person without points; four
    points on the torso front (2) and one on the right upper leg (9)."""
    name = "_test_dp_eval_hand"
    du = GPS_KAPPA / TORSO_W  # a U error of du on the torso is exactly kappa away
    ann = {"bbox": [8, 8, 36, 48], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0,
           "dp_x": [128.0, 64.0, 200.0, 32.0, 128.0], "dp_y": [128.0, 64.0, 200.0, 32.0, 250.0],
           "dp_I": [2, 2, 2, 2, 9], "dp_U": [0.5, 0.5 + du, 0.5, 0.5, 0.5], "dp_V": [0.5] * 5}
    other = {"bbox": [46, 2, 16, 30], "bbox_mode": BoxMode.XYWH_ABS, "category_id": 0, "iscrowd": 0}
    DatasetCatalog.register(name, lambda: [{"image_id": 1, "file_name": "x.jpg", "height": 64, "width": 64,
                                            "annotations": [ann, other]}])
    MetadataCatalog.get(name).set(**densepose_metadata(distance="synthetic_charts"))
    yield name
    DatasetCatalog.remove(name)
    MetadataCatalog.remove(name)


def _constant_prediction(boxes, scores, part=2, u=0.5, v=0.5, s=8):
    """Detections whose maps say ``part`` with (u, v) everywhere in their boxes."""
    n = len(boxes)
    fine = torch.zeros(n, 25, s, s)
    fine[:, part] = 5.0
    coarse = torch.zeros(n, 2, s, s)
    coarse[:, 1] = 5.0
    inst = Instances((64, 64))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.zeros(n, dtype=torch.long)
    inst.pred_densepose = DensePoseOutput(coarse, fine, torch.full((n, 25, s, s), u), torch.full((n, 25, s, s), v))
    return inst


def test_evaluator_end_to_end_with_the_exact_distance(hand_set):
    ev = DensePoseEvaluator(hand_set, distributed=False)
    ev.reset()
    # detection 0 exactly on the annotated person; detection 1 half outside it
    inst = _constant_prediction([[8, 8, 44, 56], [26, 8, 62, 56]], [0.9, 0.8])
    ev.process([{"image_id": 1}], [{"instances": inst}])
    rec = ev._records[0]
    # points: exact, kappa away, exact, exact (torso); wrong part (leg) -> (1 + e^-0.5 + 1 + 1 + 0) / 5
    expected = (3 + math.exp(-0.5)) / 5
    assert rec["gps"][0, 0] == pytest.approx(expected, abs=1e-5)
    # detection 1 covers x >= 26: the torso points at x = 26 (dp_x 128) and 36.1 (dp_x 200) and the leg point
    # (x = 26, wrong part) are inside -> (1 + 1 + 0) / 5
    assert rec["gps"][1, 0] == pytest.approx(2 / 5, abs=1e-5)
    assert rec["gt_ignore"].tolist() == [False, True]
    res = ev.evaluate()["densepose_gps"]
    # GPS 0.7213: a true positive at thresholds 0.50 .. 0.70; detection 1 is a false positive below it
    assert res["AP50"] == pytest.approx(100) and res["AP75"] == 0 and res["AP"] == pytest.approx(50)
    assert res["part_acc"] == pytest.approx(80) and res["U_err"] == pytest.approx(GPS_KAPPA / TORSO_W / 4, abs=1e-5)
    assert res["part_acc/upper_leg_right_front"] == 0 and res["V_err/torso_front"] == pytest.approx(0, abs=1e-6)


def test_evaluator_type_gives_box_and_gps_evaluators(tmp_path):
    from test_densepose import small_dense_set
    from conftest import tiny_cfg

    name = small_dense_set("segx_test_dense_small")
    evs = build_evaluator_by_type("densepose", tiny_cfg("densepose"), name, str(tmp_path))
    assert [type(e).__name__ for e in evs] == ["SegxCOCOEvaluator", "DensePoseEvaluator"]
    ev = evs[1]
    ev.reset()
    inst = Instances((128, 128))
    inst.pred_boxes, inst.scores = Boxes(torch.zeros(0, 4)), torch.zeros(0)
    ev.process([{"image_id": 1}], [{"instances": inst}])  # a plain Faster R-CNN: no pred_densepose
    assert ev.evaluate() == {}


def test_reference_levels_of_tools_densepose_baselines():
    """tools/densepose_baselines.py: per-part mean U/V, the mean-U/V substitution and the oracle rows."""
    import importlib.util
    import os

    from test_densepose import small_dense_set

    spec = importlib.util.spec_from_file_location(
        "densepose_baselines", os.path.join(os.path.dirname(__file__), "..", "tools", "densepose_baselines.py"))
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    name = small_dense_set("segx_test_dense_small")
    mean = tool.part_mean_uv(name, 24)
    points = [(p, u, v) for r in DatasetCatalog.get(name) for a in r["annotations"] if "dp_I" in a
              for p, u, v in zip(a["dp_I"], a["dp_U"], a["dp_V"])]
    torso = np.array([(u, v) for p, u, v in points if p == 2])
    assert mean[2] == pytest.approx(torso.mean(0)) and mean[1].tolist() == [0.5, 0.5]  # part 1 never drawn
    inst = tool.with_mean_uv(_constant_prediction([[8, 8, 44, 56]], [0.9]), mean)
    dp = inst.pred_densepose
    i, u, v = dp.decode(dp.coarse_segm, dp.fine_segm, dp.u, dp.v)
    assert (i == 2).all() and torch.allclose(u, torch.tensor(mean[2, 0], dtype=u.dtype).expand_as(u))
    ev = DensePoseEvaluator(name, distributed=False)
    exact = ev.compute(tool.oracle_records(ev, mean))
    assert exact["part_acc"] == 100 and 0 < exact["AP"] <= 100
    assert exact["AP50"] == pytest.approx(100)  # chart-centre predictions on these small parts: every GPS > 0.5
