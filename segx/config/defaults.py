from detectron2.config import CfgNode as CN


def add_segx_config(cfg):
    """Adds segx's config nodes to a detectron2 ``cfg`` in place; safe to call twice."""
    return cfg
