"""CenterNet: objects as points (Zhou et al. 2019, "Objects as Points"; xingyizhou/CenterNet, task ``ctdet``).

A backbone gives one stride-4 map; three heads predict per pixel a class-wise centre heatmap (C), the box
size (w, h) and the sub-pixel offset of the centre (dx, dy), both in output pixels. Training: Gaussian
centre targets (``segx.modeling.heatmaps``) with the penalty-reduced focal loss, L1 on size and offset at
the ground-truth centres only. Inference: 3×3 max-pool peaks, top-K, box = centre + offset ± size/2 —
no box NMS.
"""
import math

import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances

from segx.modeling.postprocessing import rescale_instances
from segx.modeling.heatmaps import (
    GAUSSIAN_RADIUS_VARIANTS,
    draw_gaussian,
    gather_at,
    gaussian_radius,
    heatmap_focal_loss,
    heatmap_peak_nms,
    topk_peaks,
)

__all__ = ["CenterNet", "centernet_targets", "centernet_decode"]


def _head(in_channels, head_conv, out_channels):
    """3×3 conv (bias) → ReLU → 1×1 conv; keys ``0.*``, ``2.*`` as the official heads. ``head_conv=0``:
    a single 1×1 conv."""
    if head_conv <= 0:
        return nn.Conv2d(in_channels, out_channels, 1)
    return nn.Sequential(nn.Conv2d(in_channels, head_conv, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(head_conv, out_channels, 1))


def centernet_targets(gt_boxes, gt_classes, num_classes, output_size, stride, min_overlap=0.7, radius_variant="original"):
    """Targets of one image, following xingyizhou/CenterNet ``datasets/sample/ctdet.py``.

    Args:
        gt_boxes: ``[N,4]`` x0,y0,x1,y1 in input pixels. gt_classes: ``[N]`` long.
        output_size: (H, W) of the output maps; stride: input pixels per output pixel.
    Returns:
        heatmap ``[C,H,W]``; index ``[M]`` flat H·W index of each kept object's integer centre;
        wh ``[M,2]`` (w, h) and offset ``[M,2]`` (centre − integer centre), output pixels. Boxes are clipped
        to [0, W−1] × [0, H−1] in output pixels; boxes with zero width or height after that are skipped.
    """
    h, w = int(output_size[0]), int(output_size[1])
    heat = torch.zeros(num_classes, h, w)
    if gt_boxes.numel() == 0:
        z = torch.zeros(0, 2)
        return heat, torch.zeros(0, dtype=torch.long), z, z.clone()
    boxes = gt_boxes.detach().float().cpu() / stride
    boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
    boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
    bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    keep = (bw > 0) & (bh > 0)
    boxes, bw, bh, classes = boxes[keep], bw[keep], bh[keep], gt_classes.cpu()[keep]
    ctr = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)
    ctr_int = ctr.floor()
    for i in range(len(boxes)):
        c = int(classes[i])
        if not 0 <= c < num_classes:
            raise ValueError(f"centernet_targets: gt class {c} outside [0, {num_classes}) (MODEL.CENTERNET.NUM_CLASSES)")
        r = gaussian_radius(math.ceil(float(bh[i])), math.ceil(float(bw[i])), min_overlap, radius_variant)
        draw_gaussian(heat[c], (int(ctr_int[i, 0]), int(ctr_int[i, 1])), max(0, int(r)))
    index = (ctr_int[:, 1] * w + ctr_int[:, 0]).long()
    return heat, index, torch.stack([bw, bh], dim=1), ctr - ctr_int


def centernet_decode(heat, wh, offset, k=100, nms_kernel=3):
    """Detections from the head outputs (traceable).

    Args:
        heat: ``[B,C,H,W]`` probabilities. wh, offset: ``[B,2,H,W]`` output pixels.
    Returns:
        boxes ``[B,K,4]`` x0,y0,x1,y1 in output pixels, scores ``[B,K]``, classes ``[B,K]`` (long).
    """
    heat = heatmap_peak_nms(heat, nms_kernel)
    scores, classes, index, ys, xs = topk_peaks(heat, k)
    size = gather_at(wh, index)
    off = gather_at(offset, index)
    cx, cy = xs + off[..., 0], ys + off[..., 1]
    half_w, half_h = size[..., 0] / 2, size[..., 1] / 2
    boxes = torch.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], dim=2)
    return boxes, scores, classes


