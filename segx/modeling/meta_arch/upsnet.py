"""UPSNet (Xiong et al., "UPSNet: A Unified Panoptic Segmentation Network", CVPR 2019).

Follows the official implementation (uber-research/UPSNet, ``upsnet/models/resnet_upsnet.py`` and its
operators): detectron2's backbone (ResNet-FPN), RPN and Mask R-CNN ROI heads; a deformable-conv semantic
head shared over P2–P5; and the parameter-free panoptic head of ``segx.modeling.panoptic``.

Data: detectron2's "separated" panoptic dicts (``instances`` + ``sem_seg`` with things = 0 and stuff
``1..S``, e.g. ``coco_2017_train_panoptic_separated`` or ``segx_shapes_panoptic_train_separated``), read by
the stock ``DatasetMapper``. Output: ``instances`` (Mask R-CNN) and ``panoptic_seg`` in detectron2's format,
stuff ``category_id`` being the separated label (as PanopticFPN's), which ``COCOPanopticEvaluator`` maps back.
"""
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms, roi_align

from detectron2.config import configurable
from detectron2.layers import Conv2d, get_norm
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.modeling.backbone import build_backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import BitMasks, Boxes, ImageList, Instances, PolygonMasks

from segx.layers.deform_conv import DeformConvWithOffset
from segx.modeling.panoptic import (
    mask_removal_keep,
    merge_panoptic_logits,
    paste_mask_logits,
    thing_semantic_targets,
    upsnet_panoptic_logits,
    upsnet_panoptic_targets,
)

__all__ = ["UPSNet", "UPSNetSemanticHead"]


class UPSNetSemanticHead(nn.Module):
    """UPSNet's semantic head: one subnet of ``num_convs`` 3×3 (deformable) convs + ReLU shared over the input
    levels (P2–P5), every level upsampled to the first level's size, concatenated, 1×1 classifier.

    ``forward(list of [B,C,Hl,Wl]) -> [B, num_classes, H0, W0]`` logits at the first level's stride."""

    def __init__(self, in_channels, num_classes, conv_dim=128, num_convs=3, deformable=True, norm="", num_levels=4):
        super().__init__()
        layers = []
        for i in range(num_convs):
            cin = in_channels if i == 0 else conv_dim
            nm = get_norm(norm, conv_dim) if norm else None
            if deformable:
                layers.append(DeformConvWithOffset(cin, conv_dim, 3, bias=not norm, norm=nm, activation=nn.ReLU()))
            else:
                layers.append(Conv2d(cin, conv_dim, 3, padding=1, bias=not norm, norm=nm, activation=F.relu))
        self.subnet = nn.Sequential(*layers)
        for m in layers:  # MSRA fill (trains from scratch); deformable offset convs stay zero-initialised
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        self.score = nn.Conv2d(conv_dim * num_levels, num_classes, 1)
        nn.init.normal_(self.score.weight, std=0.01)
        nn.init.zeros_(self.score.bias)

    def forward(self, features):
        size = features[0].shape[-2:]
        outs = []
        for i, f in enumerate(features):
            y = self.subnet(f)
            outs.append(y if i == 0 else F.interpolate(y, size=size, mode="bilinear", align_corners=False))
        return self.score(torch.cat(outs, dim=1))


