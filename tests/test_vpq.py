"""VPQ (``segx.evaluation.vpq``): hand-made tubes whose numbers are worked out in the comments, void and crowd
handling as the official ``eval_vpq.py``, the evaluator on the synthetic video panoptic set (ground truth scored as
prediction = 100 for every k, an empty prediction = 0, swapped ids lower VPQ for k > 0 but not per-frame PQ), and
errors that name the video and the frame."""
import copy

import numpy as np
import pytest
import torch

from detectron2.data import DatasetCatalog

from segx.data.datasets.cityscapes_vps import read_panoptic_ids
from segx.evaluation.vpq import (
    VPQEvaluator,
    compute_vpq,
    count_id_switches,
    frame_statistics,
    prediction_tubes,
    vpq_windows,
)

STUFF, THING = (False, 1), (True, 0)
CATS = [THING, STUFF]
GT_SEGMENTS = {11000: (STUFF, 0), 1: (THING, 0), 2: (THING, 0)}  # stuff, thing A (id 1), thing B (id 2)
GT_ROW = np.array([[11000, 11000, 1, 1, 2, 2]])  # one row of 6 pixels: stuff, A, A, B, B


def _pred(row, tracks):
    """Prediction with segment ids 1.. on ``row`` (an array of GT ids): stuff, and each thing as ``tracks[gt_id]``."""
    ids = np.zeros_like(row)
    infos = []
    for n, g in enumerate([11000, 1, 2], start=1):
        ids[row == g] = n
        if g == 11000:
            infos.append({"id": n, "isthing": False, "category_id": 1})
        else:
            infos.append({"id": n, "isthing": True, "category_id": 0, "track_id": tracks[g]})
    return ids, infos


def _video(tracks_per_frame, frames=(0, 5, 10, 15)):
    out = []
    for f, tracks in zip(frames, tracks_per_frame):
        ids, infos = _pred(GT_ROW, tracks)
        out.append((f, frame_statistics(GT_ROW, GT_SEGMENTS, ids, prediction_tubes(infos, f), f"frame {f}")))
    return {1: out}


def test_windows_span_k_frames_of_the_annotated_ones():
    # Cityscapes-VPS: every 5th frame annotated; k = 5 is two annotated frames (the official nframes = 2)
    assert vpq_windows([0, 5, 10, 15], 0) == [[0], [1], [2], [3]]
    assert vpq_windows([0, 5, 10, 15], 5) == [[0, 1], [1, 2], [2, 3]]
    assert vpq_windows([0, 5, 10, 15], 15) == [[0, 1, 2, 3]]
    # every frame annotated: k = 5 is six frames
    assert vpq_windows(list(range(8)), 5) == [[0, 1, 2, 3, 4, 5], [1, 2, 3, 4, 5, 6], [2, 3, 4, 5, 6, 7]]
    with pytest.raises(ValueError, match="no video has two annotated frames 3 frames apart"):
        compute_vpq(_video([{1: 7, 2: 8}] * 4), CATS, windows=(3,))


def test_ground_truth_as_prediction_is_100_for_every_k():
    res = compute_vpq(_video([{1: 7, 2: 8}] * 4), CATS)
    for k in (0, 5, 10, 15):
        assert res[k]["All"]["pq"] == 1.0 and res[k]["Things"]["pq"] == 1.0 and res[k]["Stuff"]["pq"] == 1.0


