"""Keypoint data: the synthetic figures, MPII and COCO-keypoints registration (real samples read in place)."""
import json
import os

import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.data.detection_utils import create_keypoint_hflip_indices

from segx.data.datasets import DatasetValidationError
from segx.data.datasets.keypoints import (
    FIGURE_SPECS,
    MPII_JOINTS,
    load_mpii_json,
    register_coco_keypoints,
    register_mpii,
)
from segx.data.synthetic_keypoints import FLIP_PAIRS, JOINT_NAMES, SKELETON, FigureSpec, render_figure, write_keypoints_dataset
from segx.evaluation.pck import PCKEvaluator


def _as_output(dataset_dicts):
    """Ground truth as model outputs (boxes + keypoints), for 'PCK of the ground truth is 100'."""
    import torch
    from detectron2.structures import Boxes, BoxMode, Instances

    inputs, outputs = [], []
    for d in dataset_dicts:
        inst = Instances((d.get("height", 1), d.get("width", 1)))
        anns = [a for a in d["annotations"] if "keypoints" in a and not a.get("iscrowd", 0)]
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in anns]))
        inst.pred_keypoints = torch.tensor(np.array([np.reshape(a["keypoints"], (-1, 3)) for a in anns]), dtype=torch.float32)
        inputs.append({"image_id": d["image_id"]})
        outputs.append({"instances": inst})
    return inputs, outputs


def test_figures_are_deterministic_and_well_formed():
    spec = FigureSpec(num_images=6, seed=5, size=96)
    for i in range(6):
        a, b = render_figure(spec, i), render_figure(spec, i)
        assert np.array_equal(a.image, b.image) and np.array_equal(a.keypoints, b.keypoints)
        assert a.image.shape == (96, 96, 3) and a.keypoints.shape == (16, 3)
        vis = a.keypoints[:, 2]
        assert set(np.unique(vis)) <= {0, 1, 2}
        x, y, w, h = a.bbox
        on = a.keypoints[vis > 0, :2]
        assert (on[:, 0] >= x - 0.5).all() and (on[:, 0] <= x + w + 0.5).all()
        assert (on[:, 1] >= y - 0.5).all() and (on[:, 1] <= y + h + 0.5).all()
        assert (a.keypoints[vis == 0, :2] == 0).all()
    assert not np.array_equal(render_figure(spec, 0).image, render_figure(spec, 1).image)
    assert len(JOINT_NAMES) == 16 and len(set(JOINT_NAMES)) == 16
    for l, r in FLIP_PAIRS:  # flip pairs swap right_* with left_*
        assert JOINT_NAMES[l].replace("right_", "") == JOINT_NAMES[r].replace("left_", "")
    assert all(0 <= a < 16 and 0 <= b < 16 for a, b in SKELETON)


def test_figures_json_round_trip_and_visibility_counts(tmp_path):
    spec = FigureSpec(num_images=40, seed=3, size=64, occluder_prob=1.0, truncation_prob=0.5)
    root = write_keypoints_dataset(spec, str(tmp_path / "figs"))
    data = json.load(open(os.path.join(root, "person_keypoints.json")))
    assert len(data["images"]) == 40 and len(data["annotations"]) == 40
    assert data["categories"][0]["keypoints"] == list(JOINT_NAMES)
    vis = np.array([a["keypoints"][2::3] for a in data["annotations"]])
    assert (vis == 0).any() and (vis == 1).any() and (vis == 2).any()  # out of frame, occluded, visible
    ann = data["annotations"][0]
    fig = render_figure(spec, 0)
    kp = np.reshape(ann["keypoints"], (-1, 3))
    on = kp[:, 2] > 0
    np.testing.assert_allclose(kp[on, :2] + 0.5, fig.keypoints[on, :2], atol=0.01)  # files hold pixel indices
    assert ann["num_keypoints"] == int(on.sum())


