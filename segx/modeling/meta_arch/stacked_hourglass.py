"""Stacked Hourglass landmarks (Newell, Yang & Deng, ECCV 2016), top-down: one square crop per person box.

Followed: the paper and princeton-vl/pose-hg-train (network layout, MSE on every stack, σ = 1 at 64×64, crop
margin 1.25, scale/rotation augmentation, arg-max decoding with the quarter-pixel shift). The network (with its
heatmap heads) is a backbone, ``build_stacked_hourglass_backbone``; crops, targets, the regression head, losses
and decoding are in ``segx.modeling.landmarks``; training targets come from ``StackedHourglassMapper``.

Inputs: ``image`` and, in training, ``instances`` with ``gt_boxes`` and ``gt_keypoints`` ``[N,K,3]`` (x, y,
visibility in the image's continuous coordinates) and, from segx's mapper, ``targets`` (``CropTargets``: the
jittered crops and their heatmaps; built here, by the same function, when absent). In inference the person
boxes are ``instances.pred_boxes`` (or ``gt_boxes``) when the input has ``instances`` (cropped with
``box_padding``), else the whole image is the crop of one person (no margin added).

Outputs: ``instances`` with ``pred_boxes`` (the input person boxes), ``scores`` (mean landmark confidence),
``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y in image pixels, confidence: the heatmap
maximum, or 1 for the regression head).
"""
import torch
from torch import nn

from detectron2.config import configurable
from detectron2.layers.wrappers import shapes_to_tensor
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone

from segx.modeling.landmarks import (
    DECODINGS,
    HEATMAP_KINDS,
    CropTargets,
    RegressionHead,
    coordinate_loss,
    decode_crop_landmarks,
    heatmap_mse_loss,
    landmark_instances,
    person_boxes,
    sample_crops,
    square_crops,
    truncate_coordinates,
    zero_loss,
)
from segx.modeling.meta_arch.base import SegxMetaArch

__all__ = ["StackedHourglass"]

HEADS = ("heatmap", "regression")