def test_swapped_ids_mid_video_lower_vpq_for_k_above_0_but_not_per_frame_pq():
    # Things A and B (2 px each, class 0) and one stuff segment (2 px); frames 0, 5, 10, 15. The prediction is exact,
    # but from frame 10 on A carries track 8 and B track 7 (swapped).
    videos = _video([{1: 7, 2: 8}, {1: 7, 2: 8}, {1: 8, 2: 7}, {1: 8, 2: 7}])
    res = compute_vpq(videos, CATS)
    # k = 0: every frame on its own is exact -> PQ 100 (per-frame PQ does not see the swap)
    assert res[0]["All"]["pq"] == 1.0 and res[0]["Things"]["pq"] == 1.0
    # k = 5, windows (0,5), (5,10), (10,15). (0,5) and (10,15): A and B each TP with IoU 1. (5,10): tube A is 4 px,
    # tube "track 7" is 4 px (2 on A in frame 5, 2 on B in frame 10), overlap 2, IoU 2 / (4 + 4 - 2) = 1/3: no match;
    # the same for B -> 2 FN + 2 FP. Things: IoU sum 4, TP 4, FP 2, FN 2 -> PQ 4 / (4 + 1 + 1) = 2/3; stuff 1.
    th5 = res[5]["per_class"][THING]
    assert (th5["tp"], th5["fp"], th5["fn"]) == (4, 2, 2)
    assert res[5]["Things"]["pq"] == pytest.approx(2 / 3) and res[5]["All"]["pq"] == pytest.approx(5 / 6)
    # k = 10, windows (0,5,10) and (5,10,15). In (0,5,10) tube A is 6 px and track 7 covers A, A, B: overlap 4, union
    # 6 + 6 - 4 = 8, IoU exactly 0.5, which is not a match (official: iou > 0.5); track 8 overlaps A by 2 (IoU 0.2).
    # (5,10,15) likewise (track 8 covers B, A, A: IoU 0.5). Things: TP 0, FP 4, FN 4 -> 0; All = (0 + 1) / 2.
    th10 = res[10]["per_class"][THING]
    assert (th10["tp"], th10["fp"], th10["fn"]) == (0, 4, 4) and res[10]["All"]["pq"] == 0.5
    # k = 15, one window: tube A 8 px, track 7 on A, A, B, B: overlap 4, IoU 4 / 12 -> 2 FN + 2 FP, things 0.
    th15 = res[15]["per_class"][THING]
    assert (th15["tp"], th15["fp"], th15["fn"]) == (0, 2, 2) and res[15]["All"]["pq"] == 0.5
    # VPQ = mean over k = (1 + 5/6 + 1/2 + 1/2) / 4; things (1 + 2/3 + 0 + 0) / 4
    assert np.mean([res[k]["All"]["pq"] for k in res]) == pytest.approx((1 + 5 / 6 + 0.5 + 0.5) / 4)
    assert np.mean([res[k]["Things"]["pq"] for k in res]) == pytest.approx((1 + 2 / 3) / 4)
    # A switches from track 7 to 8 at frame 10, B from 8 to 7: two ID switches over 8 matched (thing, frame) pairs
    assert count_id_switches(videos) == (2, 8)


def test_empty_prediction_gives_zero():
    empty = np.zeros_like(GT_ROW)
    fs = frame_statistics(GT_ROW, GT_SEGMENTS, empty, {}, "frame 0")
    res = compute_vpq({1: [(f, fs) for f in (0, 5, 10, 15)]}, CATS)
    for k in res:
        assert res[k]["All"]["pq"] == 0.0 and res[k]["per_class"][THING]["fn"] == 2 * len(vpq_windows([0, 5, 10, 15], k))


def test_void_pixels_leave_the_union_and_a_mostly_void_prediction_is_no_false_positive():
    # GT: void (0) x 3, thing A x 2. Prediction: one thing segment over void x 2 + A x 2 (track 1), and a second thing
    # segment over the last void pixel only (track 2).
    gt = np.array([[0, 0, 0, 1, 1]])
    pred = np.array([[5, 5, 6, 5, 5]])
    tubes = prediction_tubes([{"id": 5, "isthing": True, "category_id": 0, "track_id": 1},
                              {"id": 6, "isthing": True, "category_id": 0, "track_id": 2}], 0)
    fs = frame_statistics(gt, {1: (THING, 0)}, pred, tubes)
    c = compute_vpq({1: [(0, fs)]}, [THING], windows=(0,))[0]["per_class"][THING]
    # IoU of A and track 1: 2 / (4 + 2 - 2 - 2 void) = 1; track 2 lies wholly on void: ignored, not a FP
    assert (c["tp"], c["fp"], c["fn"]) == (1, 0, 0) and c["iou"] == 1.0


def test_crowd_is_never_matched_nor_missed_and_covers_predictions_of_its_class():
    # GT: crowd region of class 0 (id 9, 4 px) + thing A (2 px). Prediction: A exactly, and a class-0 thing on 3 of
    # the crowd pixels (ignored: > half on crowd of its class); a class-1 thing on the 4th crowd pixel is a FP
    # (the crowd is of another class).
    other = (True, 1)
    gt = np.array([[9, 9, 9, 9, 1, 1]])
    pred = np.array([[2, 2, 2, 3, 1, 1]])
    tubes = prediction_tubes([{"id": 1, "isthing": True, "category_id": 0, "track_id": 0},
                              {"id": 2, "isthing": True, "category_id": 0, "track_id": 1},
                              {"id": 3, "isthing": True, "category_id": 1, "track_id": 2}], 0)
    fs = frame_statistics(gt, {9: (THING, 1), 1: (THING, 0)}, pred, tubes)
    res = compute_vpq({1: [(0, fs)]}, [THING, other], windows=(0,))[0]["per_class"]
    assert (res[THING]["tp"], res[THING]["fp"], res[THING]["fn"]) == (1, 0, 0)
    assert (res[other]["tp"], res[other]["fp"], res[other]["fn"]) == (0, 1, 0)