def test_builtin_figures_registered_with_metadata():
    assert {"segx_figures_train", "segx_figures_val"} <= set(DatasetCatalog.list())
    meta = MetadataCatalog.get("segx_figures_val")
    assert meta.evaluator_type == "pck" and meta.keypoint_names == list(MPII_JOINTS)
    flip = create_keypoint_hflip_indices(["segx_figures_val"])
    assert flip[0] == 5 and flip[12] == 13 and flip[6] == 6
    assert FIGURE_SPECS["segx_figures_train"].num_images > FIGURE_SPECS["segx_figures_val"].num_images


def test_mpii_sample_loads_and_its_ground_truth_has_pckh_100(real_data):
    ann = os.path.join(real_data, "mpii", "test_mpii.json")
    name = register_mpii("segx_test_mpii_sample", ann, os.path.join(real_data, "mpii"))
    dicts = DatasetCatalog.get(name)
    records = json.load(open(ann))
    assert sum(len(d["annotations"]) for d in dicts) == len(records)
    assert len(dicts) == len({r["image"] for r in records})
    for d in dicts:
        assert os.path.isfile(d["file_name"]) and d["height"] > 0 and d["width"] > 0
        for a in d["annotations"]:
            assert len(a["keypoints"]) == 48 and "head_box" in a
    # joint 0 of the first record keeps its position (pixel index + 0.5) and visibility
    rec = records[0]
    d = next(d for d in dicts if d["file_name"].endswith(rec["image"]))
    kp = np.reshape(d["annotations"][0]["keypoints"], (-1, 3))
    np.testing.assert_allclose(kp[0, :2], np.array(rec["joints"][0]) + 0.5)
    assert kp[0, 2] == (2 if rec["joints_vis"][0] else 0)
    ev = PCKEvaluator(name, distributed=False)
    ev.reset()
    ev.process(*_as_output(dicts))
    res = ev.evaluate()["keypoints_pck"]
    assert res["PCKh@0.5"] == 100.0 and res["PCK@0.05"] == 100.0
    assert MetadataCatalog.get(name).evaluator_type == "pck"


def test_mpii_bad_records_name_file_and_record(tmp_path, real_data):
    records = json.load(open(os.path.join(real_data, "mpii", "test_mpii.json")))
    bad = [dict(records[0]), dict(records[1])]
    bad[1]["joints"] = bad[1]["joints"][:5]
    del bad[0]["scale"]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(DatasetValidationError) as e:
        load_mpii_json(str(path), os.path.join(real_data, "mpii"))
    msg = str(e.value)
    assert str(path) in msg and "record 0" in msg and "scale" in msg and "record 1" in msg and "16 joints" in msg
    with pytest.raises(DatasetValidationError, match="headbox"):
        load_mpii_json(os.path.join(real_data, "mpii", "test_mpii.json"), os.path.join(real_data, "mpii"),
                       head_box_from="annotation")


def test_coco_person_keypoints_register_and_evaluate(real_data):
    root = os.path.join(real_data, "coco_person")
    name = register_coco_keypoints("segx_test_coco_person_kp", os.path.join(root, "test_coco.json"), root)
    meta = MetadataCatalog.get(name)
    assert len(meta.keypoint_names) == 17 and meta.evaluator_type == "pck"
    assert ("left_eye", "right_eye") in [tuple(p) for p in meta.keypoint_flip_map]
    flip = create_keypoint_hflip_indices([name])
    assert flip[1] == 2 and flip[0] == 0
    dicts = DatasetCatalog.get(name)
    assert sum(len(d["annotations"]) for d in dicts) > 0
    ev = PCKEvaluator(name, distributed=False)
    ev.reset()
    ev.process(*_as_output(dicts))
    res = ev.evaluate()["keypoints_pck"]
    assert res["PCK@0.05"] == 100.0 and "PCKh@0.5" not in res


def test_coco_keypoints_count_mismatch_is_named(tmp_path, real_data):
    data = json.load(open(os.path.join(real_data, "coco_person", "test_coco.json")))
    ann = next(a for a in data["annotations"] if "keypoints" in a)
    ann["keypoints"] = ann["keypoints"][:-3]
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(DatasetValidationError, match=f"annotation id {ann['id']}.*16 keypoints, category has 17"):
        register_coco_keypoints("segx_test_coco_bad", str(path), os.path.join(real_data, "coco_person"))
