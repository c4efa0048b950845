"""Face detection + landmark evaluation (evaluator type ``"face"``): box AP and landmark NME.

Box AP, COCO-style view (no pycocotools): per IoU threshold, detections of all images sorted by score are
greedily matched to unmatched ground-truth faces (highest IoU first, COCO's rule); AP is the area under the
interpolated precision/recall curve sampled at 101 recall points (COCO). All detections are used (WIDER
FACE's protocol has no per-image cap). ``iscrowd`` faces are "ignore" regions: a detection matching one
counts neither as true nor false positive (the WIDER FACE loader keeps faces of zero width or height as such).

Size subsets (COCO-style view): when the dataset metadata has ``face_size_split`` (``{"easy": min_h, ...}``,
box height in pixels of the original image), ``AP50_<subset>`` is computed with the faces below that height
turned into ignore regions, so the subsets are cumulative. This is not WIDER FACE's official split.

Official WIDER FACE protocol: when the metadata has ``wider_face_gt_dir`` (the folder of the official
``wider_face_val.mat`` and ``wider_{easy,medium,hard}_val.mat``), ``WIDER_easy``, ``WIDER_medium`` and
``WIDER_hard`` are the official APs (``segx.evaluation.wider_face``: the official membership, ignore rule,
PR curve and AP), in percent; the PR curves are written to ``wider_pr_curves.json`` in the output folder.

Landmark NME: for every ground-truth face that has landmarks (all points visible) and is matched at IoU 0.5
by a detection, the mean point-to-point distance between predicted and true landmarks divided by the face
box size sqrt(w·h) (``NME``), and by the inter-ocular distance (``NME_io``); both in percent. The eye points
come from the metadata: ``face_eye_indices`` when set, else ``left_eye``/``right_eye`` in ``keypoint_names``
(the 5-point layout), else the layout's standard outer eye corners by landmark count (68 points: 36/45 as
300-W; 98 points: 60/72 as WFLW). Any other layout is refused with an error rather than normalised by the
wrong points.
"""
import itertools
import json
import logging
import os
from collections import OrderedDict

import numpy as np

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.evaluation import DatasetEvaluator
from detectron2.structures import BoxMode
from detectron2.utils import comm

from segx.evaluation.registry import register_evaluator_type

__all__ = ["FaceEvaluator", "face_ap", "match_detections", "box_iou_np", "inter_ocular_indices", "EYE_INDICES_BY_COUNT"]

logger = logging.getLogger(__name__)

# The inter-ocular normaliser's two points per landmark layout (by count): the eye centres of RetinaFace's
# 5-point layout, the outer eye corners of the 68-point (300-W / iBUG) and 98-point (WFLW) layouts.
EYE_INDICES_BY_COUNT = {5: (0, 1), 68: (36, 45), 98: (60, 72)}


def inter_ocular_indices(keypoint_names=None, num_keypoints=None, eye_indices=None, where="FaceEvaluator"):
    """The two landmark indices whose distance normalises ``NME_io``: ``eye_indices`` when given, else
    ``left_eye``/``right_eye`` in ``keypoint_names``, else ``EYE_INDICES_BY_COUNT`` for the number of points.
    Raises ``ValueError`` (naming ``where``) for a layout it does not know."""
    names = list(keypoint_names or [])
    k = len(names) or num_keypoints
    if eye_indices is not None:
        idx = tuple(int(i) for i in eye_indices)
        if len(idx) != 2 or (k and not all(0 <= i < k for i in idx)) or idx[0] == idx[1]:
            raise ValueError(f"{where}: face_eye_indices must be two different landmark indices "
                             f"in 0..{(k or 1) - 1}, got {tuple(eye_indices)}")
        return idx
    if "left_eye" in names and "right_eye" in names:
        return names.index("left_eye"), names.index("right_eye")
    if k in EYE_INDICES_BY_COUNT:
        return EYE_INDICES_BY_COUNT[k]
    raise ValueError(
        f"{where}: no inter-ocular normaliser for a {k}-point landmark layout (known: names left_eye/right_eye, "
        f"or {sorted(EYE_INDICES_BY_COUNT)} points); set the dataset's metadata face_eye_indices=(i, j)"
    )