def test_things_without_track_ids_are_tubes_of_one_frame():
    # an image model (no track_id): each frame's things are separate tubes, so VPQ at k = 5 loses every thing
    # (IoU of a 4-px GT tube and a 2-px one-frame tube: 2 / 4) while k = 0 stays exact
    frames = []
    for f in (0, 1, 2, 3, 4, 5):
        ids, infos = _pred(GT_ROW, {1: None, 2: None})
        frames.append((f, frame_statistics(GT_ROW, GT_SEGMENTS, ids, prediction_tubes(infos, f))))
    res = compute_vpq({1: frames}, CATS, windows=(0, 5))
    assert res[0]["Things"]["pq"] == 1.0 and res[5]["Things"]["pq"] == 0.0 and res[5]["Stuff"]["pq"] == 1.0


def test_prediction_errors_name_the_frame():
    ids, infos = _pred(GT_ROW, {1: 7, 2: 8})
    with pytest.raises(ValueError, match="video 3, frame 4: predicted segment id 3 is in panoptic_seg but not"):
        frame_statistics(GT_ROW, GT_SEGMENTS, ids, prediction_tubes(infos[:2], 4), "video 3, frame 4")
    with pytest.raises(ValueError, match="ground-truth segment id 2 is in the PNG but not in its JSON"):
        frame_statistics(GT_ROW, {11000: (STUFF, 0), 1: (THING, 0)}, ids, prediction_tubes(infos, 4))
    with pytest.raises(ValueError, match="the prediction is 1x5, the ground truth 1x6"):
        frame_statistics(GT_ROW, GT_SEGMENTS, ids[:, :5], prediction_tubes(infos, 4))


# --------------------------------------------------------------------------- the evaluator on the synthetic set
@pytest.fixture(scope="module")
def val_videos():
    records = DatasetCatalog.get("segx_vps_shapes_val")
    return [r for r in records if r["video_id"] in (1, 2)]


def _gt_outputs(records, swap=None):
    """Ground truth as prediction: the GT ids as segment ids, things tracked by their GT id. ``swap``:
    ``(video, from_frame, id_a, id_b)`` exchanges the track ids of two things from a frame on."""
    outs = []
    for r in records:
        ids = read_panoptic_ids(r["pan_seg_file_name"])
        infos = []
        for s in r["segments_info"]:
            info = {"id": s["id"], "isthing": s["isthing"], "category_id": s["category_id"]}
            if s["isthing"]:
                tid = s["id"]
                if swap and r["video_id"] == swap[0] and r["frame_index"] >= swap[1] and tid in swap[2:]:
                    tid = swap[3] if tid == swap[2] else swap[2]
                info["track_id"] = tid
            infos.append(info)
        outs.append({"panoptic_seg": (torch.from_numpy(ids.astype(np.int32)), infos)})
    return outs


def _evaluate(records, outputs, **kwargs):
    ev = VPQEvaluator("segx_vps_shapes_val", distributed=False, **kwargs)
    ev.reset()
    for r, o in zip(records, outputs):
        ev.process([r], [o])
    return ev.evaluate()["vpq"]


def test_evaluator_ground_truth_is_100_and_empty_is_0(val_videos, tmp_path):
    res = _evaluate(val_videos, _gt_outputs(val_videos), output_dir=str(tmp_path))
    for k in (0, 5, 10, 15):
        assert res[f"VPQ@{k}"] == pytest.approx(100) and res[f"VPQ_th@{k}"] == pytest.approx(100)
    assert res["VPQ"] == pytest.approx(100) and res["PQ"] == pytest.approx(100) and res["IDSW"] == 0
    assert (tmp_path / "vpq-15.txt").is_file() and (tmp_path / "vpq_results.json").is_file()
    empty = [{"panoptic_seg": (torch.zeros((r["height"], r["width"]), dtype=torch.int32), [])} for r in val_videos]
    res = _evaluate(val_videos, empty)
    assert res["VPQ"] == 0 and res["PQ"] == 0


def test_evaluator_swapped_track_ids_lower_vpq_not_pq(val_videos):
    # video 1's first two things, swapped from frame 8 on
    things = [s["id"] for s in val_videos[0]["segments_info"] if s["isthing"]]
    assert len(things) >= 2, "video 1 of segx_vps_shapes_val (deterministic) should hold two things to swap"
    res = _evaluate(val_videos, _gt_outputs(val_videos, swap=(1, 8, things[0], things[1])))
    assert res["PQ"] == pytest.approx(100) and res["VPQ@0"] == pytest.approx(100)
    for k in (5, 10, 15):
        assert res[f"VPQ_th@{k}"] < 100 and res[f"VPQ_st@{k}"] == pytest.approx(100)
    assert res["IDSW"] == 2


def test_evaluator_names_a_png_with_ids_its_json_lacks(val_videos):
    rec = copy.deepcopy(val_videos[0])
    dropped = rec["segments_info"].pop()
    out = _gt_outputs([val_videos[0]])[0]
    ev = VPQEvaluator("segx_vps_shapes_val", distributed=False)
    ev.reset()
    with pytest.raises(ValueError, match=rf"video 1, frame 0 .*segment ids \[{dropped['id']}\].*does not list"):
        ev.process([rec], [out])
