"""UPSNet's parameter-free panoptic head: stuff logits, pasted thing logits and the unknown channel.

Conventions (shared by the whole ``segx.modeling.panoptic`` package):

* Semantic logits have the stuff channels first, then one channel per thing class: ``[S + K, H, W]``.
* Panoptic logits are ``[S + N (+ 1), H, W]``: stuff, one channel per instance, and the optional unknown
  channel last.

Two modes (``MODEL.UPSNET.PANOPTIC_HEAD_MODE``):

* ``"official"`` (default), as uber-research/UPSNet's ``SegTerm`` / ``MaskTerm`` / ``MaskRemoval``. Boxes are in the
  official *inclusive* convention (``x1, y1`` = index of the last pixel; ``panoptic_frame_boxes`` converts
  detectron2's boxes). Instance ``i``'s semantic term covers columns ``trunc(x0) .. round(x1)`` (inclusive; round
  half to even) and rows alike; its mask logits are bilinearly resized (``align_corners=False``) to
  ``(trunc(y1) - trunc(y0) + 1) x (trunc(x1) - trunc(x0) + 1)`` (at least 1) and pasted at rows
  ``trunc(y0) .. trunc(y1)``, columns ``trunc(x0) .. trunc(x1)``. Unknown = max over thing semantic logits − max
  over instances of the semantic term alone (0 outside its span); with no instance the subtracted map is −10.
* ``"segx"`` (segx's earlier head): boxes ``x0, y0, x1, y1`` are continuous edges; pixel (row i, col j) is inside
  when ``x0 <= j + 0.5 < x1`` and ``y0 <= i + 0.5 < y1`` (the rule of ``segx.layers.assemble_masks``); mask logits
  are sampled with ``grid_sample`` so the M×M grid spans the box. Unknown = max over thing semantic logits − max over
  instances of (semantic term + pasted mask logits); with no instance the subtracted map is 0.
"""
import torch
import torch.nn.functional as F

__all__ = [
    "PANOPTIC_HEAD_MODES",
    "boxes_to_pixel_masks",
    "official_box_spans",
    "paste_mask_logits",
    "paste_mask_logits_official",
    "panoptic_frame_boxes",
    "upsnet_panoptic_logits",
]

PANOPTIC_HEAD_MODES = ("official", "segx")
# The official SegTerm's instance map when there is no instance (``torch.ones_like(...) * -10``).
OFFICIAL_NO_INSTANCE_LOGIT = -10.0


def check_panoptic_head_mode(mode):
    if mode not in PANOPTIC_HEAD_MODES:
        raise ValueError(f"UPSNet panoptic head mode must be one of {PANOPTIC_HEAD_MODES} "
                         f"(MODEL.UPSNET.PANOPTIC_HEAD_MODE), got {mode!r}")
    return mode


def panoptic_frame_boxes(boxes, stride=1, mode="official"):
    """detectron2 boxes ``[N,4]`` (input pixels, continuous edges) → boxes in pixels of a panoptic frame of
    ``stride`` (1: the input; 4: the semantic logits), in the convention of ``mode``: ``"segx"`` keeps the edges
    (``boxes / stride``); ``"official"`` converts to the official inclusive convention first, whose ``x1, y1`` are
    the last pixel's index (``x1 - 1``, as the official ``xywh_to_xyxy`` and box decoding), then divides."""
    check_panoptic_head_mode(mode)
    if mode == "official":
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] - 1], dim=1)
    return boxes / stride


def official_box_spans(boxes):
    """Integer spans of the official panoptic head for ``[N,4]`` inclusive-convention boxes: ``(start, mask_end,
    sem_end)``, each ``[N,2]`` float (x, y): start ``trunc(x0, y0)``; the mask's last pixel ``trunc(x1, y1)``; the
    semantic term's last pixel ``round(x1, y1)`` (half to even, as NumPy's). Truncation is toward zero (the official
    ``.long()`` / ``int()``)."""
    start, end = boxes[:, :2], boxes[:, 2:]
    return _trunc(start), _trunc(end), end.round()


def _trunc(x):
    """Rounding toward zero; ``Tensor.trunc`` has no ONNX export."""
    return torch.where(x >= 0, x.floor(), x.ceil())


def _span_masks(start, end, height, width):
    """``[N,H,W]`` float, 1 at rows ``start_y..end_y`` and columns ``start_x..end_x`` (inclusive; ``[N,2]``)."""
    xs = torch.arange(width, device=start.device, dtype=start.dtype)
    ys = torch.arange(height, device=start.device, dtype=start.dtype)
    in_x = (xs[None, :] >= start[:, 0:1]) & (xs[None, :] <= end[:, 0:1])  # [N,W]
    in_y = (ys[None, :] >= start[:, 1:2]) & (ys[None, :] <= end[:, 1:2])  # [N,H]
    return (in_y[:, :, None] & in_x[:, None, :]).to(start.dtype)


