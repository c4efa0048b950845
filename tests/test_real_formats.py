"""Real-world file formats that score right (issue 19): COCO ids from 0, 68-point faces, mmpose-style keypoint files
with an empty ``keypoints`` list, one landmark convention for both face loaders, ``videos`` / ``dp_*`` fields.

Every file is written by the test; the real WFLW sample (``../shared/data/real``) is read in place where present.
"""
import json
import logging
import os

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, BoxMode, Instances

from conftest import unique_dataset_name
from segx.data import DatasetValidationError, register_coco_dataset
from segx.data.datasets.faces import load_face_keypoints_coco, load_wider_face_retinaface, register_face_keypoints_coco
from segx.data.datasets.keypoints import register_coco_keypoints
from segx.evaluation.face import FaceEvaluator, inter_ocular_indices
from segx.evaluation.pck import PCKEvaluator

_name = unique_dataset_name  # conftest's fixture `cleanup` removes what a test registers


def _images(root, names, size=(64, 48)):
    os.makedirs(root, exist_ok=True)
    for n in names:
        os.makedirs(os.path.dirname(os.path.join(root, n)), exist_ok=True)
        Image.fromarray(np.full((size[1], size[0], 3), 90, np.uint8)).save(os.path.join(root, n))


def _write(path, data):
    with open(path, "w") as f:
        json.dump(data, f)
    return str(path)


# ------------------------------------------------------------------------------------------ 1. COCO ids from 0
def _coco_ids_from_zero(tmp_path):
    _images(tmp_path / "img", ["a.jpg", "b.jpg"])
    boxes = {0: (1, [4, 4, 20, 16]), 1: (1, [30, 10, 12, 20]), 2: (2, [10, 8, 25, 30])}  # ids as labelme writes
    data = {
        "images": [{"id": 1, "file_name": "a.jpg", "width": 64, "height": 48},
                   {"id": 2, "file_name": "b.jpg", "width": 64, "height": 48}],
        "categories": [{"id": 1, "name": "thing"}],
        "annotations": [{"id": i, "image_id": im, "category_id": 1, "bbox": b, "area": b[2] * b[3], "iscrowd": 0}
                        for i, (im, b) in boxes.items()],
    }
    return _write(tmp_path / "ids_from_zero.json", data), str(tmp_path / "img")


def _run_coco(evaluator, dicts):
    evaluator.reset()
    for d in dicts:
        inst = Instances((d["height"], d["width"]))
        boxes = [BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) for a in d["annotations"]]
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        inst.scores = torch.ones(len(boxes))
        inst.pred_classes = torch.tensor([a["category_id"] for a in d["annotations"]], dtype=torch.long)
        evaluator.process([{"image_id": d["image_id"], "height": d["height"], "width": d["width"]}],
                          [{"instances": inst}])
    return evaluator.evaluate()["bbox"]


def test_coco_ids_from_zero_evaluate_to_100_and_are_logged(tmp_path, cleanup, caplog):
    from detectron2.evaluation import COCOEvaluator

    from segx.evaluation import build_evaluator_by_type

    json_file, root = _coco_ids_from_zero(tmp_path)
    name = register_coco_dataset(_name("ids0"), json_file, root)
    cleanup.append(name)
    with caplog.at_level(logging.INFO):
        dicts = DatasetCatalog.get(name)
    assert "annotation ids start at 0" in caplog.text
    # what pycocotools does on the file as it is: the match to id 0 is a false positive
    plain = _run_coco(COCOEvaluator(name, tasks=("bbox",), distributed=False, output_dir=str(tmp_path / "a")), dicts)
    assert plain["AP"] < 99
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        (ev,) = build_evaluator_by_type("coco", None, name, str(tmp_path / "b"))
    assert json_file in caplog.text and "re-numbered 1..3" in caplog.text
    ev._distributed = False
    assert _run_coco(ev, dicts)["AP"] == pytest.approx(100.0)
    assert [a["id"] for a in json.load(open(json_file))["annotations"]] == [0, 1, 2]  # the file is unchanged


