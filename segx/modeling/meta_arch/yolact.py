"""YOLACT / YOLACT++ (Bolya et al., ICCV 2019 / TPAMI 2020), following dbolya/yolact where it matters for its
numbers: 550² input with the aspect ratio ignored, YOLACT's FPN (``segx.modeling.backbone.yolact_fpn``),
k prototypes from P3, one prediction head shared by P3–P7 (boxes, softmax classes, tanh coefficients),
mask = sigmoid(P·Cᵀ) cropped to the box (``segx.layers.assemble_masks``), Fast NMS, and the official losses
(smooth-L1 boxes, OHEM softmax CE, box-area-normalised mask BCE, semantic-segmentation auxiliary loss, and
for YOLACT++ the mask-IoU re-scoring head).
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import BitMasks, Boxes, Instances, PolygonMasks

from segx.layers import assemble_masks
from segx.modeling.fast_nms import multiclass_fast_nms
from segx.modeling.ssd_coding import NEGATIVE, decode_boxes, encode_boxes, hard_negative_mining, match_priors

__all__ = [
    "YOLACT",
    "YolactHead",
    "MaskIoUNet",
    "make_protonet",
    "make_priors",
    "crop_boxes",
    "ohem_classification_loss",
    "normalized_mask_loss",
]


def make_protonet(in_channels, channels=256, num_convs=3, num_prototypes=32):
    """Protonet as YOLACT's ``mask_proto_net``: ``num_convs`` × (3×3, ReLU) → ×2 bilinear upsample → ReLU →
    3×3 + ReLU → 1×1 to ``num_prototypes``. The module indices equal the official ``proto_net.<i>``; the
    final ReLU is applied by the caller (official ``mask_proto_prototype_activation``)."""
    layers = []
    for i in range(num_convs):
        layers += [nn.Conv2d(in_channels if i == 0 else channels, channels, 3, padding=1), nn.ReLU(inplace=True)]
    layers += [nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False), nn.ReLU(inplace=True)]
    layers += [nn.Conv2d(channels, channels, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(channels, num_prototypes, 1)]
    return nn.Sequential(*layers)


class YolactHead(nn.Module):
    """The prediction module shared by all levels: 3×3 conv + ReLU (``upfeature``), then 3×3 convs for box
    deltas, class logits (background first) and tanh mask coefficients.

    ``forward(features)`` with ``features`` a list of ``[B,C,Hl,Wl]`` → ``deltas [B,P,4]``, ``logits [B,P,C+1]``,
    ``coeffs [B,P,k]``, P = Σ Hl·Wl·A, anchors of a location consecutive (rows, then columns, then anchors).
    """

    def __init__(self, in_channels, channels, num_anchors, num_classes, num_prototypes):
        super().__init__()
        self.upfeature = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1), nn.ReLU(inplace=True))
        self.bbox_layer = nn.Conv2d(channels, num_anchors * 4, 3, padding=1)
        self.conf_layer = nn.Conv2d(channels, num_anchors * (num_classes + 1), 3, padding=1)
        self.mask_layer = nn.Conv2d(channels, num_anchors * num_prototypes, 3, padding=1)
        self.num_classes, self.num_prototypes = num_classes, num_prototypes
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, features):
        deltas, logits, coeffs = [], [], []
        for x in features:
            x = self.upfeature(x)
            B = x.shape[0]
            deltas.append(self.bbox_layer(x).permute(0, 2, 3, 1).reshape(B, -1, 4))
            logits.append(self.conf_layer(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_classes + 1))
            coeffs.append(self.mask_layer(x).permute(0, 2, 3, 1).reshape(B, -1, self.num_prototypes))
        return torch.cat(deltas, 1), torch.cat(logits, 1), torch.tanh(torch.cat(coeffs, 1))


class MaskIoUNet(nn.Module):
    """YOLACT++ mask re-scoring: ``[N,1,H,W]`` cropped soft masks → ``[N,C]`` predicted mask IoU per class.
    Unpadded stride-2 3×3 convs (8, 16, 32, 64, 128 channels) + ReLU, a 1×1 conv to C + ReLU, global max pool
    (official ``maskiou_net``). Needs H, W ≥ 63."""

    def __init__(self, num_classes, channels=(8, 16, 32, 64, 128)):
        super().__init__()
        layers, cin = [], 1
        for c in channels:
            layers += [nn.Conv2d(cin, c, 3, stride=2), nn.ReLU(inplace=True)]
            cin = c
        layers += [nn.Conv2d(cin, num_classes, 1), nn.ReLU(inplace=True)]
        self.net = nn.Sequential(*layers)

    def forward(self, masks):
        return self.net(masks).amax(dim=(2, 3))


def make_priors(feature_sizes, input_size, scales, ratios, square, device=None):
    """YOLACT's anchors, ``[P,4]`` (cx, cy, w, h) in input pixels.

    Level l with an ``Hl×Wl`` map has centres ((j + 0.5)·S/Wl, (i + 0.5)·S/Hl) (official: the map size, not
    the stride), and at each location, for each scale s of ``scales[l]`` then each ratio r:
    w = s·√r, h = s/√r (h = w when ``square``). Order: rows, columns, scales, ratios.
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(f"make_priors: {len(feature_sizes)} feature maps but {len(scales)} ANCHOR_SCALES lists")
    out = []
    for (h, w), level_scales in zip(feature_sizes, scales):
        wh = []
        for s in level_scales:
            for r in ratios:
                pw = s * math.sqrt(r)
                wh.append((pw, pw if square else s / math.sqrt(r)))
        wh = torch.tensor(wh, dtype=torch.float32, device=device)  # [A,2]
        cy = (torch.arange(h, dtype=torch.float32, device=device) + 0.5) * (input_size / h)
        cx = (torch.arange(w, dtype=torch.float32, device=device) + 0.5) * (input_size / w)
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, wh.shape[0], 2)
        out.append(torch.cat([centers, wh[None].expand(centers.shape[0], -1, -1)], dim=-1).reshape(-1, 4))
    return torch.cat(out, 0)