@META_ARCH_REGISTRY.register()
class UPSNet(nn.Module):
    """Mask R-CNN + deformable semantic head + parameter-free panoptic head (with the unknown channel)."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        proposal_generator,
        roi_heads,
        sem_seg_head,
        sem_in_features,
        num_stuff,
        pixel_mean,
        pixel_std,
        sem_loss_weight=0.2,
        sem_roi_loss_weight=0.2,
        sem_roi_size=28,
        panoptic_loss_weight=0.1,
        box_keep_fraction=0.7,
        panoptic_nms_thresh=0.5,
        panoptic_score_thresh=0.6,
        panoptic_topk=100,
        mask_removal_thresh=0.3,
        stuff_area_limit=4096,
        ignore_value=255,
        sem_stride=4,
    ):
        """
        Args:
            sem_seg_head: a module mapping ``[features[f] for f in sem_in_features]`` to ``[B, S+K, H/s, W/s]``
                logits (stuff first), ``s = sem_stride``.
            num_stuff: S, the stuff classes (separated labels ``1..S``).
            sem_roi_loss_weight: weight of the RoI semantic loss; 0 disables it.
            box_keep_fraction: GT boxes kept for the panoptic head in training; < 1 enables the unknown channel.
            panoptic_*: selection of the instances entering the panoptic head at inference.
            stuff_area_limit: stuff segments under this many pixels (output resolution) become unlabelled.
        """
        super().__init__()
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.sem_seg_head = sem_seg_head
        self.sem_in_features = tuple(sem_in_features)
        self.num_stuff = num_stuff
        self.sem_loss_weight = sem_loss_weight
        self.sem_roi_loss_weight = sem_roi_loss_weight
        self.sem_roi_size = sem_roi_size
        self.panoptic_loss_weight = panoptic_loss_weight
        self.box_keep_fraction = box_keep_fraction
        self.with_unknown = box_keep_fraction < 1
        self.panoptic_nms_thresh = panoptic_nms_thresh
        self.panoptic_score_thresh = panoptic_score_thresh
        self.panoptic_topk = panoptic_topk
        self.mask_removal_thresh = mask_removal_thresh
        self.stuff_area_limit = stuff_area_limit
        self.ignore_value = ignore_value
        self.sem_stride = sem_stride
        if not getattr(roi_heads, "mask_on", False):
            raise ValueError("UPSNet needs the Mask R-CNN mask head: set MODEL.MASK_ON True")
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        u = cfg.MODEL.UPSNET
        in_features = cfg.MODEL.SEM_SEG_HEAD.IN_FEATURES
        num_stuff = cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1
        if num_stuff < 1:
            raise ValueError(
                "UPSNet: MODEL.SEM_SEG_HEAD.NUM_CLASSES counts 'things' (label 0) + the stuff classes, "
                f"got {cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES}"
            )
        channels = {shapes[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"UPSNet: semantic head inputs {in_features} must have equal channels, got {channels}")
        head = UPSNetSemanticHead(
            channels.pop(),
            num_stuff + cfg.MODEL.ROI_HEADS.NUM_CLASSES,
            conv_dim=u.SEM_CONV_DIM,
            num_convs=u.SEM_NUM_CONVS,
            deformable=u.SEM_DEFORMABLE,
            norm=u.SEM_NORM,
            num_levels=len(in_features),
        )
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, shapes),
            "roi_heads": build_roi_heads(cfg, shapes),
            "sem_seg_head": head,
            "sem_in_features": in_features,
            "num_stuff": num_stuff,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "sem_loss_weight": u.SEM_LOSS_WEIGHT,
            "sem_roi_loss_weight": u.SEM_ROI_LOSS_WEIGHT if u.SEM_ROI_LOSS else 0.0,
            "sem_roi_size": u.SEM_ROI_SIZE,
            "panoptic_loss_weight": u.PANOPTIC_LOSS_WEIGHT,
            "box_keep_fraction": u.BOX_KEEP_FRACTION,
            "panoptic_nms_thresh": u.PANOPTIC_NMS_THRESH,
            "panoptic_score_thresh": u.PANOPTIC_SCORE_THRESH,
            "panoptic_topk": u.PANOPTIC_TOPK,
            "mask_removal_thresh": u.MASK_REMOVAL_THRESH,
            "stuff_area_limit": u.STUFF_AREA_LIMIT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "sem_stride": shapes[in_features[0]].stride,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        return self.forward_training(batched_inputs)

    # ----------------------------------------------------------------------------------------------- training
    def _mask_logits(self, features, boxes_per_image, classes):
        """Mask-head logits ``[N, M, M]`` of each box's class (boxes in input pixels)."""
        rh = self.roi_heads
        x = rh.mask_pooler([features[f] for f in rh.mask_in_features], boxes_per_image)
        logits = rh.mask_head.layers(x)
        if logits.shape[1] == 1:  # class-agnostic mask head
            return logits[:, 0]
        return logits[torch.arange(logits.shape[0], device=logits.device), classes]

    def forward_training(self, batched_inputs):
        for i, x in enumerate(batched_inputs):
            if "instances" not in x or "sem_seg" not in x:
                raise ValueError(
                    f"UPSNet training input {i} ({x.get('file_name', '?')}) lacks 'instances' or 'sem_seg': train on a "
                    "detectron2 'separated' panoptic set (e.g. segx_shapes_panoptic_train_separated)"
                )
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        _, detector_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(detector_losses)

        sem_logits = self.sem_seg_head([features[f] for f in self.sem_in_features])
        hp, wp = images.tensor.shape[-2:]
        gt_sem = ImageList.from_tensors(
            [x["sem_seg"].to(self.device) for x in batched_inputs], self.backbone.size_divisibility, pad_value=self.ignore_value
        ).tensor.long()
        s = self.sem_stride
        masks, sem_targets = [], []
        for inst, sem in zip(gt_instances, gt_sem):
            m = _bitmasks(inst, hp, wp)
            masks.append(m)
            sem_targets.append(thing_semantic_targets(sem, m, inst.gt_classes, self.num_stuff, self.ignore_value))
        sem_targets = torch.stack(sem_targets)

        # Semantic loss at input resolution.
        up = F.interpolate(sem_logits, size=(hp, wp), mode="bilinear", align_corners=False)
        losses["loss_sem_seg"] = self.sem_loss_weight * _ce(up, sem_targets, self.ignore_value)

        # RoI semantic loss: the semantic logits inside each GT box (RoIAlign) against the labels sampled there.
        if self.sem_roi_loss_weight > 0:
            gt_boxes = [inst.gt_boxes.tensor for inst in gt_instances]
            if sum(len(b) for b in gt_boxes) > 0:
                rois = torch.cat([torch.cat([b.new_full((len(b), 1), i), b], 1) for i, b in enumerate(gt_boxes)])
                roi_logits = roi_align(sem_logits, rois, self.sem_roi_size, 1.0 / s, 0, aligned=True)
                roi_targets = _sample_labels_in_boxes(sem_targets, rois, self.sem_roi_size)
                losses["loss_sem_roi"] = self.sem_roi_loss_weight * _ce(roi_logits, roi_targets, self.ignore_value)
            else:
                losses["loss_sem_roi"] = sem_logits.sum() * 0.0

        # Panoptic head on (a random keep-fraction of) the GT boxes, at the semantic logits' stride.
        keeps, kept_boxes, kept_classes = [], [], []
        for inst in gt_instances:
            n = len(inst)
            keep = torch.zeros(n, dtype=torch.bool, device=self.device)
            if n > 0:
                k = max(int(n * self.box_keep_fraction), 1) if self.with_unknown else n
                keep[torch.from_numpy(np.random.choice(n, k, replace=False)).to(self.device)] = True
            keeps.append(keep)
            kept_boxes.append(inst.gt_boxes[keep])
            kept_classes.append(inst.gt_classes[keep])
        classes = torch.cat(kept_classes)
        if len(classes) > 0:
            mask_logits = self._mask_logits(features, kept_boxes, classes)
        else:
            mask_logits = sem_logits.new_zeros((0, self.sem_roi_size, self.sem_roi_size))
        pan_losses, start = [], 0
        for b in range(len(gt_instances)):
            n = len(kept_classes[b])
            logits = upsnet_panoptic_logits(
                sem_logits[b], self.num_stuff, mask_logits[start : start + n], kept_boxes[b].tensor / s,
                kept_classes[b], self.with_unknown,
            )
            start += n
            target = upsnet_panoptic_targets(
                gt_sem[b][s // 2 :: s, s // 2 :: s], masks[b][:, s // 2 :: s, s // 2 :: s], keeps[b],
                self.num_stuff, self.with_unknown, self.ignore_value,
            )
            pan_losses.append(_ce(logits[None], target[None], self.ignore_value))
        losses["loss_panoptic"] = self.panoptic_loss_weight * torch.stack(pan_losses).mean()
        return losses

    # ---------------------------------------------------------------------------------------------- inference
    def _select_panoptic_instances(self, boxes, scores, image_size):
        """Per-class boxes ``[R, K*4]`` and probabilities ``[R, K+1]`` → boxes, scores, classes of the (box,
        class) pairs over the score threshold after class-agnostic NMS, at most ``panoptic_topk``."""
        num_classes = scores.shape[1] - 1
        boxes = Boxes(boxes.reshape(-1, 4))
        boxes.clip(image_size)
        boxes = boxes.tensor.view(-1, num_classes, 4)
        fg = scores[:, :-1]
        idx = torch.nonzero(fg > self.panoptic_score_thresh)
        cand_boxes = boxes[idx[:, 0], idx[:, 1]]
        cand_scores = fg[idx[:, 0], idx[:, 1]]
        keep = nms(cand_boxes, cand_scores, self.panoptic_nms_thresh)[: self.panoptic_topk]
        return cand_boxes[keep], cand_scores[keep], idx[keep, 1]

    def inference(self, batched_inputs, do_postprocess=True):
        """``list[dict]``: with ``do_postprocess`` (detectron2 format at each input's ``height``×``width``)
        ``{"instances", "panoptic_seg": (ids [H,W] int32, segments_info)}``; without (traceable, input
        resolution) ``{"instances", "panoptic_instances": Instances(pred_boxes, scores, pred_classes),
        "panoptic_logits": [S + N (+1), h, w]}`` — the logits the panoptic merge takes its argmax of."""
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        proposals, _ = self.proposal_generator(images, features, None)
        results, _ = self.roi_heads(images, features, proposals, None)

        rh = self.roi_heads
        box_features = rh.box_head(rh.box_pooler([features[f] for f in rh.box_in_features], [p.proposal_boxes for p in proposals]))
        predictions = rh.box_predictor(box_features)
        all_boxes = rh.box_predictor.predict_boxes(predictions, proposals)
        all_scores = rh.box_predictor.predict_probs(predictions, proposals)

        sem_logits = self.sem_seg_head([features[f] for f in self.sem_in_features])
        sem_up = F.interpolate(sem_logits, size=images.tensor.shape[-2:], mode="bilinear", align_corners=False)
        selected = [
            self._select_panoptic_instances(all_boxes[b], all_scores[b], size) for b, size in enumerate(images.image_sizes)
        ]
        # One dummy box after the last image's boxes keeps the mask head's batch non-empty (GroupNorm's reshape
        # of an empty batch fails in onnxruntime); its logits are dropped.
        dummy = images.tensor.new_tensor([[0.0, 0.0, 1.0, 1.0]])
        box_lists = [Boxes(sel[0]) for sel in selected[:-1]] + [Boxes(torch.cat([selected[-1][0], dummy]))]
        classes_all = torch.cat([sel[2] for sel in selected] + [selected[-1][2].new_zeros(1)])
        all_mask_logits = self._mask_logits(features, box_lists, classes_all)[:-1]
        # (one image, as when tracing: no split, whose sizes would be frozen into the graph)
        all_mask_logits = (
            [all_mask_logits] if len(selected) == 1 else all_mask_logits.split([sel[2].shape[0] for sel in selected])
        )
        outputs = []
        for b, image_size in enumerate(images.image_sizes):
            h, w = image_size
            boxes, scores, classes = selected[b]
            mask_logits = all_mask_logits[b]
            keep = mask_removal_keep(paste_mask_logits(mask_logits, boxes, h, w) > 0, self.mask_removal_thresh)
            boxes, scores, classes, mask_logits = boxes[keep], scores[keep], classes[keep], mask_logits[keep]
            logits = upsnet_panoptic_logits(sem_up[b, :, :h, :w], self.num_stuff, mask_logits, boxes, classes, self.with_unknown)
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(boxes)
            inst.scores = scores
            inst.pred_classes = classes
            outputs.append({"instances": results[b], "panoptic_instances": inst, "panoptic_logits": logits})
        if not do_postprocess:
            return outputs
        return self.postprocess(outputs, batched_inputs, images.image_sizes)

    def postprocess(self, outputs, batched_inputs, image_sizes):
        """Resizes to each input's ``height``/``width`` and merges the panoptic logits into ``panoptic_seg``."""
        processed = []
        for out, x, (h, w) in zip(outputs, batched_inputs, image_sizes):
            height, width = x.get("height", h), x.get("width", w)
            logits = out["panoptic_logits"]
            if (height, width) != (h, w):
                logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            pinst = out["panoptic_instances"]
            area_limit = self.stuff_area_limit
            panoptic = merge_panoptic_logits(logits, self.num_stuff, pinst.pred_classes, pinst.scores, area_limit)
            processed.append({"instances": detector_postprocess(out["instances"], height, width), "panoptic_seg": panoptic})
        return processed


def _ce(logits, target, ignore_value):
    """Mean cross-entropy over non-ignored pixels; 0 (with a graph) when all are ignored."""
    valid = (target != ignore_value).sum()
    loss = F.cross_entropy(logits, target, ignore_index=ignore_value, reduction="sum")
    return loss / valid.clamp(min=1)


def _bitmasks(inst, height, width):
    """GT masks of ``inst`` as ``[N, height, width]`` bool (padded with False)."""
    n = len(inst)
    if n == 0 or not inst.has("gt_masks"):
        return torch.zeros((n, height, width), dtype=torch.bool, device=inst.gt_classes.device)
    m = inst.gt_masks
    h, w = inst.image_size
    if isinstance(m, PolygonMasks):
        m = BitMasks.from_polygon_masks(m, h, w)
    t = m.tensor.to(torch.bool)
    return F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]))


def _sample_labels_in_boxes(labels, rois, size):
    """Nearest labels at the centres of a ``size``×``size`` grid over each RoI: ``labels`` ``[B,H,W]``,
    ``rois`` ``[R,5]`` (batch index, x0, y0, x1, y1 in label pixels) → ``[R,size,size]``."""
    h, w = labels.shape[-2:]
    t = (torch.arange(size, device=rois.device, dtype=rois.dtype) + 0.5) / size
    xs = rois[:, 1:2] + t[None] * (rois[:, 3:4] - rois[:, 1:2])
    ys = rois[:, 2:3] + t[None] * (rois[:, 4:5] - rois[:, 2:3])
    xi = xs.floor().long().clamp(0, w - 1)
    yi = ys.floor().long().clamp(0, h - 1)
    bi = rois[:, 0].long()
    return labels[bi[:, None, None], yi[:, :, None], xi[:, None, :]]
