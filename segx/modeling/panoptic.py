"""Panoptic head parts shared by UPSNet and VPSNet: the parameter-free panoptic logits, their training
targets, overlap-based mask removal, and the merge into detectron2's ``panoptic_seg`` format.

Follows UPSNet (Xiong et al., CVPR 2019; uber-research/UPSNet). Conventions:

* Semantic logits have the stuff channels first, then one channel per thing class: ``[S + K, H, W]``.
* Semantic labels are detectron2's "separated" labels (``register_coco_panoptic_separated``): 0 = any thing,
  ``1..S`` = stuff, ``ignore`` (255) = unlabelled. Stuff label ``l`` is semantic channel ``l - 1``.
* Panoptic logits are ``[S + N (+ 1), H, W]``: stuff, one channel per instance, and the optional unknown
  channel last.
* Boxes are ``x0, y0, x1, y1`` in pixels of the map they are used on; pixel (row i, col j) is inside when
  ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1`` (the rule of ``segx.layers.assemble_masks``).
"""
import torch
import torch.nn.functional as F

__all__ = [
    "boxes_to_pixel_masks",
    "paste_mask_logits",
    "upsnet_panoptic_logits",
    "thing_semantic_targets",
    "upsnet_panoptic_targets",
    "mask_removal_keep",
    "merge_panoptic_logits",
]


def boxes_to_pixel_masks(boxes, height, width):
    """``[N,4]`` boxes → ``[N,H,W]`` float masks, 1 where the pixel centre is inside the box."""
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])  # [N,W]
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])  # [N,H]
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)


def paste_mask_logits(mask_logits, boxes, height, width):
    """Pastes ``[N,M,M]`` RoI mask logits into ``[N,H,W]`` maps: bilinearly resized so the M×M grid spans the
    box, zero outside the box (UPSNet's mask term)."""
    n = mask_logits.shape[0]
    xs = torch.arange(width, device=boxes.device, dtype=mask_logits.dtype) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=mask_logits.dtype) + 0.5
    bw = (boxes[:, 2] - boxes[:, 0]).clamp(min=1e-6)
    bh = (boxes[:, 3] - boxes[:, 1]).clamp(min=1e-6)
    gx = (xs[None, :] - boxes[:, 0:1]) / bw[:, None] * 2 - 1  # [N,W], -1..1 across the box
    gy = (ys[None, :] - boxes[:, 1:2]) / bh[:, None] * 2 - 1  # [N,H]
    grid = torch.stack([gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], dim=3)
    pasted = F.grid_sample(mask_logits[:, None], grid, mode="bilinear", padding_mode="border", align_corners=False)
    return pasted[:, 0] * boxes_to_pixel_masks(boxes, height, width)


def upsnet_panoptic_logits(sem_logits, num_stuff, mask_logits, boxes, classes, with_unknown=True):
    """UPSNet's panoptic logits for one image.

    Args:
        sem_logits: ``[S+K, H, W]`` semantic logits (stuff channels first).
        num_stuff: S.
        mask_logits: ``[N, M, M]`` mask logits of each instance's own class.
        boxes: ``[N, 4]`` in pixels of ``sem_logits``.
        classes: ``[N]`` thing class of each instance, ``0..K-1``.
        with_unknown: append the unknown channel.

    Returns:
        ``[S + N (+1), H, W]``: stuff logits; per instance ``sem_logits[S + class]`` inside its box plus its
        pasted mask logits (0 outside the box); unknown = max over thing semantic logits − max over instance
        logits (max over no instance counts as 0).
    """
    h, w = sem_logits.shape[-2:]
    inbox = boxes_to_pixel_masks(boxes, h, w)
    inst = sem_logits[num_stuff + classes] * inbox + paste_mask_logits(mask_logits, boxes, h, w)
    parts = [sem_logits[:num_stuff], inst]
    if with_unknown:
        # 0 when there is no instance, else -inf (so only real instances count); a tensor, so tracing keeps it.
        n = torch._shape_as_tensor(inst)[0].to(sem_logits.device)
        floor = torch.where(n > 0, torch.full_like(n, -1, dtype=sem_logits.dtype) * float("inf"),
                            torch.zeros_like(n, dtype=sem_logits.dtype))
        inst_max = torch.cat([inst, floor.view(1, 1, 1).expand(1, h, w)], dim=0).amax(dim=0)
        parts.append((sem_logits[num_stuff:].amax(dim=0) - inst_max)[None])
    return torch.cat(parts, dim=0)


def thing_semantic_targets(sem_labels, gt_masks, gt_classes, num_stuff, ignore_value=255):
    """UPSNet semantic-head labels from separated labels: stuff ``l`` → channel ``l-1``, a thing pixel →
    ``S + class`` of the instance mask covering it (later masks win), thing pixels under no mask → ignore.

    ``sem_labels``: ``[H,W]`` long; ``gt_masks``: ``[N,H,W]`` bool; ``gt_classes``: ``[N]``."""
    out = torch.where((sem_labels > 0) & (sem_labels != ignore_value), sem_labels - 1,
                      torch.full_like(sem_labels, ignore_value))
    for m, c in zip(gt_masks, gt_classes):
        out[m & (sem_labels != ignore_value)] = num_stuff + int(c)
    return out


def upsnet_panoptic_targets(sem_labels, gt_masks, keep, num_stuff, with_unknown, ignore_value=255):
    """Target of the panoptic logits: stuff label ``l`` → ``l-1``; the pixels of the ``j``-th kept instance
    → ``S + j``; thing pixels of dropped instances or of no instance → the unknown channel ``S + #kept``
    (ignore without it). ``sem_labels``: ``[H,W]`` separated labels; ``gt_masks``: ``[N,H,W]`` bool;
    ``keep``: ``[N]`` bool."""
    num_kept = int(keep.sum())
    unknown = num_stuff + num_kept if with_unknown else ignore_value
    out = torch.where(sem_labels == 0, torch.full_like(sem_labels, unknown), sem_labels - 1)
    out[sem_labels == ignore_value] = ignore_value
    j = 0
    for m, k in zip(gt_masks, keep):
        if bool(k):
            out[m] = num_stuff + j
            j += 1
        else:
            out[m] = unknown
    return out


@torch.jit.script_if_tracing
def mask_removal_keep(masks, fraction_threshold: float):
    """``[N,H,W]`` bool masks sorted by decreasing score → ``[N]`` bool: a mask is removed when more than
    ``fraction_threshold`` of its area lies on the masks kept before it (UPSNet's MaskRemoval)."""
    n = masks.shape[0]
    keep = torch.zeros(n, dtype=torch.bool, device=masks.device)
    taken = torch.zeros(masks.shape[1:], dtype=torch.bool, device=masks.device)
    for i in range(n):
        m = masks[i]
        area = m.sum()
        overlap = (m & taken).sum()
        ok = (area > 0) & (overlap.to(torch.float32) <= fraction_threshold * area.to(torch.float32))
        keep[i] = ok
        taken = taken | (m & ok)
    return keep


def merge_panoptic_logits(panoptic_logits, num_stuff, classes, scores, stuff_area_limit=0):
    """Argmax of ``[S + N (+1), H, W]`` panoptic logits → detectron2's ``panoptic_seg``.

    Channels past ``S + N`` (the unknown channel) and empty channels give no segment. Returns
    ``(panoptic_seg, segments_info)``: ``[H,W]`` int32 segment ids (0 = unlabelled: the unknown channel and stuff segments under ``stuff_area_limit`` pixels) and one dict per non-empty segment, ids ``1..``:
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
