"""CornerNet (Law & Deng, "CornerNet: Detecting Objects as Paired Keypoints", ECCV 2018).

A box is a pair of keypoints: its top-left and bottom-right corners. On every hourglass stack (stride 4) each
corner type has a corner-pooling module and three heads: per-class corner heatmaps, a 1-d embedding that
groups the two corners of one object (pull/push losses) and sub-pixel offsets. Training supervises every
stack; inference decodes the last one: top-K corners of each map, all K×K pairs, rejecting pairs of different
classes, embedding distance > 0.5 or inverted geometry, score = mean of the two corner scores, per-class
Gaussian soft-NMS, 100 boxes per image.

Follows princeton-vl/CornerNet (``models/py_utils/kp.py``, ``kp_utils.py``, ``sample/coco.py``,
``test/coco.py``); differences are listed in ``projects/CornerNet/README.md``.
"""
import math

import torch
from torch import nn
from torch.nn import functional as F

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, ImageList, Instances

from segx.modeling.postprocessing import rescale_instances
from segx.modeling.corner_decoding import decode_corner_pairs, soft_nms_gaussian
from segx.modeling.corner_pooling import CORNER_DIRECTIONS, CascadeCornerPoolModule, CornerPoolModule
from segx.modeling.heatmaps import draw_gaussian, gather_at, gaussian_radius, heatmap_focal_loss

__all__ = ["CornerNet", "KeypointHead", "associative_embedding_loss", "corner_targets"]


class KeypointHead(nn.Sequential):
    """CornerNet's prediction head: 3×3 conv (bias) → ReLU → 1×1 conv to ``out_channels``."""

    def __init__(self, in_channels, hidden_channels, out_channels, bias_init=None):
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, 1),
        )
        if bias_init is not None:
            nn.init.constant_(self[-1].bias, bias_init)


def associative_embedding_loss(tl_emb, br_emb, mask, margin=1.0):
    """CornerNet's pull and push losses on 1-d embeddings.

    For image i with N objects and ē_k = (e_tl,k + e_br,k)/2:
    pull_i = (1/N) Σ_k [(e_tl,k − ē_k)² + (e_br,k − ē_k)²],
    push_i = 1/(N(N−1)) Σ_{j≠k} max(0, margin − |ē_j − ē_k|) (0 when N < 2).
    Both are summed over the images of the batch (the official ``_ae_loss`` does; its N = 1 push term is a
    gradient-free constant ≈ 1, which is left out here).

    Args: tl_emb, br_emb ``[B,M]`` embeddings at the objects' corners; mask ``[B,M]`` bool (valid objects).
    Returns: (pull, push) scalars.
    """
    m = mask.to(tl_emb.dtype)
    n = m.sum(dim=1)
    mean = (tl_emb + br_emb) / 2
    pull = (((tl_emb - mean) ** 2 + (br_emb - mean) ** 2) * m).sum(dim=1) / n.clamp(min=1)
    eye = torch.eye(m.shape[1], dtype=m.dtype, device=m.device)
    pairs = m[:, :, None] * m[:, None, :] * (1 - eye)
    gap = (margin - (mean[:, :, None] - mean[:, None, :]).abs()).clamp(min=0)
    push = (gap * pairs).sum(dim=(1, 2)) / (n * (n - 1)).clamp(min=1)
    return pull.sum(), push.sum()


