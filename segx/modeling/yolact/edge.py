"""YolactEdge's parts on top of YOLACT's (Liu, Soto, Xiao, Lee, *YolactEdge: Real-time Instance Segmentation on
the Edge*, ICRA 2021; haotian-liu/yolact_edge): the partial feature transform of a non-key frame, its feature
refinement and the feature-matching loss. The meta-architecture is ``segx.modeling.meta_arch.yolact_edge``.

Non-key frame (``partial_feature_transform``), with the FPN of ``segx.modeling.yolact.fpn`` run in phases:

1. the bottom-up net only up to C3, and C3's 1×1 lateral (``lateral``);
2. ``FeatFlowNet(lateral, key lateral)`` → flow, scale, bias at the P4 and P5 sizes;
3. P4, P5 = warp(key frame's phase-1 P4, P5, flow)·scale + bias (``segx.modeling.flow.warp_features``);
4. P3 = bilinear↑(warped P4) + lateral (the phase-1 rule, with the warped P4);
5. refinement of P4, P5 with the lateral (``FeatureRefinement``, official ``SPA``);
6. the FPN's phase 2 (output convs, P6/P7), then protonet and heads as YOLACT.

``NONKEY_PROTOTYPES "warp"`` (not the paper's, off by default) skips the protonet on non-key frames as well: the key
frame's prototypes are warped with the finest (P4) flow, resized to their size (``warp_prototypes``).
"""
import torch
import torch.nn.functional as F
from torch import nn

from segx.layers import conv_norm_act
from segx.modeling.flow import warp_features

__all__ = ["FeatureRefinement", "bottom_up_until", "key_frame_features", "partial_feature_transform",
           "warp_prototypes", "feature_matching_loss", "FM_LOSS_TYPES", "FM_LOSS_LOCATIONS", "NONKEY_PROTOTYPES"]

FM_LOSS_TYPES = ("cosine", "smooth_l1", "none")
FM_LOSS_LOCATIONS = ("L", "P", "L+P")
# what a non-key frame does for its prototypes: "compute" = the protonet on its P3 (official), "warp" = the key
# frame's prototypes moved along the flow (faster, not the paper's)
NONKEY_PROTOTYPES = ("compute", "warp")


class FeatureRefinement(nn.Module):
    """Refines warped FPN levels with the current frame's C3 lateral (official ``SPA``): for each level in
    order (P4, P5), ``c`` = the lateral resized (bilinear) to the level's size (from the previous level's
    resized map), and ``x ← x + conv(cat(x, c))``, conv a 3×3 (2C → C) + LeakyReLU(0.1). ``normalized``: both
    are L2-normalised along channels before the concatenation (official ``use_normalized_spa``).

    ``forward(lateral [B,C,H3,W3], features: list of [B,C,Hl,Wl])`` → list of refined maps.
    """

    def __init__(self, channels, num_levels=2, normalized=False):
        super().__init__()
        self.convs = nn.ModuleList(conv_norm_act(2 * channels, channels, 3, norm="", activation=0.1)
                                   for _ in range(num_levels))
        self.normalized = bool(normalized)
        for m in self.convs:
            nn.init.kaiming_normal_(m.weight, a=0.1, mode="fan_in")
            nn.init.zeros_(m.bias)

    def forward(self, lateral, features):
        if len(features) != len(self.convs):
            raise ValueError(f"FeatureRefinement: {len(features)} levels given, built for {len(self.convs)}")
        out, c = [], lateral
        for conv, x in zip(self.convs, features):
            c = F.interpolate(c, size=x.shape[-2:], mode="bilinear", align_corners=False)
            pair = (F.normalize(x, dim=1), F.normalize(c, dim=1)) if self.normalized else (x, c)
            out.append(x + conv(torch.cat(pair, dim=1)))
        return out


def bottom_up_until(bottom_up, x, feature):
    """The bottom-up maps of ``x`` up to ``feature`` (e.g. ``"res3"``): ``bottom_up.stages(x, last=feature)``
    (segx's ResNet stops there)."""
    stages = getattr(bottom_up, "stages", None)
    if stages is None:
        raise ValueError(f"YolactEdge: the bottom-up net {type(bottom_up).__name__} cannot stop at {feature!r} "
                         "(it needs a stages(x, last=...) method, as segx's torchvision-layout ResNet has)")
    return stages(x, last=feature)


def key_frame_features(fpn, x):
    """A key frame: YOLACT's full path through ``fpn`` (a ``YolactFPN``) on images ``x`` ``[B,3,S,S]``.

    Returns ``(features, key)``: ``features`` = the bottom-up maps and P3..P7 (what ``YOLACT.predict`` reads),
    ``key`` = ``{"lateral": C3's 1×1 lateral, "p4", "p5": phase-1 maps}`` (what non-key frames warp), all
    ``[B,C,Hl,Wl]``, plus ``"phase1"`` (the dict of phase-1 maps P3..P5).
    """
    bottom_up = fpn.bottom_up(x)
    phase1 = fpn.forward_phase1(bottom_up)
    features = {**bottom_up, **fpn.forward_phase2(phase1)}
    lateral = fpn.lateral_convs[0](bottom_up[fpn.in_features[0]])
    names = fpn.phase1_features
    key = {"lateral": lateral, **{n: phase1[n] for n in names[1:]}}
    return features, key, phase1


