"""YolactEdge's feature flow network (Liu et al., ICRA 2021, §III-B; haotian-liu/yolact_edge ``FlowNetMini`` with
``FlowNetMiniPreConvs``), written on segx's layers.

Both inputs are feature maps of the same stride (YolactEdge: the C3 laterals of the current frame and of the key
frame, ``C`` channels). The net predicts, at the input's size and at 1/2 and 1/4 of it (the P3, P4, P5 sizes of an
FPN whose finest level is the input), a flow (2 channels) and a per-channel scale and bias (``out_channels``):

* ``pre_convs``: 3×3 conv + LeakyReLU(0.1) per entry of ``reduce_channels`` (C → 64 in the paper), on each input;
* encoder: the two reduced maps concatenated (current first) → ``encoder3`` (stride 1) → ``encoder4`` (stride 2)
  → ``encoder5`` (stride 2), each a few 3×3 conv + LeakyReLU(0.1);
* decoder, coarse to fine: ``predict5`` on ``encoder5``; ``predict4`` on [encoder4, ``up_feat5``(↑encoder5),
  ``up_flow5``(↑flow5)]; ``predict3`` likewise one level finer (only when asked: inference warps P4/P5 only).

Flow units (the official convention, kept so official weights work unchanged): a value ``u`` means ``u·(W-1)/16``
pixels of a map ``W`` wide (``grid_sample``'s normalised offset ×8); training targets are image displacements
``d`` given as ``16·d/W_image`` (``pixels_to_units``). ``units_to_pixels`` converts a prediction for
``segx.layers.flow_warp``.
"""
import torch
import torch.nn.functional as F
from torch import nn

from segx.layers import conv_norm_act, flow_warp

__all__ = ["FLOW_LEVELS", "FeatFlowNet", "FlowPrediction", "units_to_pixels", "pixels_to_units", "warp_features",
           "flow_epe_loss"]

# levels the net predicts at, relative to its input: "p3" = the input's size, "p4" = 1/2, "p5" = 1/4
FLOW_LEVELS = ("p3", "p4", "p5")


def _conv_lrelu(in_channels, out_channels, stride=1):
    """3×3 conv (bias) + LeakyReLU(0.1); state-dict keys ``weight``, ``bias``."""
    return conv_norm_act(in_channels, out_channels, 3, stride=stride, norm="", activation=0.1)


def _encoder(widths, in_channels, out_channels, stride):
    """``in → widths[0] (stride) → widths[1] ... → out``, each a 3×3 conv + LeakyReLU(0.1)."""
    layers, c = [], in_channels
    for i, w in enumerate(widths):
        layers.append(_conv_lrelu(c, w, stride if i == 0 else 1))
        c = w
    layers.append(_conv_lrelu(c, out_channels))
    return nn.Sequential(*layers)


class FlowPrediction(nn.Module):
    """One level's outputs: ``flow`` (3×3 conv, no bias, 2 channels) and 1×1 convs for the per-channel ``scale``
    (bias initialised to 1, so a new net starts near identity) and ``bias`` of the warped features.

    ``forward(x)`` → ``(flow [B,2,H,W], scale [B,C,H,W], bias [B,C,H,W])``.
    """

    def __init__(self, in_channels, feature_channels):
        super().__init__()
        self.flow = nn.Conv2d(in_channels, 2, 3, padding=1, bias=False)
        self.scale = nn.Conv2d(in_channels, feature_channels, 1)
        self.bias = nn.Conv2d(in_channels, feature_channels, 1)
        for m in (self.flow, self.scale, self.bias):
            nn.init.kaiming_normal_(m.weight, mode="fan_in")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        nn.init.constant_(self.scale.bias, 1.0)

    def forward(self, x):
        return self.flow(x), self.scale(x), self.bias(x)


