"""segx: detectron2 meta-architecture plugins (YOLACT, UPSNet, CornerNet/CenterNet, Hourglass, RetinaFace, ...).

Importing segx first applies the detectron2 compatibility bridges (``segx._compat``) that are needed on this
environment, then fills the registries (meta-archs, backbones, datasets).
"""
from segx import _compat

_compat.apply_all()

from segx import _ext  # noqa: E402,F401
from segx import config, data, evaluation, modeling  # noqa: E402,F401
from segx.config import add_segx_config  # noqa: E402,F401

__version__ = "0.1.0"