# ------------------------------------------------------------------------------------------ 3. 68-point face NME
def _face68(rng):
    """68 points of a face 100 px wide: outer eye corners (36, 45) 50 px apart, jaw points 0/1 close together."""
    pts = rng.uniform(30, 110, size=(68, 2))
    pts[0], pts[1] = (20, 60), (21, 70)  # jaw: 10 px apart
    pts[36], pts[45] = (45, 50), (95, 50)  # outer eye corners: 50 px apart
    return pts


def test_68_point_face_nme_uses_the_outer_eye_corners(tmp_path, cleanup):
    rng = np.random.default_rng(0)
    _images(tmp_path, ["f.jpg"], size=(160, 160))
    pts = _face68(rng)
    kp = np.concatenate([pts, np.full((68, 1), 2.0)], 1).flatten().round(3).tolist()
    data = {"images": [{"id": 3, "file_name": "f.jpg", "width": 160, "height": 160}],
            "categories": [{"id": 1, "name": "face", "keypoints": [], "skeleton": []}],  # mmpose's 300-W layout
            "annotations": [{"id": 7, "image_id": 3, "category_id": 1, "bbox": [15, 20, 100, 110], "iscrowd": 0,
                             "area": 11000, "keypoints": kp, "num_keypoints": 68}]}
    json_file = _write(tmp_path / "face68.json", data)
    name = register_face_keypoints_coco(_name("f68"), json_file, str(tmp_path), landmark_indices="all")
    cleanup.append(name)
    (rec,) = DatasetCatalog.get(name)
    gt = np.asarray(rec["annotations"][0]["keypoints"]).reshape(68, 3)[:, :2]
    assert len(MetadataCatalog.get(name).keypoint_names) == 68
    ev = FaceEvaluator(name, distributed=False)
    ev.reset()
    inst = Instances((160, 160))
    inst.pred_boxes = Boxes(torch.tensor([[15.0, 20.0, 115.0, 130.0]]))
    inst.scores = torch.tensor([0.9])
    inst.pred_keypoints = torch.cat([torch.tensor(gt + [3.0, 4.0], dtype=torch.float32)[None],
                                     torch.ones(1, 68, 1)], 2)  # 5 px off everywhere
    ev.process([{"image_id": rec["image_id"]}], [{"instances": inst}])
    res = ev.evaluate()["face"]
    assert res["NME_io"] == pytest.approx(100 * 5 / 50, rel=1e-4)  # not 5 / 10 (jaw points 0/1)
    assert inter_ocular_indices(num_keypoints=68) == (36, 45) and inter_ocular_indices(num_keypoints=98) == (60, 72)
    assert inter_ocular_indices(["left_eye", "right_eye", "nose", "left_mouth", "right_mouth"]) == (0, 1)


def test_unknown_face_layout_is_refused_unless_eyes_are_given(tmp_path, cleanup):
    name = _name("f21")
    cleanup.append(name)
    MetadataCatalog.get(name).set(thing_classes=["face"], evaluator_type="face",
                                  keypoint_names=[f"p{i}" for i in range(21)])
    with pytest.raises(ValueError, match=r"FaceEvaluator\(_test_f21_\d+\): no inter-ocular normaliser for a "
                                         r"21-point.*face_eye_indices"):
        FaceEvaluator(name, distributed=False)
    MetadataCatalog.get(name).set(face_eye_indices=(8, 11))
    assert FaceEvaluator(name, distributed=False)._eye_indices == (8, 11)
    with pytest.raises(ValueError, match="two different landmark indices"):
        inter_ocular_indices(num_keypoints=21, eye_indices=(3, 30))


