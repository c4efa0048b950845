"""VPSNet's feature fusion (Kim et al., "Video Panoptic Segmentation", CVPR 2020, §4.1 "Fuse"): the FPN features of a
reference frame aligned to the target frame and fused with the target's, following the official code (mcahny/vps: a
``BFPTcea`` neck with a ``TCEA_Fusion`` module); segx's code is its own.

``FeatureFusion(features, ref_features, flow)``, all levels ``[B,C,h_l,w_l]``:

1. **gather**: every level brought to the size of level ``refine_level`` (nearest upsampling of coarser levels,
   adaptive max pooling of finer ones) and averaged, for the target and for the reference;
2. **align**: the reference's gathered map warped to the target with ``segx.layers.flow_warp`` along ``flow``
   (``[B,2,h,w]``, pixels of the gathered map: ``target(p) = reference(p + flow(p))``);
3. **residual flow refinement** (``refine_flow``): a small flow estimator on the target map, the local correlation of
   the target and the warped reference (displacements up to ``search_range``) and the flow predicts a residual flow,
   and the warped reference is warped once more along it;
4. **attention fusion** (``TemporalSpatialAttention``): per-pixel temporal weights (sigmoid of the correlation of
   embeddings of each frame with the target's), a 1×1 fusion conv, and a spatial attention (max/avg pyramid) that
   scales and shifts the fused map;
5. **refine**: a 3×3 conv + ReLU;
6. **scatter**: the refined map resized back to every level (nearest to finer, adaptive max pooling to coarser) and
   **added** to that level's features (a residual).

``zero_init`` (segx; the official code initialises these layers with random weights): the residual flow's last conv
and a per-channel gate on the added map start at zero, so a new fusion module returns the target's features unchanged
(a VPSNet built from UPSNet weights starts as UPSNet) and learns the fusion from there.
"""
import torch
import torch.nn.functional as F
from torch import nn

from segx.layers import conv_norm_act, flow_warp, local_correlation

__all__ = ["FeatureFusion", "TemporalSpatialAttention", "gather_levels", "scatter_levels", "local_correlation"]


