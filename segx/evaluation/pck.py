"""PCK (percentage of correct keypoints) as a detectron2 ``DatasetEvaluator``; PCKh when head boxes are given.

A ground-truth landmark with visibility > 0 is correct when the predicted point lies within ``α × norm`` of
it (Euclidean, image pixels). ``norm``: the longer side of the person box for PCK@α; for PCKh@α (MPII's
protocol, Andriluka et al. 2014) 0.6 × the diagonal of the annotated head box (``head_box`` in the dataset
dict, x0, y0, x1, y1). Predictions are matched to ground-truth people by the IoU of their boxes (greedy,
highest first); a person left without a prediction counts all its landmarks as wrong.

Results are in percent, as detectron2 reports AP: ``{"keypoints_pck": {"PCK@0.2": ..., "PCKh@0.5": ...,
"PCK@0.2/<joint name>": ...}}``.
"""
import copy
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

__all__ = ["PCKEvaluator", "pck_correct", "match_people", "HEAD_SIZE_FACTOR"]

logger = logging.getLogger(__name__)

HEAD_SIZE_FACTOR = 0.6  # MPII: head size = 0.6 × head box diagonal


def pck_correct(pred, gt, visible, norm, alpha):
    """Per-landmark correctness.

    Args:
        pred, gt: ``[N,K,2]`` points. visible: ``[N,K]`` bool (which landmarks count). norm: ``[N]``.
        alpha: threshold as a fraction of ``norm``.
    Returns: ``[N,K]`` bool (False where not visible).
    """
    pred, gt = np.asarray(pred, np.float64), np.asarray(gt, np.float64)
    dist = np.linalg.norm(pred - gt, axis=-1)
    return (dist <= alpha * np.asarray(norm, np.float64)[:, None]) & np.asarray(visible, bool)