def crop_boxes(boxes, height, width, mode="official"):
    """Boxes ``[N,4]`` in prototype pixels → the boxes ``assemble_masks`` should crop with.

    ``"center"``: unchanged (pixel (i, j) inside when x0 ≤ j + 0.5 < x1). ``"official"``: dbolya/yolact's
    ``crop(padding=1)``: pixel inside when max(x0 − 1, 0) ≤ j < min(x1 + 1, W) (index, not centre), which is
    the centre test on those bounds shifted by half a pixel.
    """
    if mode == "center":
        return boxes
    if mode != "official":
        raise ValueError(f"crop_boxes: mode must be 'official' or 'center', got {mode!r}")
    x0 = torch.min(boxes[:, 0], boxes[:, 2])
    x1 = torch.max(boxes[:, 0], boxes[:, 2])
    y0 = torch.min(boxes[:, 1], boxes[:, 3])
    y1 = torch.max(boxes[:, 1], boxes[:, 3])
    return torch.stack([
        (x0 - 1).clamp(min=0) + 0.5, (y0 - 1).clamp(min=0) + 0.5,
        (x1 + 1).clamp(max=width) + 0.5, (y1 + 1).clamp(max=height) + 0.5,
    ], dim=1)


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
    bce = F.binary_cross_entropy(pred_masks.clamp(0, 1), gt_masks, reduction="none").sum(dim=(1, 2))
    # the area floor (1 prototype pixel²) only guards degenerate boxes; the official code has none
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])).clamp(min=1.0)
    return bce / area


def _gt_mask_tensor(instances, height, width, index):
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
    return masks.float()


def _resize_binary(masks, size):
    """``[G,H,W]`` {0,1} → ``[G,h,w]`` {0,1}: bilinear, then > 0.5 (official GT downsampling)."""
    if masks.shape[0] == 0:
        return masks.new_zeros((0, *size))
    return (F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0] > 0.5).float()