def paste_mask_logits_official(mask_logits, boxes, height, width):
    """The official ``MaskTerm`` / ``MaskRemoval`` paste: ``[N,M,M]`` mask logits → ``[N,H,W]``, each resized
    bilinearly (``align_corners=False``, as ``F.upsample`` and ``cv2.resize``) to its span's size
    ``trunc(x1) - trunc(x0) + 1`` (at least 1; rows alike) and written at that span, 0 elsewhere. ``boxes``: ``[N,4]``
    inclusive convention, pixels of the frame. One ``grid_sample`` for all instances (traceable): output pixel ``j``
    of a span of size ``s`` samples source ``(j + 0.5)·M/s − 0.5`` clamped to the grid, which is what the resize
    computes."""
    n = mask_logits.shape[0]
    start, end, _ = official_box_spans(boxes.float())  # box arithmetic in float32, also under AMP
    size = (end - start + 1).clamp(min=1)  # [N,2] (w, h)
    xs = torch.arange(width, device=boxes.device, dtype=torch.float32)
    ys = torch.arange(height, device=boxes.device, dtype=torch.float32)
    gx = (xs[None, :] - start[:, 0:1] + 0.5) / size[:, 0:1] * 2 - 1  # [N,W]
    gy = (ys[None, :] - start[:, 1:2] + 0.5) / size[:, 1:2] * 2 - 1  # [N,H]
    grid = torch.stack([gx[:, None, :].expand(n, height, width), gy[:, :, None].expand(n, height, width)], dim=3)
    pasted = F.grid_sample(mask_logits[:, None], grid.to(mask_logits.dtype), mode="bilinear", padding_mode="border",
                           align_corners=False)
    return pasted[:, 0] * _span_masks(start, end, height, width).to(pasted.dtype)


def boxes_to_pixel_masks(boxes, height, width):
    """``[N,4]`` boxes → ``[N,H,W]`` float masks, 1 where the pixel centre is inside the box."""
    xs = torch.arange(width, device=boxes.device, dtype=boxes.dtype) + 0.5
    ys = torch.arange(height, device=boxes.device, dtype=boxes.dtype) + 0.5
    in_x = (xs[None, :] >= boxes[:, 0:1]) & (xs[None, :] < boxes[:, 2:3])  # [N,W]
    in_y = (ys[None, :] >= boxes[:, 1:2]) & (ys[None, :] < boxes[:, 3:4])  # [N,H]
    return (in_y[:, :, None] & in_x[:, None, :]).to(boxes.dtype)


def paste_mask_logits(mask_logits, boxes, height, width):
    """segx mode's paste: ``[N,M,M]`` RoI mask logits → ``[N,H,W]`` maps, bilinearly sampled so the M×M grid spans
    the box (continuous edges), zero at pixels whose centre is outside the box."""
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


def upsnet_panoptic_logits(sem_logits, num_stuff, mask_logits, boxes, classes, with_unknown=True, mode="official"):
    """UPSNet's panoptic logits for one image.

    Args:
        sem_logits: ``[S+K, H, W]`` semantic logits (stuff channels first).
        num_stuff: S.
        mask_logits: ``[N, M, M]`` mask logits of each instance's own class.
        boxes: ``[N, 4]`` in pixels of ``sem_logits``, in ``mode``'s convention (``panoptic_frame_boxes``).
        classes: ``[N]`` thing class of each instance, ``0..K-1``.
        with_unknown: append the unknown channel.
        mode: ``"official"`` or ``"segx"`` (module docstring).

    Returns:
        ``[S + N (+1), H, W]``: stuff logits; per instance ``sem_logits[S + class]`` on its box (0 elsewhere) plus its
        pasted mask logits; unknown = max over thing semantic logits − max over instances (official: of the
        semantic term, −10 without instances; segx: of the whole instance logit, 0 without instances).
    """
    check_panoptic_head_mode(mode)
    h, w = sem_logits.shape[-2:]
    if mode == "official":
        start, _, sem_end = official_box_spans(boxes.float())
        sem_term = sem_logits[num_stuff + classes] * _span_masks(start, sem_end, h, w).to(sem_logits.dtype)
        inst = sem_term + paste_mask_logits_official(mask_logits, boxes, h, w)
        subtracted, no_instance = sem_term, OFFICIAL_NO_INSTANCE_LOGIT
    else:
        inbox = boxes_to_pixel_masks(boxes, h, w)
        inst = sem_logits[num_stuff + classes] * inbox + paste_mask_logits(mask_logits, boxes, h, w)
        subtracted, no_instance = inst, 0.0
    parts = [sem_logits[:num_stuff], inst]
    if with_unknown:
        # The map subtracted when there is no instance, else -inf (so only real instances count); a tensor, so
        # tracing keeps it.
        n = torch._shape_as_tensor(subtracted)[0].to(sem_logits.device)
        floor = torch.where(n > 0, torch.full_like(n, -1, dtype=sem_logits.dtype) * float("inf"),
                            torch.full_like(n, no_instance, dtype=sem_logits.dtype))
        sub_max = torch.cat([subtracted, floor.view(1, 1, 1).expand(1, h, w)], dim=0).amax(dim=0)
        parts.append((sem_logits[num_stuff:].amax(dim=0) - sub_max)[None])
    return torch.cat(parts, dim=0)
