"""segx's config nodes, added to a detectron2 config by ``add_segx_config`` (never edits detectron2's defaults)."""
from detectron2.config import CfgNode as CN

from segx.config.backbone import add_backbone_config
from segx.config.yolact import add_yolact_config
from segx.config.yolact_edge import add_yolact_edge_config
from segx.config.cornernet import add_cornernet_config
from segx.config.centernet import add_centernet_config
from segx.config.hourglass import add_hourglass_config
from segx.config.retinaface import add_retinaface_config
from segx.config.upsnet import add_upsnet_config
from segx.config.vpsnet import add_vpsnet_config
from segx.config.densepose import add_densepose_config
from segx.config.renames import register_renamed_keys

__all__ = ["add_segx_config"]


def add_segx_config(cfg):
    """Adds segx's keys to ``cfg`` in place (idempotent) and returns it.

    Each architecture keeps its keys (``cfg.MODEL.<ARCH>``) in its own ``segx/config/<arch>.py``.
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
    # Data loading (segx/data/mappers/base.py, for every mapper).
    cfg.SEGX.DATA = CN()
    # A training image that cannot be read (missing, empty, truncated or corrupt file): "raise" stops with an error
    # naming the file and the image id; "skip" leaves it out with a warning counting the skipped images. Test
    # loaders and export always raise.
    cfg.SEGX.DATA.BAD_IMAGES = "raise"
    # The dataset mapper (segx/data/mappers): "" = the one registered under MODEL.META_ARCHITECTURE (detectron2's
    # DatasetMapper when none is); a name in MAPPER_REGISTRY picks that one (e.g. "DensePose" for GeneralizedRCNN).
    cfg.SEGX.DATA.MAPPER = ""
    # Optimizer of tools/train_net.py (segx/engine/train_net.py): "SGD" (detectron2's: SOLVER.MOMENTUM, NESTEROV) or
    # "AdamW" (betas SEGX.SOLVER.ADAM_BETAS); both take SOLVER.BASE_LR, the weight decays, the LR schedule and
    # SOLVER.CLIP_GRADIENTS. AdamW is for networks without normalisation trained from scratch (VPSNet's PWC flow
    # stage), where SGD barely moves.
    cfg.SEGX.SOLVER = CN()
    cfg.SEGX.SOLVER.OPTIMIZER = "SGD"
    cfg.SEGX.SOLVER.ADAM_BETAS = (0.9, 0.999)
    add_backbone_config(cfg)
    add_yolact_config(cfg)
    add_yolact_edge_config(cfg)
    add_cornernet_config(cfg)
    add_centernet_config(cfg)
    add_hourglass_config(cfg)
    add_retinaface_config(cfg)
    add_upsnet_config(cfg)
    add_vpsnet_config(cfg)
    add_densepose_config(cfg)
    from segx.config import backbone, centernet, cornernet, hourglass, retinaface, upsnet, yolact

    for module in (backbone, yolact, cornernet, centernet, hourglass, retinaface, upsnet):
        register_renamed_keys(cfg, getattr(module, "RENAMED_KEYS", {}))
    return cfg
