import os

from .defaults import add_segx_config  # noqa: F401
from .renames import RENAMED_KEYS  # noqa: F401


def load_config(config_file, opts=(), device=None, who="segx"):
    """detectron2's config with segx's nodes, ``config_file`` merged, then ``opts`` (``KEY VALUE`` pairs); not frozen.
    ``device``: None keeps ``MODEL.DEVICE``, "auto" moves a CUDA device to the CPU when no GPU is present, anything
    else sets it. A missing file is a ``FileNotFoundError`` naming it (and ``who``, the caller)."""
    from detectron2.config import get_cfg

    if not os.path.isfile(os.fspath(config_file)):
        raise FileNotFoundError(f"{who}: config file {config_file} does not exist")
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(os.fspath(config_file))
    cfg.merge_from_list(list(opts))
    if device == "auto":
        if cfg.MODEL.DEVICE.startswith("cuda") and not __import__("torch").cuda.is_available():
            cfg.MODEL.DEVICE = "cpu"
    elif device:
        cfg.MODEL.DEVICE = device
    return cfg
