"""Video panoptic quality (VPQ; Kim et al., "Video Panoptic Segmentation", CVPR 2020) as a ``DatasetEvaluator``
(``evaluator_type`` "video_panoptic_seg": Cityscapes-VPS sets and ``segx_vps_shapes_*``).

VPQ^k is PQ computed on **tubes**: for every window of annotated frames spanning k frames of a video, the segments of
the window's frames that share an id (ground truth: the PNG id, kept over the video; prediction: the track id of a
thing, the class of a stuff segment) form one tube, and tubes are matched at IoU > 0.5 over the window's pixels.
TP / FP / FN and the IoUs of all windows of all videos are summed per class; VPQ^k is the mean over classes of
IoU / (TP + FP/2 + FN/2); VPQ is the mean of VPQ^k over k (0, 5, 10, 15). VPQ^0 is the PQ of the annotated frames as
single images ("per-frame PQ", what an image model such as UPSNet is scored with).

Follows the official evaluation (mcahny/vps ``tools/eval_vpq.py``):

* a window of k frames starts at every annotated frame ``f`` of a video that has an annotated frame ``f + k``; it
  holds the annotated frames in ``[f, f + k]`` (Cityscapes-VPS annotates every 5th frame: k = 5 is two annotated
  frames, as the official ``nframes``; in a set annotated every frame, k = 5 is six frames);
* void (ground-truth id 0) pixels are left out of a predicted tube's union with a ground-truth tube, and an
  unmatched predicted tube whose pixels lie more than half on void or on crowd regions of its class is not a false
  positive; crowd ground truth is never matched and never a false negative. (Official: one crowd segment per class
  and window, the last one listed; here all crowd segments of the class count, which is the same for Cityscapes-VPS,
  whose crowd regions have one id per class and video.)
* classes with no TP, FP or FN in any window are left out of the averages.

Predictions: detectron2's ``panoptic_seg`` ``(ids [H,W], segments_info)`` at the frame's size; a thing segment's
``track_id`` makes it part of that track's tube (with its class); a thing without ``track_id`` is a tube of its own
frame (an image model); stuff segments form one tube per class. Errors name the video and the frame: a prediction
whose map and ``segments_info`` disagree, an unknown class, a ground-truth PNG with ids its JSON does not list.

Also reported: **ID switches** (``IDSW``): over the annotated frames of each video in order, a ground-truth thing
matched (IoU > 0.5, per frame) to a different predicted tube than at its previous match.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict, defaultdict

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.utils import comm


__all__ = [
    "VPQ_WINDOWS",
    "FrameStats",
    "frame_statistics",
    "prediction_tubes",
    "vpq_windows",
    "compute_vpq",
    "count_id_switches",
    "VPQEvaluator",
    "build_vpq_evaluator",
]

logger = logging.getLogger(__name__)

VPQ_WINDOWS = (0, 5, 10, 15)  # the official k (frames spanned by a window)
VOID = 0


class FrameStats:
    """What VPQ needs from one annotated frame, as pixel counts (tubes sum them over a window's frames).

    * ``pairs``: ``{(gt_id, pred_tube): pixels}``, ``gt_id`` 0 = void;
    * ``gt``: ``{gt_id: (category, iscrowd, area)}``; ``pred``: ``{pred_tube: (category, area)}``.

    ``category`` is any hashable class key shared by ground truth and prediction (here ``(isthing, category_id)``);
    ``pred_tube`` any hashable tube key, equal in every frame of a tube.
    """

    __slots__ = ("pairs", "gt", "pred")

    def __init__(self, pairs, gt, pred):
        self.pairs, self.gt, self.pred = pairs, gt, pred

    def __repr__(self):
        return f"FrameStats(gt={self.gt}, pred={self.pred}, pairs={self.pairs})"


def frame_statistics(gt_ids, gt_segments, pred_ids, pred_tubes, where="frame"):
    """``FrameStats`` of one frame.

    Args:
        gt_ids: ``[H,W]`` ground-truth segment ids (0 = void).
        gt_segments: ``{gt_id: (category, iscrowd)}`` for every non-zero id of ``gt_ids``.
        pred_ids: ``[H,W]`` predicted segment ids (0 = unlabelled).
        pred_tubes: ``{pred_id: (tube, category)}`` for every non-zero id of ``pred_ids``.
        where: names the frame in errors.
    """
    gt_ids, pred_ids = np.asarray(gt_ids, np.int64), np.asarray(pred_ids, np.int64)
    if gt_ids.shape != pred_ids.shape:
        raise ValueError(f"{where}: the prediction is {pred_ids.shape[0]}x{pred_ids.shape[1]}, the ground truth "
                         f"{gt_ids.shape[0]}x{gt_ids.shape[1]}")
    values, counts = np.unique(gt_ids, return_counts=True)
    gt = {}
    for v, c in zip(values.tolist(), counts.tolist()):
        if v == VOID:
            continue
        if v not in gt_segments:
            raise ValueError(f"{where}: ground-truth segment id {v} is in the PNG but not in its JSON")
        category, crowd = gt_segments[v]
        gt[v] = (category, int(crowd), c)
    values, counts = np.unique(pred_ids, return_counts=True)
    pred, tube_of = {}, {}
    for v, c in zip(values.tolist(), counts.tolist()):
        if v == 0:
            continue
        if v not in pred_tubes:
            raise ValueError(f"{where}: predicted segment id {v} is in panoptic_seg but not in its segments_info")
        tube, category = pred_tubes[v]
        if tube in pred:
            raise ValueError(f"{where}: predicted segments share the tube {tube!r}")
        pred[tube] = (category, c)
        tube_of[v] = tube
    missing = sorted(set(pred_tubes) - set(tube_of))
    if missing:
        raise ValueError(f"{where}: predicted segments {missing} are in segments_info but have no pixel in "
                         "panoptic_seg")
    offset = int(max(pred_ids.max(initial=0), 0)) + 1
    joint, counts = np.unique(gt_ids * offset + pred_ids, return_counts=True)
    pairs = {}
    for j, c in zip(joint.tolist(), counts.tolist()):
        g, p = divmod(j, offset)
        if p == 0:
            continue  # unlabelled prediction: no tube
        pairs[(g, tube_of[p])] = c
    return FrameStats(pairs, gt, pred)


def prediction_tubes(segments_info, frame_key, thing_track_key="track_id"):
    """``{segment id: (tube, category)}`` of one frame's ``segments_info`` (module docstring): a thing with
    ``track_id`` → tube ``("track", category, track_id)``; a thing without → ``("frame", frame_key, id)``; stuff →
    ``("stuff", category)``. A repeated tube within the frame gets a tube of its own (as the official evaluation gives
    a repeated track id a new one)."""
    out, used = {}, set()
    for s in segments_info:
        category = (bool(s.get("isthing")), int(s["category_id"]))
        if category[0] and s.get(thing_track_key) is not None:
            tube = ("track", category, int(s[thing_track_key]))
        elif category[0]:
            tube = ("frame", frame_key, int(s["id"]))
        else:
            tube = ("stuff", category)
        if tube in used:
            tube = ("repeated", frame_key, int(s["id"]))
        used.add(tube)
        out[int(s["id"])] = (tube, category)
    return out


def vpq_windows(frame_indices, k):
    """Windows of ``k`` frames over sorted annotated ``frame_indices`` (module docstring): lists of positions into
    ``frame_indices``."""
    frames = list(frame_indices)
    present = {f: i for i, f in enumerate(frames)}
    windows = []
    for i, f in enumerate(frames):
        if f + k in present:
            windows.append(list(range(i, present[f + k] + 1)))
    return windows


class _ClassStat:
    __slots__ = ("iou", "tp", "fp", "fn")

    def __init__(self):
        self.iou, self.tp, self.fp, self.fn = 0.0, 0, 0, 0


def _accumulate_window(window, stats):
    """Adds the TP/FP/FN and IoUs of one window (a list of ``FrameStats``) to ``stats`` (``{category: _ClassStat}``)."""
    pairs, gt, pred = defaultdict(int), {}, {}
    for fs in window:
        for key, c in fs.pairs.items():
            pairs[key] += c
        for g, (cat, crowd, area) in fs.gt.items():
            prev = gt.get(g)
            gt[g] = (cat, crowd, area) if prev is None else (prev[0], prev[1], prev[2] + area)
        for p, (cat, area) in fs.pred.items():
            prev = pred.get(p)
            pred[p] = (cat, area) if prev is None else (prev[0], prev[1] + area)
    gt_matched, pred_matched = set(), set()
    for (g, p), inter in pairs.items():
        if g == VOID or g not in gt or p not in pred:
            continue
        gcat, crowd, garea = gt[g]
        pcat, parea = pred[p]
        if crowd or gcat != pcat:
            continue
        union = parea + garea - inter - pairs.get((VOID, p), 0)
        iou = inter / union
        if iou > 0.5:
            s = stats[gcat]
            s.tp += 1
            s.iou += iou
            gt_matched.add(g)
            pred_matched.add(p)
    crowd_of = defaultdict(list)
    for g, (cat, crowd, _) in gt.items():
        if g in gt_matched:
            continue
        if crowd:
            crowd_of[cat].append(g)
            continue
        stats[cat].fn += 1
    for p, (cat, area) in pred.items():
        if p in pred_matched:
            continue
        ignored = pairs.get((VOID, p), 0) + sum(pairs.get((g, p), 0) for g in crowd_of.get(cat, ()))
        if ignored / area > 0.5:
            continue
        stats[cat].fp += 1


def _average(stats, categories, isthing=None):
    """``({"pq", "sq", "rq", "n"}, {category: per-class dict})`` over ``categories`` (``[(isthing, id)]``) with any
    TP/FP/FN (the official ``pq_average``; 0 when there is none)."""
    pq = sq = rq = 0.0
    n, per_class = 0, {}
    for cat in categories:
        if isthing is not None and bool(cat[0]) != isthing:
            continue
        s = stats.get(cat, _ClassStat())
        if s.tp + s.fp + s.fn == 0:
            per_class[cat] = {"pq": 0.0, "sq": 0.0, "rq": 0.0, "iou": 0.0, "tp": 0, "fp": 0, "fn": 0}
            continue
        n += 1
        denom = s.tp + 0.5 * s.fp + 0.5 * s.fn
        c = {"pq": s.iou / denom, "sq": s.iou / s.tp if s.tp else 0.0, "rq": s.tp / denom, "iou": s.iou,
             "tp": s.tp, "fp": s.fp, "fn": s.fn}
        per_class[cat] = c
        pq, sq, rq = pq + c["pq"], sq + c["sq"], rq + c["rq"]
    if n == 0:
        return {"pq": 0.0, "sq": 0.0, "rq": 0.0, "n": 0}, per_class
    return {"pq": pq / n, "sq": sq / n, "rq": rq / n, "n": n}, per_class


def compute_vpq(videos, categories, windows=VPQ_WINDOWS):
    """VPQ of ``videos`` (``{video: [(frame_index, FrameStats)]}``, annotated frames) over ``categories``
    (``[(isthing, category_id)]``) for each k of ``windows``.

    Returns ``{k: {"All"|"Things"|"Stuff": {"pq", "sq", "rq", "n"}, "per_class": {category: {...}},
    "num_windows": int}}``. Raises when a k has no window in any video (the message lists the frame gaps)."""
    out = {}
    ordered = {v: sorted(frames, key=lambda x: x[0]) for v, frames in videos.items()}
    for k in windows:
        if int(k) != k or k < 0:
            raise ValueError(f"VPQ: window sizes must be integers >= 0, got {k!r}")
        stats, count = defaultdict(_ClassStat), 0
        for frames in ordered.values():
            indices = [f for f, _ in frames]
            for w in vpq_windows(indices, k):
                _accumulate_window([frames[i][1] for i in w], stats)
                count += 1
        if count == 0:
            gaps = sorted({b - a for fr in ordered.values() for (a, _), (b, _) in zip(fr, fr[1:])})
            raise ValueError(f"VPQ: no video has two annotated frames {k} frames apart (window k = {k}); annotated "
                             f"frames are {gaps} frames apart: choose windows that are multiples of the gap and no "
                             "longer than the videos")
        res = {"num_windows": count}
        for name, isthing in (("All", None), ("Things", True), ("Stuff", False)):
            res[name], per_class = _average(stats, categories, isthing)
            if name == "All":
                res["per_class"] = per_class
        out[k] = res
    return out


def count_id_switches(videos):
    """``(switches, matched)``: ID switches of ground-truth things over each video's annotated frames in order (a
    thing matched, IoU > 0.5 in its frame, to another predicted tube than at its previous match) and the number of
    matched (thing, frame) pairs. ``videos`` as ``compute_vpq``'s."""
    switches = matched = 0
    for frames in videos.values():
        last = {}
        for _, fs in sorted(frames, key=lambda x: x[0]):
            for (g, p), inter in fs.pairs.items():
                if g == VOID or g not in fs.gt or p not in fs.pred:
                    continue
                gcat, crowd, garea = fs.gt[g]
                pcat, parea = fs.pred[p]
                if crowd or gcat != pcat or not gcat[0]:
                    continue
                if inter / (parea + garea - inter - fs.pairs.get((VOID, p), 0)) <= 0.5:
                    continue
                matched += 1
                if g in last and last[g] != p:
                    switches += 1
                last[g] = p
    return switches, matched


