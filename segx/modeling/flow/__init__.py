"""Flow networks and feature warping with ``segx.layers.flow_warp``: YolactEdge's flow between feature maps (partial
feature transform) and VPSNet's flow between images (reference-frame fusion); both train with ``flow_epe_loss``.

* ``image_flownet``: flow between two images (VPSNet): ``ImageFlowNet`` (FlowNetS-style, trained on synthetic
  pairs with ``flow_epe_loss``), ``TorchvisionRAFT`` (a frozen pretrained RAFT), ``resize_flow``.
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
from .image_flownet import ImageFlowNet, TorchvisionRAFT, build_image_flow_net, resize_flow  # VPSNet: flow on images

__all__ = [
    "FLOW_LEVELS",
    "FeatFlowNet",
    "FlowPrediction",
    "flow_epe_loss",
    "pixels_to_units",
    "units_to_pixels",
    "warp_features",
    "ImageFlowNet",
    "TorchvisionRAFT",
    "build_image_flow_net",
    "resize_flow",
]