def partial_feature_transform(fpn, flow_net, refinement, x, key):
    """A non-key frame (module docstring, steps 1–6 up to phase 2) on images ``x`` ``[B,3,S,S]`` with the key
    frame's ``key`` dict (``key_frame_features``).

    Returns ``(features, phase1, flows)``: ``features`` = C3 and P3..P7 (and ``"protos"``, the key frame's
    prototypes warped, where ``key`` has ``"protos"``); ``phase1`` = the transformed phase-1
    maps P3..P5 (after refinement; the feature-matching loss compares them); ``flows`` =
    ``{level: (flow, scale, bias)}`` at P4, P5.
    """
    first = fpn.in_features[0]
    c3 = bottom_up_until(fpn.bottom_up, x, first)[first]
    lateral = fpn.lateral_convs[0](c3)
    names = fpn.phase1_features  # p3, p4, p5
    for n in names[1:]:
        if key[n].shape[0] != x.shape[0]:
            raise ValueError(f"YolactEdge: {x.shape[0]} frames but key features for {key[n].shape[0]}")
    flows = flow_net(lateral, key["lateral"], levels=tuple(names[1:]))
    warped = [warp_features(key[n], *flows[n]) for n in names[1:]]
    p3 = F.interpolate(warped[0], size=lateral.shape[-2:], mode="bilinear", align_corners=False) + lateral
    if refinement is not None:
        warped = refinement(lateral, warped)
    phase1 = dict(zip(names, [p3, *warped]))
    features = {first: c3, **fpn.forward_phase2(phase1)}
    if "protos" in key:  # NONKEY_PROTOTYPES "warp": YOLACT.predict then uses these instead of its protonet
        features["protos"] = warp_prototypes(key["protos"], flows[names[1]][0])
    return features, phase1, flows


def warp_prototypes(protos, flow):
    """The key frame's prototypes ``[B,k,Hp,Wp]`` moved to the current frame: ``flow`` ``[B,2,h,w]`` in official
    units (a flow net prediction at any level; the units are relative to the map's size, so the field is only
    resized bilinearly to ``Hp×Wp``), then ``flow_warp``. No scale or bias: the flow net predicts those per FPN
    channel, not per prototype. Bilinear sampling of non-negative prototypes stays non-negative (no ReLU needed)."""
    flow = F.interpolate(flow, size=protos.shape[-2:], mode="bilinear", align_corners=False)
    return warp_features(protos, flow)


def feature_matching_loss(predicted, target, output_convs, loss_type="cosine", locations="L+P"):
    """YolactEdge's feature-matching loss between the transformed phase-1 maps of a frame (``predicted``) and the
    ones its full backbone computes (``target``, detached), for the levels of ``output_convs`` (dict level →
    the FPN's 3×3 output conv of that level).

    ``locations``: "L" compares the phase-1 maps, "P" the phase-2 maps (ReLU(output conv) applied to both with
    the conv's weights detached), "L+P" both. ``loss_type``: "cosine" = mean(1 − cosine similarity over
    channels), "smooth_l1" = smooth-L1 summed / (batch · channels). The mean over all compared pairs.
    """
    if loss_type not in FM_LOSS_TYPES or loss_type == "none":
        raise ValueError(f"YolactEdge: FM_LOSS must be one of {FM_LOSS_TYPES[:-1]} here, got {loss_type!r}")
    if locations not in FM_LOSS_LOCATIONS:
        raise ValueError(f"YolactEdge: FM_LOSS_LOCATIONS must be one of {FM_LOSS_LOCATIONS}, got {locations!r}")
    pairs = []
    for level, conv in output_convs.items():
        pred, gt = predicted[level], target[level].detach()
        if locations != "P":
            pairs.append((pred, gt))
        if locations != "L":
            w, b = conv.weight.detach(), None if conv.bias is None else conv.bias.detach()
            t = lambda f: F.relu(F.conv2d(f, w, b, stride=conv.stride, padding=conv.padding))  # noqa: E731
            pairs.append((t(pred), t(gt)))
    total = 0.0
    for pred, gt in pairs:
        if loss_type == "cosine":
            total = total + (1 - F.cosine_similarity(pred, gt, dim=1)).mean()
        else:
            total = total + F.smooth_l1_loss(pred, gt, reduction="sum") / (pred.shape[0] * pred.shape[1])
    return total / len(pairs)
