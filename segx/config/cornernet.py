"""Config keys of CornerNet and CenterNet (keypoint triplets) (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN  # noqa: F401


def add_cornernet_config(cfg):
    """Adds the CornerNet and CenterNet (keypoint triplets) keys to ``cfg`` in place."""
