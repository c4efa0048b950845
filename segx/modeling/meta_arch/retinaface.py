"""RetinaFace (Deng et al. 2019, "RetinaFace: Single-stage Dense Face Localisation in the Wild").

The network and training rules follow biubug6/Pytorch_Retinaface (``models/retinaface.py``, ``models/net.py``,
``layers/functions/prior_box.py``, ``layers/modules/multibox_loss.py``): a backbone (MobileNet-0.25 or
ResNet-50) → a 3-level FPN (strides 8/16/32) → an SSH context module per level → 1×1 heads predicting, for
each of 2 square priors per location, face/background logits, SSD box deltas and 5 landmark deltas.
Priors are matched to faces at IoU 0.35 (each face also forces its best prior when that IoU ≥ 0.2), the
classification loss keeps 7 hard negatives per positive, and faces without landmarks take part in the box
and class losses only. The parts are in ``segx.modeling.retinaface``.
"""
import math

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone

from segx.modeling.meta_arch.base import SegxMetaArch
from segx.modeling.retinaface import (
    NMS_MODES,
    SSH,
    RetinaFaceFPN,
    RetinaFacePriors,
    decode_faces,
    flatten_levels,
    label_priors,
    level_heads,
    multibox_losses,
    rescale_faces,
)
from segx.modeling.ssd_coding import DEFAULT_SCALE_CLAMP

__all__ = ["RetinaFace"]


