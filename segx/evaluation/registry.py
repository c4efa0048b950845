"""``evaluator_type`` (dataset metadata) → builder of a detectron2 ``DatasetEvaluator``."""
from detectron2.evaluation import (
    CityscapesInstanceEvaluator,
    CityscapesSemSegEvaluator,
    COCOEvaluator,
    COCOPanopticEvaluator,
    SemSegEvaluator,
)

__all__ = ["EVALUATOR_TYPES", "register_evaluator_type", "build_evaluator_by_type"]

# name -> builder(cfg, dataset_name, output_folder) -> DatasetEvaluator | list[DatasetEvaluator]
EVALUATOR_TYPES = {}


def register_evaluator_type(name, builder=None):
    """Registers ``builder(cfg, dataset_name, output_folder)`` for datasets whose ``evaluator_type`` is
    ``name``. Usable as a decorator. Re-registering a name replaces the builder."""
    if builder is None:
        return lambda fn: register_evaluator_type(name, fn)
    if not callable(builder):
        raise TypeError(f"register_evaluator_type({name!r}): builder must be callable, got {type(builder).__name__}")
    EVALUATOR_TYPES[name] = builder
    return builder


def build_evaluator_by_type(name, cfg, dataset_name, output_folder):
    """The evaluator(s) registered under ``name`` as a list."""
    if name not in EVALUATOR_TYPES:
        raise ValueError(
            f"No evaluator for dataset '{dataset_name}': its evaluator_type is {name!r}; set it when registering "
            f"the dataset or set cfg.SEGX.EVALUATOR to one of {sorted(EVALUATOR_TYPES)}."
        )
    out = EVALUATOR_TYPES[name](cfg, dataset_name, output_folder)
    return list(out) if isinstance(out, (list, tuple)) else [out]


@register_evaluator_type("coco")
def _coco(cfg, dataset_name, output_folder):
    # COCOEvaluator that ranks segm results by an Instances field `mask_scores` when a model outputs one
    # (YOLACT++'s official mask re-scoring); identical to COCOEvaluator otherwise
    from segx.evaluation.coco import SegxCOCOEvaluator

    return SegxCOCOEvaluator(dataset_name, output_dir=output_folder)


@register_evaluator_type("coco_panoptic_seg")
def _coco_panoptic(cfg, dataset_name, output_folder):
    from detectron2.data import MetadataCatalog

    from segx.evaluation.coco import SegxCOCOEvaluator  # re-numbers annotation ids from 0 (coco_ids.py)

    evaluators = [COCOPanopticEvaluator(dataset_name, output_folder)]
    if cfg.MODEL.MASK_ON and MetadataCatalog.get(dataset_name).get("json_file", None):
        evaluators.append(SegxCOCOEvaluator(dataset_name, output_dir=output_folder))
    return evaluators


@register_evaluator_type("sem_seg")
def _sem_seg(cfg, dataset_name, output_folder):
    return SemSegEvaluator(dataset_name, distributed=True, output_dir=output_folder)


# detectron2 registers the Cityscapes sets (cityscapes_fine_{instance_seg,sem_seg,panoptic}_*) with these types.
@register_evaluator_type("cityscapes_panoptic_seg")
def _cityscapes_panoptic(cfg, dataset_name, output_folder):
    # Cityscapes panoptic ground truth is stored in COCO-panoptic form (cityscapesscripts' createPanopticImgs),
    # so PQ comes from the COCO-panoptic evaluator, as in detectron2's Panoptic-DeepLab project.
    return COCOPanopticEvaluator(dataset_name, output_folder)


@register_evaluator_type("cityscapes_instance")
def _cityscapes_instance(cfg, dataset_name, output_folder):
    return CityscapesInstanceEvaluator(dataset_name)


@register_evaluator_type("cityscapes_sem_seg")
def _cityscapes_sem_seg(cfg, dataset_name, output_folder):
    return CityscapesSemSegEvaluator(dataset_name)


@register_evaluator_type("video_panoptic_seg")  # Cityscapes-VPS format sets: VPQ, per-frame PQ, ID switches
def _video_panoptic(cfg, dataset_name, output_folder):
    from segx.evaluation.vpq import build_vpq_evaluator

    return build_vpq_evaluator(cfg, dataset_name, output_folder)
