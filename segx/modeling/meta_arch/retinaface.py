"""RetinaFace (Deng et al. 2019, "RetinaFace: Single-stage Dense Face Localisation in the Wild").

The network and training rules follow biubug6/Pytorch_Retinaface (``models/retinaface.py``, ``models/net.py``,
``layers/functions/prior_box.py``, ``layers/modules/multibox_loss.py``): a backbone (MobileNet-0.25 or
ResNet-50) → a 3-level FPN (strides 8/16/32) → an SSH context module per level → 1×1 heads predicting, for
each of 2 square priors per location, face/background logits, SSD box deltas and 5 landmark deltas.
Priors are matched to faces at IoU 0.35 (each face also forces its best prior when that IoU ≥ 0.2), the
classification loss keeps 7 hard negatives per positive, and faces without landmarks take part in the box
and class losses only.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers import Conv2d, batched_nms, get_norm
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances

from segx.modeling.postprocessing import rescale_instances
from segx.modeling.ssd_coding import (
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    hard_negative_mining,
    match_priors,
)

__all__ = ["RetinaFace", "RetinaFaceFPN", "SSH", "retinaface_priors", "default_leaky"]


def default_leaky(out_channels):
    """The official slope rule: LeakyReLU(0.1) for narrow (≤ 64 channel) FPN/SSH, plain ReLU otherwise."""
    return 0.1 if out_channels <= 64 else 0.0


def _conv(in_channels, out_channels, kernel_size, norm, leaky):
    act = None if leaky is None else nn.LeakyReLU(leaky, inplace=True)
    return Conv2d(
        in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False,
        norm=get_norm(norm, out_channels), activation=act,
    )


class RetinaFaceFPN(nn.Module):
    """Top-down FPN over 3 levels: 1×1 lateral conv (``output{1,2,3}``) per level, nearest upsampling of the
    coarser merged map added to the finer lateral, then a 3×3 conv (``merge{1,2}``). Convs carry norm +
    LeakyReLU. ``forward(list of 3 [B,C_i,H_i,W_i], finest first)`` → list of 3 ``[B,out_channels,H_i,W_i]``."""

    def __init__(self, in_channels_list, out_channels, norm="BN", leaky=None):
        super().__init__()
        if len(in_channels_list) != 3:
            raise ValueError(f"RetinaFaceFPN: needs 3 input levels, got in_channels_list={in_channels_list}")
        leaky = default_leaky(out_channels) if leaky is None else leaky
        self.output1 = _conv(in_channels_list[0], out_channels, 1, norm, leaky)
        self.output2 = _conv(in_channels_list[1], out_channels, 1, norm, leaky)
        self.output3 = _conv(in_channels_list[2], out_channels, 1, norm, leaky)
        self.merge1 = _conv(out_channels, out_channels, 3, norm, leaky)
        self.merge2 = _conv(out_channels, out_channels, 3, norm, leaky)

    def forward(self, features):
        p1, p2, p3 = self.output1(features[0]), self.output2(features[1]), self.output3(features[2])
        p2 = self.merge2(p2 + F.interpolate(p3, size=p2.shape[-2:], mode="nearest"))
        p1 = self.merge1(p1 + F.interpolate(p2, size=p1.shape[-2:], mode="nearest"))
        return [p1, p2, p3]


class SSH(nn.Module):
    """SSH context module (Najibi et al. 2017): concatenation of a 3×3 branch (out/2 channels) and 5×5- and
    7×7-receptive-field branches built from stacked 3×3 convs (out/4 each, the 7×7 one reusing the first conv
    of the 5×5 one), then ReLU. ``[B,C,H,W]`` → ``[B,out_channels,H,W]``."""

    def __init__(self, in_channels, out_channels, norm="BN", leaky=None):
        super().__init__()
        if out_channels % 4:
            raise ValueError(f"SSH: out_channels must be divisible by 4, got {out_channels}")
        leaky = default_leaky(out_channels) if leaky is None else leaky
        q = out_channels // 4
        self.conv3X3 = _conv(in_channels, out_channels // 2, 3, norm, None)
        self.conv5X5_1 = _conv(in_channels, q, 3, norm, leaky)
        self.conv5X5_2 = _conv(q, q, 3, norm, None)
        self.conv7X7_2 = _conv(q, q, 3, norm, leaky)
        self.conv7x7_3 = _conv(q, q, 3, norm, None)

    def forward(self, x):
        mid = self.conv5X5_1(x)
        out = torch.cat([self.conv3X3(x), self.conv5X5_2(mid), self.conv7x7_3(self.conv7X7_2(mid))], dim=1)
        return F.relu(out)


def retinaface_priors(image_size, min_sizes, steps, feature_sizes=None, device=None, normalized=True, clip=False):
    """Square priors of RetinaFace, ``[P,4]`` (cx, cy, w, h).

    Order: level, then row, then column, then min size (the order the heads' outputs are flattened in).
    A level of step ``s`` has a ``ceil(H/s) × ceil(W/s)`` grid (or ``feature_sizes[level]`` when given), prior
    centres at ((col + 0.5)·s, (row + 0.5)·s) and width = height = each of ``min_sizes[level]``.

    Args:
        image_size: (H, W) of the network input in pixels.
        normalized: divide by (W, H, W, H) as the official code does (else pixels).
        clip: clamp to [0, 1] (official "clip" option; only with ``normalized``).
    """
    h, w = image_size
    out = []
    for level, (sizes, step) in enumerate(zip(min_sizes, steps)):
        if feature_sizes is not None:
            fh, fw = feature_sizes[level]
        else:
            fh, fw = math.ceil(h / step), math.ceil(w / step)
        cy = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * step
        cx = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * step
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        a = len(sizes)
        size = torch.tensor(sizes, device=device, dtype=torch.float32)
        centers = torch.stack([cx, cy], dim=-1)[:, :, None, :].expand(fh, fw, a, 2)
        wh = size[None, None, :, None].expand(fh, fw, a, 2)
        out.append(torch.cat([centers, wh], dim=-1).reshape(-1, 4))
    priors = torch.cat(out, dim=0)
    if normalized:
        priors = priors / torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        if clip:
            priors = priors.clamp(0, 1)
    return priors


@META_ARCH_REGISTRY.register()
class RetinaFace(nn.Module):
    """RetinaFace face detector with 5-point landmarks.

    Training input: ``instances`` with ``gt_boxes`` and (optionally) ``gt_keypoints`` ``[G,K,3]``; a face is used
    in the landmark loss only when all its K points have visibility > 0 (the official −1 rule).
    Output: ``instances`` with ``pred_boxes``, ``scores``, ``pred_classes`` (0 = face) and ``pred_keypoints``
    ``[N,K,3]`` (x, y, the face score).
    """

    @configurable
    def __init__(
        self,
        *,
        backbone,
        in_features,
        out_channels=64,
        norm="BN",
        leaky=None,
        min_sizes=((16, 32), (64, 128), (256, 512)),
        steps=(8, 16, 32),
        clip_priors=False,
        variances=(0.1, 0.2),
        num_landmarks=5,
        match_iou=0.35,
        min_force_iou=0.2,
        neg_pos_ratio=7,
        box_weight=2.0,
        cls_weight=1.0,
        landmark_weight=1.0,
        score_thresh=0.02,
        topk_candidates=5000,
        nms_thresh=0.4,
        max_detections=750,
        pixel_mean,
        pixel_std,
        input_format="BGR",
    ):
        super().__init__()
        if len(in_features) != 3 or len(min_sizes) != 3 or len(steps) != 3:
            raise ValueError(
                f"RetinaFace: needs 3 levels, got in_features={in_features}, min_sizes={min_sizes}, steps={steps}"
            )
        anchors = {len(s) for s in min_sizes}
        if len(anchors) != 1:
            raise ValueError(f"RetinaFace: every level needs the same number of priors, got min_sizes={min_sizes}")
        self.num_anchors = anchors.pop()
        self.backbone = backbone
        self.in_features = list(in_features)
        shapes = backbone.output_shape()
        for f, step in zip(self.in_features, steps):
            if f not in shapes:
                raise ValueError(f"RetinaFace: backbone has no feature {f!r}; it has {sorted(shapes)}")
            if shapes[f].stride != step:
                raise ValueError(f"RetinaFace: feature {f!r} has stride {shapes[f].stride}, but STEPS says {step}")
        self.fpn = RetinaFaceFPN([shapes[f].channels for f in self.in_features], out_channels, norm, leaky)
        self.ssh1 = SSH(out_channels, out_channels, norm, leaky)
        self.ssh2 = SSH(out_channels, out_channels, norm, leaky)
        self.ssh3 = SSH(out_channels, out_channels, norm, leaky)
        a = self.num_anchors
        self.class_head = nn.ModuleList([nn.Conv2d(out_channels, a * 2, 1) for _ in range(3)])
        self.bbox_head = nn.ModuleList([nn.Conv2d(out_channels, a * 4, 1) for _ in range(3)])
        self.landmark_head = nn.ModuleList([nn.Conv2d(out_channels, a * 2 * num_landmarks, 1) for _ in range(3)])

        self.min_sizes = [list(s) for s in min_sizes]
        self.steps = list(steps)
        self.clip_priors = clip_priors
        self.variances = tuple(variances)
        self.num_landmarks = num_landmarks
        self.match_iou = match_iou
        self.min_force_iou = min_force_iou
        self.neg_pos_ratio = neg_pos_ratio
        self.box_weight, self.cls_weight, self.landmark_weight = box_weight, cls_weight, landmark_weight
        self.score_thresh = score_thresh
        self.topk_candidates = topk_candidates
        self.nms_thresh = nms_thresh
        self.max_detections = max_detections
        self.input_format = input_format
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._prior_cache = {}

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
            "box_weight": c.BOX_WEIGHT,
            "cls_weight": c.CLS_WEIGHT,
            "landmark_weight": c.LANDMARK_WEIGHT,
            "score_thresh": c.SCORE_THRESH_TEST,
            "topk_candidates": c.TOPK_CANDIDATES_TEST,
            "nms_thresh": c.NMS_THRESH_TEST,
            "max_detections": c.DETECTIONS_PER_IMAGE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        """Normalises and pads the images into an ``ImageList``."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def forward_features(self, images):
        """``images [B,3,H,W]`` (normalised) → class logits ``[B,P,2]``, box deltas ``[B,P,4]``, landmark deltas
        ``[B,P,2K]`` and pixel priors ``[P,4]`` (cx, cy, w, h), P over levels/rows/columns/priors."""
        feats = self.backbone(images)
        feats = self.fpn([feats[f] for f in self.in_features])
        feats = [self.ssh1(feats[0]), self.ssh2(feats[1]), self.ssh3(feats[2])]

        def flat(heads, width):
            return torch.cat(
                [h(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, width) for h, x in zip(heads, feats)], dim=1
            )

        cls = flat(self.class_head, 2)
        box = flat(self.bbox_head, 4)
        ldm = flat(self.landmark_head, 2 * self.num_landmarks)
        priors = self.priors(images.shape[-2:], [x.shape[-2:] for x in feats])
        return cls, box, ldm, priors

    def priors(self, image_size, feature_sizes):
        """Pixel priors for an input of ``image_size`` (cached per size when not tracing)."""
        if torch.jit.is_tracing():
            return self._make_priors(image_size, feature_sizes)
        key = (tuple(int(s) for s in image_size), tuple(tuple(int(v) for v in s) for s in feature_sizes), self.device)
        if key not in self._prior_cache:
            self._prior_cache[key] = self._make_priors(image_size, feature_sizes)
        return self._prior_cache[key]

    def _make_priors(self, image_size, feature_sizes):
        priors = retinaface_priors(
            image_size, self.min_sizes, self.steps, feature_sizes=feature_sizes, device=self.device,
            normalized=self.clip_priors, clip=self.clip_priors,
        )
        if self.clip_priors:  # clipping is defined on normalised priors; back to pixels
            h, w = image_size
            priors = priors * torch.tensor([w, h, w, h], device=self.device, dtype=torch.float32)
        return priors

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        images = self.preprocess_image(batched_inputs)
        if "instances" not in batched_inputs[0]:
            raise ValueError("RetinaFace: training needs 'instances' in every input dict")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        cls, box, ldm, priors = self.forward_features(images.tensor)
        return self.losses(cls, box, ldm, priors, gt_instances)

    @torch.no_grad()
    def label_priors(self, priors, gt_instances):
        """Per image: matched GT index or -1 ``[B,P]``, box targets ``[B,P,4]``, landmark targets ``[B,P,2K]``,
        and which priors have landmark targets ``[B,P]`` bool."""
        labels, box_t, ldm_t, ldm_valid = [], [], [], []
        num_p, k = priors.shape[0], self.num_landmarks
        for inst in gt_instances:
            gt_boxes = inst.gt_boxes.tensor
            matched, _ = match_priors(
                gt_boxes, priors, pos_iou=self.match_iou, force="per_gt", min_force_iou=self.min_force_iou
            )
            if gt_boxes.shape[0] == 0:
                labels.append(matched)
                box_t.append(priors.new_zeros(num_p, 4))
                ldm_t.append(priors.new_zeros(num_p, 2 * k))
                ldm_valid.append(torch.zeros(num_p, dtype=torch.bool, device=priors.device))
                continue
            idx = matched.clamp(min=0)
            box_t.append(encode_boxes(gt_boxes[idx], priors, self.variances))
            if inst.has("gt_keypoints"):
                kpts = inst.gt_keypoints.tensor
                if kpts.shape[1] != k:
                    raise ValueError(f"RetinaFace: gt_keypoints have {kpts.shape[1]} points, the model predicts {k}")
                has_ldm = (kpts[:, :, 2] > 0).all(dim=1)
                ldm_t.append(encode_landmarks(kpts[idx, :, :2], priors, self.variances).reshape(num_p, 2 * k))
            else:
                has_ldm = torch.zeros(gt_boxes.shape[0], dtype=torch.bool, device=priors.device)
                ldm_t.append(priors.new_zeros(num_p, 2 * k))
            ldm_valid.append((matched >= 0) & has_ldm[idx])
            labels.append(matched)
        return torch.stack(labels), torch.stack(box_t), torch.stack(ldm_t), torch.stack(ldm_valid)

    def losses(self, cls, box, ldm, priors, gt_instances):
        """SSD multibox loss of the official code: sums over positives (and hard negatives for the class loss)
        divided by the number of positives; the landmark loss by the number of positives with landmarks."""
        matched, box_t, ldm_t, ldm_valid = self.label_priors(priors, gt_instances)
        pos = matched >= 0
        neg_candidates = matched == -1
        log_p = F.log_softmax(cls, dim=-1)
        neg = hard_negative_mining(-log_p[..., 0], pos, neg_candidates, self.neg_pos_ratio)
        num_pos = pos.sum().clamp(min=1).float()
        num_ldm = ldm_valid.sum().clamp(min=1).float()
        target = pos.long()
        sel = pos | neg
        loss_cls = F.nll_loss(log_p[sel], target[sel], reduction="sum") / num_pos
        loss_box = F.smooth_l1_loss(box[pos], box_t[pos], reduction="sum", beta=1.0) / num_pos
        loss_ldm = F.smooth_l1_loss(ldm[ldm_valid], ldm_t[ldm_valid], reduction="sum", beta=1.0) / num_ldm
        return {
            "loss_cls": self.cls_weight * loss_cls,
            "loss_box_reg": self.box_weight * loss_box,
            "loss_landmark": self.landmark_weight * loss_ldm,
        }

    def inference(self, batched_inputs, do_postprocess=True):
        """Detections per image: ``list[dict]`` with ``instances`` (resized to ``height``/``width`` when
        ``do_postprocess``), else ``list[Instances]`` at input resolution."""
        images = self.preprocess_image(batched_inputs)
        cls, box, ldm, priors = self.forward_features(images.tensor)
        scores_all = F.softmax(cls, dim=-1)[..., 1]
        boxes_all = decode_boxes(box, priors, self.variances)
        ldm_all = decode_landmarks(ldm.reshape(ldm.shape[0], ldm.shape[1], self.num_landmarks, 2), priors,
                                   self.variances)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            results.append(self._postprocess_single(scores_all[i], boxes_all[i], ldm_all[i], image_size))
        if not do_postprocess:
            return results
        return rescale_instances(results, batched_inputs, images.image_sizes)

    def _postprocess_single(self, scores, boxes, landmarks, image_size):
        # Top-k before the score threshold keeps the same set as the official threshold-then-top-k and keeps
        # the number of candidates a function of the input size only (traceable).
        k = min(self.topk_candidates, scores.shape[0])
        scores, idx = scores.topk(k)
        boxes, landmarks = boxes[idx], landmarks[idx]
        keep = scores > self.score_thresh
        scores, boxes, landmarks = scores[keep], boxes[keep], landmarks[keep]
        classes = torch.zeros_like(scores, dtype=torch.long)
        keep = batched_nms(boxes, scores, classes, self.nms_thresh)[: self.max_detections]
        scores, boxes, landmarks, classes = scores[keep], boxes[keep], landmarks[keep], classes[keep]
        res = Instances(image_size)
        res.pred_boxes = Boxes(boxes)
        res.scores = scores
        res.pred_classes = classes
        res.pred_keypoints = torch.cat([landmarks, scores[:, None, None].expand(-1, landmarks.shape[1], 1)], dim=2)
        return res
