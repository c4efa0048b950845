"""Face datasets: synthetic faces, WIDER FACE RetinaFace label.txt, COCO-keypoints-style faces (WFLW sample)."""
import json
import os

import cv2
import numpy as np
import pytest

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from segx.data.datasets import DatasetValidationError
from segx.data.datasets.faces import (
    WFLW_5POINT_INDICES,
    load_wider_face_retinaface,
    register_face_keypoints_coco,
    register_wider_face_retinaface,
)
from segx.data.synthetic_faces import FACE_KEYPOINT_NAMES, FaceSpec, render_face_scene, write_faces_dataset


def test_synthetic_faces_are_deterministic_and_annotated():
    spec = FaceSpec(num_images=30, seed=123)
    a, b = render_face_scene(spec, 7), render_face_scene(spec, 7)
    assert np.array_equal(a.image, b.image) and np.array_equal(a.boxes, b.boxes)
    assert not np.array_equal(a.image, render_face_scene(spec, 8).image)
    scenes = [render_face_scene(spec, i) for i in range(30)]
    faces = sum(len(s.boxes) for s in scenes)
    no_ldm = sum(int((~s.has_landmarks).sum()) for s in scenes)
    assert faces > 30 and 0 < no_ldm < faces / 2
    for s in scenes:
        for box, pts in zip(s.boxes, s.landmarks):
            assert (pts[:, 0] > box[0]).all() and (pts[:, 0] < box[2]).all()
            assert (pts[:, 1] > box[1]).all() and (pts[:, 1] < box[3]).all()
            assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # left = smaller x
            assert pts[0, 1] < pts[2, 1] < pts[3, 1]  # eyes above nose above mouth


def test_synthetic_faces_files_round_trip(tmp_path):
    spec = FaceSpec(num_images=6, seed=5)
    root = write_faces_dataset(spec, str(tmp_path / "faces"))
    data = json.load(open(os.path.join(root, "faces.json")))
    assert data["categories"][0]["keypoints"] == list(FACE_KEYPOINT_NAMES)
    register_face_keypoints_coco("_test_synth_faces", os.path.join(root, "faces.json"), os.path.join(root, "images"))
    try:
        dicts = DatasetCatalog.get("_test_synth_faces")
        for i, d in enumerate(dicts):
            scene = render_face_scene(spec, i)
            assert len(d["annotations"]) == len(scene.boxes)
            for ann, box, pts, has in zip(d["annotations"], scene.boxes, scene.landmarks, scene.has_landmarks):
                np.testing.assert_allclose(BoxMode.convert(ann["bbox"], ann["bbox_mode"], BoxMode.XYXY_ABS), box,
                                           atol=2e-3)
                kp = np.asarray(ann["keypoints"]).reshape(5, 3)
                if has:  # written and read back at x (the face loaders' convention: the file's numbers)
                    np.testing.assert_allclose(kp[:, :2], pts, atol=2e-3)
                    assert (kp[:, 2] == 2).all()
                else:
                    assert (kp[:, 2] == 0).all()
    finally:
        DatasetCatalog.remove("_test_synth_faces")
        MetadataCatalog.remove("_test_synth_faces")


def test_builtin_face_sets_are_registered_with_face_metadata():
    for name in ("segx_faces_train", "segx_faces_val"):
        meta = MetadataCatalog.get(name)
        assert meta.evaluator_type == "face" and meta.thing_classes == ["face"]
        assert meta.keypoint_names == list(FACE_KEYPOINT_NAMES)
        assert ("left_eye", "right_eye") in [tuple(p) for p in meta.keypoint_flip_map]
        assert set(meta.face_size_split) == {"easy", "medium", "hard"}


WIDER_OK = """# 0--Parade/a.jpg
449 330 122 149 488.906 373.643 0.0 542.089 376.442 0.0 515.031 412.83 0.0 485.174 425.893 0.0 538.357 431.491 0.0 0.82
361 98 263 339 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
10 10 0 5 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0 -1.0
# 1--Handshaking/b.jpg
78 221 7 8
"""


