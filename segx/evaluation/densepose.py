"""DensePose evaluation: AP over GPS (geodesic point similarity) thresholds, with the surface distance pluggable.

GPS of a detection and an annotated person (Güler et al. 2018): the mean over the person's annotated points p of
``exp(-g(p, p̂)² / (2 κ²))``, κ = 0.255, where p̂ is the surface point (I, U, V) the detection predicts at p's image
position and g the geodesic distance on the body surface; a point outside the detection's box, or predicted as
background, scores 0. AP is COCO's detection AP with GPS in place of box IoU: thresholds 0.50:0.05:0.95, 101 recall
points, at most 100 detections per image, area ranges on the person box (medium 32²–96², large > 96²). People
without DensePose points (and crowd regions) are "ignore" people: an otherwise unmatched detection whose box
overlaps one by IoU ≥ 0.8 is left out, and in an image without any annotated person every detection is left out
(the official protocol's rules).

The distance ``g(gt_parts, gt_uv, pred_parts, pred_uv) -> [P]`` (``inf`` where the surface points cannot be
compared) is looked up by name in ``DISTANCES`` (the dataset's ``densepose_distance`` metadata) or passed in:

- ``"synthetic_charts"``: exact for ``segx.data.synthetic_dense``: every part is a flat patch with an affine chart,
  so within a part g = hypot(ΔU · size_u, ΔV · size_v) in template units (body ≈ 1.7 tall); the synthetic surface
  is a set of separate patches, so points on different parts are infinitely far apart (GPS term 0).
- ``"uv_standin"``: a stand-in for DensePose-COCO, where the official measure needs SMPL's geodesic distance tables
  (not shipped): within a part g = ``UV_STANDIN_SCALE`` × the Euclidean distance in (U, V); across parts ∞. It
  differs from the official GPS in three ways: UV charts are not isometric, so chart distance is only roughly
  proportional to surface distance (the scale, 0.5 body units per chart unit, is an uncalibrated guess at a part's
  extent); a point predicted on the wrong (e.g. a neighbouring) part scores 0 where the geodesic gives partial
  credit; and two points on either side of a chart seam are far apart in UV but close on the body. It therefore
  ranks models but its values are not comparable with published DensePose AP.

Also reported, for each annotated person and the detection with the highest box IoU (≥ 0.5): the part accuracy of
the points and the mean |ΔU|, |ΔV| of the points whose part is right, overall and per part.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np
import torch

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from segx.evaluation.registry import register_evaluator_type

__all__ = [
    "DISTANCES",
    "GPS_KAPPA",
    "UV_STANDIN_SCALE",
    "register_densepose_distance",
    "synthetic_charts_distance",
    "uv_standin_distance",
    "gps_values",
    "densepose_ap",
    "DensePoseEvaluator",
]

logger = logging.getLogger(__name__)

GPS_KAPPA = 0.255
UV_STANDIN_SCALE = 0.5
DP_GRID = 256
AREA_RANGES = {"all": (0.0, 1e10), "m": (32.0 ** 2, 96.0 ** 2), "l": (96.0 ** 2, 1e10)}
THRESHOLDS = np.round(np.arange(0.5, 0.951, 0.05), 2)
DISTANCES = {}


def register_densepose_distance(name, fn=None):
    """Registers ``fn(gt_parts, gt_uv, pred_parts, pred_uv) -> distances [P]`` (numpy; ``inf`` = not comparable) as
    ``name`` (the dataset metadata ``densepose_distance``). Usable as a decorator."""
    if fn is None:
        return lambda f: register_densepose_distance(name, f)
    DISTANCES[name] = fn
    return fn


@register_densepose_distance("synthetic_charts")
def synthetic_charts_distance(gt_parts, gt_uv, pred_parts, pred_uv):
    """Exact surface distance of ``segx.data.synthetic_dense`` (see the module doc)."""
    from segx.data.synthetic_dense import PART_CHART_SIZE

    gt_parts, pred_parts = np.asarray(gt_parts, np.int64), np.asarray(pred_parts, np.int64)
    size = np.zeros((max(max(PART_CHART_SIZE), int(gt_parts.max(initial=0))) + 1, 2))
    for p, s in PART_CHART_SIZE.items():
        size[p] = s
    d = np.hypot(*((np.asarray(gt_uv) - np.asarray(pred_uv)) * size[gt_parts]).T)
    d[(gt_parts != pred_parts) | (size[gt_parts, 0] == 0)] = np.inf
    return d


@register_densepose_distance("uv_standin")
def uv_standin_distance(gt_parts, gt_uv, pred_parts, pred_uv, scale=UV_STANDIN_SCALE):
    """Stand-in distance for DensePose-COCO (see the module doc): ``scale`` × chart distance, ∞ across parts."""
    d = scale * np.hypot(*(np.asarray(gt_uv, np.float64) - np.asarray(pred_uv, np.float64)).T)
    d[np.asarray(gt_parts) != np.asarray(pred_parts)] = np.inf
    return d


def gps_values(distances, kappa=GPS_KAPPA):
    """Per-point GPS terms ``exp(-d² / (2κ²))`` (0 where d is inf)."""
    d = np.asarray(distances, np.float64)
    return np.where(np.isfinite(d), np.exp(-np.square(np.where(np.isfinite(d), d, 0)) / (2 * kappa ** 2)), 0.0)


def _box_iou(a, b, crowd):
    """COCO IoU [D,G] of XYXY boxes (for a crowd ground truth: intersection over the detection's area)."""
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)))
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area_a = np.clip(a[:, 2:] - a[:, :2], 0, None).prod(-1)
    area_b = np.clip(b[:, 2:] - b[:, :2], 0, None).prod(-1)
    union = np.where(np.asarray(crowd, bool)[None], area_a[:, None], area_a[:, None] + area_b[None] - inter)
    return inter / np.maximum(union, 1e-9)