@META_ARCH_REGISTRY.register()
class StackedHourglass(SegxMetaArch):
    """Top-down landmark localisation with a stacked hourglass; heatmap or coordinate-regression head."""

    @configurable
    def __init__(self, *, backbone, num_keypoints, input_size, pixel_mean, pixel_std, head="heatmap",
                 regression_heads=None, heatmap_kind="gaussian", sigma=1.0, loss_weight=1.0, regression_loss="l1",
                 use_target_weight=True, box_padding=1.25, aug_scale=0.0, aug_rotation=0.0, aug_rotation_prob=0.0,
                 decoding="official", truncate_coords=False, input_format=None):
        """
        Args:
            backbone: a ``StackedHourglassNet`` (heatmap heads for ``head="heatmap"``, none for "regression").
            num_keypoints: K. input_size: crop side S in pixels (divisible by 4·2^depth).
            pixel_mean, pixel_std: per-channel normalisation of the input image.
            head: "heatmap" or "regression"; regression_heads: one ``RegressionHead`` per stack (regression).
            heatmap_kind, sigma: target encoding (``landmark_heatmaps``), σ in heatmap pixels.
            loss_weight: multiplier on each stack's loss. regression_loss: "l1" or "l2".
            use_target_weight: unannotated landmarks (visibility 0) do not count in the heatmap loss.
            box_padding: crop side = longer box side × this.
            aug_scale, aug_rotation (degrees), aug_rotation_prob: training jitter of the crop.
            decoding: heatmap decoding, "official" (pytorch_stacked_hourglass) or "segx" (see
                ``segx.modeling.landmarks.DECODINGS``).
            truncate_coords: truncate the final image coordinates to integer pixels as the official MPII
                post-processing does (``segx.modeling.landmarks.truncate_coordinates``).
        """
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format)
        if head not in HEADS:
            raise ValueError(f"StackedHourglass: head must be one of {HEADS}, got {head!r}")
        if heatmap_kind not in HEATMAP_KINDS:
            raise ValueError(f"StackedHourglass: heatmap_kind must be 'gaussian' or 'cauchy', got {heatmap_kind!r}")
        if decoding not in DECODINGS:
            raise ValueError(f"StackedHourglass: decoding must be one of {DECODINGS}, got {decoding!r}")
        if regression_loss not in ("l1", "l2"):
            raise ValueError(f"StackedHourglass: regression_loss must be 'l1' or 'l2', got {regression_loss!r}")
        stride = 4 * 2 ** backbone.depth
        if input_size % stride:
            raise ValueError(f"StackedHourglass: input_size {input_size} must be divisible by 4·2^depth = {stride}")
        if ("heatmap0" in backbone.output_shape()) != (head == "heatmap"):
            raise ValueError(f"StackedHourglass: head {head!r} needs MODEL.STACKED_HOURGLASS_NET.PREDICT_HEATMAPS "
                             f"{head == 'heatmap'} (the backbone's per-stack heatmap heads)")
        if head == "regression" and (regression_heads is None or len(regression_heads) != backbone.num_stacks):
            raise ValueError("StackedHourglass: the regression head needs one RegressionHead per stack")
        self.backbone = backbone
        self.regression_heads = regression_heads
        self.head = head
        self.num_keypoints = num_keypoints
        self.input_size = input_size
        self.heatmap_size = input_size // 4
        self.loss_weight = loss_weight
        self.regression_loss = regression_loss
        self.use_target_weight = use_target_weight
        self.box_padding = box_padding
        self.decoding = decoding
        self.truncate_coords = truncate_coords
        self.crop_targets = CropTargets(
            num_keypoints=num_keypoints, input_size=input_size, box_padding=box_padding, heatmaps=head == "heatmap",
            heatmap_kind=heatmap_kind, sigma=sigma, aug_scale=aug_scale, aug_rotation=aug_rotation,
            aug_rotation_prob=aug_rotation_prob,
        )

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.STACKED_HOURGLASS
        k = cfg.MODEL.STACKED_HOURGLASS_NET.NUM_KEYPOINTS
        backbone = build_backbone(cfg)
        heads = None
        if c.HEAD == "regression":
            channels = backbone.output_shape()["hg0"].channels
            heads = nn.ModuleList([RegressionHead(channels, k, c.INPUT_SIZE // 4) for _ in range(backbone.num_stacks)])
        return {
            "backbone": backbone,
            "num_keypoints": k,
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
            "decoding": c.DECODING,
            "truncate_coords": c.TRUNCATE_COORDS_TEST,
            "input_format": cfg.INPUT.FORMAT,
        }

    # ------------------------------------------------------------------------------------------------ steps
    def extract_features(self, images, batched_inputs, state=None):
        """Crops the people of every image (``images[i]``, unpadded) and runs the backbone on the crops (training:
        all at once; inference: per image): ``hg{i}`` ``[N,F,S/4,S/4]``, ``heatmap{i}`` ``[N,K,S/4,S/4]`` and
        ``crops``: ``centres`` ``[N,2]``, ``half`` ``[N]`` (image pixels) and in training the ``CropTargets``
        (``points``, ``heatmaps``), in inference the person ``boxes`` ``[N,4]`` and ``counts`` per image."""
        if self.training:  # all crops of the batch at once
            crops = self._training_crops(images, batched_inputs)
            pixels = crops.pop("pixels")
            return dict(self.backbone(pixels), crops=crops) if len(pixels) else {"crops": crops}  # no person: no run
        # inference: one backbone call per image, as before the refactor (batching the crops of several images
        # changes float rounding, which random-weight regression outputs amplify beyond 1e-5)
        crops = self._inference_crops(images, batched_inputs)
        outs = [self.backbone(p) for p in crops.pop("pixels")]
        return dict({k: torch.cat([o[k] for o in outs]) for k in outs[0]}, crops=crops)

    def predict(self, features, images):
        """Per-stack outputs: ``heatmaps`` (list of ``[N,K,H_m,W_m]``) or ``coords`` (list of ``[N,K,2]``
        normalised crop coordinates), and the ``crops``."""
        out = {"crops": features["crops"]}
        if "hg0" not in features:
            return out
        stacks = range(self.backbone.num_stacks)
        if self.head == "heatmap":
            out["heatmaps"] = [features[f"heatmap{i}"] for i in stacks]
        else:
            split = features["crops"].get("counts") or [features["hg0"].shape[0]]  # per image in inference
            out["coords"] = [torch.cat([head(f) for f in features[f"hg{i}"].split(split)])
                             for i, head in zip(stacks, self.regression_heads)]
        return out

    def losses(self, predictions, batched_inputs, images):
        """``loss_stack{i}``: heatmap MSE (mean over all pixels) or coordinate L1/L2, × ``loss_weight``."""
        outputs = predictions.get("heatmaps", predictions.get("coords"))
        if outputs is None:  # zero losses that still reach every parameter
            zero = zero_loss(self)
            return {f"loss_stack{i}": zero for i in range(self.backbone.num_stacks)}
        points = predictions["crops"]["points"]
        visible = points[..., 2] > 0
        if self.head == "heatmap":
            targets = predictions["crops"]["heatmaps"]
            weight = visible.to(points.dtype) if self.use_target_weight else torch.ones_like(points[..., 2])
            return {
                f"loss_stack{i}": heatmap_mse_loss(p, targets, weight) * self.loss_weight for i, p in enumerate(outputs)
            }
        return {
            f"loss_stack{i}": coordinate_loss(p, points[..., :2], visible, self.regression_loss) * self.loss_weight
            for i, p in enumerate(outputs)
        }

    def decode(self, predictions, images, batched_inputs):
        """``Instances`` per image at the input's resolution, from the last stack's output (traceable)."""
        crops = predictions["crops"]
        if self.head == "heatmap":
            points, scores = decode_crop_landmarks(predictions["heatmaps"][-1], crops["centres"], crops["half"],
                                                   self.heatmap_size, decoding=self.decoding)
        else:
            points, scores = decode_crop_landmarks(predictions["coords"][-1], crops["centres"], crops["half"])
        counts = crops["counts"]
        return [
            landmark_instances(images.image_sizes[i], b, p, s)
            for i, (b, p, s) in enumerate(zip(crops["boxes"].split(counts), points.split(counts), scores.split(counts)))
        ]

    def postprocess(self, results, batched_inputs, images):
        """``[{"instances": ...}]`` rescaled to each input's height × width; with ``truncate_coords`` the landmark
        coordinates are then truncated to integer pixels (the official MPII post-processing)."""
        processed = super().postprocess(results, batched_inputs, images)
        if self.truncate_coords:
            for r in processed:
                kpts = r["instances"].pred_keypoints
                r["instances"].pred_keypoints = torch.cat([truncate_coordinates(kpts[..., :2]), kpts[..., 2:]], dim=-1)
        return processed

    # ------------------------------------------------------------------------------------------------ crops
    def _training_crops(self, images, batched_inputs):
        parts = []
        for i, x in enumerate(batched_inputs):
            t = x.get("targets")
            if t is None:  # plain DatasetMapper input: the mapper's targets, built here
                t = self.crop_targets(x["instances"].to(self.device))
            t = {k: v.to(self.device) for k, v in t.items()}
            t["pixels"] = sample_crops(images[i], t["centres"], t["half"], self.input_size, t["cos"], t["sin"])
            parts.append(t)
        return {k: torch.cat([p[k] for p in parts]) for k in parts[0]}

    def _inference_crops(self, images, batched_inputs):
        boxes, centres, half, pixels = [], [], [], []
        for i, x in enumerate(batched_inputs):
            image = images[i]
            b, given = person_boxes(x.get("instances"), shapes_to_tensor(image.shape[-2:], self.device), self.device)
            # without person boxes the image itself is the person crop (MPII-style): no extra margin
            c, h = square_crops(b, self.box_padding if given else 1.0)
            boxes.append(b), centres.append(c), half.append(h)
            pixels.append(sample_crops(image, c, h, self.input_size))
        return {"boxes": torch.cat(boxes), "centres": torch.cat(centres), "half": torch.cat(half),
                "counts": [b.shape[0] for b in boxes], "pixels": pixels}
