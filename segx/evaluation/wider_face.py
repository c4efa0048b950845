"""The official WIDER FACE evaluation protocol (easy / medium / hard AP on the validation set).

What the official evaluation (the MATLAB ``wider_eval`` and its Python port used by RetinaFace's
``widerface_evaluate``) does, reimplemented here:

- **Ground truth** from the official files: ``wider_face_val.mat`` (``event_list``, ``file_list``,
  ``face_bbx_list``: every face as x, y, w, h) and ``wider_{easy,medium,hard}_val.mat`` (``gt_list``: per
  image, the 1-based indices of the faces that count in that setting). Every other face of the image,
  including those with zero width or height, is an *ignore* region. Read with ``segx.data.matfile``.
- **Scores** are normalised over all predictions of the set: ``(s - lo) / (hi - lo)`` with
  ``lo = min(1, min s)`` and ``hi = max(0, max s)``.
- **Per image**, detections in descending score order: each takes the face of highest overlap (over all faces
  of the image, taken or not). IoU uses ``x2 = x + w`` and the +1 pixel convention
  (``(x2 - x1 + 1) · (y2 - y1 + 1)``). At IoU ≥ 0.5: an ignore face makes the detection not a proposal
  (neither true nor false positive); a counted face is recalled (once). Any other detection, including a
  second one on a recalled face, is a proposal that recalls nothing. Images with no faces or no detections
  add nothing but their counted faces.
- **PR curve** at 1000 score thresholds ``1 - k/1000``, k = 1..1000: for each image, the detections down to
  the last one scoring ≥ the threshold; precision = recalled faces / proposals, recall = recalled faces /
  counted faces of the setting.
- **AP**: VOC's area under the precision envelope (sentinels at recall 0 and 1).

Predictions are ``{(event, image name): [N,5] x, y, w, h, score}``; ``xyxy_to_wider`` turns model boxes into
that form the way RetinaFace's ``test_widerface.py`` writes its result files (integer truncation), and
``read_wider_predictions`` reads such a folder of result files.
"""
import logging
import os
from dataclasses import dataclass, field

import numpy as np

from segx.data.matfile import load_mat

__all__ = [
    "WIDER_SETTINGS",
    "WIDER_GT_FILES",
    "WiderGroundTruth",
    "load_wider_ground_truth",
    "wider_image_eval",
    "wider_pr_curve",
    "wider_voc_ap",
    "wider_face_eval",
    "normalize_wider_scores",
    "xyxy_to_wider",
    "read_wider_predictions",
]

logger = logging.getLogger(__name__)

WIDER_SETTINGS = ("easy", "medium", "hard")
WIDER_GT_FILES = ("wider_face_val.mat",) + tuple(f"wider_{s}_val.mat" for s in WIDER_SETTINGS)
NUM_THRESHOLDS = 1000


@dataclass
class WiderGroundTruth:
    """Per image ``(event, name)``: ``boxes[key]`` ``[N,4]`` x, y, w, h and ``keep[setting][key]`` ``[N]`` bool
    (the faces counted in that setting; the others are ignore regions). ``keys`` in the files' order."""

    keys: list = field(default_factory=list)
    boxes: dict = field(default_factory=dict)
    keep: dict = field(default_factory=dict)


def _cell_list(mat, var, path):
    if var not in mat:
        raise ValueError(f"{path}: no variable {var!r} (has {sorted(mat)}); is this an official WIDER FACE file?")
    return [c for c in np.asarray(mat[var], dtype=object).flatten(order="F")]


def load_wider_ground_truth(gt_dir):
    """Reads the four official files in ``gt_dir`` (``WIDER_GT_FILES``) into a ``WiderGroundTruth``."""
    gt_dir = os.fspath(gt_dir)
    missing = [f for f in WIDER_GT_FILES if not os.path.isfile(os.path.join(gt_dir, f))]
    if missing:
        raise FileNotFoundError(f"WIDER FACE ground truth folder {gt_dir}: missing {missing} "
                                f"(the official files are {list(WIDER_GT_FILES)})")
    path = os.path.join(gt_dir, WIDER_GT_FILES[0])
    mat = load_mat(path, ("event_list", "file_list", "face_bbx_list"))
    events = _cell_list(mat, "event_list", path)
    files = _cell_list(mat, "file_list", path)
    boxes = _cell_list(mat, "face_bbx_list", path)
    if not len(events) == len(files) == len(boxes):
        raise ValueError(f"{path}: event_list, file_list and face_bbx_list differ in length")
    gt = WiderGroundTruth()
    for event, names, event_boxes in zip(events, files, boxes):
        names, event_boxes = list(np.asarray(names, object).flatten(order="F")), list(
            np.asarray(event_boxes, object).flatten(order="F"))
        if len(names) != len(event_boxes):
            raise ValueError(f"{path}: event {event}: {len(names)} files but {len(event_boxes)} box lists")
        for name, b in zip(names, event_boxes):
            key = (str(event), str(name))
            gt.keys.append(key)
            gt.boxes[key] = np.asarray(b, np.float64).reshape(-1, 4)
    for setting in WIDER_SETTINGS:
        spath = os.path.join(gt_dir, f"wider_{setting}_val.mat")
        lists = _cell_list(load_mat(spath, ("gt_list",)), "gt_list", spath)
        flat = [idx for event in lists for idx in np.asarray(event, object).flatten(order="F")]
        if len(flat) != len(gt.keys):
            raise ValueError(f"{spath}: gt_list has {len(flat)} images, {path} has {len(gt.keys)}")
        gt.keep[setting] = {}
        for key, idx in zip(gt.keys, flat):
            idx = np.asarray(idx, np.int64).reshape(-1)
            n = len(gt.boxes[key])
            if len(idx) and (idx.min() < 1 or idx.max() > n):
                raise ValueError(f"{spath}: image {key[0]}/{key[1]}: face index out of 1..{n}: {idx.tolist()}")
            mask = np.zeros(n, bool)
            mask[idx - 1] = True
            gt.keep[setting][key] = mask
    logger.info("WIDER FACE ground truth %s: %d images, %d faces (%s)", gt_dir, len(gt.keys),
                sum(len(b) for b in gt.boxes.values()),
                ", ".join(f"{s} {sum(int(m.sum()) for m in gt.keep[s].values())}" for s in WIDER_SETTINGS))
    return gt