class FeatFlowNet(nn.Module):
    """Flow + scale + bias between two feature maps (see the module docstring).

    Args:
        in_channels: channels C of both inputs (the FPN width: YolactEdge feeds C3 laterals).
        feature_channels: channels of the predicted scale and bias (the FPN width: they modulate P4/P5).
        reduce_channels: widths of the pre-convs applied to each input (paper: ``[64]``; empty: none).
        encode_channels: base width E of the encoder (paper: 64): encoder3/4/5 end at E, 2E, 4E channels.
        encode_layers: per encoder, the inner widths as multiples of E (paper: ``[[1], [2], [4]]``).
    """

    def __init__(self, in_channels, feature_channels, reduce_channels=(64,), encode_channels=64,
                 encode_layers=((1,), (2,), (4,))):
        super().__init__()
        if len(encode_layers) != 3 or not all(len(e) for e in encode_layers):
            raise ValueError(f"FeatFlowNet: ENCODE_LAYERS needs 3 non-empty lists (one per encoder), got "
                             f"{encode_layers}")
        self.pre_convs = nn.Sequential(*[
            _conv_lrelu(c_in, c_out) for c_in, c_out in zip((in_channels, *reduce_channels), reduce_channels)
        ])
        c, E = (reduce_channels[-1] if len(reduce_channels) else in_channels), encode_channels
        self.encoder3 = _encoder([E * m for m in encode_layers[0]], 2 * c, E, 1)
        self.encoder4 = _encoder([E * m for m in encode_layers[1]], E, 2 * E, 2)
        self.encoder5 = _encoder([E * m for m in encode_layers[2]], 2 * E, 4 * E, 2)
        self.predict5 = FlowPrediction(4 * E, feature_channels)
        self.predict4 = FlowPrediction(4 * E + 2, feature_channels)
        self.predict3 = FlowPrediction(2 * E + 2, feature_channels)
        self.up_feat5 = nn.Conv2d(4 * E, 2 * E, 3, padding=1, bias=False)
        self.up_flow5 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        self.up_feat4 = nn.Conv2d(4 * E + 2, E, 3, padding=1, bias=False)
        self.up_flow4 = nn.Conv2d(2, 2, 3, padding=1, bias=False)
        for enc in (self.encoder3, self.encoder4, self.encoder5):
            for m in enc.modules():
                if isinstance(m, nn.Conv2d):
                    nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in")
                    nn.init.zeros_(m.bias)
        self.in_channels, self.feature_channels = in_channels, feature_channels

    def reduce(self, x):
        """The pre-convs on one input ``[B,C,H,W]``; a key frame's reduced lateral can be kept and reused."""
        return self.pre_convs(x)

    def forward(self, target, source, levels=("p4", "p5"), reduced=False):
        """``target`` (the current frame), ``source`` (the frame whose features will be warped), both
        ``[B,C,H,W]`` (already through ``reduce`` when ``reduced``) → ``{level: (flow, scale, bias)}`` for the
        asked ``levels`` (of ``FLOW_LEVELS``). The flow maps target positions to source positions:
        ``warp_features(source_features, flow)`` aligns the source's features with the target."""
        bad = [lv for lv in levels if lv not in FLOW_LEVELS]
        if bad:
            raise ValueError(f"FeatFlowNet: levels {bad} are not among {FLOW_LEVELS}")
        if not reduced:
            target, source = self.reduce(target), self.reduce(source)
        x3 = self.encoder3(torch.cat([target, source], dim=1))
        x4 = self.encoder4(x3)
        x5 = self.encoder5(x4)
        out = {}
        flow5, scale5, bias5 = self.predict5(x5)
        out["p5"] = (flow5, scale5, bias5)
        size4 = x4.shape[-2:]
        cat4 = torch.cat([x4, self.up_feat5(_resize(x5, size4)), self.up_flow5(_resize(flow5, size4))], dim=1)
        out["p4"] = self.predict4(cat4)
        if "p3" in levels:
            size3 = x3.shape[-2:]
            cat3 = torch.cat([x3, self.up_feat4(_resize(cat4, size3)), self.up_flow4(_resize(out["p4"][0], size3))], 1)
            out["p3"] = self.predict3(cat3)
        return {lv: out[lv] for lv in levels}


def _resize(x, size):
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def units_to_pixels(flow):
    """Flow in the official units ``[B,2,H,W]`` → displacement in pixels of that ``H×W`` map (dx·(W-1)/16,
    dy·(H-1)/16), what ``segx.layers.flow_warp`` takes."""
    H, W = flow.shape[-2:]
    factor = torch.stack([torch.as_tensor(W - 1.0), torch.as_tensor(H - 1.0)]).to(flow) / 16.0
    return flow * factor.view(1, 2, 1, 1)


def pixels_to_units(flow, image_size=None):
    """Displacement in pixels of an image ``[B,2,H,W]`` (or ``[2,H,W]``) → official flow units (16·dx/W, 16·dy/H),
    the training target; ``image_size`` (H, W) defaults to the field's own size."""
    H, W = image_size if image_size is not None else flow.shape[-2:]
    factor = flow.new_tensor([16.0 / W, 16.0 / H]).view(2, 1, 1)
    return flow * factor


def warp_features(features, flow, scale=None, bias=None):
    """``flow_warp(features, flow in pixels)·scale + bias`` (YolactEdge's partial feature transform); ``features``
    ``[B,C,H,W]``, ``flow`` ``[B,2,H,W]`` in official units at that size, ``scale``/``bias`` ``[B,C,H,W]`` or None."""
    out = flow_warp(features, units_to_pixels(flow).to(features.dtype))
    if scale is not None:
        out = out * scale
    if bias is not None:
        out = out + bias
    return out


def flow_epe_loss(predictions, target):
    """Σ over ``predictions`` (flows ``[B,2,h,w]`` at any sizes, official units) of the mean end-point error
    ‖pred − target↓‖₂ per pixel, ``target`` ``[B,2,H,W]`` in the same units bilinearly resized to each size
    (official ``OpticalFlowLoss``)."""
    loss = target.new_zeros(())
    for pred in predictions:
        gt = F.interpolate(target, size=pred.shape[-2:], mode="bilinear", align_corners=False)
        loss = loss + torch.linalg.vector_norm(pred - gt, dim=1).mean()
    return loss
