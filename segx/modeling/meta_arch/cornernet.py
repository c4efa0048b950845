"""CornerNet (Law & Deng, "CornerNet: Detecting Objects as Paired Keypoints", ECCV 2018).

A box is a pair of keypoints: its top-left and bottom-right corners. On every hourglass stack (stride 4) each
corner type has a corner-pooling module and three heads: per-class corner heatmaps, a 1-d embedding that
groups the two corners of one object (pull/push losses) and sub-pixel offsets. Training supervises every
stack; inference decodes the last one: top-K corners of each map, all K×K pairs, rejecting pairs of different
classes, embedding distance > 0.5 or inverted geometry, score = mean of the two corner scores, per-class
Gaussian soft-NMS, 100 boxes per image.

The parts live in ``segx.modeling.keypoints`` (pooling, heads, targets, losses, decoding); targets are built by
``segx.data.mappers.CornerNetMapper`` in the loader workers. Follows princeton-vl/CornerNet
(``models/py_utils/kp.py``, ``kp_utils.py``, ``sample/coco.py``, ``test/coco.py``); differences are listed in
``projects/CornerNet/README.md``.
"""
import torch

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import META_ARCH_REGISTRY, build_backbone
from detectron2.structures import Boxes, Instances

from segx.modeling.keypoints import (
    CornerTargets,
    build_corner_branches,
    clip_boxes,
    corner_losses,
    decode_corner_pairs,
    soft_nms_gaussian,
)
from segx.modeling.meta_arch.base import SegxMetaArch

__all__ = ["CornerNet"]


