"""UPSNet's parameter-free panoptic head: stuff logits, pasted thing logits and the unknown channel.

Conventions (shared by the whole ``segx.modeling.panoptic`` package):

* Semantic logits have the stuff channels first, then one channel per thing class: ``[S + K, H, W]``.
* Panoptic logits are ``[S + N (+ 1), H, W]``: stuff, one channel per instance, and the optional unknown
  channel last.
* Boxes are ``x0, y0, x1, y1`` in pixels of the map they are used on; pixel (row i, col j) is inside when
  ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1`` (the rule of ``segx.layers.assemble_masks``).
"""
import torch
import torch.nn.functional as F

__all__ = ["boxes_to_pixel_masks", "paste_mask_logits", "upsnet_panoptic_logits"]


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