def _max_pool_to(x, size):
    """``adaptive_max_pool2d(x, size)``; as a plain max pooling over blocks when ``size`` divides ``x``'s size (the
    same values, and a pooling ONNX exports)."""
    h, w = int(x.shape[-2]), int(x.shape[-1])
    oh, ow = int(size[0]), int(size[1])
    if h % oh == 0 and w % ow == 0:
        return F.max_pool2d(x, kernel_size=(h // oh, w // ow), stride=(h // oh, w // ow))
    return F.adaptive_max_pool2d(x, output_size=(oh, ow))


def gather_levels(features, refine_level):
    """``features`` (list of ``[B,C,h_l,w_l]``, finest first) → ``[B,C,h,w]`` at level ``refine_level``'s size: the
    mean of all levels, coarser ones upsampled (nearest), finer ones adaptive-max-pooled."""
    size = features[refine_level].shape[-2:]
    out = []
    for i, x in enumerate(features):
        if i < refine_level:
            out.append(_max_pool_to(x, size))
        elif i > refine_level:
            out.append(F.interpolate(x, size=size, mode="nearest"))
        else:
            out.append(x)
    return torch.stack(out).mean(0)


def scatter_levels(x, features, refine_level):
    """``x`` ``[B,C,h,w]`` resized to each level of ``features`` (nearest to finer ones, adaptive max pooling to
    coarser ones) → list of maps of the levels' sizes."""
    out = []
    for i, f in enumerate(features):
        size = f.shape[-2:]
        if i < refine_level:
            out.append(F.interpolate(x, size=size, mode="nearest"))
        elif i > refine_level:
            out.append(_max_pool_to(x, size))
        else:
            out.append(x)
    return out


class TemporalSpatialAttention(nn.Module):
    """Attention fusion of ``N`` aligned frames (EDVR's TSA fusion as VPSNet's ``TCEA_Fusion`` uses it).

    ``forward(aligned [B,N,C,H,W], center)`` → ``[B,C,H,W]``: frame ``i`` weighted per pixel by
    ``sigmoid(Σ_c e_i·e_center)`` (``e`` = 3×3 conv embeddings), the frames concatenated and fused by a 1×1 conv +
    LeakyReLU; a spatial attention map ``a`` (1×1 conv on the weighted frames, max- and average-pooled at stride 2,
    two convs, upsampled) gives ``fused·sigmoid(a)·2 + add(a)``.
    """

    def __init__(self, channels, num_frames=2):
        super().__init__()
        C = channels
        self.embed = nn.Conv2d(C, C, 3, padding=1)
        self.embed_center = nn.Conv2d(C, C, 3, padding=1)
        self.fuse = nn.Conv2d(num_frames * C, C, 1)
        self.att_in = nn.Conv2d(num_frames * C, C, 1)
        self.att_pooled = nn.Conv2d(2 * C, C, 1)
        self.att_mid = nn.Conv2d(C, C, 3, padding=1)
        self.att_out = nn.Conv2d(C, C, 3, padding=1)
        self.att_add = nn.Sequential(nn.Conv2d(C, C, 1), nn.LeakyReLU(0.1), nn.Conv2d(C, C, 1))
        self.lrelu = nn.LeakyReLU(0.1)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                nn.init.zeros_(m.bias)
        self.num_frames = num_frames

    def forward(self, aligned, center=0):
        B, N, C, H, W = aligned.shape
        ref = self.embed_center(aligned[:, center])
        emb = self.embed(aligned.reshape(B * N, C, H, W)).reshape(B, N, C, H, W)
        weights = torch.sigmoid((emb * ref[:, None]).sum(2, keepdim=True))  # [B,N,1,H,W]
        weighted = (aligned * weights).reshape(B, N * C, H, W)
        fused = self.lrelu(self.fuse(weighted))
        att = self.lrelu(self.att_in(weighted))
        att = torch.cat([F.max_pool2d(att, 3, 2, 1), F.avg_pool2d(att, 3, 2, 1, count_include_pad=True)], dim=1)
        att = self.lrelu(self.att_mid(self.lrelu(self.att_pooled(att))))
        att = self.att_out(F.interpolate(att, size=(H, W), mode="bilinear", align_corners=False))
        return fused * torch.sigmoid(att) * 2 + self.att_add(att)


class FeatureFusion(nn.Module):
    """VPSNet's fuse module (module docstring).

    Args:
        channels: C, the FPN width.
        num_levels: the levels fused (the FPN's P2–P6: 5).
        refine_level: the level the maps are gathered at (0: P2, whose stride the flow is given at).
        refine_flow: predict and apply a residual flow (steps 3). search_range: its correlation's reach (pixels).
        zero_init: the residual flow and the gate on the added map start at zero (identity at first).
    Forward: ``(features, ref_features, flow)`` (two lists of the levels, finest first; ``flow`` ``[B,2,h,w]`` at
    level ``refine_level``, in its pixels) → list of fused levels; ``return_aligned=True`` also returns the gathered
    target, the aligned reference and the total residual flow (for tests and visualisation).
    """

    def __init__(self, channels, num_levels=5, refine_level=0, refine_flow=True, search_range=4, zero_init=True):
        super().__init__()
        if not 0 <= refine_level < num_levels:
            raise ValueError(f"FeatureFusion: REFINE_LEVEL must index one of the {num_levels} fused levels, got "
                             f"{refine_level}")
        C = channels
        self.num_levels, self.refine_level, self.search_range = num_levels, refine_level, int(search_range)
        self.flow_refiner = None
        if refine_flow:
            corr = (2 * self.search_range + 1) ** 2
            last = nn.Conv2d(32, 2, 3, padding=1)
            self.flow_refiner = nn.Sequential(
                conv_norm_act(C + corr + 2, 64, 3, norm="", activation=0.1),
                conv_norm_act(64, 64, 3, norm="", activation=0.1),
                conv_norm_act(64, 32, 3, norm="", activation=0.1),
                last,
            )
            if zero_init:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)
        self.attention = TemporalSpatialAttention(C, 2)
        self.refine = conv_norm_act(C, C, 3, norm="", activation="relu")
        self.gate = nn.Parameter(torch.zeros(C)) if zero_init else None

    def align(self, target, reference, flow):
        """Warps the gathered ``reference`` to ``target`` along ``flow`` and (``refine_flow``) a predicted residual
        flow; returns ``(aligned, residual)`` (``residual`` None without refinement)."""
        aligned = flow_warp(reference, flow.to(reference.dtype))
        if self.flow_refiner is None:
            return aligned, None
        corr = local_correlation(target, aligned, self.search_range)
        residual = self.flow_refiner(torch.cat([target, corr, flow.to(target.dtype)], dim=1))
        return flow_warp(aligned, residual), residual

    def forward(self, features, ref_features, flow, return_aligned=False):
        if len(features) != self.num_levels or len(ref_features) != self.num_levels:
            raise ValueError(f"FeatureFusion: expected {self.num_levels} levels for target and reference, got "
                             f"{len(features)} and {len(ref_features)}")
        target = gather_levels(features, self.refine_level)
        reference = gather_levels(ref_features, self.refine_level)
        if tuple(flow.shape[-2:]) != tuple(target.shape[-2:]) or flow.shape[0] != target.shape[0]:
            raise ValueError(f"FeatureFusion: flow is {tuple(flow.shape)}, the gathered maps are "
                             f"{tuple(target.shape)}: the flow must be [B,2,h,w] at level {self.refine_level}")
        aligned, residual = self.align(target, reference, flow)
        fused = self.refine(self.attention(torch.stack([target, aligned], dim=1), center=0))
        if self.gate is not None:
            fused = fused * self.gate.view(1, -1, 1, 1)
        out = [f + r for f, r in zip(features, scatter_levels(fused, features, self.refine_level))]
        if return_aligned:
            return out, {"target": target, "aligned": aligned, "residual_flow": residual}
        return out