@META_ARCH_REGISTRY.register()
class CornerNet(SegxMetaArch):
    """CornerNet on a stacked backbone (``build_hourglass_net_backbone``): every backbone output feature is a
    stack with its own pooling modules and heads (``build_corner_branches``); the last one is decoded at test time.

    Steps: ``predict`` → ``{stack: {kind: {"heatmap", "offset", "embedding"}}}``, ``losses`` (targets from
    ``x["targets"]`` or built here), ``decode`` → ``Instances`` at the network input's resolution.
    """

    # keypoint kinds with a heatmap + offset branch; "tl"/"br" also carry embeddings
    keypoint_kinds = ("tl", "br")

    @configurable
    def __init__(
        self, *, backbone, num_classes, pixel_mean, pixel_std, pool_channels=128, head_channels=256, norm="BN",
        heatmap_bias_init=-2.19, cascade_corner_pool=False, gaussian_min_overlap=0.3,
        gaussian_radius_variant="corrected", focal_alpha=2.0, focal_beta=4.0, heatmap_loss_weight=1.0,
        pull_loss_weight=0.1, push_loss_weight=0.1, push_margin=1.0, offset_loss_weight=1.0, topk_test=100,
        nms_kernel=3, embedding_thresh_test=0.5, num_candidates_test=1000, soft_nms_sigma_test=0.5,
        score_thresh_test=0.001, detections_per_image=100, input_format="BGR",
    ):
        """
        Args:
            backbone: returns one feature per stack (all of one stride), in ``output_shape()`` order.
            num_classes: object classes. pixel_mean, pixel_std: per-channel input normalisation.
            pool_channels, head_channels, norm: widths of the pooling branches and of the heads' hidden conv; norm
                of the pooling modules.
            cascade_corner_pool: CenterNet's cascade corner pooling instead of CornerNet's.
            gaussian_min_overlap, gaussian_radius_variant: target radius (``segx.modeling.keypoints.heatmaps``).
            Other arguments: loss weights and the decoding settings (``segx/config/cornernet.py``, same names).
        """
        super().__init__(pixel_mean=pixel_mean, pixel_std=pixel_std, input_format=input_format)
        self.backbone = backbone
        shapes = backbone.output_shape()
        self.in_features = list(shapes)
        strides = {s.stride for s in shapes.values()}
        channels = {s.channels for s in shapes.values()}
        if len(strides) != 1 or len(channels) != 1:
            raise ValueError(f"{self.name}: backbone stacks must share stride and channels, got {shapes}")
        self.stride = strides.pop()
        self.num_classes = num_classes
        self.loss_options = dict(
            focal_alpha=focal_alpha, focal_beta=focal_beta, heatmap_loss_weight=heatmap_loss_weight,
            pull_loss_weight=pull_loss_weight, push_loss_weight=push_loss_weight, push_margin=push_margin,
            offset_loss_weight=offset_loss_weight,
        )
        self.topk_test, self.nms_kernel = topk_test, nms_kernel
        self.embedding_thresh_test, self.num_candidates_test = embedding_thresh_test, num_candidates_test
        self.soft_nms_sigma_test, self.score_thresh_test = soft_nms_sigma_test, score_thresh_test
        self.detections_per_image = detections_per_image

        branches = build_corner_branches(
            self.keypoint_kinds, len(self.in_features), channels.pop(), num_classes, pool_channels=pool_channels,
            head_channels=head_channels, norm=norm, heatmap_bias_init=heatmap_bias_init,
            cascade_corner_pool=cascade_corner_pool,
        )
        # state-dict names as before the family package: pools.<kind>.<stack>.*, heatmap_heads..., ...
        self.pools, self.heatmap_heads = branches["pools"], branches["heatmap_heads"]
        self.offset_heads, self.embedding_heads = branches["offset_heads"], branches["embedding_heads"]
        self.target_builder = CornerTargets(
            num_classes, self.stride, self.size_divisibility, kinds=self.keypoint_kinds,
            min_overlap=gaussian_min_overlap, radius_variant=gaussian_radius_variant,
        )

    @classmethod
    def _common_config(cls, cfg, node):
        """Arguments from ``cfg.MODEL.CORNERNET``; the target radius from ``node`` (CornerNet's or triplets')."""
        c = cfg.MODEL.CORNERNET
        return {
            "backbone": build_backbone(cfg, ShapeSpec(channels=len(cfg.MODEL.PIXEL_MEAN))),
            "num_classes": c.NUM_CLASSES,
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
            "pool_channels": c.POOL_CHANNELS,
            "head_channels": c.HEAD_CHANNELS,
            "norm": c.NORM,
            "heatmap_bias_init": c.HEATMAP_BIAS_INIT,
            "gaussian_min_overlap": node.GAUSSIAN_MIN_OVERLAP,
            "gaussian_radius_variant": node.GAUSSIAN_RADIUS_VARIANT,
            "focal_alpha": c.FOCAL_ALPHA,
            "focal_beta": c.FOCAL_BETA,
            "heatmap_loss_weight": c.HEATMAP_LOSS_WEIGHT,
            "pull_loss_weight": c.PULL_LOSS_WEIGHT,
            "push_loss_weight": c.PUSH_LOSS_WEIGHT,
            "push_margin": c.PUSH_MARGIN,
            "offset_loss_weight": c.OFFSET_LOSS_WEIGHT,
            "topk_test": c.TOPK_TEST,
            "nms_kernel": c.NMS_KERNEL,
            "embedding_thresh_test": c.EMBEDDING_THRESH_TEST,
            "num_candidates_test": c.NUM_CANDIDATES_TEST,
            "soft_nms_sigma_test": c.SOFT_NMS_SIGMA_TEST,
            "score_thresh_test": c.SCORE_THRESH_TEST,
            "detections_per_image": c.DETECTIONS_PER_IMAGE,
            "input_format": cfg.INPUT.FORMAT,
        }

    @classmethod
    def from_config(cls, cfg):
        return cls._common_config(cfg, cfg.MODEL.CORNERNET)

    def predict(self, features, images):
        """Raw head outputs of every stack in training, of the last one at inference:
        ``{stack feature name: {kind: {"heatmap": logits [B,C,h,w], "offset": [B,2,h,w] (dx, dy map pixels),
        "embedding": [B,1,h,w] (corners only)}}}``."""
        names = self.in_features if self.training else self.in_features[-1:]
        outputs = {}
        for name in names:
            s = self.in_features.index(name)
            per_kind = {}
            for kind in self.keypoint_kinds:
                y = self.pools[kind][s](features[name])
                per_kind[kind] = {"heatmap": self.heatmap_heads[kind][s](y), "offset": self.offset_heads[kind][s](y)}
                if kind in self.embedding_heads:
                    per_kind[kind]["embedding"] = self.embedding_heads[kind][s](y)
            outputs[name] = per_kind
        return outputs

    def losses(self, predictions, batched_inputs, images):
        """``corner_losses`` of every stack against the batch's targets (``loss_<kind>_heatmap``, ``loss_pull``,
        ``loss_push``, ``loss_offset``, each averaged over the stacks)."""
        stacks = list(predictions.values())
        map_size = stacks[0][self.keypoint_kinds[0]]["heatmap"].shape[-2:]
        per_image = self.target_builder.for_inputs(batched_inputs, images.image_sizes)
        targets = self.target_builder.collate(per_image, map_size, self.device)
        return corner_losses(stacks, targets, self.keypoint_kinds, **self.loss_options)

    def decode_boxes(self, outputs):
        """Candidate boxes ``[B,N,4]`` (input pixels), scores ``[B,N]`` (−1 = rejected), classes ``[B,N]`` from one
        stack's outputs."""
        tl, br = outputs["tl"], outputs["br"]
        boxes, scores, classes = decode_corner_pairs(
            torch.sigmoid(tl["heatmap"]), torch.sigmoid(br["heatmap"]), tl["embedding"], br["embedding"],
            tl["offset"], br["offset"], k=self.topk_test, nms_kernel=self.nms_kernel,
            embedding_threshold=self.embedding_thresh_test, num_candidates=self.num_candidates_test,
        )
        return boxes * self.stride, scores, classes

    def decode(self, predictions, images, batched_inputs):
        """Per image ``Instances`` (pred_boxes, scores, pred_classes) at the network input's resolution: the last
        stack's boxes clipped to the image, per-class Gaussian soft-NMS."""
        boxes, scores, classes = self.decode_boxes(list(predictions.values())[-1])
        results = []
        for i, image_size in enumerate(images.image_sizes):
            b = clip_boxes(boxes[i], image_size)
            keep, kept_scores = soft_nms_gaussian(
                b, scores[i], classes[i], sigma=self.soft_nms_sigma_test, score_threshold=self.score_thresh_test,
                max_detections=self.detections_per_image,
            )
            inst = Instances(image_size)
            inst.pred_boxes = Boxes(b[keep])
            inst.scores = kept_scores
            inst.pred_classes = classes[i][keep]
            results.append(inst)
        return results
