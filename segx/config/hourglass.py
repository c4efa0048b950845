"""Config keys of Stacked Hourglass landmarks (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN  # noqa: F401


def add_hourglass_config(cfg):
    """Adds the Stacked Hourglass landmarks keys to ``cfg`` in place."""
