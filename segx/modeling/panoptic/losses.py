"""UPSNet's losses beside detectron2's: the RoI semantic loss and the panoptic-head loss (the semantic-head
pixel loss is ``UPSNetSemanticHead.losses``)."""
import torch
from torchvision.ops import roi_align

from segx.modeling.panoptic.panoptic_head import panoptic_frame_boxes, upsnet_panoptic_logits
from segx.modeling.panoptic.targets import sample_labels_in_boxes, upsnet_panoptic_targets

__all__ = ["cross_entropy_with_ignore", "semantic_roi_loss", "upsnet_panoptic_loss"]


def cross_entropy_with_ignore(logits, target, ignore_value):
    """Mean cross-entropy over the non-ignored pixels: ``logits`` ``[B,C,...]``, ``target`` ``[B,...]`` long;
    0 (with a graph) when all are ignored, where ``F.cross_entropy(reduction="mean")`` gives NaN."""
    valid = (target != ignore_value).sum()
    loss = torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_value, reduction="sum")
    return loss / valid.clamp(min=1)


def semantic_roi_loss(sem_logits, sem_targets, gt_boxes, roi_size, stride, ignore_value):
    """UPSNet's RoI semantic loss: the semantic logits RoIAligned (``roi_size``², ``aligned=True``) in each GT box
    against the labels sampled at the same grid.

    Args:
        sem_logits: ``[B, S+K, H/stride, W/stride]``.
        sem_targets: ``[B, H, W]`` semantic-head labels at the (padded) input resolution.
        gt_boxes: per image ``[Ni, 4]`` boxes in input pixels.
    Returns:
        scalar; 0 (with a graph) without boxes.
    """
    if sum(len(b) for b in gt_boxes) == 0:
        return sem_logits.sum() * 0.0
    rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(gt_boxes)])
    roi_logits = roi_align(sem_logits, rois, roi_size, 1.0 / stride, 0, aligned=True)
    roi_targets = sample_labels_in_boxes(sem_targets, rois, roi_size)
    return cross_entropy_with_ignore(roi_logits, roi_targets, ignore_value)


def upsnet_panoptic_loss(sem_logits, mask_logits, boxes, classes, sem_labels, gt_masks, keeps, num_stuff, stride,
                         with_unknown, ignore_value=255, mode="official"):
    """Mean over images of the cross-entropy of the panoptic logits built on the kept GT instances, at the
    semantic logits' stride (UPSNet's training of the panoptic head).

    Args:
        sem_logits: ``[B, S+K, h, w]`` semantic logits, ``h = H / stride``.
        mask_logits: ``[sum Nk, M, M]`` mask logits of the kept instances (own class), images in order.
        boxes, classes: per image the kept instances' ``[Nk, 4]`` boxes (input pixels) and ``[Nk]`` classes.
        sem_labels: ``[B, H, W]`` separated labels at the padded input resolution.
        gt_masks: per image ``[N, H, W]`` bool masks of all GT instances; ``keeps``: per image ``[N]`` bool.
        mode: the panoptic head's mode (``upsnet_panoptic_logits``); boxes go to the 1/stride frame through
            ``panoptic_frame_boxes``.
    """
    losses, start = [], 0
    half = stride // 2
    for b in range(len(boxes)):
        n = len(classes[b])
        logits = upsnet_panoptic_logits(sem_logits[b], num_stuff, mask_logits[start:start + n],
                                        panoptic_frame_boxes(boxes[b], stride, mode), classes[b], with_unknown, mode)
        start += n
        target = upsnet_panoptic_targets(sem_labels[b][half::stride, half::stride],
                                         gt_masks[b][:, half::stride, half::stride], keeps[b], num_stuff,
                                         with_unknown, ignore_value)
        losses.append(cross_entropy_with_ignore(logits[None], target[None], ignore_value))
    return torch.stack(losses).mean()