@META_ARCH_REGISTRY.register()
class RetinaFace(SegxMetaArch):
    """RetinaFace face detector with 5-point landmarks.

    Training input: ``instances`` with ``gt_boxes`` and (optionally) ``gt_keypoints`` ``[G,K,3]``; a face is used
    in the landmark loss only when all its K points have visibility > 0 (the official −1 rule).
    Output: ``instances`` with ``pred_boxes``, ``scores``, ``pred_classes`` (0 = face) and ``pred_keypoints``
    ``[N,K,3]`` (x, y, the face score).
    """

    @configurable
    def __init__(self, *, backbone, in_features, out_channels=64, norm="BN", leaky=None,
                 min_sizes=((16, 32), (64, 128), (256, 512)), steps=(8, 16, 32), clip_priors=False,
                 variances=(0.1, 0.2), num_landmarks=5, match_iou=0.35, min_force_iou=0.2, neg_pos_ratio=7,
                 box_loss_weight=2.0, cls_loss_weight=1.0, landmark_loss_weight=1.0, score_thresh=0.02,
                 topk_candidates=5000, nms_thresh=0.4, max_detections=750, nms_mode="official", clip_boxes=False,
                 scale_clamp=DEFAULT_SCALE_CLAMP, pixel_mean, pixel_std, input_format="BGR"):
        """
        Args:
            backbone: a detectron2 ``Backbone`` with ``in_features`` (3 levels, finest first) at ``steps``.
            out_channels, norm, leaky: width, norm and LeakyReLU slope of FPN and SSH (None: the official rule).
            min_sizes, steps, clip_priors: per level, the prior sides (input pixels) and strides; clip (official).
            variances: SSD coding. num_landmarks: K.
            match_iou, min_force_iou, neg_pos_ratio: matching and hard negatives (``label_priors``).
            box_loss_weight, cls_loss_weight, landmark_loss_weight: loss = Σ weight · loss.
            score_thresh, topk_candidates, nms_thresh, max_detections: inference (``face_detections``).
            nms_mode: "official" (IoU with the +1-pixel convention of the official ``py_cpu_nms``) or "torchvision"
                (continuous IoU); see ``segx.modeling.retinaface.face_nms``.
            clip_boxes: clip the output boxes to the image and drop empty ones (detectron2's
                ``detector_postprocess``); the official test code does not (False).
            scale_clamp: largest log(decoded box side / prior side), so no box is infinite (None: no clamp).
        """
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format)
        if len(in_features) != 3 or len(min_sizes) != 3 or len(steps) != 3:
            raise ValueError(
                f"RetinaFace: needs 3 levels, got in_features={in_features}, min_sizes={min_sizes}, steps={steps}"
            )
        if nms_mode not in NMS_MODES:
            raise ValueError(f"RetinaFace: nms_mode must be one of {NMS_MODES}, got {nms_mode!r}")
        anchors = {len(s) for s in min_sizes}
        if len(anchors) != 1:
            raise ValueError(f"RetinaFace: every level needs the same number of priors, got min_sizes={min_sizes}")
        shapes = backbone.output_shape()
        for f, step in zip(in_features, steps):
            if f not in shapes:
                raise ValueError(f"RetinaFace: backbone has no feature {f!r}; it has {sorted(shapes)}")
            if shapes[f].stride != step:
                raise ValueError(f"RetinaFace: feature {f!r} has stride {shapes[f].stride}, but STEPS says {step}")
        self.backbone = backbone
        self.in_features = list(in_features)
        self.levels = [f"p{int(math.log2(s))}" for s in steps]
        self.fpn = RetinaFaceFPN([shapes[f].channels for f in self.in_features], out_channels, norm, leaky)
        self.ssh1 = SSH(out_channels, out_channels, norm, leaky)
        self.ssh2 = SSH(out_channels, out_channels, norm, leaky)
        self.ssh3 = SSH(out_channels, out_channels, norm, leaky)
        a = anchors.pop()
        self.class_head = level_heads(out_channels, 2, a)
        self.bbox_head = level_heads(out_channels, 4, a)
        self.landmark_head = level_heads(out_channels, 2 * num_landmarks, a)
        self.priors = RetinaFacePriors(min_sizes, steps, clip_priors)
        self.variances = tuple(variances)
        self.num_landmarks = num_landmarks
        self.matching = {"match_iou": match_iou, "min_force_iou": min_force_iou, "variances": self.variances}
        self.neg_pos_ratio = neg_pos_ratio
        self.loss_weights = {"loss_cls": cls_loss_weight, "loss_box_reg": box_loss_weight,
                             "loss_landmark": landmark_loss_weight}
        self.test_limits = {"score_thresh": score_thresh, "topk_candidates": topk_candidates, "nms_thresh": nms_thresh,
                            "max_detections": max_detections, "nms_mode": nms_mode}
        self.scale_clamp = scale_clamp
        self.clip_boxes = clip_boxes

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.RETINAFACE
        return {
            "backbone": build_backbone(cfg),
            "in_features": c.IN_FEATURES,
            "out_channels": c.OUT_CHANNELS,
            "norm": c.NORM,
            "leaky": None if c.LEAKY < 0 else c.LEAKY,
            "min_sizes": c.MIN_SIZES,
            "steps": c.STEPS,
            "clip_priors": c.CLIP_PRIORS,
            "variances": c.VARIANCES,
            "num_landmarks": c.NUM_LANDMARKS,
            "match_iou": c.MATCH_IOU,
            "min_force_iou": c.MIN_FORCE_IOU,
            "neg_pos_ratio": c.NEG_POS_RATIO,
            "box_loss_weight": c.BOX_LOSS_WEIGHT,
            "cls_loss_weight": c.CLS_LOSS_WEIGHT,
            "landmark_loss_weight": c.LANDMARK_LOSS_WEIGHT,
            "score_thresh": c.SCORE_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "max_detections": c.DETECTIONS_PER_IMAGE,
            "nms_mode": c.NMS_MODE,
            "clip_boxes": c.CLIP_BOXES_TEST,
            "scale_clamp": c.SCALE_CLAMP if c.SCALE_CLAMP >= 0 else None,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    # ------------------------------------------------------------------------------------------------ steps
    def extract_features(self, images, batched_inputs, state=None):
        """FPN levels ``{"p3": [B,C,H/8,W/8], "p4": …/16, "p5": …/32}`` (names from ``steps``)."""
        feats = self.backbone(images.tensor)
        return dict(zip(self.levels, self.fpn([feats[f] for f in self.in_features])))

    def predict(self, features, images):
        """SSH + heads: ``logits`` ``[B,P,2]``, ``box_deltas`` ``[B,P,4]``, ``landmark_deltas`` ``[B,P,2K]`` and the
        pixel ``priors`` ``[P,4]`` (cx, cy, w, h), P over levels / rows / columns / priors of a location."""
        feats = [ssh(features[name]) for ssh, name in zip((self.ssh1, self.ssh2, self.ssh3), self.levels)]
        return {
            "logits": flatten_levels(self.class_head, feats, 2),
            "box_deltas": flatten_levels(self.bbox_head, feats, 4),
            "landmark_deltas": flatten_levels(self.landmark_head, feats, 2 * self.num_landmarks),
            "priors": self.priors(images.tensor.shape[-2:], [x.shape[-2:] for x in feats], self.device),
        }

    def label_priors(self, priors, gt_instances):
        """Matched face or -1 ``[B,P]``, box / landmark targets, landmark validity (``segx.modeling.retinaface``)."""
        return label_priors(priors, gt_instances, num_landmarks=self.num_landmarks, **self.matching)

    def losses(self, predictions, batched_inputs, images):
        """The official multibox loss: ``loss_cls``, ``loss_box_reg``, ``loss_landmark`` × their weights."""
        labels = self.label_priors(predictions["priors"], self.gt_instances(batched_inputs))
        losses = multibox_losses(predictions["logits"], predictions["box_deltas"], predictions["landmark_deltas"],
                                 *labels, neg_pos_ratio=self.neg_pos_ratio)
        return {k: self.loss_weights[k] * v for k, v in losses.items()}

    def decode(self, predictions, images, batched_inputs):
        """``Instances`` per image at the network input's resolution (top-k, threshold, NMS; traceable)."""
        return decode_faces(predictions["logits"], predictions["box_deltas"], predictions["landmark_deltas"],
                            predictions["priors"], images.image_sizes, variances=self.variances,
                            scale_clamp=self.scale_clamp, **self.test_limits)

    def postprocess(self, results, batched_inputs, images):
        """``[{"instances": ...}]`` rescaled to each input's height × width; boxes clipped to the image only with
        ``clip_boxes`` (the official test code keeps them as decoded)."""
        return rescale_faces(results, batched_inputs, images.image_sizes, clip_boxes=self.clip_boxes)
