"""CenterNet: objects as points (Zhou et al. 2019, "Objects as Points"; xingyizhou/CenterNet, task ``ctdet``).

A backbone gives one stride-4 map; three heads predict per pixel a class-wise centre heatmap (C), the box
size (w, h) and the sub-pixel offset of the centre (dx, dy), both in output pixels. Training: Gaussian
centre targets with the penalty-reduced focal loss, L1 on size and offset at the ground-truth centres only.
Inference: 3×3 max-pool peaks, top-K, box = centre + offset ± size/2 — no box NMS.

The parts live in ``segx.modeling.keypoints`` (heads, ``CenterTargets``, ``centernet_losses``,
``centernet_decode``); targets are built by ``segx.data.mappers.CenterNetMapper`` in the loader workers.
"""
import logging

import torch

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, Instances

from segx.modeling.keypoints import (
    GAUSSIAN_RADIUS_VARIANTS,
    CenterTargets,
    build_centernet_heads,
    centernet_decode,
    centernet_losses,
)
from segx.modeling.meta_arch.base import SegxMetaArch
from segx.modeling.postprocessing import rescale_instances

__all__ = ["CenterNet", "unletterbox_instances"]

logger = logging.getLogger(__name__)


def unletterbox_instances(instances, letterbox, height, width):
    """``Instances`` at the letterboxed network input → the original image (``height`` × ``width``): every box
    corner through the inverse letterbox affine, x = (x' − W/2)·s/W + cx, y = (y' − H/2)·s/W + cy (``letterbox``:
    the mapper's record ``{"center": (cx, cy), "scale": s, "size": (H, W)}``). Not clipped, nothing dropped:
    the official ``ctdet_post_process`` (``transform_preds``) neither clips nor filters."""
    cx, cy = (float(v) for v in letterbox["center"])
    h, w = (float(v) for v in letterbox["size"])
    ratio = float(letterbox["scale"]) / w
    out = Instances((int(height), int(width)))
    for name, value in instances.get_fields().items():
        if name == "pred_boxes":
            b = value.tensor
            x = (b[:, 0::2] - w / 2) * ratio + cx
            y = (b[:, 1::2] - h / 2) * ratio + cy
            value = Boxes(torch.stack([x[:, 0], y[:, 0], x[:, 1], y[:, 1]], dim=1))
        out.set(name, value)
    return out


