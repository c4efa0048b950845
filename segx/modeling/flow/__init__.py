"""Feature flow: a light flow network between two feature maps and feature warping with ``segx.layers.flow_warp``
(YolactEdge's partial feature transform; VPSNet's reference-frame fusion will share it).

* ``featflownet``: ``FeatFlowNet`` (YolactEdge's FlowNetMini with its channel-reducing pre-convs), the flow units
  (``units_to_pixels``, ``pixels_to_units``), ``warp_features`` and the multi-scale end-point-error loss.
"""
from .featflownet import (
    FLOW_LEVELS,
    FeatFlowNet,
    FlowPrediction,
    flow_epe_loss,
    pixels_to_units,
    units_to_pixels,
    warp_features,
)

__all__ = [
    "FLOW_LEVELS",
    "FeatFlowNet",
    "FlowPrediction",
    "flow_epe_loss",
    "pixels_to_units",
    "units_to_pixels",
    "warp_features",
]
