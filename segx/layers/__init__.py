"""Python face of segx's C++/CUDA ops (``torch.ops.segx.*``), each with a pure-PyTorch reference.

The references are the answer key of the tests, what ONNX export records (onnxruntime cannot run a custom
op) and the fallback when ``segx._C`` is missing.
"""
from segx.layers.assemble_masks import assemble_masks, assemble_masks_reference
from segx.layers.conv import conv_norm_act
from segx.layers.correlation import local_correlation
from segx.layers.corner_pool import DIRECTIONS as CORNER_POOL_DIRECTIONS
from segx.layers.corner_pool import corner_pool, corner_pool_reference
from segx.layers.deform_conv_reference import deform_conv2d_reference
from segx.layers.flow_warp import flow_warp, flow_warp_reference

__all__ = [
    "assemble_masks",
    "assemble_masks_reference",
    "conv_norm_act",
    "corner_pool",
    "corner_pool_reference",
    "CORNER_POOL_DIRECTIONS",
    "deform_conv2d_reference",
    "flow_warp",
    "flow_warp_reference",
    "local_correlation",
]