def _overlaps_plus_one(a, b):
    """IoU of x1, y1, x2, y2 boxes ``[N,4]`` × ``[M,4]`` with inclusive pixel ends (+1 on widths/heights)."""
    iw = np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]) + 1
    ih = np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]) + 1
    inter = np.where((iw > 0) & (ih > 0), iw * ih, 0.0)
    area_a = (a[:, 2] - a[:, 0] + 1) * (a[:, 3] - a[:, 1] + 1)
    area_b = (b[:, 2] - b[:, 0] + 1) * (b[:, 3] - b[:, 1] + 1)
    union = area_a[:, None] + area_b[None, :] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(inter > 0, inter / union, 0.0)


def wider_image_eval(pred, gt_boxes, keep, iou_thresh=0.5):
    """One image: ``pred`` ``[N,5]`` (x, y, w, h, score) in descending score order, ``gt_boxes`` ``[M,4]`` x, y,
    w, h, ``keep`` ``[M]`` bool. Returns ``recalled`` ``[N]`` (counted faces recalled after each detection) and
    ``proposal`` ``[N]`` bool (False: the detection fell on an ignore face)."""
    pred = np.asarray(pred, np.float64).reshape(-1, 5)
    gt = np.asarray(gt_boxes, np.float64).reshape(-1, 4)
    to_xyxy = lambda b: np.concatenate([b[:, :2], b[:, :2] + b[:, 2:4]], axis=1)  # noqa: E731
    overlaps = _overlaps_plus_one(to_xyxy(pred[:, :4]), to_xyxy(gt))
    state = np.zeros(len(gt), np.int64)  # 1 recalled, -1 ignore face hit
    recalled = np.zeros(len(pred), np.int64)
    proposal = np.ones(len(pred), bool)
    for i in range(len(pred)):
        best = int(np.argmax(overlaps[i]))
        if overlaps[i, best] >= iou_thresh:
            if not keep[best]:
                state[best] = -1
                proposal[i] = False
            elif state[best] == 0:
                state[best] = 1
        recalled[i] = int((state == 1).sum())
    return recalled, proposal


def _image_pr_counts(scores, recalled, proposal, thresholds):
    """``[T,2]``: per threshold, (proposals, recalled faces) among the detections down to the last one whose
    score is ≥ the threshold (scores in descending order)."""
    last = np.searchsorted(-scores, -thresholds, side="right") - 1  # last index with score >= t
    out = np.zeros((len(thresholds), 2))
    has = last >= 0
    cum_prop = np.cumsum(proposal)
    out[has, 0] = cum_prop[last[has]]
    out[has, 1] = recalled[last[has]]
    return out


def normalize_wider_scores(predictions):
    """Scores min-max normalised over all images (the official rule: the range includes 0 and 1); returns a
    new ``{key: [N,5]}``."""
    all_scores = [p[:, 4] for p in predictions.values() if len(p)]
    if not all_scores:
        return {k: np.asarray(p, np.float64).reshape(-1, 5) for k, p in predictions.items()}
    lo = min(1.0, float(min(s.min() for s in all_scores)))
    hi = max(0.0, float(max(s.max() for s in all_scores)))
    out = {}
    for k, p in predictions.items():
        p = np.array(p, np.float64).reshape(-1, 5)
        p[:, 4] = (p[:, 4] - lo) / (hi - lo)
        out[k] = p
    return out


