"""The official WIDER FACE protocol (issue 19, item 2): the MAT reader, the official ground-truth files, and the PR
curve / AP checked against precision and recall worked out by hand on a tiny case.

The ``.mat`` files are written by the tests (``segx.data.matfile.save_mat``, and one encoded byte by byte).
"""
import json
import os
import struct
import zlib

import numpy as np
import pytest
import torch
from PIL import Image

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import Boxes, Instances

from segx.data.datasets.faces import register_wider_face_retinaface
from segx.data.matfile import MatFileError, load_mat, save_mat
from segx.evaluation.face import FaceEvaluator
from segx.evaluation.wider_face import (
    load_wider_ground_truth,
    normalize_wider_scores,
    read_wider_predictions,
    wider_face_eval,
    wider_image_eval,
    xyxy_to_wider,
)


# ------------------------------------------------------------------------------------------------ MAT files
def _tag(mtype, payload, small=False):
    if small:
        return struct.pack("<I", (len(payload) << 16) | mtype) + payload.ljust(4, b"\0")
    return struct.pack("<II", mtype, len(payload)) + payload + b"\0" * (-len(payload) % 8)


def _hand_written_cell():
    """A 1×2 cell {'ab', [1.5 -2]} named ``c``, encoded by hand from the MAT-file spec (not with save_mat)."""
    char = (_tag(6, struct.pack("<II", 4, 0)) + _tag(5, struct.pack("<ii", 1, 2)) + _tag(1, b"")
            + _tag(4, struct.pack("<HH", ord("a"), ord("b")), small=True))
    double = (_tag(6, struct.pack("<II", 6, 0)) + _tag(5, struct.pack("<ii", 1, 2)) + _tag(1, b"")
              + _tag(9, struct.pack("<dd", 1.5, -2.0)))
    body = (_tag(6, struct.pack("<II", 1, 0)) + _tag(5, struct.pack("<ii", 1, 2)) + _tag(1, b"c", small=True)
            + _tag(14, char) + _tag(14, double))
    return _tag(14, body)


def _header(endian=b"IM"):
    return b"MATLAB 5.0 MAT-file, hand written".ljust(116, b" ") + b"\0" * 8 + struct.pack("<H", 0x0100) + endian


def test_mat_reader_on_hand_encoded_files(tmp_path):
    element = _hand_written_cell()
    for name, blob in (("plain.mat", _header() + element),
                       ("zipped.mat", _header() + struct.pack("<II", 15, len(zlib.compress(element)))
                        + zlib.compress(element))):
        (tmp_path / name).write_bytes(blob)
        c = load_mat(tmp_path / name)["c"]
        assert c.shape == (1, 2) and c[0, 0] == "ab"
        np.testing.assert_array_equal(c[0, 1], [[1.5, -2.0]])
    # a big-endian 2×2 int32 matrix "m" = [[1, 2], [3, 4]] (column-major data: 1 3 2 4)
    be = lambda t, p: struct.pack(">II", t, len(p)) + p + b"\0" * (-len(p) % 8)  # noqa: E731
    body = (be(6, struct.pack(">II", 12, 0)) + be(5, struct.pack(">ii", 2, 2)) + be(1, b"m")
            + be(5, struct.pack(">iiii", 1, 3, 2, 4)))
    (tmp_path / "be.mat").write_bytes(_header(b"MI") + be(14, body))
    m = load_mat(tmp_path / "be.mat")["m"]
    assert m.dtype == np.int32 and m.tolist() == [[1, 2], [3, 4]]


