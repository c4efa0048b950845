"""Backbones registered in ``BACKBONE_REGISTRY`` (imported for registration)."""
from segx.modeling.backbone import mobilenet  # noqa: F401
