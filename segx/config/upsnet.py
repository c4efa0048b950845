"""Config keys of UPSNet (``cfg.MODEL.*``)."""
from detectron2.config import CfgNode as CN  # noqa: F401


def add_upsnet_config(cfg):
    """Adds the UPSNet keys to ``cfg`` in place."""
