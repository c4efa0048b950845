"""YOLACT's losses (dbolya/yolact ``multibox_loss.py``): smooth-L1 boxes, OHEM softmax cross-entropy, box-area
normalised mask BCE, the auxiliary semantic-segmentation BCE and, for YOLACT++, the mask-IoU regression."""
import torch
import torch.nn.functional as F

from segx.layers import assemble_masks
from segx.modeling.ssd_coding import hard_negative_mining

from .crop import crop_boxes

__all__ = ["ohem_classification_loss", "normalized_mask_loss", "semantic_seg_loss", "yolact_losses",
           "DEFAULT_LOSS_WEIGHTS"]

# official bbox_alpha, conf_alpha, mask_alpha, semantic_segmentation_alpha, maskiou_alpha
DEFAULT_LOSS_WEIGHTS = {"loss_box_reg": 1.5, "loss_cls": 1.0, "loss_mask": 6.125, "loss_sem_seg": 1.0,
                        "loss_maskiou": 25.0}


def ohem_classification_loss(logits, labels, neg_pos_ratio=3):
    """Softmax cross-entropy over the positives and the hardest negatives (``neg_pos_ratio`` per positive,
    per image), summed.

    Args:
        logits: ``[B,P,C+1]`` (background = 0); labels: ``[B,P]`` long: c + 1 positive, 0 background, < 0 ignored.
    Returns:
        ``(loss, negatives)``: the summed loss and the ``[B,P]`` bool mask of mined negatives.
    """
    background_loss = torch.logsumexp(logits, dim=-1) - logits[..., 0]
    positive, candidates = labels > 0, labels == 0
    negatives = hard_negative_mining(background_loss, positive, candidates, neg_pos_ratio)
    sel = positive | negatives
    return F.cross_entropy(logits[sel], labels[sel], reduction="sum"), negatives


def normalized_mask_loss(pred_masks, gt_masks, boxes):
    """Per-mask BCE summed over pixels and divided by the GT box area in prototype pixels (official
    ``mask_proto_normalize_emulate_roi_pooling``).

    Args:
        pred_masks: ``[N,H,W]`` probabilities (already cropped); gt_masks: ``[N,H,W]`` in {0, 1};
        boxes: ``[N,4]`` GT boxes in prototype pixels.
    Returns:
        ``[N]`` losses.
    """
    # in float32 with autocast off: CUDA autocast refuses binary_cross_entropy on probabilities (AMP training)
    with torch.autocast(device_type=pred_masks.device.type, enabled=False):
        bce = F.binary_cross_entropy(pred_masks.float().clamp(0, 1), gt_masks.float(), reduction="none")
    bce = bce.sum(dim=(1, 2))
    # the area floor (1 prototype pixel²) only guards degenerate boxes; the official code has none
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
    return bce / area


def semantic_seg_loss(sem_seg, per_image, num_classes):
    """Sum over images of the per-pixel mean BCE between ``sem_seg`` ``[B,C,H,W]`` logits and, per class c, the
    union of class c's GT masks (``per_image[b]["masks_segm"]``)."""
    loss = sem_seg.sum() * 0.0
    for b, t in enumerate(per_image):
        one_hot = F.one_hot(t["classes"], num_classes).to(sem_seg.dtype)  # [G,C]
        target = (one_hot[:, :, None, None] * t["masks_segm"][:, None]).amax(dim=0) if t["classes"].numel() \
            else torch.zeros_like(sem_seg[b])
        loss = loss + F.binary_cross_entropy_with_logits(sem_seg[b], target, reduction="sum") / (
            sem_seg.shape[-2] * sem_seg.shape[-1])
    return loss


