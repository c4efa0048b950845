"""UPSNet (Xiong et al., "UPSNet: A Unified Panoptic Segmentation Network", CVPR 2019).

Follows the official implementation (uber-research/UPSNet): detectron2's backbone (ResNet-FPN), RPN and Mask
R-CNN ROI heads (``segx.modeling.roi_heads.SinglePassROIHeads``: each head runs once at inference); the
deformable-conv semantic head and the parameter-free panoptic head of ``segx.modeling.panoptic``.

Data: detectron2's "separated" panoptic dicts (``instances`` + ``sem_seg`` with things = 0 and stuff
``1..S``, e.g. ``coco_2017_train_panoptic_separated`` or ``segx_shapes_panoptic_train_separated``), read by
the stock ``DatasetMapper``. Output: ``instances`` (Mask R-CNN) and ``panoptic_seg`` in detectron2's format,
stuff ``category_id`` being the separated label (as PanopticFPN's), which ``COCOPanopticEvaluator`` maps back.

Steps (``SegxMetaArch``): ``extract_features`` (the FPN features: VPSNet's seam for fused reference-frame
features) → ``predict`` → ``losses`` | ``decode`` → ``postprocess``. In training ``predict`` runs only the
semantic head: the RPN and ROI heads run in ``losses``, since their proposal sampling and targets need the GT
(they return losses, as in detectron2's ``GeneralizedRCNN``); ``predict`` passes the features on for them.
"""
from functools import partial

import torch
import torch.nn.functional as F

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone, build_sem_seg_head
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.proposal_generator import build_proposal_generator
from detectron2.modeling.roi_heads import build_roi_heads
from detectron2.structures import ImageList, Instances

from segx.modeling.meta_arch.base import SegxMetaArch
from segx.modeling.panoptic import (
    gt_bitmasks, mask_removal_keep, merge_panoptic_logits, panoptic_frame_boxes, paste_mask_logits,
    paste_mask_logits_official, sample_kept_instances, select_panoptic_instances, semantic_roi_loss,
    thing_semantic_targets, upsnet_panoptic_logits, upsnet_panoptic_loss,
)
from segx.modeling.panoptic.panoptic_head import check_panoptic_head_mode
from segx.modeling.roi_heads import SinglePassROIHeads

__all__ = ["UPSNet"]