def corner_targets(boxes_list, classes_list, num_classes, map_size, scale, *, min_overlap, radius_variant,
                   kinds=("tl", "br"), center_sigma_divisor=6.0, device=None):
    """Heatmap / index / offset targets of a batch on the output map, as CornerNet's ``sample/coco.py`` builds
    them: each keypoint at floor(scale·coordinate), offset = the fractional remainder, Gaussian radius from
    ceil(scale·box size) and ``min_overlap``; "ct" (box centre, CenterNet triplets) uses the same radius and
    σ = diameter / ``center_sigma_divisor``.

    Args:
        boxes_list: per image ``[N,4]`` x0,y0,x1,y1 input pixels; classes_list: per image ``[N]`` long.
        map_size: (H, W) of the output map; scale: output map pixels per input pixel (1/stride).
    Returns: dict kind → (heatmap ``[B,C,H,W]``, index ``[B,M]`` long into H·W, offset ``[B,M,2]``) and
        "mask" → ``[B,M]`` bool, M = max objects per image (at least 1).
    """
    h, w = map_size
    b = len(boxes_list)
    m = max([1] + [len(x) for x in boxes_list])
    out = {
        kind: (torch.zeros(b, num_classes, h, w), torch.zeros(b, m, dtype=torch.long), torch.zeros(b, m, 2))
        for kind in kinds
    }
    mask = torch.zeros(b, m, dtype=torch.bool)
    for i, (boxes, classes) in enumerate(zip(boxes_list, classes_list)):
        boxes = boxes.detach().to("cpu", torch.float64)
        for j, (box, cls) in enumerate(zip(boxes.tolist(), classes.tolist())):
            if not 0 <= cls < num_classes:
                raise ValueError(f"corner_targets: image {i} object {j} has class {cls}, NUM_CLASSES is {num_classes}")
            fx0, fy0, fx1, fy1 = [v * scale for v in box]
            points = {"tl": (fx0, fy0), "br": (fx1, fy1), "ct": ((fx0 + fx1) / 2, (fy0 + fy1) / 2)}
            bw, bh = math.ceil(max(fx1 - fx0, 0.0)), math.ceil(max(fy1 - fy0, 0.0))
            radius = max(0, int(gaussian_radius(bh, bw, min_overlap, radius_variant)))
            for kind in kinds:
                fx = min(max(points[kind][0], 0.0), w - 1e-3)
                fy = min(max(points[kind][1], 0.0), h - 1e-3)
                x, y = int(fx), int(fy)
                heat, index, offset = out[kind]
                sigma = (2 * radius + 1) / center_sigma_divisor if kind == "ct" else None
                draw_gaussian(heat[i, cls], (x, y), radius, sigma=sigma)
                index[i, j] = y * w + x
                offset[i, j, 0], offset[i, j, 1] = fx - x, fy - y
            mask[i, j] = True
    res = {k: tuple(t.to(device) for t in v) for k, v in out.items()}
    res["mask"] = mask.to(device)
    return res


def _clip_boxes(boxes, image_size):
    """``boxes`` ``[N,4]`` clamped to the image (h, w); the sizes may be tensors while tracing."""
    h, w = image_size
    lo = torch.zeros((), dtype=boxes.dtype, device=boxes.device)
    hi = torch.stack([torch.as_tensor(v, dtype=boxes.dtype, device=boxes.device) for v in (w, h, w, h)])
    return torch.minimum(torch.maximum(boxes, lo), hi)


