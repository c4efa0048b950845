"""From panoptic logits to detectron2's ``panoptic_seg``: UPSNet's overlap-based mask removal and the merge."""
from typing import Optional

import torch

__all__ = ["mask_removal_keep", "merge_panoptic_logits"]


@torch.jit.script_if_tracing
def mask_removal_keep(masks, fraction_threshold: float, classes: Optional[torch.Tensor] = None):
    """``[N,H,W]`` bool masks sorted by decreasing score → ``[N]`` bool: a mask is removed when it is empty or more
    than ``fraction_threshold`` of its area lies on the masks kept before it (UPSNet's MaskRemoval). With ``classes``
    (``[N]``) only kept masks of the same class count, as in the official MaskRemoval (one occupancy map per class);
    without, all kept masks count (segx mode). One loop over the masks (exports to ONNX): with ``classes`` they are
    visited class by class, in score order within a class, and the occupancy map restarts at each new class."""
    n = masks.shape[0]
    position = torch.arange(n, device=masks.device)
    if classes is None:
        order = position
        new_class = torch.zeros(n, dtype=torch.bool, device=masks.device)
    else:
        order = torch.argsort(classes.to(torch.int64) * n + position)  # by class, then by score (unique keys)
        c = classes[order]
        new_class = torch.cat([torch.ones(1, dtype=torch.bool, device=masks.device), c[1:] != c[:-1]])
    masks = masks[order]
    kept = torch.zeros(n, dtype=torch.bool, device=masks.device)
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    for i in range(n):
        taken = taken & ~new_class[i]
        m = masks[i]
        area = m.sum()
        overlap = (m & taken).sum()
        ok = (area > 0) & (overlap.to(torch.float32) <= fraction_threshold * area.to(torch.float32))
        kept[i] = ok
        taken = taken | (m & ok)
    return kept[torch.argsort(order)]  # back to the input order


def merge_panoptic_logits(panoptic_logits, num_stuff, classes, scores, stuff_area_limit=0):
    """Argmax of ``[S + N (+1), H, W]`` panoptic logits → detectron2's ``panoptic_seg``.

    Channels past ``S + N`` (the unknown channel) and empty channels give no segment. Returns
    ``(panoptic_seg, segments_info)``: ``[H,W]`` int32 segment ids (0 = unlabelled: the unknown channel and stuff
    segments under ``stuff_area_limit`` pixels) and one dict per non-empty segment, ids ``1..``:
    things ``{"id", "isthing": True, "category_id": class, "score", "instance_id"}``, stuff
    ``{"id", "isthing": False, "category_id": stuff channel + 1 (separated label), "area"}``.
    """
    label = panoptic_logits.argmax(dim=0)
    num_inst = int(classes.shape[0])
    panoptic_seg = torch.zeros(label.shape, dtype=torch.int32, device=label.device)
    segments_info = []
    counts = torch.bincount(label.flatten(), minlength=panoptic_logits.shape[0]).tolist()
    for ch in range(num_stuff + num_inst):
        area = counts[ch]
        if area == 0:
            continue
        if ch < num_stuff:
            if area < stuff_area_limit:
                continue
            info = {"isthing": False, "category_id": ch + 1, "area": area}
        else:
            i = ch - num_stuff
            info = {"isthing": True, "category_id": int(classes[i]), "score": float(scores[i]), "instance_id": i}
        info["id"] = len(segments_info) + 1
        panoptic_seg[label == ch] = info["id"]
        segments_info.append(info)
    return panoptic_seg, segments_info