def _mask_losses(protos, coeffs, positive, matched, per_image, *, input_size, masks_to_train, crop_mode,
                 maskiou_net=None, discard_mask_area=25):
    """Summed mask loss over the positives (at most ``masks_to_train`` random ones per image, scaled back up) and,
    with ``maskiou_net``, its summed IoU regression loss (None without)."""
    Hp, Wp = protos.shape[-2:]
    S = input_size
    to_proto = torch.tensor([Wp / S, Hp / S, Wp / S, Hp / S], device=protos.device)
    mask_loss = protos.sum() * 0.0
    iou_inputs, iou_targets, iou_labels = [], [], []
    for b, t in enumerate(per_image):
        idx = matched[b][positive[b]]
        coef = coeffs[b][positive[b]]
        n = idx.shape[0]
        if n == 0:
            continue
        factor = 1.0
        if n > masks_to_train:
            select = torch.randperm(n, device=idx.device)[:masks_to_train]
            idx, coef, factor = idx[select], coef[select], n / masks_to_train
        boxes = t["boxes"][idx] * to_proto
        gt = t["masks_proto"][idx]
        pred = assemble_masks(protos[b], coef, crop_boxes(boxes, Hp, Wp, crop_mode))
        mask_loss = mask_loss + normalized_mask_loss(pred, gt, boxes).sum() * factor
        if maskiou_net is not None:
            keep = gt.sum(dim=(1, 2)) > discard_mask_area
            hard = (pred[keep] > 0.5).float()
            inter = (hard * gt[keep]).sum(dim=(1, 2))
            union = hard.sum(dim=(1, 2)) + gt[keep].sum(dim=(1, 2)) - inter
            iou_inputs.append(pred[keep])
            iou_targets.append(inter / union.clamp(min=1.0))
            iou_labels.append(t["classes"][idx][keep])
    if maskiou_net is None:
        return mask_loss, None
    if iou_inputs and sum(x.shape[0] for x in iou_inputs) > 0:
        pred_iou = maskiou_net(torch.cat(iou_inputs)[:, None])
        pred_iou = pred_iou.gather(1, torch.cat(iou_labels)[:, None])[:, 0]
        iou_loss = F.smooth_l1_loss(pred_iou, torch.cat(iou_targets), reduction="sum")
    else:
        iou_loss = sum(p.sum() for p in maskiou_net.parameters()) * 0.0
    return mask_loss, iou_loss


def yolact_losses(predictions, targets, *, num_classes, input_size, loss_weights=DEFAULT_LOSS_WEIGHTS,
                  neg_pos_ratio=3, masks_to_train=100, crop_mode="official", maskiou_net=None, discard_mask_area=25):
    """YOLACT's loss dict from ``predictions`` (``YOLACT.predict``'s dict) and ``targets`` (``match_targets``).

    ``loss_box_reg`` (smooth-L1 on the encoded boxes), ``loss_cls`` (OHEM CE), ``loss_mask`` (box-normalised
    BCE) and ``loss_maskiou`` (YOLACT++) are divided by the batch's positives; ``loss_sem_seg`` (when
    ``predictions`` has ``"sem_seg"``) by the number of images; each times ``loss_weights[name]``.
    """
    labels, box_targets, matched, per_image = targets
    w = loss_weights
    positive = labels > 0
    num_pos = positive.sum().clamp(min=1).float()
    losses = {}
    losses["loss_box_reg"] = F.smooth_l1_loss(predictions["box_deltas"][positive], box_targets[positive],
                                              reduction="sum") * (w["loss_box_reg"] / num_pos)
    cls_loss, _ = ohem_classification_loss(predictions["logits"], labels, neg_pos_ratio)
    losses["loss_cls"] = cls_loss * (w["loss_cls"] / num_pos)
    mask_loss, iou_loss = _mask_losses(predictions["protos"], predictions["coeffs"], positive, matched, per_image,
                                       input_size=input_size, masks_to_train=masks_to_train, crop_mode=crop_mode,
                                       maskiou_net=maskiou_net, discard_mask_area=discard_mask_area)
    losses["loss_mask"] = mask_loss * (w["loss_mask"] / num_pos)
    if iou_loss is not None:
        losses["loss_maskiou"] = iou_loss * (w["loss_maskiou"] / num_pos)
    if predictions.get("sem_seg") is not None:
        sem_loss = semantic_seg_loss(predictions["sem_seg"], per_image, num_classes)
        losses["loss_sem_seg"] = sem_loss * (w["loss_sem_seg"] / len(per_image))
    return losses
