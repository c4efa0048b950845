"""DensePose head: RoI features → a stack of convolutions → a deconvolution and bilinear upsampling to the dense
per-RoI outputs (coarse segmentation, part index I, U and V per part). Heads are registered in
``ROI_DENSEPOSE_HEAD_REGISTRY`` and picked by ``MODEL.ROI_DENSEPOSE_HEAD.NAME``."""
import fvcore.nn.weight_init as weight_init
import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import Conv2d, ConvTranspose2d, ShapeSpec, get_norm
from detectron2.utils.registry import Registry

__all__ = ["ROI_DENSEPOSE_HEAD_REGISTRY", "DensePoseConvHead", "build_densepose_head"]

ROI_DENSEPOSE_HEAD_REGISTRY = Registry("ROI_DENSEPOSE_HEAD")
ROI_DENSEPOSE_HEAD_REGISTRY.__doc__ = """DensePose heads: ``head(cfg, input_shape)`` maps pooled RoI features
``[R,C,P,P]`` to a dict of ``coarse_segm`` ``[R,D,S,S]``, ``fine_segm``, ``u``, ``v`` ``[R,K+1,S,S]``."""


@ROI_DENSEPOSE_HEAD_REGISTRY.register()
class DensePoseConvHead(nn.Module):
    """``num_convs`` k×k convolutions (``conv_dim`` channels, ReLU, optional norm) on the pooled P×P features, then
    one stride-2 deconvolution per output (fused into one layer) to 2P×2P and bilinear upsampling to S×S
    (``output_size``). DensePose R-CNN's head (Güler et al. 2018; detectron2's "V1ConvX" head + chart predictor):
    8 convs of 512, P = 28, S = 112."""

    @configurable
    def __init__(self, input_shape: ShapeSpec, *, num_convs, conv_dim, conv_kernel=3, norm="", num_parts=24,
                 coarse_segm_channels=2, deconv_kernel=4, output_size=112):
        """
        Args:
            input_shape: channels (and P) of the pooled features.
            num_convs, conv_dim, conv_kernel, norm: the conv stack (depth, width, kernel, "" / "GN" / "BN").
            num_parts: K fine parts (outputs have K + 1 channels, 0 = background).
            coarse_segm_channels: D, 2 (person / background) or 15 (the 14 coarse parts + background).
            deconv_kernel: kernel of the stride-2 deconvolution (even).
            output_size: S, the side of the per-RoI outputs.
        """
        super().__init__()
        if coarse_segm_channels not in (2, 15):
            raise ValueError(f"DensePoseConvHead: coarse_segm_channels must be 2 or 15, got {coarse_segm_channels}")
        if deconv_kernel % 2:
            raise ValueError(f"DensePoseConvHead: deconv_kernel must be even (stride-2 upsampling), got {deconv_kernel}")
        self.num_parts, self.coarse_segm_channels, self.output_size = num_parts, coarse_segm_channels, output_size
        channels = input_shape.channels
        self.convs = []
        for k in range(num_convs):
            conv = Conv2d(channels, conv_dim, conv_kernel, padding=conv_kernel // 2, bias=not norm,
                          norm=get_norm(norm, conv_dim), activation=F.relu)
            weight_init.c2_msra_fill(conv)
            self.add_module(f"conv{k + 1}", conv)
            self.convs.append(conv)
            channels = conv_dim
        out = coarse_segm_channels + 3 * (num_parts + 1)
        self.predictor = ConvTranspose2d(channels, out, deconv_kernel, stride=2, padding=deconv_kernel // 2 - 1)
        nn.init.kaiming_normal_(self.predictor.weight, mode="fan_out", nonlinearity="relu")
        nn.init.constant_(self.predictor.bias, 0)

    @classmethod
    def from_config(cls, cfg, input_shape):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        return {
            "input_shape": input_shape, "num_convs": h.NUM_CONVS, "conv_dim": h.HEAD_CHANNELS,
            "conv_kernel": h.CONV_KERNEL, "norm": h.NORM, "num_parts": h.NUM_PARTS,
            "coarse_segm_channels": h.COARSE_SEGM_CHANNELS, "deconv_kernel": h.DECONV_KERNEL,
            "output_size": h.OUTPUT_SIZE,
        }

    def forward(self, x):
        """``x`` [R,C,P,P] → dict of ``coarse_segm`` [R,D,S,S], ``fine_segm``, ``u``, ``v`` [R,K+1,S,S]."""
        for conv in self.convs:
            x = conv(x)
        x = self.predictor(x)
        if x.shape[-1] != self.output_size or x.shape[-2] != self.output_size:
            x = F.interpolate(x, size=(self.output_size, self.output_size), mode="bilinear", align_corners=False)
        d, k = self.coarse_segm_channels, self.num_parts + 1
        coarse, fine, u, v = torch.split(x, [d, k, k, k], dim=1)
        return {"coarse_segm": coarse, "fine_segm": fine, "u": u, "v": v}


def build_densepose_head(cfg, input_shape):
    return ROI_DENSEPOSE_HEAD_REGISTRY.get(cfg.MODEL.ROI_DENSEPOSE_HEAD.NAME)(cfg, input_shape)
