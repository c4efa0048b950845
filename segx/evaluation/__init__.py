"""Evaluators beyond detectron2's, and the table that maps a dataset's ``evaluator_type`` to one.

``tools/train_net.py`` builds the evaluator of a test set from its metadata ``evaluator_type`` (or from
``cfg.SEGX.EVALUATOR``) by looking it up here; each architecture's evaluator registers itself with
``register_evaluator_type`` when its module is imported.
"""
from segx.evaluation.registry import EVALUATOR_TYPES, build_evaluator_by_type, register_evaluator_type

__all__ = ["EVALUATOR_TYPES", "build_evaluator_by_type", "register_evaluator_type"]
from segx.evaluation import pck  # noqa: F401,E402  (registers evaluator_type "pck": PCKEvaluator)
from segx.evaluation import face  # noqa: F401,E402  (registers evaluator_type "face": FaceEvaluator)
from segx.evaluation.coco import SegxCOCOEvaluator  # noqa: F401,E402  (evaluator_type "coco"; mask_scores)
from segx.evaluation import video  # noqa: F401,E402  (registers evaluator_type "coco_video": COCO AP per frame + frame times)
from segx.evaluation import densepose  # noqa: F401,E402  (registers evaluator_type "densepose": box AP + AP over GPS)