@META_ARCH_REGISTRY.register()
class YOLACT(nn.Module):
    """YOLACT (``maskiou_on=False``, square anchors) and YOLACT++ (deformable backbone, 3 scales × 3 ratios,
    mask re-scoring). Inputs are detectron2's ``batched_inputs``; outputs ``instances`` with ``pred_boxes``,
    ``scores``, ``pred_classes`` and full-image bool ``pred_masks``."""

    @configurable
    def __init__(
        self,
        *,
        backbone,
        in_features,
        num_classes,
        pixel_mean,
        pixel_std,
        input_size=550,
        num_prototypes=32,
        proto_channels=256,
        proto_num_convs=3,
        head_channels=256,
        anchor_scales=((24.0,), (48.0,), (96.0,), (192.0,), (384.0,)),
        anchor_ratios=(1.0, 0.5, 2.0),
        square_anchors=True,
        box_variances=(0.1, 0.2),
        pos_iou=0.5,
        neg_iou=0.4,
        crowd_iou=0.7,
        neg_pos_ratio=3,
        box_loss_weight=1.5,
        cls_loss_weight=1.0,
        mask_loss_weight=6.125,
        sem_seg_loss_weight=1.0,
        maskiou_loss_weight=25.0,
        masks_to_train=100,
        semantic_seg_loss=True,
        crop_mode="official",
        maskiou_on=False,
        discard_mask_area=25,
        score_thresh=0.05,
        nms_top_k=200,
        nms_thresh=0.5,
        max_detections=100,
        mask_threshold=0.5,
    ):
        super().__init__()
        self.backbone = backbone
        self.in_features = list(in_features)
        shapes = backbone.output_shape()
        for f in self.in_features:
            if f not in shapes:
                raise ValueError(f"YOLACT: IN_FEATURES has {f!r}, the backbone outputs {sorted(shapes)}")
        if len(anchor_scales) != len(self.in_features):
            raise ValueError(f"YOLACT: ANCHOR_SCALES has {len(anchor_scales)} levels, IN_FEATURES {len(self.in_features)}")
        if len({len(s) for s in anchor_scales}) != 1:
            raise ValueError("YOLACT: every level of ANCHOR_SCALES needs the same number of scales (one shared head)")
        if crop_mode not in ("official", "center"):
            raise ValueError(f"YOLACT: CROP_MODE must be 'official' or 'center', got {crop_mode!r}")
        channels = shapes[self.in_features[0]].channels
        self.num_classes = num_classes
        self.input_size = int(input_size)
        self.anchor_scales = [tuple(float(x) for x in s) for s in anchor_scales]
        self.anchor_ratios = tuple(float(r) for r in anchor_ratios)
        self.square_anchors = square_anchors
        num_anchors = len(self.anchor_scales[0]) * len(self.anchor_ratios)
        self.proto_net = make_protonet(channels, proto_channels, proto_num_convs, num_prototypes)
        for m in self.proto_net.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        self.head = YolactHead(channels, head_channels, num_anchors, num_classes, num_prototypes)
        self.semantic_seg_conv = nn.Conv2d(channels, num_classes, 1) if semantic_seg_loss else None
        self.maskiou_net = MaskIoUNet(num_classes) if maskiou_on else None
        self.box_variances = tuple(box_variances)
        self.pos_iou, self.neg_iou, self.crowd_iou = pos_iou, neg_iou, crowd_iou
        self.neg_pos_ratio = neg_pos_ratio
        self.box_loss_weight, self.cls_loss_weight = box_loss_weight, cls_loss_weight
        self.mask_loss_weight, self.sem_seg_loss_weight = mask_loss_weight, sem_seg_loss_weight
        self.maskiou_loss_weight = maskiou_loss_weight
        self.masks_to_train = masks_to_train
        self.crop_mode = crop_mode
        self.discard_mask_area = discard_mask_area
        self.score_thresh, self.nms_top_k, self.nms_thresh = score_thresh, nms_top_k, nms_thresh
        self.max_detections, self.mask_threshold = max_detections, mask_threshold
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)
        self._prior_cache = {}

    @classmethod
    def from_config(cls, cfg):
        y = cfg.MODEL.YOLACT
        return {
            "backbone": build_backbone(cfg),
            "in_features": y.IN_FEATURES,
            "num_classes": y.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_size": y.INPUT_SIZE,
            "num_prototypes": y.NUM_PROTOTYPES,
            "proto_channels": y.PROTO_CHANNELS,
            "proto_num_convs": y.PROTO_NUM_CONVS,
            "head_channels": y.HEAD_CHANNELS,
            "anchor_scales": y.ANCHOR_SCALES,
            "anchor_ratios": y.ANCHOR_RATIOS,
            "square_anchors": y.SQUARE_ANCHORS,
            "box_variances": y.BOX_VARIANCES,
            "pos_iou": y.POS_IOU,
            "neg_iou": y.NEG_IOU,
            "crowd_iou": y.CROWD_IOU,
            "neg_pos_ratio": y.NEG_POS_RATIO,
            "box_loss_weight": y.BOX_LOSS_WEIGHT,
            "cls_loss_weight": y.CLS_LOSS_WEIGHT,
            "mask_loss_weight": y.MASK_LOSS_WEIGHT,
            "sem_seg_loss_weight": y.SEM_SEG_LOSS_WEIGHT,
            "maskiou_loss_weight": y.MASKIOU_LOSS_WEIGHT,
            "masks_to_train": y.MASKS_TO_TRAIN,
            "semantic_seg_loss": y.SEMANTIC_SEG_LOSS,
            "crop_mode": y.CROP_MODE,
            "maskiou_on": y.MASKIOU_ON,
            "discard_mask_area": y.DISCARD_MASK_AREA,
            "score_thresh": y.SCORE_THRESH_TEST,
            "nms_top_k": y.NMS_TOP_K,
            "nms_thresh": y.NMS_THRESH,
            "max_detections": y.MAX_DETECTIONS,
            "mask_threshold": y.MASK_THRESHOLD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        """Normalised images resized to ``INPUT_SIZE²`` (aspect ignored) ``[B,3,S,S]``, and each input's (h, w)."""
        images, sizes = [], []
        for i, x in enumerate(batched_inputs):
            img = x["image"]
            if not torch.is_tensor(img) or img.dim() != 3 or img.shape[0] != self.pixel_mean.shape[0]:
                raise ValueError(f"YOLACT: batched_inputs[{i}]['image'] must be a [3,H,W] tensor, got "
                                 f"{getattr(img, 'shape', type(img))}")
            img = img.to(self.device).float()
            sizes.append((img.shape[-2], img.shape[-1]))
            img = F.interpolate(img[None], size=(self.input_size, self.input_size), mode="bilinear", align_corners=False)
            images.append((img[0] - self.pixel_mean) / self.pixel_std)
        return torch.stack(images), sizes

    def priors(self, features):
        """``[P,4]`` anchors (cx, cy, w, h) in input pixels for these feature maps (cached per size)."""
        sizes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
        key = (sizes, str(features[0].device))
        if key not in self._prior_cache:
            self._prior_cache[key] = make_priors(sizes, self.input_size, self.anchor_scales, self.anchor_ratios,
                                                 self.square_anchors, device=features[0].device)
        return self._prior_cache[key]

    def forward_net(self, images):
        """Network outputs for ``[B,3,S,S]`` images: features (list), prototypes ``[B,k,Hp,Wp]`` (ReLU),
        deltas ``[B,P,4]``, logits ``[B,P,C+1]``, coefficients ``[B,P,k]``, priors ``[P,4]``."""
        feats = self.backbone(images)
        features = [feats[f] for f in self.in_features]
        protos = F.relu(self.proto_net(features[0]))
        deltas, logits, coeffs = self.head(features)
        return features, protos, deltas, logits, coeffs, self.priors(features)

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        images, sizes = self.preprocess_image(batched_inputs)
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(f"YOLACT: training input {i} has no 'instances'")
        gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
        return self.losses(self.forward_net(images), gt_instances, sizes)

    # ------------------------------------------------------------------ training
    def match(self, gt_instances, image_sizes, priors, proto_size, segm_size):
        """Per-image targets: labels ``[B,P]`` (c+1 / 0 / <0 ignored), box targets ``[B,P,4]``, matched GT index
        ``[B,P]``, and per image the GT boxes in input pixels, classes and masks at prototype and P3 size."""
        S = self.input_size
        B, P = len(gt_instances), priors.shape[0]
        labels = torch.zeros(B, P, dtype=torch.long, device=priors.device)
        box_targets = torch.zeros(B, P, 4, device=priors.device)
        matched_all, per_image = [], []
        for b, (inst, (h, w)) in enumerate(zip(gt_instances, image_sizes)):
            scale = torch.tensor([S / w, S / h, S / w, S / h], device=priors.device)
            boxes = inst.gt_boxes.tensor * scale
            classes = inst.gt_classes
            masks = _gt_mask_tensor(inst, h, w, b)
            crowd = inst.gt_is_crowd.bool() if inst.has("gt_is_crowd") else torch.zeros_like(classes, dtype=torch.bool)
            boxes, crowd_boxes = boxes[~crowd], boxes[crowd]
            classes, masks = classes[~crowd], masks[~crowd]
            matched, _ = match_priors(boxes, priors, self.pos_iou, self.neg_iou, force="greedy",
                                      crowd_boxes=crowd_boxes, crowd_iou=self.crowd_iou)
            pos = matched >= 0
            gt_idx = matched.clamp(min=0)
            if boxes.shape[0] > 0:
                labels[b] = torch.where(pos, classes[gt_idx] + 1, torch.where(matched == NEGATIVE, 0, -1))
                box_targets[b, pos] = encode_boxes(boxes[gt_idx[pos]], priors[pos], self.box_variances)
            else:
                labels[b] = torch.where(matched == NEGATIVE, 0, -1)
            matched_all.append(matched)
            per_image.append({
                "boxes": boxes, "classes": classes,
                "masks_proto": _resize_binary(masks, proto_size), "masks_segm": _resize_binary(masks, segm_size),
            })
        return labels, box_targets, torch.stack(matched_all), per_image

    def losses(self, outputs, gt_instances, image_sizes):
        """Loss dict: ``loss_box`` (smooth-L1 × 1.5), ``loss_cls`` (OHEM CE), ``loss_mask`` (box-normalised BCE
        × 6.125), all divided by the batch's positives; ``loss_sem_seg`` per image; ``loss_maskiou`` (YOLACT++)."""
        features, protos, deltas, logits, coeffs, priors = outputs
        Hp, Wp = protos.shape[-2:]
        segm = self.semantic_seg_conv(features[0]) if self.semantic_seg_conv is not None else None
        segm_size = tuple(segm.shape[-2:]) if segm is not None else tuple(features[0].shape[-2:])
        labels, box_targets, matched, per_image = self.match(gt_instances, image_sizes, priors, (Hp, Wp), segm_size)
        positive = labels > 0
        num_pos = positive.sum().clamp(min=1).float()
        losses = {}
        losses["loss_box"] = F.smooth_l1_loss(deltas[positive], box_targets[positive], reduction="sum") * (
            self.box_loss_weight / num_pos)
        cls_loss, _ = ohem_classification_loss(logits, labels, self.neg_pos_ratio)
        losses["loss_cls"] = cls_loss * (self.cls_loss_weight / num_pos)

        S = self.input_size
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
            if n > self.masks_to_train:
                select = torch.randperm(n, device=idx.device)[: self.masks_to_train]
                idx, coef, factor = idx[select], coef[select], n / self.masks_to_train
            boxes = t["boxes"][idx] * to_proto
            gt = t["masks_proto"][idx]
            pred = assemble_masks(protos[b], coef, crop_boxes(boxes, Hp, Wp, self.crop_mode))
            mask_loss = mask_loss + normalized_mask_loss(pred, gt, boxes).sum() * factor
            if self.maskiou_net is not None:
                keep = gt.sum(dim=(1, 2)) > self.discard_mask_area
                hard = (pred[keep] > 0.5).float()
                inter = (hard * gt[keep]).sum(dim=(1, 2))
                union = hard.sum(dim=(1, 2)) + gt[keep].sum(dim=(1, 2)) - inter
                iou_inputs.append(pred[keep])
                iou_targets.append(inter / union.clamp(min=1.0))
                iou_labels.append(t["classes"][idx][keep])
        losses["loss_mask"] = mask_loss * (self.mask_loss_weight / num_pos)
        if self.maskiou_net is not None:
            if iou_inputs and sum(x.shape[0] for x in iou_inputs) > 0:
                pred_iou = self.maskiou_net(torch.cat(iou_inputs)[:, None])
                pred_iou = pred_iou.gather(1, torch.cat(iou_labels)[:, None])[:, 0]
                iou_loss = F.smooth_l1_loss(pred_iou, torch.cat(iou_targets), reduction="sum")
            else:
                iou_loss = sum(p.sum() for p in self.maskiou_net.parameters()) * 0.0
            losses["loss_maskiou"] = iou_loss * (self.maskiou_loss_weight / num_pos)
        if segm is not None:
            sem_loss = segm.sum() * 0.0
            for b, t in enumerate(per_image):
                # channel c: the union of class c's GT masks
                one_hot = F.one_hot(t["classes"], self.num_classes).to(segm.dtype)  # [G,C]
                target = (one_hot[:, :, None, None] * t["masks_segm"][:, None]).amax(dim=0) if t["classes"].numel() \
                    else torch.zeros_like(segm[b])
                sem_loss = sem_loss + F.binary_cross_entropy_with_logits(segm[b], target, reduction="sum") / (
                    segm.shape[-2] * segm.shape[-1])
            losses["loss_sem_seg"] = sem_loss * (self.sem_seg_loss_weight / len(per_image))
        return losses

    # ------------------------------------------------------------------ inference
    def inference(self, batched_inputs, do_postprocess=True):
        """``list[dict(instances=...)]`` (``do_postprocess``: at each input's ``height``/``width`` when given),
        else ``list[Instances]`` at the network input's resolution (what export traces)."""
        images, sizes = self.preprocess_image(batched_inputs)
        features, protos, deltas, logits, coeffs, priors = self.forward_net(images)
        scores = logits.softmax(dim=-1)[..., 1:]
        boxes = decode_boxes(deltas, priors, self.box_variances)
        Hp, Wp = protos.shape[-2:]
        S = self.input_size
        results = []
        for b, x in enumerate(batched_inputs):
            idx, classes, det_scores = multiclass_fast_nms(
                boxes[b], scores[b], self.score_thresh, self.nms_thresh, self.nms_top_k, self.max_detections)
            det_boxes = boxes[b][idx]
            to_proto = torch.tensor([Wp / S, Hp / S, Wp / S, Hp / S], device=det_boxes.device)
            proto_boxes = det_boxes * to_proto
            soft = assemble_masks(protos[b], coeffs[b][idx], crop_boxes(proto_boxes, Hp, Wp, self.crop_mode))
            if self.maskiou_net is not None:
                det_scores = det_scores * self.maskiou_net(soft[:, None]).gather(1, classes[:, None])[:, 0]
            h, w = sizes[b]
            if do_postprocess:
                h, w = x.get("height", h), x.get("width", w)
            results.append(self._instances(det_boxes, det_scores, classes, soft, h, w))
        if do_postprocess:
            return [{"instances": r} for r in results]
        return results

    def _instances(self, boxes, scores, classes, soft_masks, height, width):
        """Boxes from the ``S×S`` input to ``height×width`` (clipped), masks upsampled there and thresholded."""
        S = self.input_size
        scale = torch.stack([torch.as_tensor(width / S), torch.as_tensor(height / S)] * 2).to(boxes)
        out_boxes = Boxes(boxes * scale)
        out_boxes.clip((height, width))
        # detections as the batch dimension: interpolate accepts an empty batch, not empty channels
        masks = F.interpolate(soft_masks[:, None], size=(int(height), int(width)), mode="bilinear",
                              align_corners=False)[:, 0]
        inst = Instances((int(height), int(width)))
        inst.pred_boxes = out_boxes
        inst.scores = scores
        inst.pred_classes = classes
        inst.pred_masks = masks > self.mask_threshold
        return inst