def box_iou_np(a, b):
    """IoU of xyxy boxes ``[N,4]`` × ``[M,4]`` → ``[N,M]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_a = np.prod(np.clip(a[:, 2:] - a[:, :2], 0, None), axis=1)
    area_b = np.prod(np.clip(b[:, 2:] - b[:, :2], 0, None), axis=1)
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-12)


def match_detections(det_boxes, det_scores, gt_boxes, gt_ignore, iou_thresh):
    """Greedy matching of one image's detections (by descending score) to its faces.

    Returns ``det_state`` ``[N]`` (1 true positive, 0 false positive, -1 ignored: matched an ignore face) and
    ``det_gt`` ``[N]`` (the matched face index or -1), both in the input order.
    """
    n = len(det_boxes)
    state = np.zeros(n, np.int64)
    det_gt = np.full(n, -1, np.int64)
    if n == 0 or len(gt_boxes) == 0:
        return state, det_gt
    iou = box_iou_np(det_boxes, gt_boxes)
    taken = np.zeros(len(gt_boxes), bool)
    for d in np.argsort(-det_scores, kind="stable"):
        # prefer an unmatched regular face; fall back to an ignore face (which may absorb many detections)
        cand = np.where(~gt_ignore & ~taken & (iou[d] >= iou_thresh))[0]
        if len(cand):
            g = cand[np.argmax(iou[d, cand])]
            taken[g] = True
            state[d], det_gt[d] = 1, g
            continue
        cand = np.where(gt_ignore & (iou[d] >= iou_thresh))[0]
        if len(cand):
            state[d], det_gt[d] = -1, cand[np.argmax(iou[d, cand])]
    return state, det_gt


def face_ap(scores, states, num_gt):
    """COCO-style 101-point interpolated AP from all detections' ``scores`` and ``states`` (1 TP, 0 FP,
    -1 ignored) against ``num_gt`` regular faces; NaN when there is no face."""
    if num_gt == 0:
        return float("nan")
    keep = states >= 0
    scores, states = scores[keep], states[keep]
    order = np.argsort(-scores, kind="stable")
    tp = np.cumsum(states[order] == 1)
    fp = np.cumsum(states[order] == 0)
    recall = tp / num_gt
    precision = tp / np.maximum(tp + fp, 1e-12)
    # precision envelope (non-increasing from the right)
    precision = np.maximum.accumulate(precision[::-1])[::-1] if len(precision) else precision
    ap = 0.0
    for r in np.linspace(0, 1, 101):
        i = np.searchsorted(recall, r, side="left")
        ap += precision[i] if i < len(precision) else 0.0
    return ap / 101


class FaceEvaluator(DatasetEvaluator):
    """Box AP (AP, AP50, AP75, AP50 per size subset) and landmark NME for a face dataset (see module doc).

    Ground truth comes from ``DatasetCatalog.get(dataset_name)`` (landmarks in the face loaders' convention,
    ``segx.data.datasets.faces``: the file's own coordinates, as the model is trained on them); predictions
    from ``instances`` (``pred_boxes``, ``scores``, ``pred_keypoints``).

    Args:
        wider_gt_dir: folder of the official WIDER FACE ``.mat`` files (default: metadata
            ``wider_face_gt_dir``); adds the official ``WIDER_easy/medium/hard`` AP.
        wider_box_rounding: how model boxes become the official x, y, w, h ("retinaface": truncated to
            integers as RetinaFace's ``test_widerface.py`` writes them; "none").
    """

    def __init__(self, dataset_name, output_dir=None, iou_thresholds=None, size_split=None, distributed=True,
                 wider_gt_dir=None, wider_box_rounding="retinaface"):
        self._dataset_name = dataset_name
        self._output_dir = output_dir
        self._iou_thresholds = (
            list(iou_thresholds) if iou_thresholds is not None else [float(t) for t in np.linspace(0.5, 0.95, 10)]
        )
        meta = MetadataCatalog.get(dataset_name)
        self._size_split = dict(size_split if size_split is not None else meta.get("face_size_split", None) or {})
        self._distributed = distributed
        self._predictions = []
        self._wider_gt_dir = wider_gt_dir if wider_gt_dir is not None else meta.get("wider_face_gt_dir", None)
        self._wider_box_rounding = wider_box_rounding
        self._keypoint_names = meta.get("keypoint_names", None)
        self._eye_indices_meta = meta.get("face_eye_indices", None)
        self._eye_indices = None
        if self._keypoint_names or self._eye_indices_meta is not None:  # refuse an unknown layout up front
            self._eye_indices = inter_ocular_indices(
                self._keypoint_names, eye_indices=self._eye_indices_meta, where=f"FaceEvaluator({dataset_name})")

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            inst = out["instances"].to("cpu")
            pred = {
                "image_id": inp["image_id"],
                "boxes": inst.pred_boxes.tensor.numpy().astype(np.float64),
                "scores": inst.scores.numpy().astype(np.float64),
            }
            if inst.has("pred_keypoints"):
                pred["keypoints"] = inst.pred_keypoints[:, :, :2].numpy().astype(np.float64)
            self._predictions.append(pred)

    def _ground_truth(self):
        gts = {}
        self._file_names = {}
        for rec in DatasetCatalog.get(self._dataset_name):
            self._file_names[rec["image_id"]] = rec.get("file_name", "")
            boxes, crowd, kpts, has = [], [], [], []
            for ann in rec.get("annotations", []):
                boxes.append(BoxMode.convert(list(ann["bbox"]), ann["bbox_mode"], BoxMode.XYXY_ABS))
                crowd.append(bool(ann.get("iscrowd", 0)))
                kp = np.asarray(ann.get("keypoints") or [], np.float64).reshape(-1, 3)
                kpts.append(kp)
                has.append(len(kp) > 0 and bool((kp[:, 2] > 0).all()))
            gts[rec["image_id"]] = {
                "boxes": np.asarray(boxes, np.float64).reshape(-1, 4),
                "crowd": np.asarray(crowd, bool),
                "keypoints": kpts,
                "has_landmarks": np.asarray(has, bool),
            }
        return gts

    def evaluate(self):
        predictions = self._predictions
        if self._distributed:
            comm.synchronize()
            predictions = list(itertools.chain(*comm.gather(predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        if not predictions:
            logger.warning("[FaceEvaluator] no predictions were received")
            return {}
        gts = self._ground_truth()
        missing = [p["image_id"] for p in predictions if p["image_id"] not in gts]
        if missing:
            raise ValueError(f"FaceEvaluator({self._dataset_name}): predictions for unknown image ids {missing[:5]}")
        preds = {p["image_id"]: p for p in predictions}
        results = OrderedDict()
        aps = [self._ap(preds, gts, t, min_height=0) for t in self._iou_thresholds]
        results["AP"] = 100 * float(np.nanmean(aps))
        for t, ap in zip(self._iou_thresholds, aps):
            if abs(t - 0.5) < 1e-6:
                results["AP50"] = 100 * ap
            if abs(t - 0.75) < 1e-6:
                results["AP75"] = 100 * ap
        for name, min_h in self._size_split.items():
            results[f"AP50_{name}"] = 100 * self._ap(preds, gts, 0.5, min_height=float(min_h))
        results.update(self._nme(preds, gts))
        curves = None
        if self._wider_gt_dir:
            official, curves = self._wider_official(preds)
            results.update(official)
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "face_results.json"), "w") as f:
                json.dump(results, f, indent=1)
            if curves:
                with open(os.path.join(self._output_dir, "wider_pr_curves.json"), "w") as f:
                    json.dump({s: {"precision": p.tolist(), "recall": r.tolist()} for s, (p, r) in curves.items()}, f)
        return {"face": results}

    def _wider_official(self, preds):
        """``WIDER_<setting>`` AP (percent) with the official protocol; images are matched to the ground truth
        by ``<event folder>/<image name>`` of their ``file_name``."""
        from segx.evaluation.wider_face import WIDER_SETTINGS, load_wider_ground_truth, wider_face_eval, xyxy_to_wider

        gt = load_wider_ground_truth(self._wider_gt_dir)
        official = {}
        for image_id, p in preds.items():
            path = self._file_names.get(image_id, "")
            key = (os.path.basename(os.path.dirname(path)), os.path.splitext(os.path.basename(path))[0])
            official[key] = xyxy_to_wider(p["boxes"], p["scores"], self._wider_box_rounding)
        aps, curves = wider_face_eval(official, gt)
        return OrderedDict((f"WIDER_{s}", 100 * aps[s]) for s in WIDER_SETTINGS), curves

    def _ap(self, preds, gts, iou_thresh, min_height):
        scores, states, num_gt = [], [], 0
        for image_id, p in preds.items():
            gt = gts[image_id]
            heights = gt["boxes"][:, 3] - gt["boxes"][:, 1]
            ignore = gt["crowd"] | (heights < min_height)
            num_gt += int((~ignore).sum())
            state, _ = match_detections(p["boxes"], p["scores"], gt["boxes"], ignore, iou_thresh)
            scores.append(p["scores"])
            states.append(state)
        if not scores:
            return float("nan")
        return face_ap(np.concatenate(scores), np.concatenate(states), num_gt)

    def _nme(self, preds, gts):
        errs_box, errs_io, num_ldm_faces = [], [], 0
        eyes = self._eye_indices
        if eyes is None:  # no names in the metadata: the layout from the ground truth's landmark count
            counts = {len(k) for g in gts.values() for k, has in zip(g["keypoints"], g["has_landmarks"]) if has}
            if counts:
                eyes = inter_ocular_indices(num_keypoints=max(counts), where=f"FaceEvaluator({self._dataset_name})")
        for image_id, p in preds.items():
            gt = gts[image_id]
            num_ldm_faces += int((gt["has_landmarks"] & ~gt["crowd"]).sum())
            if "keypoints" not in p:
                continue
            state, det_gt = match_detections(p["boxes"], p["scores"], gt["boxes"], gt["crowd"], 0.5)
            for d in np.where(state == 1)[0]:
                g = det_gt[d]
                if not gt["has_landmarks"][g]:
                    continue
                true = gt["keypoints"][g][:, :2]
                if true.shape != p["keypoints"][d].shape:
                    raise ValueError(
                        f"FaceEvaluator({self._dataset_name}): image {image_id} has {len(true)} landmarks per face, "
                        f"the model predicts {len(p['keypoints'][d])}"
                    )
                err = np.linalg.norm(p["keypoints"][d] - true, axis=1).mean()
                w, h = gt["boxes"][g, 2:] - gt["boxes"][g, :2]
                errs_box.append(err / max(np.sqrt(max(w, 0) * max(h, 0)), 1e-6))
                errs_io.append(err / max(np.linalg.norm(true[eyes[0]] - true[eyes[1]]), 1e-6))
        out = OrderedDict()
        out["NME"] = 100 * float(np.mean(errs_box)) if errs_box else float("nan")
        out["NME_io"] = 100 * float(np.mean(errs_io)) if errs_io else float("nan")
        # share of the faces with landmarks that were detected at IoU 0.5 (the faces NME is computed on)
        out["NME_coverage"] = 100 * len(errs_box) / num_ldm_faces if num_ldm_faces else float("nan")
        return out


@register_evaluator_type("face")
def _face(cfg, dataset_name, output_folder):
    return FaceEvaluator(dataset_name, output_dir=output_folder)
