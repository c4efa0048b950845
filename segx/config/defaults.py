"""segx's config nodes, added to a detectron2 config by ``add_segx_config`` (never edits detectron2's defaults)."""
from detectron2.config import CfgNode as CN

__all__ = ["add_segx_config"]


def add_segx_config(cfg):
    """Adds segx's keys to ``cfg`` in place (idempotent) and returns it.

    Architecture nodes (``cfg.MODEL.<ARCH>``) are added here as the architectures land.
    """
    if "SEGX" in cfg:
        return cfg
    cfg.SEGX = CN()
    # Evaluator to use for the test sets: "" picks it from each dataset's metadata ``evaluator_type``
    # ("coco", "coco_panoptic_seg", "sem_seg"); a comma-separated list forces those.
    cfg.SEGX.EVALUATOR = ""
    # Checkpoints are written to a temporary file and renamed, so a run killed mid-save leaves the previous
    # checkpoint intact and `--resume` continues from it.
    cfg.SEGX.ATOMIC_CHECKPOINTS = True
    # tools/demo.py and `make demo`: how many validation images to draw, and the score threshold for drawing.
    cfg.SEGX.VIS = CN()
    cfg.SEGX.VIS.NUM_IMAGES = 8
    cfg.SEGX.VIS.SCORE_THRESHOLD = 0.5
    return cfg
