"""YOLACT's training targets: GT boxes scaled to the square network input, anchors matched (SSD style, greedy
forcing, crowd boxes), GT masks at prototype and semantic-segmentation resolution."""
import torch
import torch.nn.functional as F

from detectron2.structures import BitMasks, PolygonMasks

from segx.modeling.ssd_coding import NEGATIVE, encode_boxes, match_priors

__all__ = ["match_targets", "gt_mask_tensor", "resize_binary"]


def gt_mask_tensor(instances, height, width, index, device=None):
    """``instances.gt_masks`` (polygons, bit masks or a tensor) → ``[G,height,width]`` float in {0, 1} on
    ``device`` (polygons are rasterised on the CPU, so without it they stay there)."""
    if not instances.has("gt_masks"):
        raise ValueError(f"YOLACT: image {index} has instances without 'gt_masks' (set MODEL.MASK_ON True so "
                         "detectron2's DatasetMapper keeps the masks)")
    masks = instances.gt_masks
    if isinstance(masks, PolygonMasks):
        masks = BitMasks.from_polygon_masks(masks, height, width).tensor
    elif isinstance(masks, BitMasks):
        masks = masks.tensor
    if not torch.is_tensor(masks) or masks.dim() != 3:
        raise ValueError(f"YOLACT: image {index}: gt_masks must be PolygonMasks, BitMasks or a [G,H,W] tensor")
    return masks.to(device=device, dtype=torch.float32)


def resize_binary(masks, size):
    """``[G,H,W]`` {0,1} → ``[G,h,w]`` {0,1}: bilinear, then > 0.5 (official GT downsampling)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    return (F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0] > 0.5).float()


def match_targets(gt_instances, image_sizes, priors, proto_size, segm_size=None, *, input_size, pos_iou=0.5,
                  neg_iou=0.4, crowd_iou=0.7, box_variances=(0.1, 0.2)):
    """Per-image targets for anchors ``priors`` ``[P,4]`` (cx, cy, w, h in pixels of the S×S network input).

    Args:
        gt_instances: per image ``Instances`` at the size of the image the model was given (h, w); boxes are
            scaled by S/w, S/h (1 when the mapper already made the image S×S).
        image_sizes: per image that (h, w).
        proto_size, segm_size: (H, W) of the prototypes and of the semantic-segmentation logits (None: no
            ``masks_segm``).
    Returns:
        ``labels [B,P]`` long (c + 1 positive, 0 background, < 0 ignored), ``box_targets [B,P,4]`` (encoded),
        ``matched [B,P]`` (GT index, or ``NEGATIVE``/``IGNORE``), and per image a dict: ``boxes`` ``[G,4]`` (input
        pixels), ``classes`` ``[G]``, ``masks_proto`` ``[G,Hp,Wp]`` and ``masks_segm`` (non-crowd GT only).
    """
    S = input_size
    B, P = len(gt_instances), priors.shape[0]
    labels = torch.zeros(B, P, dtype=torch.long, device=priors.device)
    box_targets = torch.zeros(B, P, 4, device=priors.device)
    matched_all, per_image = [], []
    for b, (inst, (h, w)) in enumerate(zip(gt_instances, image_sizes)):
        scale = torch.tensor([S / w, S / h, S / w, S / h], device=priors.device)
        # every target tensor on the anchors' device (GT given on another device is moved, not mixed)
        boxes = inst.gt_boxes.tensor.to(priors.device) * scale
        classes = inst.gt_classes.to(priors.device)
        masks = gt_mask_tensor(inst, h, w, b, device=priors.device)
        crowd = inst.gt_is_crowd.to(priors.device).bool() if inst.has("gt_is_crowd") else \
            torch.zeros_like(classes, dtype=torch.bool)
        boxes, crowd_boxes = boxes[~crowd], boxes[crowd]
        classes, masks = classes[~crowd], masks[~crowd]
        matched, _ = match_priors(boxes, priors, pos_iou, neg_iou, force="greedy", crowd_boxes=crowd_boxes,
                                  crowd_iou=crowd_iou)
        pos = matched >= 0
        gt_idx = matched.clamp(min=0)
        if boxes.shape[0] > 0:
            labels[b] = torch.where(pos, classes[gt_idx] + 1, torch.where(matched == NEGATIVE, 0, -1))
            box_targets[b, pos] = encode_boxes(boxes[gt_idx[pos]], priors[pos], box_variances)
        else:
            labels[b] = torch.where(matched == NEGATIVE, 0, -1)
        matched_all.append(matched)
        target = {"boxes": boxes, "classes": classes, "masks_proto": resize_binary(masks, proto_size)}
        if segm_size is not None:
            target["masks_segm"] = resize_binary(masks, segm_size)
        per_image.append(target)
    return labels, box_targets, torch.stack(matched_all), per_image
