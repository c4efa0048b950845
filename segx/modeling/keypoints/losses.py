"""Losses of the keypoint detectors: CornerNet's associative-embedding pull / push and its per-stack total
(princeton-vl/CornerNet ``models/py_utils/kp.py`` ``AELoss``), CenterNet's focal + L1 terms (xingyizhou/CenterNet
``trains/ctdet.py``). The focal loss itself is ``segx.modeling.keypoints.heatmaps.heatmap_focal_loss``."""
import torch
from torch.nn import functional as F

from segx.modeling.keypoints.heatmaps import gather_at, heatmap_focal_loss

__all__ = ["associative_embedding_loss", "corner_losses", "l1_at_centers", "centernet_losses"]


def associative_embedding_loss(tl_emb, br_emb, mask, margin=1.0):
    """CornerNet's pull and push losses on 1-d embeddings.

    For image i with N objects and ē_k = (e_tl,k + e_br,k)/2:
    pull_i = (1/N) Σ_k [(e_tl,k − ē_k)² + (e_br,k − ē_k)²],
    push_i = 1/(N(N−1)) Σ_{j≠k} max(0, margin − |ē_j − ē_k|) (0 when N < 2).
    Both are summed over the images of the batch (the official ``_ae_loss`` does; its N = 1 push term is a
    gradient-free constant ≈ 1, which is left out here).

    Args: tl_emb, br_emb ``[B,M]`` embeddings at the objects' corners; mask ``[B,M]`` bool (valid objects).
    Returns: (pull, push) scalars.
    """
    m = mask.to(tl_emb.dtype)
    n = m.sum(dim=1)
    mean = (tl_emb + br_emb) / 2
    pull = (((tl_emb - mean) ** 2 + (br_emb - mean) ** 2) * m).sum(dim=1) / n.clamp(min=1)
    eye = torch.eye(m.shape[1], dtype=m.dtype, device=m.device)
    pairs = m[:, :, None] * m[:, None, :] * (1 - eye)
    gap = (margin - (mean[:, :, None] - mean[:, None, :]).abs()).clamp(min=0)
    push = (gap * pairs).sum(dim=(1, 2)) / (n * (n - 1)).clamp(min=1)
    return pull.sum(), push.sum()


def corner_losses(stacks, targets, kinds, *, focal_alpha=2.0, focal_beta=4.0, heatmap_loss_weight=1.0,
                  pull_loss_weight=0.1, push_loss_weight=0.1, push_margin=1.0, offset_loss_weight=1.0):
    """CornerNet's losses, each averaged over the stacks (the official total: (focal + pull + push + offset) /
    stacks): focal loss per keypoint kind (``loss_<kind>_heatmap``), pull / push on the corner embeddings
    (``loss_pull``, ``loss_push``), smooth-L1 offsets of all kinds divided by the number of objects
    (``loss_offset``).

    Args:
        stacks: list over stacks of ``{kind: {"heatmap": logits [B,C,h,w], "offset": [B,2,h,w],
            "embedding": [B,1,h,w] (corners)}}``.
        targets: ``CornerTargets.collate`` output: kind → (heatmap ``[B,C,h,w]``, index ``[B,M]``, offset
            ``[B,M,2]``), "mask" → ``[B,M]`` bool.
    """
    mask = targets["mask"]
    num = mask.sum().to(torch.float32)
    losses = {}
    for out in stacks:
        terms = {}
        offset = 0.0
        for kind in kinds:
            heat_t, index, off_t = targets[kind]
            terms[f"loss_{kind}_heatmap"] = heatmap_loss_weight * heatmap_focal_loss(
                torch.sigmoid(out[kind]["heatmap"]), heat_t, focal_alpha, focal_beta
            )
            pred = gather_at(out[kind]["offset"], index)
            diff = F.smooth_l1_loss(pred, off_t, reduction="none", beta=1.0).sum(dim=2)
            offset = offset + (diff * mask).sum() / (num + 1e-4)
        tl_emb = gather_at(out["tl"]["embedding"], targets["tl"][1])[..., 0]
        br_emb = gather_at(out["br"]["embedding"], targets["br"][1])[..., 0]
        pull, push = associative_embedding_loss(tl_emb, br_emb, mask, push_margin)
        terms["loss_pull"] = pull_loss_weight * pull
        terms["loss_push"] = push_loss_weight * push
        terms["loss_offset"] = offset_loss_weight * offset
        for k, v in terms.items():
            losses[k] = losses.get(k, 0.0) + v / len(stacks)
    return losses


def l1_at_centers(pred, batch, index, target):
    """Mean |pred − target| over the objects' centres and both channels (official ``RegL1Loss``); 0 without
    objects (kept in the graph).

    Args: pred ``[B,2,H,W]``; batch, index ``[M]`` (image, flat H·W position of each object); target ``[M,2]``.
    """
    if index.numel() == 0:
        return pred.sum() * 0.0
    b, c = pred.shape[:2]
    picked = pred.reshape(b, c, -1)[batch, :, index]  # [M,2]
    return (picked - target).abs().sum() / (target.numel() + 1e-4)


def centernet_losses(stacks, targets, *, focal_alpha=2.0, focal_beta=4.0, heatmap_loss_weight=1.0,
                     size_loss_weight=0.1, offset_loss_weight=1.0):
    """CenterNet's losses averaged over the output maps: focal heatmap loss (``loss_heatmap``), L1 size
    (``loss_size``) and L1 offset (``loss_offset``) at the ground-truth centres.

    Args:
        stacks: list over output maps of ``{"heatmap": logits [B,C,H,W], "size": [B,2,H,W], "offset": [B,2,H,W]}``.
        targets: ``CenterTargets.collate`` output.
    """
    losses = {"loss_heatmap": 0.0, "loss_size": 0.0, "loss_offset": 0.0}
    batch, index = targets["batch"], targets["index"]
    for out in stacks:
        heat = torch.sigmoid(out["heatmap"])
        losses["loss_heatmap"] = losses["loss_heatmap"] + heatmap_loss_weight * heatmap_focal_loss(
            heat, targets["heatmap"], focal_alpha, focal_beta
        )
        losses["loss_size"] = losses["loss_size"] + size_loss_weight * l1_at_centers(
            out["size"], batch, index, targets["size"]
        )
        losses["loss_offset"] = losses["loss_offset"] + offset_loss_weight * l1_at_centers(
            out["offset"], batch, index, targets["offset"]
        )
    return {k: v / len(stacks) for k, v in losses.items()}