@META_ARCH_REGISTRY.register()
class CenterNet(SegxMetaArch):
    """CenterNet (objects as points).

    ``forward(batched_inputs)``: detectron2 inputs (``image`` ``[3,H,W]``, ``instances`` with ``gt_boxes`` /
    ``gt_classes`` in training, optionally the mapper's ``targets``). Returns ``{"loss_heatmap", "loss_size",
    "loss_offset"}`` in training, else ``[{"instances": Instances(pred_boxes, scores, pred_classes)}]``.
    """

    @configurable
    def __init__(self, *, backbone, num_classes, pixel_mean, pixel_std, in_features=("deconv",), head_channels=64,
                 heatmap_bias_init=-2.19, gaussian_radius_variant="original", gaussian_min_overlap=0.7,
                 heatmap_loss_weight=1.0, size_loss_weight=0.1, offset_loss_weight=1.0, focal_alpha=2.0,
                 focal_beta=4.0, nms_kernel=3, detections_per_image=100, score_thresh_test=0.0, test_input="letterbox",
                 input_format=None):
        """
        Args:
            backbone: its ``in_features`` outputs share one stride and channel count (several: one set of heads
                per map, losses averaged over them, the last decoded).
            num_classes: heatmap channels. head_channels: the heads' 3×3 conv width (0: one 1×1 conv).
            test_input: "letterbox" or "resize" (what the test mapper gives; the model maps the boxes of any input
                that carries a "letterbox" record back by its inverse, and rescales the others).
            Other arguments: ``segx/config/centernet.py`` (same names).
        """
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format)
        if gaussian_radius_variant not in GAUSSIAN_RADIUS_VARIANTS:
            raise ValueError(
                f"CenterNet: gaussian_radius_variant (MODEL.CENTERNET.GAUSSIAN_RADIUS_VARIANT) must be one of "
                f"{GAUSSIAN_RADIUS_VARIANTS}, got {gaussian_radius_variant!r}"
            )
        self.backbone = backbone
        shapes = backbone.output_shape()
        missing = [f for f in in_features if f not in shapes]
        if missing:
            raise ValueError(f"CenterNet: in_features {missing} not among the backbone's outputs {list(shapes)}")
        strides = {shapes[f].stride for f in in_features}
        channels = {shapes[f].channels for f in in_features}
        if len(strides) != 1 or len(channels) != 1:
            raise ValueError(f"CenterNet: in_features {list(in_features)} must share stride and channels, got "
                             f"{strides}, {channels}")
        self.in_features = list(in_features)
        self.stride = strides.pop()
        self.num_classes = num_classes
        # official layout: one hm / wh / reg head per output map (keys hm.0.*, or hm.<stack>.0.* when stacked)
        self.hm, self.wh, self.reg = build_centernet_heads(
            len(self.in_features), channels.pop(), num_classes, head_channels, heatmap_bias_init
        )
        self.loss_options = dict(
            focal_alpha=focal_alpha, focal_beta=focal_beta, heatmap_loss_weight=heatmap_loss_weight,
            size_loss_weight=size_loss_weight, offset_loss_weight=offset_loss_weight,
        )
        self.nms_kernel, self.detections_per_image = nms_kernel, detections_per_image
        self.score_thresh_test = score_thresh_test
        if test_input not in ("letterbox", "resize"):
            raise ValueError(f"CenterNet: test_input (MODEL.CENTERNET.TEST_INPUT) must be 'letterbox' or 'resize', "
                             f"got {test_input!r}")
        self.test_input = test_input
        self._warned_no_letterbox = False
        self.target_builder = CenterTargets(
            num_classes, self.stride, self.size_divisibility, min_overlap=gaussian_min_overlap,
            radius_variant=gaussian_radius_variant,
        )

    @classmethod
    def from_config(cls, cfg):
        c = cfg.MODEL.CENTERNET
        return {
            "backbone": build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))),
            "num_classes": c.NUM_CLASSES,
            "in_features": tuple(c.IN_FEATURES),
            "head_channels": c.HEAD_CHANNELS,
            "heatmap_bias_init": c.HEATMAP_BIAS_INIT,
            "gaussian_radius_variant": c.GAUSSIAN_RADIUS_VARIANT,
            "gaussian_min_overlap": c.GAUSSIAN_MIN_OVERLAP,
            "heatmap_loss_weight": c.HEATMAP_LOSS_WEIGHT,
            "size_loss_weight": c.SIZE_LOSS_WEIGHT,
            "offset_loss_weight": c.OFFSET_LOSS_WEIGHT,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "nms_kernel": c.NMS_KERNEL,
            "detections_per_image": c.DETECTIONS_PER_IMAGE,
            "score_thresh_test": c.SCORE_THRESH_TEST,
            "test_input": c.TEST_INPUT,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "input_format": cfg.INPUT.FORMAT,
        }

    @property
    def size_divisibility(self):
        """The backbone's padding, at least the output stride (so the output map is exactly input / stride)."""
        return max(super().size_divisibility, self.stride)

    def predict(self, features, images):
        """Raw head outputs of every ``in_features`` map in training, of the last one at inference:
        ``{feature name: {"heatmap": logits [B,C,H/4,W/4], "size": (w, h) [B,2,·,·], "offset": (dx, dy)
        [B,2,·,·]}}``, sizes and offsets in output pixels."""
        n = len(self.in_features)
        names = self.in_features if self.training else self.in_features[-1:]
        outputs = {}
        for name in names:
            i = self.in_features.index(name)
            hm, wh, reg = (self.hm, self.wh, self.reg) if n == 1 else (self.hm[i], self.wh[i], self.reg[i])
            x = features[name]
            outputs[name] = {"heatmap": hm(x), "size": wh(x), "offset": reg(x)}
        return outputs

    def losses(self, predictions, batched_inputs, images):
        """``centernet_losses`` against the batch's targets (the mapper's or built here)."""
        stacks = list(predictions.values())
        per_image = self.target_builder.for_inputs(batched_inputs, images.image_sizes)
        targets = self.target_builder.collate(per_image, stacks[0]["heatmap"].shape[-2:], self.device)
        return centernet_losses(stacks, targets, **self.loss_options)

    def decode(self, predictions, images, batched_inputs):
        """Per image ``Instances`` (pred_boxes in input pixels, scores, pred_classes) of the last map's top
        ``detections_per_image`` peaks with a score above ``score_thresh_test`` (traceable)."""
        out = list(predictions.values())[-1]
        boxes, scores, classes = centernet_decode(
            torch.sigmoid(out["heatmap"]), out["size"], out["offset"], self.detections_per_image, self.nms_kernel
        )
        boxes = boxes * self.stride
        results = []
        for i, image_size in enumerate(images.image_sizes):
            keep = scores[i] > self.score_thresh_test
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(boxes[i][keep])
            inst.scores = scores[i][keep]
            inst.pred_classes = classes[i][keep]
            results.append(inst)
        return results

    def postprocess(self, results, batched_inputs, images):
        """detectron2's output format at each input's ``height`` × ``width``: inputs with the test mapper's
        ``"letterbox"`` record through the inverse letterbox (``unletterbox_instances``: official, no clipping),
        the others rescaled and clipped (``detector_postprocess``)."""
        processed = []
        for inst, x, size in zip(results, batched_inputs, images.image_sizes):
            letterbox = x.get("letterbox")
            if letterbox is None:
                if self.test_input == "letterbox" and not self._warned_no_letterbox:
                    self._warned_no_letterbox = True
                    logger.warning(
                        "CenterNet: MODEL.CENTERNET.TEST_INPUT is 'letterbox' but an input has no 'letterbox' record "
                        "(not from CenterNetMapper: DefaultPredictor or a hand-made input); it is used as given "
                        "and its boxes are rescaled to height x width, not the official test input"
                    )
                processed += rescale_instances([inst], [x], [size])
            else:
                processed.append({"instances": unletterbox_instances(
                    inst, letterbox, x.get("height", size[0]), x.get("width", size[1]))})
        return processed