def _match_image(rec, t, area):
    """COCO-style matching of one image at GPS threshold ``t``: (scores, matched, ignored) of its detections and the
    number of counted people."""
    gps, iou = rec["gps"], rec["box_iou"]
    gt_area = rec["gt_area"]
    gt_ignore = rec["gt_ignore"] | (gt_area < area[0]) | (gt_area > area[1])
    order = np.argsort(gt_ignore, kind="mergesort")  # counted people first
    n_det = len(rec["scores"])
    matched_gt = np.zeros(len(order), bool)
    det_matched = np.zeros(n_det, bool)
    det_ignored = np.zeros(n_det, bool)
    if len(order) and rec["gt_ignore"].all():
        det_ignored[:] = True  # no annotated person in the image
    for d in range(n_det):
        best, m = min(t, 1 - 1e-10), -1
        for g in order:
            if matched_gt[g]:
                continue
            if m > -1 and not gt_ignore[m] and gt_ignore[g]:
                break
            if gps[d, g] < best or gps[d, g] == 0:
                continue
            best, m = gps[d, g], g
        if m > -1:
            matched_gt[m] = True
            det_matched[d] = not gt_ignore[m]
            det_ignored[d] |= bool(gt_ignore[m])
        elif len(order):
            ign = [g for g in order if rec["gt_ignore"][g] and not matched_gt[g] and iou[d, g] >= 0.8]
            if ign:
                det_ignored[d] = True
    det_area = rec["det_area"]
    det_ignored |= ~det_matched & ((det_area < area[0]) | (det_area > area[1]))
    return rec["scores"], det_matched, det_ignored, int((~gt_ignore).sum())


def densepose_ap(records, thresholds=THRESHOLDS, area=AREA_RANGES["all"]):
    """AP (in [0, 1], -1 when no person counts) at each GPS threshold: ``[T]``, from per-image records (``scores``
    [D] sorted descending, ``gps`` / ``box_iou`` [D,G], ``gt_ignore`` [G] bool, ``gt_area`` [G], ``det_area`` [D])."""
    out = []
    recall_points = np.linspace(0, 1, 101)
    for t in thresholds:
        scores, matched, ignored, n_gt = [], [], [], 0
        for rec in records:
            s, m, ig, n = _match_image(rec, t, area)
            scores.append(s), matched.append(m), ignored.append(ig)
            n_gt += n
        if n_gt == 0:
            out.append(-1.0)
            continue
        s, m, ig = np.concatenate(scores), np.concatenate(matched), np.concatenate(ignored)
        order = np.argsort(-s, kind="mergesort")
        m, ig = m[order], ig[order]
        tp = np.cumsum(m & ~ig)
        fp = np.cumsum(~m & ~ig)
        recall = tp / n_gt
        precision = tp / np.maximum(tp + fp, np.spacing(1))
        precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
        idx = np.searchsorted(recall, recall_points, side="left")
        q = np.array([precision[i] if i < len(precision) else 0.0 for i in idx])
        out.append(float(q.mean()))
    return np.array(out)