def test_wider_face_label_txt(tmp_path):
    label = tmp_path / "train" / "label.txt"
    label.parent.mkdir()
    label.write_text(WIDER_OK)
    img_dir = tmp_path / "train" / "images" / "0--Parade"
    img_dir.mkdir(parents=True)
    cv2.imwrite(str(img_dir / "a.jpg"), np.zeros((90, 120, 3), np.uint8))  # b.jpg stays missing
    recs = load_wider_face_retinaface(str(label), check_images="none")  # (missing images: tests/test_bad_input.py)
    assert (recs[0]["height"], recs[0]["width"]) == (90, 120) and "height" not in recs[1]
    assert [os.path.relpath(r["file_name"], tmp_path / "train" / "images") for r in recs] == [
        "0--Parade/a.jpg", "1--Handshaking/b.jpg"]
    a, b = recs[0]["annotations"], recs[1]["annotations"]
    assert len(a) == 3 and len(b) == 1  # the w = 0 face is kept as an ignore region (and counted in the log)
    assert [x["iscrowd"] for x in a] == [0, 0, 1] and a[2]["bbox"] == [10, 10, 0, 5]
    assert a[0]["bbox"] == [449, 330, 122, 149] and a[0]["bbox_mode"] == BoxMode.XYWH_ABS
    kp = np.asarray(a[0]["keypoints"]).reshape(5, 3)
    np.testing.assert_allclose(kp[:, :2], [[488.906, 373.643], [542.089, 376.442], [515.031, 412.83],
                                           [485.174, 425.893], [538.357, 431.491]])
    assert (kp[:, 2] == 2).all()
    assert all(v == 0 for v in a[1]["keypoints"])  # −1 landmarks → no landmarks
    assert all(v == 0 for v in b[0]["keypoints"])  # box-only line (the validation format)

    (tmp_path / "train" / "images" / "1--Handshaking").mkdir()
    cv2.imwrite(str(tmp_path / "train" / "images" / "1--Handshaking" / "b.jpg"), np.zeros((20, 30, 3), np.uint8))
    register_wider_face_retinaface("_test_wider", str(label), size_split={"easy": 50, "medium": 20, "hard": 0})
    try:
        assert len(DatasetCatalog.get("_test_wider")) == 2
        meta = MetadataCatalog.get("_test_wider")
        assert meta.evaluator_type == "face" and meta.face_size_split["easy"] == 50
    finally:
        DatasetCatalog.remove("_test_wider")
        MetadataCatalog.remove("_test_wider")


def test_wider_face_label_txt_reports_bad_lines_with_numbers(tmp_path):
    label = tmp_path / "label.txt"
    label.write_text("12 12 3 3\n# a.jpg\n1 2 3\n4 5 6 7 x\n#\n1 1 5 5 nan 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1\n")
    with pytest.raises(DatasetValidationError) as e:
        load_wider_face_retinaface(str(label), image_root=str(tmp_path))
    msg = str(e.value)
    assert str(label) in msg
    for needle in ("line 1: face line before", "line 3: 3 numbers", "line 4: not a list of numbers",
                   "line 5: '#' line without", "line 6: face line before"):
        assert needle in msg, (needle, msg)
    with pytest.raises(DatasetValidationError, match="does not exist"):
        load_wider_face_retinaface(str(tmp_path / "nope.txt"))


def test_wflw_sample_loads_with_the_5_point_subset(real_data):
    root = os.path.join(real_data, "wflw")
    json_file = os.path.join(root, "test_wflw.json")
    register_face_keypoints_coco("_test_wflw5", json_file, root, landmark_indices=WFLW_5POINT_INDICES)
    try:
        dicts = DatasetCatalog.get("_test_wflw5")
        raw = json.load(open(json_file))
        assert len(dicts) == len(raw["images"]) == 2
        anns = [a for d in dicts for a in d["annotations"]]
        assert len(anns) == len(raw["annotations"]) == 4
        by_bbox = {tuple(np.round(a["bbox"], 3)): a for a in raw["annotations"]}
        for d in dicts:
            assert os.path.isfile(d["file_name"])
            for ann in d["annotations"]:
                src = by_bbox[tuple(np.round(ann["bbox"], 3))]["keypoints"]
                kp = np.asarray(ann["keypoints"]).reshape(5, 3)
                for j, i in enumerate(WFLW_5POINT_INDICES):  # the chosen points, as the file has them
                    assert kp[j, :2].tolist() == src[3 * i: 3 * i + 2]
                assert (kp[:, 2] > 0).all() and ann["category_id"] == 0
                assert kp[0, 0] < kp[1, 0] and kp[3, 0] < kp[4, 0]  # left/right as seen in the image
        meta = MetadataCatalog.get("_test_wflw5")
        assert meta.keypoint_names == list(FACE_KEYPOINT_NAMES) and meta.evaluator_type == "face"
    finally:
        DatasetCatalog.remove("_test_wflw5")
        MetadataCatalog.remove("_test_wflw5")


def test_face_keypoints_coco_errors_name_the_annotation(real_data):
    root = os.path.join(real_data, "wflw")
    json_file = os.path.join(root, "test_wflw.json")
    register_face_keypoints_coco("_test_wflw_bad", json_file, root, landmark_indices=(96, 97, 54, 76, 120))
    register_face_keypoints_coco("_test_wflw_all", json_file, root)
    try:
        with pytest.raises(DatasetValidationError, match=r"annotation id \d+ .*landmark_indices \[120\]"):
            DatasetCatalog.get("_test_wflw_bad")
        with pytest.raises(DatasetValidationError, match="98 keypoints; pass landmark_indices"):
            DatasetCatalog.get("_test_wflw_all")
    finally:
        for n in ("_test_wflw_bad", "_test_wflw_all"):
            DatasetCatalog.remove(n)
            MetadataCatalog.remove(n)
    with pytest.raises(ValueError, match="5 entries"):
        register_face_keypoints_coco("_test_wflw_short", json_file, root, landmark_indices=(1, 2))