def test_mat_writer_round_trip_and_errors(tmp_path):
    inner = np.empty((2, 1), dtype=object)
    inner[0, 0], inner[1, 0] = np.array([[1.0, 2, 3, 4], [5, 6, 7, 8]]), np.zeros((0, 4))
    values = {"s": "0--Parade", "e": "", "d": np.arange(6.0).reshape(2, 3), "i": np.array([[3, 1]], np.int32),
              "b": np.array([True, False]), "cells": ["a", ["x", "yz"], inner]}
    for compress in (True, False):
        path = tmp_path / f"rt{compress}.mat"
        save_mat(path, values, compress=compress)
        out = load_mat(path)
        assert out["s"] == "0--Parade" and out["e"] == ""
        np.testing.assert_array_equal(out["d"], values["d"])
        assert out["i"].dtype == np.int32 and out["i"].tolist() == [[3, 1]]
        assert out["b"].dtype == bool and out["b"].tolist() == [[True, False]]
        cells = out["cells"]
        assert cells.shape == (3, 1) and cells[0, 0] == "a" and list(cells[1, 0].flatten()) == ["x", "yz"]
        assert cells[2, 0][0, 0].tolist() == inner[0, 0].tolist() and cells[2, 0][1, 0].shape == (0, 4)
        assert set(load_mat(path, ["s", "cells"])) == {"s", "cells"}  # the others are skipped undecoded
    blob = (tmp_path / "rtFalse.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(blob[: len(blob) - 20])
    with pytest.raises(MatFileError, match=r"cut\.mat: truncated"):
        load_mat(tmp_path / "cut.mat")
    (tmp_path / "v73.mat").write_bytes(b"MATLAB 7.3 MAT-file".ljust(200, b" "))
    with pytest.raises(MatFileError, match=r"v73\.mat: a v7\.3 \(HDF5\) MAT file"):
        load_mat(tmp_path / "v73.mat")


# ------------------------------------------------------------------------------- a tiny hand-worked case
# image 0--Parade/a: F1, F2, F3 and F4 (zero width: in no subset, an ignore region); image 1--Handshaking/b: F5
GT_BOXES = {("0--Parade", "a"): [[0, 0, 9, 9], [20, 0, 9, 9], [40, 0, 9, 9], [60, 0, 0, 9]],
            ("1--Handshaking", "b"): [[0, 0, 19, 19]]}
KEEP = {"easy": {"a": [1, 2], "b": [1]}, "medium": {"a": [1, 3], "b": [1]}, "hard": {"a": [1, 2, 3], "b": [1]}}
# x, y, w, h, score: p1 on F1, p2 on F3, p3 a second box on F1 (IoU 0.82), p4 on F4, p5 on nothing, p6 on F5
PREDS = {("0--Parade", "a"): [[0, 0, 9, 9, 1.0], [40, 0, 9, 9, 0.85], [1, 0, 9, 9, 0.65], [60, 0, 0, 9, 0.55]],
         ("1--Handshaking", "b"): [[100, 100, 9, 9, 0.75], [0, 0, 19, 19, 0.0]]}
# By hand. easy counts F1, F2, F5 (3 faces): p2 and p4 fall on ignore faces; going down the thresholds the
# (proposals, recalled) are (1,1) above 0.75, (2,1) from p5, (3,1) from p3, and (4,2) at threshold 0 (p6):
# precision 1 up to recall 1/3, then 0.5 at recall 2/3 → AP = 1/3·1 + 1/3·0.5 = 0.5.
# medium counts F1, F3, F5: (1,1), (2,2) from p2, (3,2), (4,2), (5,3) → AP = 1/3 + 1/3 + 1/3·0.6 = 13/15.
# hard counts F1, F2, F3, F5: the same counts over 4 faces → AP = 1/4 + 1/4 + 1/4·0.6 = 0.65.
EXPECTED = {"easy": 0.5, "medium": 13 / 15, "hard": 0.65}


def _write_official_gt(folder, boxes=GT_BOXES, keep=KEEP):
    os.makedirs(folder, exist_ok=True)
    events = sorted({e for e, _ in boxes})
    per_event = {e: [n for ev, n in boxes if ev == e] for e in events}
    col = lambda items: np.array(items + [None], dtype=object)[:-1].reshape(-1, 1)  # noqa: E731
    save_mat(os.path.join(folder, "wider_face_val.mat"), {
        "event_list": col(events),
        "file_list": col([col(per_event[e]) for e in events]),
        "face_bbx_list": col([col([np.array(boxes[(e, n)], np.float64).reshape(-1, 4) for n in per_event[e]])
                              for e in events]),
    })
    for setting, idx in keep.items():
        save_mat(os.path.join(folder, f"wider_{setting}_val.mat"), {
            "gt_list": col([col([np.array(idx[n], np.float64).reshape(-1, 1) for n in per_event[e]]) for e in events]),
            "event_list": col(events),
        })
    return folder


def test_official_protocol_matches_the_hand_worked_precision_and_recall(tmp_path):
    gt = load_wider_ground_truth(_write_official_gt(str(tmp_path / "gt")))
    assert gt.keys == [("0--Parade", "a"), ("1--Handshaking", "b")]
    assert gt.keep["easy"][("0--Parade", "a")].tolist() == [True, True, False, False]
    preds = {k: np.array(v, np.float64) for k, v in PREDS.items()}
    aps, curves = wider_face_eval(preds, gt)
    for s in EXPECTED:
        assert aps[s] == pytest.approx(EXPECTED[s], abs=1e-12), s
    precision, recall = curves["hard"]
    at = lambda t: int(round((1 - t) * 1000)) - 1  # noqa: E731  (index of threshold t)
    assert (precision[at(0.9)], recall[at(0.9)]) == (1.0, 0.25)
    assert (precision[at(0.8)], recall[at(0.8)]) == (1.0, 0.5)
    assert precision[at(0.7)] == pytest.approx(2 / 3) and precision[at(0.6)] == 0.5 and recall[at(0.6)] == 0.5
    assert (precision[-1], recall[-1]) == (pytest.approx(0.6), 0.75)
    # one image by hand: p3 is a proposal that recalls nothing, p4 is no proposal
    recalled, proposal = wider_image_eval(preds[("0--Parade", "a")], np.array(GT_BOXES[("0--Parade", "a")]),
                                          gt.keep["easy"][("0--Parade", "a")])
    assert recalled.tolist() == [1, 1, 1, 1] and proposal.tolist() == [True, False, True, False]
    # dropping the zero-width face F4 would turn p4 into a false positive: easy AP 1/3 + 1/3·0.4
    dropped = {**GT_BOXES, ("0--Parade", "a"): GT_BOXES[("0--Parade", "a")][:3]}
    gt_dropped = load_wider_ground_truth(_write_official_gt(str(tmp_path / "gt_dropped"), dropped))
    assert wider_face_eval(preds, gt_dropped)[0]["easy"] == pytest.approx(1 / 3 + 0.4 / 3)


def test_scores_are_normalised_as_the_official_code_does(tmp_path):
    out = normalize_wider_scores({"a": np.array([[0, 0, 1, 1, 0.2], [0, 0, 1, 1, 0.6]]), "b": np.zeros((0, 5))})
    assert out["a"][:, 4].tolist() == [0.0, 1.0]
    out = normalize_wider_scores({"a": np.array([[0, 0, 1, 1, 3.0], [0, 0, 1, 1, 2.0]])})  # the range includes 1
    assert out["a"][:, 4].tolist() == [1.0, 0.5]
    gt = load_wider_ground_truth(_write_official_gt(str(tmp_path / "gt")))
    scaled = {k: np.array(v, np.float64) * [1, 1, 1, 1, 0.5] + [0, 0, 0, 0, 0.25] for k, v in PREDS.items()}
    assert wider_face_eval(scaled, gt)[0] == pytest.approx(EXPECTED)  # a monotone rescale changes nothing


def test_prediction_files_in_the_official_layout(tmp_path):
    for (event, name), rows in PREDS.items():
        os.makedirs(tmp_path / "pred" / event, exist_ok=True)
        lines = [name, str(len(rows))] + [" ".join(str(v) for v in r) + " " for r in rows]
        (tmp_path / "pred" / event / f"{name}.txt").write_text("\n".join(lines) + "\n")
    preds = read_wider_predictions(tmp_path / "pred")
    gt = load_wider_ground_truth(_write_official_gt(str(tmp_path / "gt")))
    assert wider_face_eval(preds, gt)[0] == pytest.approx(EXPECTED)
    assert xyxy_to_wider([[1.7, 2.2, 11.9, 12.5]], [0.5]).tolist() == [[1, 2, 10, 10, 0.5]]  # RetinaFace's int()
    assert xyxy_to_wider([[1.5, 2, 11, 12]], [0.5], rounding="none").tolist() == [[1.5, 2, 9.5, 10, 0.5]]


def test_ground_truth_folder_errors_name_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing \['wider_face_val.mat'"):
        load_wider_ground_truth(tmp_path)
    folder = _write_official_gt(str(tmp_path / "gt"), keep={**KEEP, "hard": {"a": [1, 9], "b": [1]}})
    with pytest.raises(ValueError, match=r"wider_hard_val\.mat: image 0--Parade/a: face index out of 1\.\.4"):
        load_wider_ground_truth(folder)


def test_face_evaluator_reports_the_official_view_beside_the_coco_style_one(tmp_path):
    root = tmp_path / "val"
    lines = []
    for (event, name), boxes in GT_BOXES.items():
        os.makedirs(root / "images" / event, exist_ok=True)
        Image.fromarray(np.zeros((200, 200, 3), np.uint8)).save(root / "images" / event / f"{name}.jpg")
        lines.append(f"# {event}/{name}.jpg")
        lines += [" ".join(str(v) for v in b) for b in boxes]
    (root / "label.txt").write_text("\n".join(lines) + "\n")
    name = "_test_wider_official_eval"
    register_wider_face_retinaface(name, str(root / "label.txt"), wider_gt_dir=_write_official_gt(str(tmp_path / "gt")))
    try:
        dicts = DatasetCatalog.get(name)
        assert [a["iscrowd"] for a in dicts[0]["annotations"]] == [0, 0, 0, 1]  # F4 kept as an ignore region
        ev = FaceEvaluator(name, output_dir=str(tmp_path / "out"), distributed=False)
        ev.reset()
        for d in dicts:
            key = (os.path.basename(os.path.dirname(d["file_name"])), os.path.splitext(os.path.basename(d["file_name"]))[0])
            p = np.array(PREDS[key], np.float64)
            inst = Instances((200, 200))
            inst.pred_boxes = Boxes(torch.tensor(np.concatenate([p[:, :2], p[:, :2] + p[:, 2:4]], 1), dtype=torch.float32))
            inst.scores = torch.tensor(p[:, 4], dtype=torch.float32)
            ev.process([{"image_id": d["image_id"]}], [{"instances": inst}])
        res = ev.evaluate()["face"]
        for s, ap in EXPECTED.items():
            assert res[f"WIDER_{s}"] == pytest.approx(100 * ap, abs=1e-6)
        assert "AP50" in res and "AP" in res  # the COCO-style view is still there
        curves = json.load(open(tmp_path / "out" / "wider_pr_curves.json"))
        assert len(curves["hard"]["precision"]) == 1000 and curves["hard"]["recall"][-1] == 0.75
    finally:
        DatasetCatalog.remove(name)
        MetadataCatalog.remove(name)
