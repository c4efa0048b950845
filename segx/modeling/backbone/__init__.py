"""Backbones registered in ``BACKBONE_REGISTRY`` (imported for registration)."""
from segx.modeling.backbone import resnet  # noqa: F401
from segx.modeling.backbone import mobilenet  # noqa: F401
from segx.modeling.backbone import resnet_deconv  # noqa: F401
from segx.modeling.backbone import hourglass  # noqa: F401
from segx.modeling.backbone import stacked_hourglass  # noqa: F401
from segx.modeling.backbone import dla  # noqa: F401