@META_ARCH_REGISTRY.register()
class CenterNet(nn.Module):
    """CenterNet (objects as points).

    ``forward(batched_inputs)``: detectron2 inputs (``image`` ``[3,H,W]``, ``instances`` with ``gt_boxes`` /
    ``gt_classes`` in training). Returns ``{"loss_hm", "loss_wh", "loss_off"}`` in training, else
    ``[{"instances": Instances(pred_boxes, scores, pred_classes)}]``.
    """

    @configurable
    def __init__(self, *, backbone, num_classes, in_features=("deconv",), head_conv=64, hm_bias=-2.19,
                 radius_variant="original", min_overlap=0.7, hm_weight=1.0, wh_weight=0.1, off_weight=1.0,
                 focal_alpha=2.0, focal_beta=4.0, nms_kernel=3, topk=100, score_thresh=0.0,
                 pixel_mean, pixel_std):
        super().__init__()
        if radius_variant not in GAUSSIAN_RADIUS_VARIANTS:
            raise ValueError(
                f"CenterNet: radius_variant (MODEL.CENTERNET.GAUSSIAN_RADIUS) must be one of {GAUSSIAN_RADIUS_VARIANTS}, got {radius_variant!r}"
            )
        self.backbone = backbone
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"CenterNet: in_features {missing} not among the backbone's outputs {list(shapes)}")
        strides = {shapes[f].stride for f in in_features}
        channels = {shapes[f].channels for f in in_features}
        if len(strides) != 1 or len(channels) != 1:
            raise ValueError(f"CenterNet: in_features {list(in_features)} must share stride and channels, got {strides}, {channels}")
        self.in_features = list(in_features)
        self.stride = strides.pop()
        ch = channels.pop()
        self.num_classes = num_classes
        n = len(self.in_features)

        def heads(out):
            mods = [_head(ch, head_conv, out) for _ in range(n)]
            return mods[0] if n == 1 else nn.ModuleList(mods)

        # official layout: one hm / wh / reg head per output map (keys hm.0.*, or hm.<stack>.0.* when stacked)
        self.hm, self.wh, self.reg = heads(num_classes), heads(2), heads(2)
        for name in ("hm", "wh", "reg"):
            for head in [getattr(self, name)] if n == 1 else list(getattr(self, name)):
                last = head[-1] if isinstance(head, nn.Sequential) else head
                if name == "hm":
                    nn.init.constant_(last.bias, hm_bias)
                else:
                    nn.init.normal_(last.weight, std=0.001)
                    nn.init.zeros_(last.bias)
        self.radius_variant, self.min_overlap = radius_variant, min_overlap
        self.hm_weight, self.wh_weight, self.off_weight = hm_weight, wh_weight, off_weight
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.nms_kernel, self.topk, self.score_thresh = nms_kernel, topk, score_thresh
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CENTERNET
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        return {
            "backbone": backbone,
            "num_classes": c.NUM_CLASSES,
            "in_features": tuple(c.IN_FEATURES),
            "head_conv": c.HEAD_CONV,
            "hm_bias": c.HM_BIAS,
            "radius_variant": c.GAUSSIAN_RADIUS,
            "min_overlap": c.MIN_OVERLAP,
            "hm_weight": c.HM_WEIGHT,
            "wh_weight": c.WH_WEIGHT,
            "off_weight": c.OFF_WEIGHT,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "nms_kernel": c.NMS_KERNEL,
            "topk": c.TOPK,
            "score_thresh": c.SCORE_THRESH_TEST,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        div = max(getattr(self.backbone, "size_divisibility", 0), self.stride)
        return ImageList.from_tensors(images, div)

    def _head_outputs(self, features):
        """Per in_feature: (heat probabilities, wh, offset), each ``[B,·,H/4,W/4]``."""
        outs = []
        for i, f in enumerate(self.in_features):
            pick = (lambda m: m) if len(self.in_features) == 1 else (lambda m, i=i: m[i])
            x = features[f]
            outs.append((torch.sigmoid(pick(self.hm)(x)), pick(self.wh)(x), pick(self.reg)(x)))
        return outs

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        for i, x in enumerate(batched_inputs):
            if "instances" not in x:
                raise ValueError(f"CenterNet: batched_inputs[{i}] has no 'instances' (ground truth) in training")
        images = self.preprocess_image(batched_inputs)
        outs = self._head_outputs(self.backbone(images.tensor))
        heat_t, index, wh_t, off_t, batch = self._targets([x["instances"] for x in batched_inputs], outs[0][0].shape[-2:])
        losses = {"loss_hm": 0.0, "loss_wh": 0.0, "loss_off": 0.0}
        for heat, wh, off in outs:
            losses["loss_hm"] = losses["loss_hm"] + self.hm_weight * heatmap_focal_loss(heat, heat_t, self.focal_alpha, self.focal_beta)
            losses["loss_wh"] = losses["loss_wh"] + self.wh_weight * self._l1_at(wh, batch, index, wh_t)
            losses["loss_off"] = losses["loss_off"] + self.off_weight * self._l1_at(off, batch, index, off_t)
        return {k: v / len(outs) for k, v in losses.items()}

    @staticmethod
    def _l1_at(pred, batch, index, target):
        """Mean |pred − target| over the objects' centres and both channels (official RegL1Loss); 0 without
        objects (kept in the graph)."""
        if index.numel() == 0:
            return pred.sum() * 0.0
        b, c = pred.shape[:2]
        picked = pred.reshape(b, c, -1)[batch, :, index]  # [M,2]
        return (picked - target).abs().sum() / (target.numel() + 1e-4)

    @torch.no_grad()
    def _targets(self, instances, output_size):
        heats, index, wh, off, batch = [], [], [], [], []
        for b, inst in enumerate(instances):
            h, i, s, o = centernet_targets(
                inst.gt_boxes.tensor, inst.gt_classes, self.num_classes, output_size, self.stride,
                self.min_overlap, self.radius_variant,
            )
            heats.append(h)
            index.append(i)
            wh.append(s)
            off.append(o)
            batch.append(torch.full_like(i, b))
        d = self.device
        return (torch.stack(heats).to(d), torch.cat(index).to(d), torch.cat(wh).to(d), torch.cat(off).to(d), torch.cat(batch).to(d))

    def inference(self, batched_inputs, do_postprocess=True):
        """Detections per image; boxes in input-image pixels (``do_postprocess=False``, traceable) or resized
        to each input's ``height`` / ``width`` by ``detector_postprocess``."""
        images = self.preprocess_image(batched_inputs)
        heat, wh, off = self._head_outputs(self.backbone(images.tensor))[-1]
        boxes, scores, classes = centernet_decode(heat, wh, off, self.topk, self.nms_kernel)
        boxes = boxes * self.stride
        results = []
        for i, image_size in enumerate(images.image_sizes):
            keep = scores[i] > self.score_thresh
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(boxes[i][keep])
            inst.scores = scores[i][keep]
            inst.pred_classes = classes[i][keep]
            results.append(inst)
        if not do_postprocess:
            return results
        return rescale_instances(results, batched_inputs, images.image_sizes)
