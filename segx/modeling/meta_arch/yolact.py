"""YOLACT / YOLACT++ (Bolya et al., ICCV 2019 / TPAMI 2020), following dbolya/yolact where it matters for its
numbers: S×S input with the aspect ratio ignored (``segx.data.mappers.yolact``; the model resizes inputs that
are not S×S), YOLACT's FPN, k prototypes from P3, one prediction head shared by P3–P7 (boxes, softmax classes,
tanh coefficients), mask = sigmoid(P·Cᵀ) cropped to the box, Fast NMS, and the official losses.

The parts live in ``segx.modeling.yolact``; this file composes them into ``SegxMetaArch``'s steps:
``extract_features`` (bottom-up C3..C5 + FPN P3..P7) → ``predict`` (named outputs) → ``losses`` | ``decode``
(instances at the given image's size) → ``postprocess`` (at ``height`` × ``width``).
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import ImageList

from segx.modeling.meta_arch.base import SegxMetaArch
from segx.modeling.ssd_coding import DEFAULT_SCALE_CLAMP
from segx.modeling.yolact import (
    BOX_OUTPUT_MODES,
    CROP_MODES,
    DEFAULT_LOSS_WEIGHTS,
    MaskIoUNet,
    YolactFPN,
    YolactHead,
    YolactPriors,
    detect,
    detections_to_instances,
    make_protonet,
    match_targets,
    rescale_results,
    square_resize,
    yolact_losses,
)

__all__ = ["YOLACT"]


@META_ARCH_REGISTRY.register()
class YOLACT(SegxMetaArch):
    """YOLACT (``maskiou_net=None``, square anchors) and YOLACT++ (deformable backbone, 3 scales × 3 ratios,
    mask re-scoring). Inputs are detectron2's ``batched_inputs`` (images of any size; S×S ones are not resized);
    outputs ``instances`` with ``pred_boxes``, ``scores``, ``pred_classes`` and full-image bool ``pred_masks``.

    Args:
        backbone: gives ``in_features`` (YOLACT's FPN: P3..P7); in_features: the head's levels, prototypes from
            the first. proto_net, head, semantic_seg_conv (or None), maskiou_net (or None): the parts.
        priors: ``YolactPriors`` (its ``input_size`` is S). box_variances: SSD coding. pos_iou, neg_iou,
            crowd_iou: matching. loss_weights: by loss name. The ``test_*`` values: inference only.
        rescore_box: YOLACT++ re-scores box scores too (one ``scores``); False (official): ``scores`` stay the
            box scores and the re-scored ones are ``mask_scores``. box_output_mode: ``"official"`` integer boxes
            (corners ordered, clamped, truncated) or ``"float"`` (clipped). box_scale_clamp: largest
            log(decoded box size / anchor size) (detectron2's log(1000/16)); 0 or None: unbounded (official).
    """

    @configurable
    def __init__(self, *, backbone, in_features, proto_net, head, priors, num_classes, pixel_mean, pixel_std,
                 input_format=None, semantic_seg_conv=None, maskiou_net=None, box_variances=(0.1, 0.2), pos_iou=0.5,
                 neg_iou=0.4, crowd_iou=0.7, neg_pos_ratio=3, loss_weights=None, masks_to_train=100,
                 crop_mode="official", discard_mask_area=25, test_score_thresh=0.05, test_topk=200,
                 test_nms_thresh=0.5, max_detections_per_image=100, test_mask_thresh=0.5, rescore_box=False,
                 box_output_mode="official", box_scale_clamp=DEFAULT_SCALE_CLAMP):
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format)
        check_in_features(backbone, in_features, priors)
        if crop_mode not in CROP_MODES:
            raise ValueError(f"YOLACT: CROP_MODE must be 'official' or 'center', got {crop_mode!r}")
        if box_output_mode not in BOX_OUTPUT_MODES:
            raise ValueError(f"YOLACT: BOX_OUTPUT_MODE must be one of {BOX_OUTPUT_MODES}, got {box_output_mode!r}")
        self.backbone, self.in_features = backbone, list(in_features)
        self.proto_net, self.head = proto_net, head
        self.semantic_seg_conv, self.maskiou_net = semantic_seg_conv, maskiou_net
        self.priors, self.input_size, self.num_classes = priors, priors.input_size, num_classes
        self.box_variances = tuple(box_variances)
        self.pos_iou, self.neg_iou, self.crowd_iou, self.neg_pos_ratio = pos_iou, neg_iou, crowd_iou, neg_pos_ratio
        self.loss_weights = dict(DEFAULT_LOSS_WEIGHTS, **(loss_weights or {}))
        self.masks_to_train, self.crop_mode, self.discard_mask_area = masks_to_train, crop_mode, discard_mask_area
        self.test_score_thresh, self.test_topk, self.test_nms_thresh = test_score_thresh, test_topk, test_nms_thresh
        self.max_detections_per_image, self.test_mask_thresh = max_detections_per_image, test_mask_thresh
        self.rescore_box, self.box_output_mode = bool(rescore_box), box_output_mode
        if box_scale_clamp is not None and box_scale_clamp < 0:
            raise ValueError(f"YOLACT: BOX_SCALE_CLAMP must be >= 0 (0: no bound), got {box_scale_clamp}")
        self.box_scale_clamp = box_scale_clamp if box_scale_clamp else None

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        backbone = build_backbone(cfg)
        priors = YolactPriors(y.INPUT_SIZE, y.ANCHOR_SCALES, y.ANCHOR_RATIOS, y.SQUARE_ANCHORS,
                              scales_per_octave=y.ANCHOR_SCALES_PER_OCTAVE)
        channels = check_in_features(backbone, y.IN_FEATURES, priors)
        return {  # parts in the order they consume the random generator (as before the refactor)
            "backbone": backbone,
            "in_features": y.IN_FEATURES,
            "priors": priors,
            "proto_net": make_protonet(channels, y.PROTO_CHANNELS, y.PROTO_NUM_CONVS, y.NUM_PROTOTYPES),
            "head": YolactHead(channels, y.HEAD_CHANNELS, priors.num_anchors, y.NUM_CLASSES, y.NUM_PROTOTYPES),
            "semantic_seg_conv": nn.Conv2d(channels, y.NUM_CLASSES, 1) if y.SEMANTIC_SEG_LOSS else None,
            "maskiou_net": MaskIoUNet(y.NUM_CLASSES) if y.MASKIOU_ON else None,
            "num_classes": y.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
            "box_variances": y.BOX_VARIANCES,
            "pos_iou": y.POS_IOU,
            "neg_iou": y.NEG_IOU,
            "crowd_iou": y.CROWD_IOU,
            "neg_pos_ratio": y.NEG_POS_RATIO,
            "loss_weights": {"loss_box_reg": y.BOX_LOSS_WEIGHT, "loss_cls": y.CLS_LOSS_WEIGHT,
                             "loss_mask": y.MASK_LOSS_WEIGHT, "loss_sem_seg": y.SEM_SEG_LOSS_WEIGHT,
                             "loss_maskiou": y.MASKIOU_LOSS_WEIGHT},
            "masks_to_train": y.MASKS_TO_TRAIN,
            "crop_mode": y.CROP_MODE,
            "discard_mask_area": y.DISCARD_MASK_AREA,
            "test_score_thresh": y.SCORE_THRESH_TEST,
            "test_topk": y.NMS_TOPK_TEST,
            "test_nms_thresh": y.NMS_THRESH_TEST,
            "max_detections_per_image": y.DETECTIONS_PER_IMAGE,
            "test_mask_thresh": y.MASK_THRESH_TEST,
            "rescore_box": y.RESCORE_BOX,
            "box_output_mode": y.BOX_OUTPUT_MODE,
            "box_scale_clamp": y.BOX_SCALE_CLAMP,
        }

    # ------------------------------------------------------------------------------------------------ steps
    def preprocess_image(self, batched_inputs):
        """``[B,3,S,S]`` normalised images: an input that is not S×S (detectron2's ``DefaultPredictor``, hand-made
        inputs) is resized here, once (``square_resize``); ``YolactMapper``'s S×S images are not."""
        S, images = self.input_size, []
        for i, x in enumerate(batched_inputs):
            img = self.check_image(x.get("image"), i).to(self.device).float()
            if torch.jit.is_tracing() or tuple(img.shape[-2:]) != (S, S):  # traced graphs resize any size
                img = square_resize(img, S)
            images.append(self.normalize(img))
        return ImageList(torch.stack(images), [(S, S)] * len(images))

    def extract_features(self, images, batched_inputs, state=None):
        """``{"res3", "res4", "res5", ..., "p3", ..., "p7"}``: the bottom-up maps and YOLACT's FPN outputs."""
        if not isinstance(self.backbone, YolactFPN):
            return self.backbone(images.tensor)
        bottom_up = self.backbone.bottom_up(images.tensor)
        return {**bottom_up, **self.backbone.forward_phase2(self.backbone.forward_phase1(bottom_up))}

    def predict(self, features, images):
        """``{"protos": [B,k,Hp,Wp]`` (ReLU), ``"box_deltas": [B,P,4]``, ``"logits": [B,P,C+1]``, ``"coeffs": [B,P,k]``,
        ``"priors": [P,4]`` (cx, cy, w, h in input pixels), in training ``"sem_seg": [B,C,H3,W3]`` logits, in
        inference ``"priors_relative": [P,4]`` (the same anchors in fractions of the input, computed as the official
        code does; ``decode`` works in these units)}. ``features["protos"]``, where given (prototypes a video model
        carried over from another frame), is used instead of running the protonet."""
        feats = [features[f] for f in self.in_features]
        protos = features.get("protos")
        out = {"protos": self.prototypes(feats[0]) if protos is None else protos, **self.head(feats), "priors": self.priors(feats)}
        if self.training and self.semantic_seg_conv is not None:
            out["sem_seg"] = self.semantic_seg_conv(feats[0])
        if not self.training:
            out["priors_relative"] = self.priors(feats, relative=True)
        return out

    def prototypes(self, p3):
        """The protonet on the first head level ``[B,C,H3,W3]`` → ``[B,k,Hp,Wp]`` prototypes (ReLU)."""
        return F.relu(self.proto_net(p3))

    def match(self, gt_instances, image_sizes, priors, proto_size, segm_size=None):
        """Training targets (``segx.modeling.yolact.match_targets``): GT scaled by S/w, S/h of each given image."""
        return match_targets(gt_instances, image_sizes, priors, proto_size, segm_size, input_size=self.input_size,
                             pos_iou=self.pos_iou, neg_iou=self.neg_iou, crowd_iou=self.crowd_iou,
                             box_variances=self.box_variances)

    def losses(self, predictions, batched_inputs, images):
        """``loss_box_reg``, ``loss_cls``, ``loss_mask`` (/ positives), ``loss_maskiou`` (++), ``loss_sem_seg``."""
        sem_seg = predictions.get("sem_seg")
        targets = self.match(self.gt_instances(batched_inputs), [tuple(x["image"].shape[-2:]) for x in batched_inputs],
                             predictions["priors"], tuple(predictions["protos"].shape[-2:]),
                             None if sem_seg is None else tuple(sem_seg.shape[-2:]))
        return yolact_losses(predictions, targets, num_classes=self.num_classes, input_size=self.input_size,
                             loss_weights=self.loss_weights, neg_pos_ratio=self.neg_pos_ratio,
                             masks_to_train=self.masks_to_train, crop_mode=self.crop_mode,
                             maskiou_net=self.maskiou_net, discard_mask_area=self.discard_mask_area)

    def decode(self, predictions, images, batched_inputs):
        """``list[Instances]`` at each given image's size (the S×S input scaled back); traceable."""
        dets = detect(predictions, input_size=self.input_size, box_variances=self.box_variances,
                      score_thresh=self.test_score_thresh, nms_thresh=self.test_nms_thresh, topk=self.test_topk,
                      max_detections=self.max_detections_per_image, crop_mode=self.crop_mode,
                      maskiou_net=self.maskiou_net, rescore_box=self.rescore_box, scale_clamp=self.box_scale_clamp)
        return [detections_to_instances(d, x["image"].shape[-2], x["image"].shape[-1], self.input_size,
                                        self.test_mask_thresh, self.box_output_mode)
                for d, x in zip(dets, batched_inputs)]

    def postprocess(self, results, batched_inputs, images):
        """``[{"instances": ...}]`` at each input's ``height`` × ``width``, masks upsampled once from prototypes."""
        return rescale_results(results, batched_inputs, self.input_size, self.test_mask_thresh, self.box_output_mode)


def check_in_features(backbone, in_features, priors):
    """Checks the head's levels against the backbone and the anchors; returns their (common) channel count."""
    shapes = backbone.output_shape()
    for f in in_features:
        if f not in shapes:
            raise ValueError(f"YOLACT: IN_FEATURES has {f!r}, the backbone outputs {sorted(shapes)}")
    if priors.num_levels != len(in_features):
        raise ValueError(f"YOLACT: ANCHOR_SCALES has {priors.num_levels} levels, IN_FEATURES {len(in_features)}")
    return shapes[in_features[0]].channels