class DensePoseEvaluator(DatasetEvaluator):
    """AP over GPS thresholds and the per-part U/V error of ``instances.pred_densepose`` (see the module doc).

    Args:
        dataset_name: a dataset with DensePose-COCO annotations (``dp_*`` fields in its records).
        distance: a name in ``DISTANCES`` or a function; default: the metadata ``densepose_distance``
            ("uv_standin" when unset).
        kappa: GPS's normaliser (0.255, the paper's).
        max_dets: detections per image that count (100).
    """

    def __init__(self, dataset_name, distance=None, kappa=GPS_KAPPA, max_dets=100, distributed=True, output_dir=None):
        self._dataset_name = dataset_name
        meta = MetadataCatalog.get(dataset_name)
        distance = distance or meta.get("densepose_distance", "uv_standin")
        if isinstance(distance, str):
            if distance not in DISTANCES:
                raise ValueError(f"DensePoseEvaluator({dataset_name}): unknown distance {distance!r} (known: "
                                 f"{sorted(DISTANCES)})")
            self._distance_name, distance = distance, DISTANCES[distance]
        else:
            self._distance_name = getattr(distance, "__name__", "custom")
        self._distance, self._kappa, self._max_dets = distance, kappa, max_dets
        self._distributed, self._output_dir = distributed, output_dir
        self._part_names = meta.get("densepose_part_names", None)
        self._gt = None
        self.reset()

    def reset(self):
        self._records = []
        self._missing = 0

    def _ground_truth(self):
        if self._gt is None:
            self._gt = {}
            for d in DatasetCatalog.get(self._dataset_name):
                people = []
                for a in d.get("annotations", []):
                    box = np.array(BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS), np.float64)
                    has = "dp_x" in a and len(a["dp_x"]) > 0 and not a.get("iscrowd", 0)
                    p = {"box": box, "crowd": bool(a.get("iscrowd", 0)), "ignore": not has}
                    if has:
                        w, h = box[2:] - box[:2]
                        p["points"] = np.stack([box[0] + np.asarray(a["dp_x"]) * w / DP_GRID,
                                                box[1] + np.asarray(a["dp_y"]) * h / DP_GRID], 1)
                        p["parts"] = np.asarray(a["dp_I"], np.int64)
                        p["uv"] = np.stack([a["dp_U"], a["dp_V"]], 1).astype(np.float64)
                    people.append(p)
                self._gt[d["image_id"]] = people
        return self._gt

    def predict_at(self, dense, boxes, points):
        """I, U, V ``[D,P]`` that ``dense`` (a ``DensePoseOutput`` of D detections with ``boxes`` [D,4]) predicts at
        image ``points`` [P,2] (part 0 outside a detection's box)."""
        from segx.modeling.roi_heads.densepose import box_grid

        n_det, n_pts = len(boxes), len(points)
        pts = torch.as_tensor(points, dtype=torch.float32).repeat(n_det, 1)
        bx = torch.as_tensor(boxes, dtype=torch.float32).repeat_interleave(n_pts, 0)
        grid = box_grid(pts, bx)
        inside = ((grid >= -1) & (grid < 1)).all(1)
        index = torch.arange(n_det).repeat_interleave(n_pts)
        with torch.no_grad():
            i, u, v = dense.sample(index, grid)
        i = torch.where(inside, i, torch.zeros_like(i))
        return (i.reshape(n_det, n_pts).numpy(), u.reshape(n_det, n_pts).double().numpy(),
                v.reshape(n_det, n_pts).double().numpy())

    def process(self, inputs, outputs):
        gt = self._ground_truth()
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            if not inst.has("pred_densepose"):
                self._missing += 1
                continue
            people = gt.get(inp["image_id"])
            if people is None:
                raise KeyError(f"DensePoseEvaluator({self._dataset_name}): image_id {inp['image_id']} is not in the "
                               f"dataset")
            order = torch.argsort(inst.scores, descending=True)[: self._max_dets]
            inst = inst[order]
            boxes = inst.pred_boxes.tensor.numpy().astype(np.float64)
            dense = inst.pred_densepose
            gps = np.zeros((len(inst), len(people)))
            gt_boxes = np.stack([p["box"] for p in people]) if people else np.zeros((0, 4))
            iou = _box_iou(boxes, gt_boxes, [p["crowd"] for p in people])
            errors = []
            for g, p in enumerate(people):
                if p["ignore"]:
                    continue
                if len(inst):
                    i, u, v = self.predict_at(dense, boxes, p["points"])
                    for d in range(len(inst)):
                        dist = self._distance(p["parts"], p["uv"], i[d], np.stack([u[d], v[d]], 1))
                        gps[d, g] = gps_values(dist, self._kappa).mean()
                best = int(np.argmax(iou[:, g])) if len(inst) else -1
                if best >= 0 and iou[best, g] >= 0.5:
                    errors.append(np.stack([p["parts"], i[best], np.abs(u[best] - p["uv"][:, 0]),
                                            np.abs(v[best] - p["uv"][:, 1])], 1))
                else:
                    errors.append(np.stack([p["parts"], np.zeros(len(p["parts"])), np.full(len(p["parts"]), np.nan),
                                            np.full(len(p["parts"]), np.nan)], 1))
            self._records.append({
                "image_id": inp["image_id"], "scores": inst.scores.numpy().astype(np.float64), "gps": gps,
                "box_iou": iou, "gt_ignore": np.array([p["ignore"] for p in people], bool),
                "gt_area": np.array([np.prod(p["box"][2:] - p["box"][:2]) for p in people], np.float64),
                "det_area": np.prod(boxes[:, 2:] - boxes[:, :2], axis=1) if len(boxes) else np.zeros(0),
                "point_errors": np.concatenate(errors) if errors else np.zeros((0, 4)),
            })

    def evaluate(self):
        records, missing = self._records, self._missing
        if self._distributed:
            comm.synchronize()
            records = list(itertools.chain(*comm.gather(records, dst=0)))
            missing = sum(comm.gather(missing, dst=0))
            if not comm.is_main_process():
                return {}
        if missing:
            logger.warning("DensePoseEvaluator(%s): %d outputs without pred_densepose (not a DensePose model?); "
                           "skipped", self._dataset_name, missing)
        if not records:
            return {}
        res = self.compute(records)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "densepose_gps.json"), "w") as f:
                json.dump(res, f, indent=1)
        return OrderedDict({"densepose_gps": res})

    def compute(self, records):
        """The results dict (AP in percent, errors in chart units) from per-image records."""
        res = OrderedDict()
        ap = densepose_ap(records)
        res["AP"] = 100 * float(ap[ap >= 0].mean()) if (ap >= 0).any() else float("nan")
        res["AP50"], res["AP75"] = 100 * float(ap[0]), 100 * float(ap[5])
        for k in ("m", "l"):
            a = densepose_ap(records, area=AREA_RANGES[k])
            res[f"AP{k}"] = 100 * float(a[a >= 0].mean()) if (a >= 0).any() else float("nan")
        counted = [r["gps"][:, ~r["gt_ignore"]] for r in records if (~r["gt_ignore"]).any()]
        best = [g.max(0) if len(g) else np.zeros(g.shape[1]) for g in counted]
        res["mean_best_GPS"] = 100 * float(np.concatenate(best).mean()) if best else float("nan")
        err = np.concatenate([r["point_errors"] for r in records]) if records else np.zeros((0, 4))
        res["num_people"] = float(sum(int((~r["gt_ignore"]).sum()) for r in records))
        res["num_points"] = float(len(err))
        if len(err):
            right = err[:, 0] == err[:, 1]
            res["part_acc"] = 100 * float(right.mean())
            res["U_err"] = float(err[right, 2].mean()) if right.any() else float("nan")
            res["V_err"] = float(err[right, 3].mean()) if right.any() else float("nan")
            for part in np.unique(err[:, 0]).astype(int):
                sel = err[:, 0] == part
                name = self._part_names[part - 1] if self._part_names and 0 < part <= len(self._part_names) else str(part)
                ok = sel & right
                res[f"part_acc/{name}"] = 100 * float(right[sel].mean())
                res[f"U_err/{name}"] = float(err[ok, 2].mean()) if ok.any() else float("nan")
                res[f"V_err/{name}"] = float(err[ok, 3].mean()) if ok.any() else float("nan")
        logger.info("DensePoseEvaluator(%s): GPS with distance %r, kappa %g", self._dataset_name, self._distance_name,
                    self._kappa)
        return res


@register_evaluator_type("densepose")
def _densepose(cfg, dataset_name, output_folder):
    """COCO box AP (segx's COCO evaluator) and AP over GPS thresholds."""
    from segx.data.datasets.densepose import DENSE_SYNTHETIC_SPECS, ensure_dense_dataset
    from segx.evaluation.coco import SegxCOCOEvaluator

    if dataset_name in DENSE_SYNTHETIC_SPECS:
        ensure_dense_dataset(dataset_name)  # the COCO evaluator reads the JSON file
    return [SegxCOCOEvaluator(dataset_name, output_dir=output_folder),
            DensePoseEvaluator(dataset_name, output_dir=output_folder)]