# ------------------------------------------------------------------- 4. keypoint files with an empty names list
def _mmpose_style(tmp_path, counts=(12, 12)):
    _images(tmp_path, ["k.jpg"], size=(100, 100))
    anns = []
    for i, k in enumerate(counts):
        pts = np.stack([np.linspace(20, 80, k), np.full(k, 30.0 + 20 * i), np.full(k, 2.0)], 1)
        anns.append({"id": i + 1, "image_id": 1, "category_id": 1, "bbox": [15, 20 + 20 * i, 70, 20], "iscrowd": 0,
                     "area": 1400, "keypoints": pts.flatten().tolist(), "num_keypoints": k})
    data = {"images": [{"id": 1, "file_name": "k.jpg", "width": 100, "height": 100}],
            "categories": [{"id": 1, "name": "face", "keypoints": [], "skeleton": []}], "annotations": anns}
    return _write(tmp_path / "mmpose.json", data)


def test_empty_keypoint_names_are_inferred_or_given(tmp_path, cleanup):
    json_file = _mmpose_style(tmp_path)
    inferred = register_coco_keypoints(_name("kpinf"), json_file, str(tmp_path))
    names = [f"lm{i}" for i in range(12)]
    given = register_coco_keypoints(_name("kpgiven"), json_file, str(tmp_path), keypoint_names=names)
    plain = register_coco_dataset(_name("kpplain"), json_file, str(tmp_path))
    cleanup.extend([inferred, given, plain])
    assert MetadataCatalog.get(inferred).keypoint_names == [f"keypoint_{i}" for i in range(12)]
    assert MetadataCatalog.get(given).keypoint_names == names
    assert MetadataCatalog.get(plain).keypoint_names == [f"keypoint_{i}" for i in range(12)]
    for name in (inferred, given):
        dicts = DatasetCatalog.get(name)
        assert len(dicts[0]["annotations"][0]["keypoints"]) == 36
        ev = PCKEvaluator(name, distributed=False)  # the ground truth as predictions scores 100
        ev.reset()
        d = dicts[0]
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor([BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
                                              for a in d["annotations"]], dtype=torch.float32))
        inst.pred_keypoints = torch.tensor(np.array([np.reshape(a["keypoints"], (-1, 3)) for a in d["annotations"]]),
                                           dtype=torch.float32)
        ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        assert ev.evaluate()["keypoints_pck"]["PCK@0.05"] == pytest.approx(100.0)
    with pytest.raises(DatasetValidationError, match=r"annotation id 1 .*12 keypoints, keypoint_names= has 5"):
        register_coco_keypoints(_name("kpbad"), json_file, str(tmp_path), keypoint_names=names[:5])


def test_empty_keypoint_names_with_disagreeing_counts_name_the_annotations(tmp_path):
    json_file = _mmpose_style(tmp_path, counts=(12, 9))
    with pytest.raises(DatasetValidationError, match=r"(?s)annotation id 2 .*9 keypoints.*annotation id 1 .*12 keypoints"):
        register_coco_keypoints(_name("kpmix"), json_file, str(tmp_path))


def test_real_wflw_file_with_empty_keypoint_list_registers(real_data, cleanup):
    root = os.path.join(real_data, "wflw")
    name = register_coco_keypoints(_name("wflw98"), os.path.join(root, "test_wflw.json"), root)
    cleanup.append(name)
    assert len(MetadataCatalog.get(name).keypoint_names) == 98
    assert all(len(a["keypoints"]) == 98 * 3 for d in DatasetCatalog.get(name) for a in d["annotations"])