@META_ARCH_REGISTRY.register()
class UPSNet(SegxMetaArch):
    """Mask R-CNN + semantic head + parameter-free panoptic head (with the unknown channel)."""

    training_fields = ("instances", "sem_seg")

    @configurable
    def __init__(self, *, backbone, proposal_generator, roi_heads, sem_seg_head, num_stuff, pixel_mean, pixel_std,
                 sem_roi_loss_weight=0.2, sem_roi_size=28, panoptic_loss_weight=0.1, box_keep_fraction=0.7,
                 panoptic_nms_thresh_test=0.5, panoptic_score_thresh_test=0.6, panoptic_topk_test=100,
                 mask_removal_thresh_test=0.3, stuff_area_limit=4096, ignore_value=255,
                 panoptic_head_mode="official"):
        """
        Args:
            roi_heads: a ``SinglePassROIHeads`` with the mask head.
            sem_seg_head: ``layers(features) -> [B, S+K, H/s, W/s]`` logits (stuff first), ``common_stride`` s,
                ``losses(logits, targets)`` (``UPSNetSemanticHead``).
            num_stuff: S, the stuff classes (separated labels ``1..S``).
            sem_roi_loss_weight: weight of the RoI semantic loss; 0 disables it.
            box_keep_fraction: GT boxes kept for the panoptic head in training; < 1 enables the unknown channel.
            panoptic_*_test: selection of the instances entering the panoptic head at inference.
            mask_removal_thresh_test: an instance more than this fraction under better kept ones is removed.
            stuff_area_limit: stuff segments under this many pixels (output resolution) become unlabelled.
            panoptic_head_mode: ``"official"`` (uber-research/UPSNet's box placement and unknown channel) or
                ``"segx"`` (pixel-centre boxes, ``grid_sample`` paste); ``segx.modeling.panoptic.panoptic_head``.
        """
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std)
        if not isinstance(roi_heads, SinglePassROIHeads) or not roi_heads.mask_on:
            raise ValueError("UPSNet needs MODEL.ROI_HEADS.NAME: SinglePassROIHeads (Base-UPSNet.yaml sets it) and "
                             f"MODEL.MASK_ON True, got {type(roi_heads).__name__}")
        if getattr(sem_seg_head, "num_classes", None) != num_stuff + roi_heads.num_classes:
            raise ValueError("UPSNet's semantic head must predict S stuff + K thing channels: set "
                             "MODEL.SEM_SEG_HEAD.NAME: UPSNetSemanticHead (Base-UPSNet.yaml sets it)")
        self.backbone = backbone
        self.proposal_generator = proposal_generator
        self.roi_heads = roi_heads
        self.sem_seg_head = sem_seg_head
        self.num_stuff = num_stuff
        self.sem_roi_loss_weight = sem_roi_loss_weight
        self.sem_roi_size = sem_roi_size
        self.panoptic_loss_weight = panoptic_loss_weight
        self.box_keep_fraction = box_keep_fraction
        self.with_unknown = box_keep_fraction < 1
        self.select_instances = partial(select_panoptic_instances, score_thresh=panoptic_score_thresh_test,
                                        nms_thresh=panoptic_nms_thresh_test, topk=panoptic_topk_test)
        self.mask_removal_thresh_test = mask_removal_thresh_test
        self.stuff_area_limit = stuff_area_limit
        self.ignore_value = ignore_value
        self.panoptic_head_mode = check_panoptic_head_mode(panoptic_head_mode)

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        shapes = backbone.output_shape()
        u = cfg.MODEL.UPSNET
        sem_seg_head = build_sem_seg_head(cfg, shapes)  # before the RPN and ROI heads: the init RNG order of old
        return {
            "backbone": backbone,
            "proposal_generator": build_proposal_generator(cfg, shapes),
            "roi_heads": build_roi_heads(cfg, shapes),
            "sem_seg_head": sem_seg_head,
            "num_stuff": cfg.MODEL.SEM_SEG_HEAD.NUM_CLASSES - 1,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "sem_roi_loss_weight": u.SEM_ROI_LOSS_WEIGHT if u.SEM_ROI_LOSS else 0.0,
            "sem_roi_size": u.SEM_ROI_SIZE,
            "panoptic_loss_weight": u.PANOPTIC_LOSS_WEIGHT,
            "box_keep_fraction": u.BOX_KEEP_FRACTION,
            "panoptic_nms_thresh_test": u.PANOPTIC_NMS_THRESH_TEST,
            "panoptic_score_thresh_test": u.PANOPTIC_SCORE_THRESH_TEST,
            "panoptic_topk_test": u.PANOPTIC_TOPK_TEST,
            "mask_removal_thresh_test": u.MASK_REMOVAL_THRESH_TEST,
            "stuff_area_limit": u.STUFF_AREA_LIMIT,
            "ignore_value": cfg.MODEL.SEM_SEG_HEAD.IGNORE_VALUE,
            "panoptic_head_mode": u.PANOPTIC_HEAD_MODE,
        }

    def check_training_inputs(self, batched_inputs):
        try:
            super().check_training_inputs(batched_inputs)
        except ValueError as e:
            raise ValueError(f"{e}; train UPSNet on a detectron2 'separated' panoptic set "
                             "(e.g. segx_shapes_panoptic_train_separated)") from None

    # ------------------------------------------------------------------------------------------------ steps
    def predict(self, features, images):
        """``{"sem_seg_logits": [B, S+K, H/4, W/4]}``, plus in training ``"features"`` (for the RPN and ROI heads
        in ``losses``) and in inference the ROI heads' single pass (``SinglePassROIHeads.predict``):
        ``"instances"`` (Mask R-CNN detections), ``"boxes"``, ``"scores"`` (per-class boxes and probabilities
        of the proposals) and ``"panoptic_instances"`` (``select_panoptic_instances`` + ``pred_mask_logits``)."""
        out = {"sem_seg_logits": self.sem_seg_head.layers(features)}
        if self.training:
            out["features"] = features
            return out
        proposals, _ = self.proposal_generator(images, features, None)
        rois = self.roi_heads.predict(features, proposals, select=self.select_instances)
        out.update(instances=rois["instances"], boxes=rois["boxes"], scores=rois["scores"],
                   panoptic_instances=rois["selected"])
        return out

    def losses(self, predictions, batched_inputs, images):
        """RPN and Mask R-CNN losses (detectron2's), ``loss_sem_seg``, ``loss_sem_roi``, ``loss_panoptic``. Random
        draws in order: RPN and ROI-head sampling (torch), then the panoptic keep-fraction (NumPy)."""
        features, sem_logits = predictions["features"], predictions["sem_seg_logits"]
        gt_instances = self.gt_instances(batched_inputs)
        proposals, losses = self.proposal_generator(images, features, gt_instances)
        sampled, roi_losses = self.roi_heads(images, features, proposals, gt_instances)
        losses.update(roi_losses)
        predictions["sampled_proposals"] = sampled  # what the ROI heads trained on (VPSNet's track head uses them)

        hp, wp = images.tensor.shape[-2:]
        gt_sem = ImageList.from_tensors([x["sem_seg"].to(self.device) for x in batched_inputs], self.size_divisibility,
                                        pad_value=self.ignore_value).tensor.long()
        masks = [gt_bitmasks(inst, hp, wp) for inst in gt_instances]
        sem_targets = torch.stack([thing_semantic_targets(sem, m, inst.gt_classes, self.num_stuff, self.ignore_value)
                                   for inst, sem, m in zip(gt_instances, gt_sem, masks)])
        losses.update(self.sem_seg_head.losses(sem_logits, sem_targets))
        stride = self.sem_seg_head.common_stride
        if self.sem_roi_loss_weight > 0:
            gt_boxes = [inst.gt_boxes.tensor for inst in gt_instances]
            losses["loss_sem_roi"] = self.sem_roi_loss_weight * semantic_roi_loss(
                sem_logits, sem_targets, gt_boxes, self.sem_roi_size, stride, self.ignore_value)

        # Panoptic head on (a random keep-fraction of) the GT boxes, at the semantic logits' stride.
        keeps = [sample_kept_instances(len(inst), self.box_keep_fraction, self.device) for inst in gt_instances]
        kept_boxes = [inst.gt_boxes[k] for inst, k in zip(gt_instances, keeps)]
        kept_classes = [inst.gt_classes[k] for inst, k in zip(gt_instances, keeps)]
        classes = torch.cat(kept_classes)
        if len(classes) > 0:
            mask_logits = self.roi_heads.mask_logits(features, kept_boxes, classes)
        else:
            mask_logits = sem_logits.new_zeros((0, self.sem_roi_size, self.sem_roi_size))
        losses["loss_panoptic"] = self.panoptic_loss_weight * upsnet_panoptic_loss(
            sem_logits, mask_logits, [b.tensor for b in kept_boxes], kept_classes, gt_sem, masks, keeps,
            self.num_stuff, stride, self.with_unknown, self.ignore_value, self.panoptic_head_mode)
        return losses

    def decode(self, predictions, images, batched_inputs):
        """Per image ``{"instances", "panoptic_instances": Instances(pred_boxes, scores, pred_classes),
        "panoptic_logits": [S + N (+1), h, w]}`` at the input resolution (traceable): mask removal, then the
        panoptic logits whose argmax the merge takes (boxes placed as ``panoptic_head_mode`` says, the mask removal
        on the same pasted masks)."""
        sem_up = F.interpolate(predictions["sem_seg_logits"], size=images.tensor.shape[-2:], mode="bilinear",
                               align_corners=False)
        results = []
        for b, image_size in enumerate(images.image_sizes):
            h, w = image_size
            sel = predictions["panoptic_instances"][b]
            official = self.panoptic_head_mode == "official"  # official MaskRemoval: one occupancy map per class
            paste = paste_mask_logits_official if official else paste_mask_logits
            boxes = panoptic_frame_boxes(sel.pred_boxes.tensor, 1, self.panoptic_head_mode)
            keep = mask_removal_keep(paste(sel.pred_mask_logits, boxes, h, w) > 0, self.mask_removal_thresh_test,
                                     sel.pred_classes if official else None)
            sel, boxes = sel[keep], boxes[keep]
            logits = upsnet_panoptic_logits(sem_up[b, :, :h, :w], self.num_stuff, sel.pred_mask_logits, boxes,
                                            sel.pred_classes, self.with_unknown, self.panoptic_head_mode)
            # the selected instances' fields but the mask logits (a subclass's extra fields, e.g. VPSNet's, pass through)
            inst = Instances(image_size, **{k: v for k, v in sel.get_fields().items() if k != "pred_mask_logits"})
            results.append({"instances": predictions["instances"][b], "panoptic_instances": inst,
                            "panoptic_logits": logits})
        return results

    def postprocess(self, results, batched_inputs, images):
        """Resizes to each input's ``height``/``width`` and merges the panoptic logits into ``panoptic_seg``."""
        processed = []
        for out, x, (h, w) in zip(results, batched_inputs, images.image_sizes):
            height, width = x.get("height", h), x.get("width", w)
            logits = out["panoptic_logits"]
            if (height, width) != (h, w):
                logits = F.interpolate(logits[None], size=(height, width), mode="bilinear", align_corners=False)[0]
            pinst = out["panoptic_instances"]
            panoptic = merge_panoptic_logits(logits, self.num_stuff, pinst.pred_classes, pinst.scores,
                                             self.stuff_area_limit)
            instances = detector_postprocess(out["instances"], height, width)
            processed.append({"instances": instances, "panoptic_seg": panoptic})
        return processed