class VPQEvaluator(DatasetEvaluator):
    """VPQ over windows of k frames, per-frame PQ and ID switches of a video panoptic set (module docstring).

    Inputs are the test loader's frame records in order (at least ``video_id`` / ``frame_index`` and, for annotated
    frames, ``pan_seg_file_name`` + ``segments_info``, else they are looked up by ``image_id`` in the dataset);
    frames without ground truth are skipped. Results (``evaluate``): ``{"vpq": {"VPQ", "VPQ_th", "VPQ_st",
    "VPQ@k", "VPQ_th@k", "VPQ_st@k" for each k, "PQ", "SQ", "RQ", "PQ_th", "PQ_st" (= k 0), "IDSW",
    "VPQ-<class>"}}``; ``output_dir`` gets ``vpq_results.json`` (every k, per class TP/FP/FN/IoU) and
    ``vpq-<k>.txt`` tables.
    """

    def __init__(self, dataset_name, windows=VPQ_WINDOWS, output_dir=None, distributed=True):
        self.dataset_name = dataset_name
        self.windows = tuple(int(k) for k in windows)
        self.output_dir = output_dir
        self.distributed = distributed
        meta = MetadataCatalog.get(dataset_name)
        things, stuff = list(meta.get("thing_classes", [])), list(meta.get("stuff_classes", ["things"]))
        self.categories = [(True, i) for i in range(len(things))] + [(False, l) for l in range(1, len(stuff))]
        self.class_names = {**{(True, i): n for i, n in enumerate(things)},
                            **{(False, l): stuff[l] for l in range(1, len(stuff))}}
        self._records = None

    def reset(self):
        self._frames = []

    def _record(self, x):
        if "pan_seg_file_name" in x and "segments_info" in x:
            return x
        if self._records is None:
            self._records = {r["image_id"]: r for r in DatasetCatalog.get(self.dataset_name)}
        return self._records.get(x.get("image_id"), x)

    def process(self, inputs, outputs):
        from segx.data.datasets.cityscapes_vps import check_panoptic_png, read_panoptic_ids

        for x, out in zip(inputs, outputs):
            rec = self._record(x)
            if "pan_seg_file_name" not in rec:
                continue  # a frame without ground truth (run for the stream, not scored)
            video, frame = rec.get("video_id"), rec.get("frame_index")
            where = f"{self.dataset_name}: video {video}, frame {frame} ({rec['pan_seg_file_name']})"
            if "panoptic_seg" not in out:
                raise ValueError(f"{where}: the model output has no 'panoptic_seg' (VPQ scores panoptic outputs)")
            gt_ids = read_panoptic_ids(rec["pan_seg_file_name"])
            problems = check_panoptic_png(gt_ids, rec["segments_info"], where)
            if problems:
                raise ValueError("; ".join(problems))
            gt_segments = {int(s["id"]): ((bool(s["isthing"]), int(s["category_id"])), int(s.get("iscrowd", 0)))
                           for s in rec["segments_info"]}
            pan, infos = out["panoptic_seg"]
            pan = pan.cpu().numpy() if torch.is_tensor(pan) else np.asarray(pan)
            tubes = prediction_tubes(infos, (video, frame))
            for sid, (_, category) in tubes.items():
                if category not in self.class_names:
                    raise ValueError(f"{where}: predicted segment {sid} has class {category} (isthing, category_id), "
                                     f"not one of this dataset's {len(self.class_names)} classes")
            self._frames.append((video, frame, frame_statistics(gt_ids, gt_segments, pan, tubes, where)))

    def evaluate(self):
        frames = self._frames
        if self.distributed:
            comm.synchronize()
            frames = list(itertools.chain(*comm.gather(frames, dst=0)))
            if not comm.is_main_process():
                return {}
        if not frames:
            logger.warning("VPQEvaluator: no annotated frame was processed for %s", self.dataset_name)
            return {}
        videos = defaultdict(list)
        for video, frame, fs in frames:
            videos[video].append((frame, fs))
        for video, fr in videos.items():
            seen = [f for f, _ in fr]
            if len(seen) != len(set(seen)):
                raise ValueError(f"{self.dataset_name}: video {video} has frames evaluated twice: {sorted(seen)}")
        res = compute_vpq(videos, self.categories, self.windows)
        switches, matched = count_id_switches(videos)
        out = OrderedDict()
        for part, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
            out["VPQ" + suffix] = 100 * float(np.mean([res[k][part]["pq"] for k in self.windows]))
        for k in self.windows:
            for part, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
                out[f"VPQ{suffix}@{k}"] = 100 * res[k][part]["pq"]
        if 0 in res:
            for part, suffix in (("All", ""), ("Things", "_th"), ("Stuff", "_st")):
                out["PQ" + suffix] = 100 * res[0][part]["pq"]
            out["SQ"], out["RQ"] = 100 * res[0]["All"]["sq"], 100 * res[0]["All"]["rq"]
        out["IDSW"] = float(switches)
        out["matched_thing_frames"] = float(matched)
        out["num_videos"], out["num_frames"] = float(len(videos)), float(len(frames))
        for cat in self.categories:
            out[f"VPQ-{self.class_names[cat]}"] = 100 * float(np.mean([res[k]["per_class"][cat]["pq"]
                                                                    for k in self.windows]))
        if self.output_dir:
            self._write(res, out)
        return {"vpq": out}

    def _write(self, res, summary):
        os.makedirs(self.output_dir, exist_ok=True)
        named = {str(k): {**{p: r[p] for p in ("All", "Things", "Stuff", "num_windows")},
                          "per_class": {self.class_names[c]: v for c, v in r["per_class"].items()}}
                 for k, r in res.items()}
        with open(os.path.join(self.output_dir, "vpq_results.json"), "w") as f:
            json.dump({"summary": summary, "windows": named}, f, indent=1)
        for k, r in res.items():
            lines = [f"{'':10s}| {'PQ':>5s}  {'SQ':>5s}  {'RQ':>5s} {'N':>5s}", "-" * 38]
            for part in ("All", "Things", "Stuff"):
                p = r[part]
                lines.append(f"{part:10s}| {100 * p['pq']:5.1f}  {100 * p['sq']:5.1f}  {100 * p['rq']:5.1f} {p['n']:5d}")
            lines.append(f"{'class':12s} {'PQ':>5s} {'SQ':>5s} {'RQ':>5s} {'IoU':>8s} {'TP':>6s} {'FP':>6s} {'FN':>6s}")
            for c, v in r["per_class"].items():
                lines.append(f"{self.class_names[c][:12]:12s} {100 * v['pq']:5.1f} {100 * v['sq']:5.1f} "
                             f"{100 * v['rq']:5.1f} {v['iou']:8.1f} {v['tp']:6d} {v['fp']:6d} {v['fn']:6d}")
            with open(os.path.join(self.output_dir, f"vpq-{k}.txt"), "w") as f:
                f.write("\n".join(lines) + "\n")


def build_vpq_evaluator(cfg, dataset_name, output_folder):
    """The evaluator of ``evaluator_type`` "video_panoptic_seg" (``segx/evaluation/registry.py``): windows from
    ``cfg.MODEL.VPSNET.VPQ_WINDOWS`` when the config has them."""
    windows = tuple(cfg.MODEL.VPSNET.VPQ_WINDOWS) if "VPSNET" in cfg.MODEL else VPQ_WINDOWS
    return VPQEvaluator(dataset_name, windows=windows, output_dir=output_folder)
