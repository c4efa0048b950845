"""Stacked Hourglass landmarks (Newell, Yang & Deng, ECCV 2016), top-down: one square crop per person box.

Followed: the paper and princeton-vl/pose-hg-train (network layout, MSE on every stack, σ = 1 at 64×64, crop
margin 1.25, scale/rotation augmentation, arg-max decoding with the quarter-pixel shift). The network is in
``segx/modeling/backbone/stacked_hourglass.py``; heatmap targets and decoding in ``segx/modeling/heatmaps.py``.

Inputs (detectron2's ``DatasetMapper`` with ``MODEL.KEYPOINT_ON``): ``image`` and, in training,
``instances`` with ``gt_boxes`` and ``gt_keypoints`` ``[N,K,3]`` (x, y, visibility in the image's continuous
coordinates). In inference the person boxes are ``instances.pred_boxes`` (or ``gt_boxes``) when the input has
``instances`` (cropped with ``box_padding``), else the whole image is the crop of one person (no margin added).

Outputs: ``instances`` with ``pred_boxes`` (the input person boxes), ``scores`` (mean landmark confidence),
``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y in image pixels, confidence: the heatmap
maximum, or 1 for the regression head).

Coordinates: a crop of side ``s`` centred on ``c`` maps the image point ``p`` to normalised crop coordinates
``u = R⁻¹(p − c)/(s/2)`` ∈ [−1, 1]² (corners of the crop, rotation ``R`` only in training); heatmap pixel
``h`` (its centre) is ``u = (2h + 1)/H_m − 1``.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from detectron2.config import configurable
from detectron2.layers.wrappers import shapes_to_tensor
from detectron2.modeling import META_ARCH_REGISTRY
from detectron2.structures import Boxes, Instances

from segx.modeling.postprocessing import rescale_instances
from segx.modeling.backbone.stacked_hourglass import RegressionHead, StackedHourglassNet
from segx.modeling.heatmaps import argmax_decode, landmark_heatmaps

__all__ = ["StackedHourglass", "crop_grid", "image_to_crop", "crop_to_image", "square_crops"]

HEADS = ("heatmap", "regression")


def square_crops(boxes, padding):
    """Boxes ``[N,4]`` (x0, y0, x1, y1) → centres ``[N,2]`` and half-sides ``[N]`` of the square crops
    (longer side × ``padding``)."""
    centres = (boxes[:, :2] + boxes[:, 2:]) * 0.5
    half = torch.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]).clamp(min=1.0) * (0.5 * padding)
    return centres, half


def _rotate(v, cos, sin):
    """Rotates ``v`` ``[N,M,2]`` by the per-row angle given as ``cos``/``sin`` ``[N]``."""
    x, y = v[..., 0], v[..., 1]
    return torch.stack([cos[:, None] * x - sin[:, None] * y, sin[:, None] * x + cos[:, None] * y], dim=-1)


def crop_grid(centres, half, image_hw, size, cos=None, sin=None):
    """``grid_sample`` grid ``[N,size,size,2]`` for the square crops (``align_corners=False``); ``image_hw``:
    (H, W) numbers or tensors. Output pixel (i, j) samples the image point ``c + R·half·(u_j, u_i)`` with
    ``u_j = (2j+1)/size − 1``."""
    u = (torch.arange(size, dtype=centres.dtype, device=centres.device) * 2 + 1) / size - 1
    grid = torch.stack(torch.meshgrid(u, u, indexing="xy"), dim=-1).reshape(1, size * size, 2)
    grid = grid.expand(centres.shape[0], -1, -1)
    if cos is not None:
        grid = _rotate(grid, cos, sin)
    points = centres[:, None, :] + grid * half[:, None, None]
    h, w = image_hw
    scale = torch.stack([2.0 / torch.as_tensor(w, dtype=centres.dtype), 2.0 / torch.as_tensor(h, dtype=centres.dtype)])
    return (points * scale.to(centres.device) - 1).reshape(-1, size, size, 2)


def image_to_crop(points, centres, half, cos=None, sin=None):
    """Image points ``[N,K,2]`` → normalised crop coordinates ``[N,K,2]``."""
    u = (points - centres[:, None, :]) / half[:, None, None]
    return u if cos is None else _rotate(u, cos, -sin)


def crop_to_image(u, centres, half):
    """Normalised crop coordinates ``[N,K,2]`` (unrotated crops) → image points ``[N,K,2]``."""
    return centres[:, None, :] + u * half[:, None, None]


@META_ARCH_REGISTRY.register()
class StackedHourglass(nn.Module):
    """Top-down landmark localisation with a stacked hourglass; heatmap or coordinate-regression head."""

    @configurable
    def __init__(
        self,
        *,
        net,
        num_keypoints,
        input_size,
        pixel_mean,
        pixel_std,
        head="heatmap",
        regression_heads=None,
        heatmap_kind="gaussian",
        sigma=1.0,
        loss_weight=1.0,
        regression_loss="l1",
        use_target_weight=True,
        box_padding=1.25,
        aug_scale=0.0,
        aug_rotation=0.0,
        aug_rotation_prob=0.0,
    ):
        """
        Args:
            net: a ``StackedHourglassNet`` (``predict_heatmaps=False`` for the regression head).
            num_keypoints: K. input_size: crop side S in pixels (divisible by 4·2^depth).
            pixel_mean, pixel_std: per-channel normalisation of the input image.
            head: "heatmap" or "regression"; regression_heads: one ``RegressionHead`` per stack (regression).
            heatmap_kind, sigma: target encoding (``landmark_heatmaps``), σ in heatmap pixels.
            loss_weight: multiplier on each stack's loss. regression_loss: "l1" or "l2".
            use_target_weight: unannotated landmarks (visibility 0) do not count in the loss.
            box_padding: crop side = longer box side × this.
            aug_scale, aug_rotation (degrees), aug_rotation_prob: training jitter of the crop.
        """
        super().__init__()
        if head not in HEADS:
            raise ValueError(f"StackedHourglass: head must be one of {HEADS}, got {head!r}")
        if heatmap_kind not in ("gaussian", "cauchy"):
            raise ValueError(f"StackedHourglass: heatmap_kind must be 'gaussian' or 'cauchy', got {heatmap_kind!r}")
        if regression_loss not in ("l1", "l2"):
            raise ValueError(f"StackedHourglass: regression_loss must be 'l1' or 'l2', got {regression_loss!r}")
        stride = 4 * 2 ** net.depth
        if input_size % stride:
            raise ValueError(f"StackedHourglass: input_size {input_size} must be divisible by 4·2^depth = {stride}")
        if head == "regression" and (regression_heads is None or len(regression_heads) != net.num_stacks):
            raise ValueError("StackedHourglass: the regression head needs one RegressionHead per stack")
        self.net = net
        self.regression_heads = regression_heads
        self.head = head
        self.num_keypoints = num_keypoints
        self.input_size = input_size
        self.heatmap_size = input_size // 4
        self.heatmap_kind = heatmap_kind
        self.sigma = sigma
        self.loss_weight = loss_weight
        self.regression_loss = regression_loss
        self.use_target_weight = use_target_weight
        self.box_padding = box_padding
        self.aug_scale = aug_scale
        self.aug_rotation = aug_rotation
        self.aug_rotation_prob = aug_rotation_prob
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STACKED_HOURGLASS
        regression = c.HEAD == "regression"
        net = StackedHourglassNet(
            num_stacks=c.NUM_STACKS,
            num_features=c.NUM_FEATURES,
            num_keypoints=c.NUM_KEYPOINTS,
            depth=c.DEPTH,
            num_modules=c.NUM_MODULES,
            merge_predictions=c.MERGE_PREDICTIONS,
            predict_heatmaps=not regression,
        )
        heads = None
        if regression:
            heads = nn.ModuleList(
                [RegressionHead(c.NUM_FEATURES, c.NUM_KEYPOINTS, c.INPUT_SIZE // 4) for _ in range(c.NUM_STACKS)]
            )
        return {
            "net": net,
            "num_keypoints": c.NUM_KEYPOINTS,
            "input_size": c.INPUT_SIZE,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "head": c.HEAD,
            "regression_heads": heads,
            "heatmap_kind": c.HEATMAP_KIND,
            "sigma": c.SIGMA,
            "loss_weight": c.LOSS_WEIGHT,
            "regression_loss": c.REGRESSION_LOSS,
            "use_target_weight": c.USE_TARGET_WEIGHT,
            "box_padding": c.BOX_PADDING,
            "aug_scale": c.AUG_SCALE,
            "aug_rotation": c.AUG_ROTATION,
            "aug_rotation_prob": c.AUG_ROTATION_PROB,
        }

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        """Normalised images, a list of ``[3,H_i,W_i]`` (no padding: each is cropped on its own)."""
        return [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]

    def _crops(self, image, centres, half, cos=None, sin=None):
        grid = crop_grid(centres, half, shapes_to_tensor(image.shape[-2:], self.device), self.input_size, cos, sin)
        src = image[None].expand(centres.shape[0], -1, -1, -1)
        return F.grid_sample(src, grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    def _predict(self, crops):
        """Per-stack outputs: heatmaps ``[N,K,H_m,W_m]`` or regressed crop coordinates ``[N,K,2]``."""
        heatmaps, features = self.net(crops)
        if self.head == "heatmap":
            return heatmaps
        return [head(f) for head, f in zip(self.regression_heads, features)]

    def forward(self, batched_inputs):
        if not self.training:
            return self.inference(batched_inputs)
        return self.forward_training(batched_inputs)

    def _augmentation(self, n):
        scale = 1 + (torch.rand(n, device=self.device) * 2 - 1) * self.aug_scale
        angle = (torch.rand(n, device=self.device) * 2 - 1) * math.radians(self.aug_rotation)
        angle = angle * (torch.rand(n, device=self.device) < self.aug_rotation_prob).to(angle.dtype)
        return scale, torch.cos(angle), torch.sin(angle)

    def forward_training(self, batched_inputs):
        images = self.preprocess_image(batched_inputs)
        crops, points, cos_all, sin_all = [], [], [], []
        for image, x in zip(images, batched_inputs):
            if "instances" not in x:
                raise ValueError("StackedHourglass: training inputs need 'instances' (set MODEL.KEYPOINT_ON True)")
            gt = x["instances"].to(self.device)
            if len(gt) == 0:
                continue
            if not gt.has("gt_keypoints"):
                raise ValueError("StackedHourglass: training instances have no gt_keypoints (set MODEL.KEYPOINT_ON True)")
            centres, half = square_crops(gt.gt_boxes.tensor, self.box_padding)
            scale, cos, sin = self._augmentation(len(gt))
            half = half * scale
            kps = gt.gt_keypoints.tensor
            u = image_to_crop(kps[..., :2], centres, half, cos, sin)
            crops.append(self._crops(image, centres, half, cos, sin))
            points.append(torch.cat([u, kps[..., 2:3]], dim=-1))
        num_stacks = self.net.num_stacks
        if not crops:  # no person in the batch: zero losses that still reach every parameter
            zero = sum(p.sum() for p in self.parameters()) * 0.0
            return {f"loss_stack{i}": zero for i in range(num_stacks)}
        crops, points = torch.cat(crops), torch.cat(points)
        visible = points[..., 2] > 0
        if points.shape[1] != self.num_keypoints:
            raise ValueError(f"StackedHourglass: model has {self.num_keypoints} keypoints, data has {points.shape[1]}")
        outputs = self._predict(crops)
        weight = visible.to(crops.dtype) if self.use_target_weight else torch.ones_like(points[..., 2])
        if self.head == "heatmap":
            targets = self.heatmap_targets(points[..., :2], visible)
            w = weight[:, :, None, None]
            return {
                f"loss_stack{i}": ((pred - targets) ** 2 * w).mean() * self.loss_weight for i, pred in enumerate(outputs)
            }
        w = visible.to(crops.dtype)[..., None]  # invisible landmarks have no position to regress
        losses = {}
        for i, pred in enumerate(outputs):
            diff = (pred - points[..., :2]) * w
            err = diff.abs() if self.regression_loss == "l1" else diff**2
            losses[f"loss_stack{i}"] = err.sum() / (w.sum() * 2).clamp(min=1) * self.loss_weight
        return losses

    def heatmap_targets(self, u, visible):
        """Targets ``[N,K,H_m,W_m]`` for normalised crop coordinates ``u`` ``[N,K,2]``."""
        hm = self.heatmap_size
        pix = (u + 1) * (hm / 2) - 0.5
        maps = [
            landmark_heatmaps(p.cpu(), (hm, hm), self.sigma, kind=self.heatmap_kind, visible=v.cpu())
            for p, v in zip(pix, visible)
        ]
        return torch.stack(maps).to(u.device)

    def inference(self, batched_inputs, do_postprocess=True):
        """Landmarks per input image (``list[dict]`` with ``instances``), resized to ``height``/``width`` when
        ``do_postprocess`` and those are given."""
        images = self.preprocess_image(batched_inputs)
        results = []
        for image, x in zip(images, batched_inputs):
            hw = shapes_to_tensor(image.shape[-2:], self.device)
            boxes, given = self._person_boxes(x, hw)
            # without person boxes the image itself is the person crop (MPII-style): no extra margin
            centres, half = square_crops(boxes, self.box_padding if given else 1.0)
            out = self._predict(self._crops(image, centres, half))[-1]
            if self.head == "heatmap":
                coords, scores = argmax_decode(out)
                u = (coords * 2 + 1) / self.heatmap_size - 1
            else:
                u = out
                scores = torch.ones_like(u[..., 0])
            points = crop_to_image(u, centres, half)
            res = Instances((image.shape[-2], image.shape[-1]))
            res.pred_boxes = Boxes(boxes)
            res.scores = scores.mean(dim=1)
            res.pred_classes = torch.zeros_like(scores[:, 0], dtype=torch.int64)
            res.pred_keypoints = torch.cat([points, scores[..., None]], dim=-1)
            results.append(res)
        if not do_postprocess:
            return results
        return rescale_instances(results, batched_inputs)

    def _person_boxes(self, x, hw):
        inst = x.get("instances", None)
        if inst is not None:
            field = "pred_boxes" if inst.has("pred_boxes") else "gt_boxes" if inst.has("gt_boxes") else None
            if field is None:
                raise ValueError("StackedHourglass: input 'instances' need pred_boxes or gt_boxes (the person boxes)")
            return inst.get(field).tensor.to(self.device), True
        zero = torch.zeros_like(hw[0]).to(self.pixel_mean.dtype)
        return torch.stack([zero, zero, hw[1].to(zero.dtype), hw[0].to(zero.dtype)])[None], False