@META_ARCH_REGISTRY.register()
class CornerNet(nn.Module):
    """CornerNet on a stacked backbone (``build_hourglass_net_backbone``): every backbone output feature is a
    stack with its own corner-pooling modules and heads; the last one is decoded at test time."""

    # keypoint kinds with a heatmap + offset branch; "tl"/"br" also carry embeddings
    keypoint_kinds = ("tl", "br")

    @configurable
    def __init__(
        self, *, backbone, num_classes, pixel_mean, pixel_std, pool_channels=128, head_channels=256, norm="BN",
        heatmap_bias_init=-2.19, cascade_corner_pool=False, gaussian_min_overlap=0.3,
        gaussian_radius_variant="corrected", focal_alpha=2.0, focal_beta=4.0, pull_weight=0.1, push_weight=0.1,
        push_margin=1.0, offset_weight=1.0, topk=100, nms_kernel=3, embedding_threshold=0.5, num_candidates=1000,
        soft_nms_sigma=0.5, soft_nms_score_thresh=0.001, detections_per_image=100, input_format="BGR",
    ):
        """
        Args:
            backbone: returns one feature per stack (all of one stride), in ``output_shape()`` order.
            num_classes: object classes. pixel_mean, pixel_std: per-channel input normalisation.
            pool_channels, head_channels: widths of the pooling branches and of the heads' hidden conv.
            cascade_corner_pool: CenterNet's cascade corner pooling instead of CornerNet's.
            gaussian_min_overlap, gaussian_radius_variant: target radius (``segx.modeling.heatmaps``).
            Other arguments: loss weights and the decoding settings (see ``segx/config/cornernet.py``).
        """
        super().__init__()
        self.backbone = backbone
        shapes = backbone.output_shape()
        self.in_features = list(shapes)
        strides = {s.stride for s in shapes.values()}
        channels = {s.channels for s in shapes.values()}
        if len(strides) != 1 or len(channels) != 1:
            raise ValueError(f"CornerNet: backbone stacks must share stride and channels, got {shapes}")
        self.stride = strides.pop()
        ch = channels.pop()
        self.num_classes = num_classes
        self.gaussian_min_overlap = gaussian_min_overlap
        self.gaussian_radius_variant = gaussian_radius_variant
        self.focal_alpha, self.focal_beta = focal_alpha, focal_beta
        self.pull_weight, self.push_weight, self.push_margin = pull_weight, push_weight, push_margin
        self.offset_weight = offset_weight
        self.topk, self.nms_kernel = topk, nms_kernel
        self.embedding_threshold, self.num_candidates = embedding_threshold, num_candidates
        self.soft_nms_sigma, self.soft_nms_score_thresh = soft_nms_sigma, soft_nms_score_thresh
        self.detections_per_image = detections_per_image
        self.input_format = input_format

        num_stacks = len(self.in_features)
        pool_cls = CascadeCornerPoolModule if cascade_corner_pool else CornerPoolModule
        self.pools = nn.ModuleDict()
        self.heatmap_heads, self.offset_heads, self.embedding_heads = nn.ModuleDict(), nn.ModuleDict(), nn.ModuleDict()
        for kind in self.keypoint_kinds:
            self.pools[kind] = nn.ModuleList(
                [self._make_pool(kind, ch, pool_channels, norm, pool_cls) for _ in range(num_stacks)]
            )
            self.heatmap_heads[kind] = nn.ModuleList(
                [KeypointHead(ch, head_channels, num_classes, heatmap_bias_init) for _ in range(num_stacks)]
            )
            self.offset_heads[kind] = nn.ModuleList([KeypointHead(ch, head_channels, 2) for _ in range(num_stacks)])
            if kind in CORNER_DIRECTIONS:
                self.embedding_heads[kind] = nn.ModuleList(
                    [KeypointHead(ch, head_channels, 1) for _ in range(num_stacks)]
                )
        self.register_buffer("pixel_mean", torch.tensor(pixel_mean).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(pixel_std).view(-1, 1, 1), False)

    def _make_pool(self, kind, channels, pool_channels, norm, pool_cls):
        return pool_cls(channels, CORNER_DIRECTIONS[kind], pool_channels, norm)

    @classmethod
    def _common_config(cls, cfg, node):
        backbone = build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN)))
        c = cfg.MODEL.CORNERNET
        return {
            "backbone": backbone,
            "num_classes": c.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "pool_channels": c.POOL_CHANNELS,
            "head_channels": c.HEAD_CHANNELS,
            "norm": cfg.MODEL.HOURGLASS_NET.NORM,
            "heatmap_bias_init": c.HEATMAP_BIAS_INIT,
            "gaussian_min_overlap": node.GAUSSIAN_MIN_OVERLAP,
            "gaussian_radius_variant": node.GAUSSIAN_RADIUS_VARIANT,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "pull_weight": c.PULL_WEIGHT,
            "push_weight": c.PUSH_WEIGHT,
            "push_margin": c.PUSH_MARGIN,
            "offset_weight": c.OFFSET_WEIGHT,
            "topk": c.TOPK,
            "nms_kernel": c.NMS_KERNEL,
            "embedding_threshold": c.EMBEDDING_THRESHOLD,
            "num_candidates": c.NUM_CANDIDATES,
            "soft_nms_sigma": c.SOFT_NMS_SIGMA,
            "soft_nms_score_thresh": c.SOFT_NMS_SCORE_THRESH,
            "detections_per_image": c.DETECTIONS_PER_IMAGE,
            "input_format": cfg.INPUT.FORMAT,
        }

    @classmethod
    def from_config(cls, cfg):
        return cls._common_config(cfg, cfg.MODEL.CORNERNET)

    @property
    def device(self):
        return self.pixel_mean.device

    def preprocess_image(self, batched_inputs):
        """Normalised, padded ``ImageList`` (padding to the hourglass's size divisibility)."""
        images = [(x["image"].to(self.device) - self.pixel_mean) / self.pixel_std for x in batched_inputs]
        return ImageList.from_tensors(images, self.backbone.size_divisibility)

    def predict(self, images_tensor, stacks=None):
        """Raw head outputs: a list over stacks (all, or the last when ``stacks == "last"``) of dicts
        kind → (heatmap logits ``[B,C,h,w]``, offsets ``[B,2,h,w]``, embeddings ``[B,1,h,w]`` or None)."""
        features = self.backbone(images_tensor)
        names = self.in_features[-1:] if stacks == "last" else self.in_features
        outs = []
        for name in names:
            s = self.in_features.index(name)
            x = features[name]
            per_kind = {}
            for kind in self.keypoint_kinds:
                y = self.pools[kind][s](x)
                emb = self.embedding_heads[kind][s](y) if kind in self.embedding_heads else None
                per_kind[kind] = (self.heatmap_heads[kind][s](y), self.offset_heads[kind][s](y), emb)
            outs.append(per_kind)
        return outs

    def forward(self, batched_inputs):
        """Training: dict of losses (each averaged over stacks). Inference: list of {"instances"}."""
        if not self.training:
            return self.inference(batched_inputs)
        if any("instances" not in x for x in batched_inputs):
            raise ValueError("CornerNet: training inputs need 'instances' (gt_boxes, gt_classes) in every record")
        images = self.preprocess_image(batched_inputs)
        outputs = self.predict(images.tensor)
        gt = [x["instances"] for x in batched_inputs]
        map_size = tuple(outputs[0][self.keypoint_kinds[0]][0].shape[-2:])
        targets = self.targets(gt, map_size)
        return self.losses(outputs, targets)

    def _target_kwargs(self):
        return {"min_overlap": self.gaussian_min_overlap, "radius_variant": self.gaussian_radius_variant}

    def targets(self, gt_instances, map_size):
        """``corner_targets`` for a list of ground-truth ``Instances`` (gt_boxes in input pixels)."""
        return corner_targets(
            [x.gt_boxes.tensor for x in gt_instances], [x.gt_classes for x in gt_instances], self.num_classes,
            map_size, 1.0 / self.stride, kinds=self.keypoint_kinds, device=self.device, **self._target_kwargs(),
        )

    def losses(self, outputs, targets):
        """Focal loss per keypoint kind, pull / push on the corner embeddings, smooth-L1 offsets, each averaged
        over the stacks (the official total: (focal + pull + push + offset) / stacks)."""
        mask = targets["mask"]
        num = mask.sum().to(torch.float32)
        losses = {}
        for out in outputs:
            terms = {}
            offset = 0.0
            for kind in self.keypoint_kinds:
                logits, off, _ = out[kind]
                heat_t, index, off_t = targets[kind]
                terms[f"loss_{kind}_heatmap"] = heatmap_focal_loss(
                    torch.sigmoid(logits), heat_t, self.focal_alpha, self.focal_beta
                )
                pred = gather_at(off, index)
                diff = F.smooth_l1_loss(pred, off_t, reduction="none", beta=1.0).sum(dim=2)
                offset = offset + (diff * mask).sum() / (num + 1e-4)
            tl_emb = gather_at(out["tl"][2], targets["tl"][1])[..., 0]
            br_emb = gather_at(out["br"][2], targets["br"][1])[..., 0]
            pull, push = associative_embedding_loss(tl_emb, br_emb, mask, self.push_margin)
            terms["loss_pull"] = self.pull_weight * pull
            terms["loss_push"] = self.push_weight * push
            terms["loss_offset"] = self.offset_weight * offset
            for k, v in terms.items():
                losses[k] = losses.get(k, 0.0) + v / len(outputs)
        return losses

    def decode(self, out):
        """Boxes / scores / classes (``[B,N,...]``, input pixels) from the last stack's raw outputs."""
        (tl_logit, tl_off, tl_emb), (br_logit, br_off, br_emb) = out["tl"], out["br"]
        boxes, scores, classes = decode_corner_pairs(
            torch.sigmoid(tl_logit), torch.sigmoid(br_logit), tl_emb, br_emb, tl_off, br_off, k=self.topk,
            nms_kernel=self.nms_kernel, embedding_threshold=self.embedding_threshold,
            num_candidates=self.num_candidates,
        )
        return boxes * self.stride, scores, classes

    def inference(self, batched_inputs, do_postprocess=True):
        """Detections per image; with ``do_postprocess`` boxes are rescaled to each record's height/width."""
        images = self.preprocess_image(batched_inputs)
        out = self.predict(images.tensor, stacks="last")[0]
        boxes, scores, classes = self.decode(out)
        results = []
        for i, image_size in enumerate(images.image_sizes):
            b = _clip_boxes(boxes[i], image_size)
            keep, kept_scores = soft_nms_gaussian(
                b, scores[i], classes[i], sigma=self.soft_nms_sigma, score_threshold=self.soft_nms_score_thresh,
                max_detections=self.detections_per_image,
            )
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(b[keep])
            inst.scores = kept_scores
            inst.pred_classes = classes[i][keep]
            results.append(inst)
        if not do_postprocess:
            return results
        return rescale_instances(results, batched_inputs, images.image_sizes)
