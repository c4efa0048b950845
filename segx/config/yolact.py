"""Config keys of YOLACT / YOLACT++ (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN  # noqa: F401


def add_yolact_config(cfg):
    """Adds the YOLACT / YOLACT++ keys to ``cfg`` in place."""