def _iou(a, b):
    """IoU matrix of XYXY boxes ``[N,4]`` × ``[M,4]``."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(rb - lt, 0, None).prod(-1)
    area = lambda x: np.clip(x[:, 2:] - x[:, :2], 0, None).prod(-1)  # noqa: E731
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def match_people(gt_boxes, pred_boxes):
    """Greedy highest-IoU matching; returns for each ground-truth box the index of its prediction or -1."""
    match = np.full(len(gt_boxes), -1, dtype=np.int64)
    if len(gt_boxes) == 0 or len(pred_boxes) == 0:
        return match
    iou = _iou(np.asarray(gt_boxes, np.float64), np.asarray(pred_boxes, np.float64))
    for _ in range(min(iou.shape)):
        g, p = np.unravel_index(np.argmax(iou), iou.shape)
        if iou[g, p] <= 0:
            break
        match[g] = p
        iou[g, :] = -1
        iou[:, p] = -1
    return match


class PCKEvaluator(DatasetEvaluator):
    """PCK@α for each ``alphas`` (person-box normalised) and PCKh@``head_alpha`` when the ground truth has
    ``head_box``. Model outputs: ``instances`` with ``pred_boxes`` and ``pred_keypoints`` ``[N,K,3]``."""

    def __init__(self, dataset_name, alphas=(0.05, 0.1, 0.2), head_alpha=0.5, distributed=True, output_dir=None):
        self._dataset_name = dataset_name
        self._alphas = tuple(alphas)
        self._head_alpha = head_alpha
        self._distributed = distributed
        self._output_dir = output_dir
        self._names = MetadataCatalog.get(dataset_name).get("keypoint_names", None)
        self._predictions = []

    def reset(self):
        self._predictions = []

    def process(self, inputs, outputs):
        for inp, out in zip(inputs, outputs):
            if "instances" not in out:
                raise ValueError(f"PCKEvaluator({self._dataset_name}): model output has no 'instances'")
            inst = out["instances"].to("cpu")
            if not inst.has("pred_keypoints"):
                raise ValueError(f"PCKEvaluator({self._dataset_name}): output instances have no pred_keypoints")
            self._predictions.append({
                "image_id": inp["image_id"],
                "boxes": inst.pred_boxes.tensor.numpy().astype(np.float64),
                "keypoints": inst.pred_keypoints.numpy().astype(np.float64),
            })

    def _ground_truth(self):
        gt = {}
        for d in DatasetCatalog.get(self._dataset_name):
            people = []
            for a in d.get("annotations", []):
                if a.get("iscrowd", 0) or "keypoints" not in a:
                    continue
                box = BoxMode.convert(list(a["bbox"]), a["bbox_mode"], BoxMode.XYXY_ABS)
                people.append({"box": np.array(box, np.float64), "keypoints": np.array(a["keypoints"], np.float64).reshape(-1, 3),
                               "head_box": None if a.get("head_box") is None else np.array(a["head_box"], np.float64)})
            gt[d["image_id"]] = people
        return gt

    def evaluate(self):
        if self._distributed:
            comm.synchronize()
            preds = list(itertools.chain(*comm.gather(self._predictions, dst=0)))
            if not comm.is_main_process():
                return {}
        else:
            preds = self._predictions
        if not preds:
            logger.warning("PCKEvaluator(%s): no predictions", self._dataset_name)
            return {}
        return self.compute(preds, self._ground_truth())

    def compute(self, preds, gt):
        """PCK figures from prediction records (``image_id``, ``boxes`` ``[N,4]``, ``keypoints`` ``[N,K,3]``) and
        ground truth ``{image_id: [{"box", "keypoints" [K,3], "head_box"}]}``; images without a prediction
        record are skipped (not evaluated)."""
        correct = {a: [] for a in self._alphas}
        head_correct, visible_all, head_visible = [], [], []
        unmatched = 0
        for p in preds:
            people = gt.get(p["image_id"])
            if people is None:
                raise KeyError(f"PCKEvaluator({self._dataset_name}): image_id {p['image_id']} is not in the dataset")
            if not people:
                continue
            match = match_people(np.stack([g["box"] for g in people]), p["boxes"])
            for g, m in zip(people, match):
                kps = g["keypoints"]
                vis = kps[:, 2] > 0
                if m < 0:
                    unmatched += 1
                    pred = np.full_like(kps[None, :, :2], np.inf)
                else:
                    pred = p["keypoints"][m][None, :, :2]
                    if pred.shape[1] != kps.shape[0]:
                        raise ValueError(f"PCKEvaluator({self._dataset_name}): model predicts {pred.shape[1]} keypoints, "
                                         f"image {p['image_id']} has {kps.shape[0]}")
                norm = np.array([max(g["box"][2] - g["box"][0], g["box"][3] - g["box"][1])])
                for a in self._alphas:
                    correct[a].append(pck_correct(pred, kps[None, :, :2], vis[None], norm, a)[0])
                visible_all.append(vis)
                if g["head_box"] is not None:
                    hb = g["head_box"]
                    head = np.array([HEAD_SIZE_FACTOR * np.hypot(hb[2] - hb[0], hb[3] - hb[1])])
                    head_correct.append(pck_correct(pred, kps[None, :, :2], vis[None], head, self._head_alpha)[0])
                    head_visible.append(vis)
        if unmatched:
            logger.info("PCKEvaluator(%s): %d people had no matching prediction (counted wrong)", self._dataset_name, unmatched)
        if not visible_all:
            return {}
        vis = np.stack(visible_all)
        res = OrderedDict()
        for a in self._alphas:
            c = np.stack(correct[a])
            res[f"PCK@{a:g}"] = 100.0 * c.sum() / max(vis.sum(), 1)
        if head_correct:
            c, v = np.stack(head_correct), np.stack(head_visible)
            res[f"PCKh@{self._head_alpha:g}"] = 100.0 * c.sum() / max(v.sum(), 1)
        a = max(self._alphas)
        c = np.stack(correct[a])
        names = self._names or [str(i) for i in range(vis.shape[1])]
        for j, name in enumerate(names[: vis.shape[1]]):
            if vis[:, j].any():
                res[f"PCK@{a:g}/{name}"] = 100.0 * c[:, j].sum() / vis[:, j].sum()
        res["num_people"] = float(len(visible_all))
        if self._output_dir:
            os.makedirs(self._output_dir, exist_ok=True)
            with open(os.path.join(self._output_dir, "pck.json"), "w") as f:
                json.dump(res, f, indent=1)
        return OrderedDict({"keypoints_pck": copy.deepcopy(res)})


@register_evaluator_type("pck")
def _pck(cfg, dataset_name, output_folder):
    return PCKEvaluator(dataset_name, output_dir=output_folder)
