"""detectron2's ``COCOEvaluator`` with separate box and mask scores.

detectron2's ``instances_to_coco_json`` writes one ``score`` per detection and COCO evaluates both ``bbox`` and
``segm`` with it. Models whose mask confidence differs from their box confidence (YOLACT++'s mask re-scoring,
dbolya/yolact with ``rescore_bbox`` off) put the mask one in an ``Instances`` field ``mask_scores``; this
evaluator then ranks the ``segm`` results by ``mask_scores`` and the ``bbox`` (and keypoint) results by
``scores``, as the official evaluation does. Without ``mask_scores`` it is ``COCOEvaluator`` unchanged.

Registered for ``evaluator_type`` ``"coco"`` in ``segx/evaluation/registry.py``.
"""
import copy
import itertools
import json
import os

from detectron2.evaluation import COCOEvaluator
from detectron2.evaluation.coco_evaluation import instances_to_coco_json
from detectron2.utils.file_io import PathManager

__all__ = ["SegxCOCOEvaluator", "MASK_SCORE_KEY"]

MASK_SCORE_KEY = "mask_score"  # per-result key, next to "score", in the stored predictions and the results file


class SegxCOCOEvaluator(COCOEvaluator):
    """``COCOEvaluator`` that uses ``instances.mask_scores`` (when present) as the score of the ``segm`` results.

    The saved ``coco_instances_results.json`` holds, per detection, ``score`` (box) and ``mask_score`` (mask).
    Ground truth with annotation ids from 0 is re-numbered on a copy (``segx.evaluation.coco_ids``).
    """

    def __init__(self, dataset_name, *args, **kwargs):
        super().__init__(dataset_name, *args, **kwargs)
        from segx.evaluation.coco_ids import fix_annotation_ids

        fix_annotation_ids(self)  # pycocotools cannot match an annotation whose id is 0

    def process(self, inputs, outputs):
        for input, output in zip(inputs, outputs):
            prediction = {"image_id": input["image_id"]}
            if "instances" in output:
                instances = output["instances"].to(self._cpu_device)
                results = instances_to_coco_json(instances, input["image_id"])
                if instances.has("mask_scores") and instances.has("pred_masks"):
                    for r, s in zip(results, instances.mask_scores.tolist()):
                        r[MASK_SCORE_KEY] = s
                prediction["instances"] = results
            if "proposals" in output:
                prediction["proposals"] = output["proposals"].to(self._cpu_device)
            if len(prediction) > 1:
                self._predictions.append(prediction)

    def _eval_predictions(self, predictions, img_ids=None):
        results = list(itertools.chain(*[x["instances"] for x in predictions]))
        if not any(MASK_SCORE_KEY in r for r in results):
            return super()._eval_predictions(predictions, img_ids=img_ids)
        tasks = self._tasks or self._tasks_from_predictions(results)
        box_tasks = tuple(t for t in tasks if t != "segm")
        saved_tasks, output_dir = self._tasks, self._output_dir
        box_predictions = _with_scores(predictions, mask=False)
        try:
            self._output_dir = None  # the results file is written below, with both scores
            if box_tasks:
                self._tasks = box_tasks
                super()._eval_predictions(box_predictions, img_ids=img_ids)
            if "segm" in tasks:
                self._tasks = ("segm",)
                super()._eval_predictions(_with_scores(predictions, mask=True), img_ids=img_ids)
        finally:
            self._tasks, self._output_dir = saved_tasks, output_dir
        if self._output_dir:
            # box_predictions' category ids were mapped back to the dataset's by the evaluation above (which also
            # added COCO's bookkeeping keys to them: only the prediction's own keys are written)
            merged = []
            for p, b in zip(predictions, box_predictions):
                for r, rb in zip(p["instances"], b["instances"]):
                    merged.append({k: (r[k] if k == MASK_SCORE_KEY else rb[k]) for k in r})
            path = os.path.join(self._output_dir, "coco_instances_results.json")
            self._logger.info(f"Saving results to {path}")
            with PathManager.open(path, "w") as f:
                f.write(json.dumps(merged))


def _with_scores(predictions, mask):
    """A copy of ``predictions`` whose results score by box (``mask=False``) or by mask (``mask=True``: ``score``
    ← ``mask_score`` where present), without the ``mask_score`` key."""
    out = copy.deepcopy(predictions)
    for p in out:
        for r in p.get("instances", []):
            mask_score = r.pop(MASK_SCORE_KEY, None)
            if mask and mask_score is not None:
                r["score"] = mask_score
    return out