def wider_pr_curve(predictions, gt, setting, iou_thresh=0.5, num_thresholds=NUM_THRESHOLDS):
    """Precision and recall ``[T]`` of one setting at thresholds ``1 - k/T`` (k = 1..T), from predictions whose
    scores are already normalised. Images of ``gt`` without predictions have no detections."""
    thresholds = 1 - (np.arange(num_thresholds) + 1) / num_thresholds
    counts = np.zeros((num_thresholds, 2))
    num_faces = 0
    for key in gt.keys:
        boxes, keep = gt.boxes[key], gt.keep[setting][key]
        num_faces += int(keep.sum())
        pred = predictions.get(key)
        if pred is None or len(pred) == 0 or len(boxes) == 0:
            continue
        pred = np.asarray(pred, np.float64)[np.argsort(-np.asarray(pred)[:, 4], kind="stable")]
        recalled, proposal = wider_image_eval(pred, boxes, keep, iou_thresh)
        counts += _image_pr_counts(pred[:, 4], recalled, proposal, thresholds)
    with np.errstate(divide="ignore", invalid="ignore"):
        # no proposal yet (top thresholds): nothing is recalled either; these points never enter the AP
        precision = np.where(counts[:, 0] > 0, counts[:, 1] / np.maximum(counts[:, 0], 1), 0.0)
        recall = counts[:, 1] / num_faces if num_faces else np.full(num_thresholds, np.nan)
    return precision, recall


def wider_voc_ap(recall, precision):
    """VOC's area under the precision envelope, with sentinels (0, 0) and (1, 0)."""
    mrec = np.concatenate([[0.0], recall, [1.0]])
    mpre = np.concatenate([[0.0], precision, [0.0]])
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    steps = np.where(mrec[1:] != mrec[:-1])[0]
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def wider_face_eval(predictions, gt, iou_thresh=0.5, settings=WIDER_SETTINGS, normalize_scores=True):
    """Official AP per setting (fractions in [0, 1]) and the PR curves.

    Args:
        predictions: ``{(event, name): [N,5]}`` x, y, w, h, score.
        gt: a ``WiderGroundTruth`` (``load_wider_ground_truth``).
    Returns: ``({setting: AP}, {setting: (precision [T], recall [T])})``.
    """
    unknown = [k for k in predictions if k not in gt.boxes]
    if unknown:
        logger.warning("WIDER FACE evaluation: %d predicted images are not in the ground truth (e.g. %s/%s); "
                       "they are left out", len(unknown), *unknown[0])
    missing = sum(1 for k in gt.keys if k not in predictions)
    if missing:
        logger.warning("WIDER FACE evaluation: %d of %d ground-truth images have no predictions; they count "
                       "as images without detections", missing, len(gt.keys))
    preds = normalize_wider_scores(predictions) if normalize_scores else predictions
    aps, curves = {}, {}
    for s in settings:
        precision, recall = wider_pr_curve(preds, gt, s, iou_thresh)
        curves[s] = (precision, recall)
        aps[s] = wider_voc_ap(recall, precision) if not np.isnan(recall).any() else float("nan")
    return aps, curves


def xyxy_to_wider(boxes, scores, rounding="retinaface"):
    """Model boxes ``[N,4]`` x1, y1, x2, y2 and scores → ``[N,5]`` x, y, w, h, score.

    ``rounding="retinaface"``: x = int(x1), w = int(x2) - int(x1) (truncation), as RetinaFace's
    ``test_widerface.py`` writes its result files; ``"none"``: w = x2 - x1 unrounded.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    if rounding == "retinaface":
        boxes = np.trunc(boxes)
    elif rounding != "none":
        raise ValueError(f"xyxy_to_wider: rounding must be 'retinaface' or 'none', got {rounding!r}")
    out = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2], np.asarray(scores, np.float64)[:, None]], 1)
    return out


def read_wider_predictions(pred_dir):
    """Reads a folder of official result files (``<event>/<name>.txt``: the image name, the number of boxes,
    then ``x y w h score`` lines) into ``{(event, name): [N,5]}``. Errors name the file and line."""
    pred_dir = os.fspath(pred_dir)
    out = {}
    for event in sorted(os.listdir(pred_dir)):
        folder = os.path.join(pred_dir, event)
        if not os.path.isdir(folder):
            continue
        for fname in sorted(os.listdir(folder)):
            if not fname.endswith(".txt"):
                continue
            path = os.path.join(folder, fname)
            with open(path) as f:
                lines = f.read().splitlines()
            if len(lines) < 2:
                raise ValueError(f"{path}: needs the image name and the box count on its first two lines")
            rows = []
            for lineno, line in enumerate(lines[2:], 3):
                if not line.strip():
                    continue
                vals = line.split()
                try:
                    rows.append([float(v) for v in vals[:5]])
                except ValueError:
                    raise ValueError(f"{path}: line {lineno}: not 'x y w h score': {line[:80]!r}") from None
                if len(vals) < 5:
                    raise ValueError(f"{path}: line {lineno}: not 'x y w h score': {line[:80]!r}")
            name = os.path.splitext(os.path.basename(lines[0].strip()))[0]
            out[(event, name)] = np.asarray(rows, np.float64).reshape(-1, 5)
    return out