# ----------------------------------------------------------- 5. one landmark convention in both face loaders
def test_both_face_loaders_return_the_files_landmarks(tmp_path):
    _images(tmp_path / "images", ["0--Parade/p.jpg"], size=(200, 150))
    faces = [([20.0, 30.0, 60.0, 70.0], [[35.5, 50.25], [62.0, 51.0], [48.0, 66.5], [38.0, 82.0], [60.0, 83.0]]),
             ([110.0, 20.0, 40.0, 48.0], [[121.0, 36.0], [139.0, 35.5], [130.0, 46.0], [122.5, 56.0], [137.0, 57.0]])]
    lines = ["# 0--Parade/p.jpg"]
    for box, lm in faces:
        lines.append(" ".join(str(v) for v in box + [c for p in lm for c in (p[0], p[1], 0.0)] + [0.9]))
    (tmp_path / "label.txt").write_text("\n".join(lines) + "\n")
    data = {"images": [{"id": 1, "file_name": "0--Parade/p.jpg", "width": 200, "height": 150}],
            "categories": [{"id": 1, "name": "face", "keypoints": ["left_eye", "right_eye", "nose", "left_mouth",
                                                                   "right_mouth"]}],
            "annotations": [{"id": i + 1, "image_id": 1, "category_id": 1, "bbox": box, "area": box[2] * box[3],
                             "iscrowd": 0, "keypoints": [c for p in lm for c in (p[0], p[1], 2)]}
                            for i, (box, lm) in enumerate(faces)]}
    json_file = _write(tmp_path / "faces5.json", data)
    from_txt = load_wider_face_retinaface(str(tmp_path / "label.txt"))[0]["annotations"]
    from_coco = load_face_keypoints_coco(json_file, str(tmp_path / "images"))[0]["annotations"]
    for a, b, (box, lm) in zip(from_txt, from_coco, faces):
        assert np.asarray(a["keypoints"]).reshape(5, 3)[:, :2].tolist() == lm  # the file's numbers, no shift
        assert a["keypoints"] == b["keypoints"]
        assert BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS) == \
            BoxMode.convert(b["bbox"], b["bbox_mode"], BoxMode.XYXY_ABS)


# --------------------------------------------------------------------------------- 6. videos and dp_* fields
def test_videos_and_densepose_fields_are_kept_and_logged(tmp_path, cleanup, caplog):
    _images(tmp_path, ["v/0.jpg", "v/1.jpg"])
    dp = {"dp_x": [10.0, 20.0], "dp_y": [5.0, 6.0], "dp_I": [1.0, 2.0], "dp_U": [0.1, 0.2], "dp_V": [0.3, 0.4],
          "dp_masks": [{"size": [256, 256],  # a 50x40 block, pycocotools' compressed RLE
                        "counts": "TSd0b1^6" + "0" * 77 + "llQ1"}] + [[]] * 13}
    data = {"videos": [{"id": 4, "name": "v"}],
            "images": [{"id": 1, "file_name": "v/0.jpg", "width": 64, "height": 48, "video_id": 4, "frame_id": 0},
                       {"id": 2, "file_name": "v/1.jpg", "width": 64, "height": 48, "video_id": 4, "frame_id": 1}],
            "categories": [{"id": 1, "name": "person"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [5, 5, 20, 30], "area": 600,
                             "iscrowd": 0, **dp},
                            {"id": 2, "image_id": 2, "category_id": 1, "bbox": [6, 5, 20, 30], "area": 600,
                             "iscrowd": 0}]}
    json_file = _write(tmp_path / "video_dp.json", data)
    with caplog.at_level(logging.INFO):
        name = register_coco_dataset(_name("vdp"), json_file, str(tmp_path))
    cleanup.append(name)
    assert "1 annotations carry DensePose fields (dp_I, dp_U, dp_V, dp_masks, dp_x, dp_y)" in caplog.text
    assert "1 'videos': every frame is registered as an independent image" in caplog.text
    dicts = DatasetCatalog.get(name)
    assert [(d["video_id"], d["frame_id"]) for d in dicts] == [(4, 0), (4, 1)]
    ann = dicts[0]["annotations"][0]
    assert all(ann[k] == v for k, v in dp.items())
    assert not any(k.startswith("dp_") for k in dicts[1]["annotations"][0])


def test_youtube_vis_layout_is_refused_with_a_reason(tmp_path, cleanup):
    json_file = _write(tmp_path / "ytvis.json", {"videos": [{"id": 1, "file_names": ["a/0.jpg"]}],
                                                 "categories": [{"id": 1, "name": "x"}], "annotations": []})
    name = register_coco_dataset(_name("ytvis"), json_file, str(tmp_path))
    cleanup.append(name)
    with pytest.raises(DatasetValidationError, match="a video file .*'videos' without 'images'"):
        DatasetCatalog.get(name)
