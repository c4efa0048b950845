"""DensePose losses on the foreground RoIs (DensePose R-CNN, Güler et al. 2018).

For each RoI matched to a person with DensePose annotation, the person's points that fall inside the RoI box are
read from the RoI's dense outputs by bilinear interpolation (``structures.sample_maps``, cell-centre convention):

- ``loss_densepose_I``: cross-entropy of the fine-part logits (K + 1 classes) at the points, mean over points,
  × ``part_weight``;
- ``loss_densepose_U`` / ``loss_densepose_V``: smooth-L1 (beta 1) of the U / V output of the point's annotated part,
  *summed* over points, × ``uv_weight`` (points whose ``uv_valid`` is False are left out);
- ``loss_densepose_S``: cross-entropy of the coarse segmentation against the annotated part masks resampled
  (nearest) into the RoI box (person / background for D = 2; the 14 coarse parts for D = 15), mean over the S×S
  cells of the RoIs with masks, × ``segm_weight``.

With no such RoI in the batch every loss is ``0 * sum(outputs)`` (the graph stays the same on every worker).
"""
import torch
from torch.nn import functional as F

from segx.modeling.roi_heads.densepose.structures import box_grid, resample_labels, sample_maps

__all__ = ["densepose_losses", "gather_point_targets"]


def gather_point_targets(boxes, targets):
    """Packs the annotated points of RoIs.

    Args:
        boxes: ``[R,4]`` RoI boxes (XYXY). targets: R ``DensePoseInstanceTarget`` (or None).
    Returns: dict with ``index`` [P] (RoI of each point), ``grid`` [P,2] (``box_grid``), ``parts`` [P],
        ``uv`` [P,2], ``uv_valid`` [P]: only points inside their RoI box.
    """
    device = boxes.device
    index, points, parts, uv, uv_valid, roi_boxes = [], [], [], [], [], []
    for r, t in enumerate(targets):
        if t is None or len(t) == 0:
            continue
        p = t.points.to(device)
        b = boxes[r]
        inside = (p[:, 0] >= b[0]) & (p[:, 0] < b[2]) & (p[:, 1] >= b[1]) & (p[:, 1] < b[3])
        n = int(inside.sum())
        if n == 0:
            continue
        index.append(torch.full((n,), r, dtype=torch.long, device=device))
        points.append(p[inside])
        roi_boxes.append(b.expand(n, 4))
        parts.append(t.parts.to(device)[inside])
        uv.append(t.uv.to(device)[inside])
        uv_valid.append(t.uv_valid.to(device)[inside])
    if not index:
        return None
    points, roi_boxes = torch.cat(points), torch.cat(roi_boxes)
    return {"index": torch.cat(index), "grid": box_grid(points, roi_boxes), "parts": torch.cat(parts),
            "uv": torch.cat(uv), "uv_valid": torch.cat(uv_valid)}


def densepose_losses(outputs, boxes, targets, *, part_weight=1.0, uv_weight=0.01, segm_weight=5.0):
    """The DensePose losses (see the module doc).

    Args:
        outputs: the head's dict (``coarse_segm`` [R,D,S,S], ``fine_segm``, ``u``, ``v`` [R,K+1,S,S]).
        boxes: ``[R,4]`` the RoI boxes (XYXY, input pixels). targets: R ``DensePoseInstanceTarget`` (or None).
    Returns: dict of ``loss_densepose_{I,U,V,S}``.
    """
    zero = {k: outputs[n].sum() * 0 for k, n in (("I", "fine_segm"), ("U", "u"), ("V", "v"), ("S", "coarse_segm"))}
    losses = {}
    packed = gather_point_targets(boxes, targets)
    if packed is None:
        losses.update({f"loss_densepose_{k}": zero[k] for k in "IUV"})
    else:
        idx, grid, parts = packed["index"], packed["grid"], packed["parts"]
        fine = sample_maps(outputs["fine_segm"], idx, grid)
        losses["loss_densepose_I"] = F.cross_entropy(fine, parts) * part_weight
        valid = packed["uv_valid"]
        for k, name, col in (("U", "u", 0), ("V", "v", 1)):
            if not valid.any():
                losses[f"loss_densepose_{k}"] = zero[k]
                continue
            # only the annotated part's channel: sample [P,1] instead of [P,K+1]
            pred = sample_maps(outputs[name], idx, grid, channel=parts)
            losses[f"loss_densepose_{k}"] = F.smooth_l1_loss(
                pred[valid], packed["uv"][valid, col], reduction="sum", beta=1.0) * uv_weight
    with_segm = [r for r, t in enumerate(targets) if t is not None and t.segm is not None]
    if not with_segm:
        losses["loss_densepose_S"] = zero["S"]
    else:
        coarse = outputs["coarse_segm"][with_segm]
        segm = torch.stack([targets[r].segm for r in with_segm]).to(coarse.device)
        segm_boxes = torch.stack([targets[r].segm_box for r in with_segm]).to(coarse.device)
        labels = resample_labels(segm, segm_boxes, boxes[with_segm], coarse.shape[-1])
        if coarse.shape[1] == 2:
            labels = (labels > 0).long()
        losses["loss_densepose_S"] = F.cross_entropy(coarse, labels) * segm_weight
    return losses
