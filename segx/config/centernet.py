"""Config keys of CenterNet (objects as points) (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN  # noqa: F401


def add_centernet_config(cfg):
    """Adds the CenterNet (objects as points) keys to ``cfg`` in place."""
