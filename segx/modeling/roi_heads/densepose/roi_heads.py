"""``DensePoseROIHeads``: detectron2's ``StandardROIHeads`` plus the DensePose branch (DensePose R-CNN = Faster
R-CNN + a surface-regression head on person RoIs), for detectron2's stock ``GeneralizedRCNN``."""
import torch

from detectron2.config import configurable
from detectron2.layers import ShapeSpec
from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.poolers import ROIPooler
from detectron2.modeling.roi_heads import StandardROIHeads, select_foreground_proposals
from detectron2.structures.boxes import matched_pairwise_iou

from segx.modeling.roi_heads.densepose.head import build_densepose_head
from segx.modeling.roi_heads.densepose.losses import densepose_losses
from segx.modeling.roi_heads.densepose.structures import DensePoseOutput

__all__ = ["DensePoseROIHeads"]


@ROI_HEADS_REGISTRY.register()
class DensePoseROIHeads(StandardROIHeads):
    """``StandardROIHeads`` (boxes, optionally masks / keypoints) with a DensePose branch.

    Training: the foreground proposals whose box overlaps their matched ground-truth person by at least
    ``densepose_fg_iou`` and whose person has a DensePose annotation (``gt_densepose``, from the DensePose mapper)
    go through ``densepose_pooler`` → ``densepose_head``; ``densepose_losses`` adds ``loss_densepose_{I,U,V,S}``.
    Inference: every detection gets ``pred_densepose`` (a ``DensePoseOutput``, its maps over the detection's box).
    """

    @configurable
    def __init__(self, *, densepose_in_features=None, densepose_pooler=None, densepose_head=None,
                 densepose_fg_iou=0.7, densepose_loss_weights=None, **kwargs):
        """
        Args:
            densepose_in_features: feature names the pooler reads (None: no DensePose branch).
            densepose_pooler: ``ROIPooler`` of the DensePose branch. densepose_head: the head
                (``ROI_DENSEPOSE_HEAD_REGISTRY``).
            densepose_fg_iou: minimum IoU of a training RoI with its matched person.
            densepose_loss_weights: dict ``part_weight``, ``uv_weight``, ``segm_weight`` (``densepose_losses``).
            kwargs: ``StandardROIHeads``'s arguments.
        """
        super().__init__(**kwargs)
        self.densepose_on = densepose_in_features is not None
        if self.densepose_on:
            self.densepose_in_features = densepose_in_features
            self.densepose_pooler = densepose_pooler
            self.densepose_head = densepose_head
            self.densepose_fg_iou = densepose_fg_iou
            self.densepose_loss_weights = dict(densepose_loss_weights or {})

    @classmethod
    def from_config(cls, cfg, input_shape):
        ret = super().from_config(cfg, input_shape)
        ret.update(cls._init_densepose_head(cfg, input_shape))
        return ret

    @classmethod
    def _init_densepose_head(cls, cfg, input_shape):
        h = cfg.MODEL.ROI_DENSEPOSE_HEAD
        in_features = cfg.MODEL.ROI_HEADS.IN_FEATURES
        channels = {input_shape[f].channels for f in in_features}
        if len(channels) != 1:
            raise ValueError(f"DensePoseROIHeads: ROI_HEADS.IN_FEATURES {in_features} have different channel counts "
                             f"{sorted(channels)}")
        pooler = ROIPooler(output_size=h.POOLER_RESOLUTION, scales=tuple(1.0 / input_shape[f].stride for f in in_features),
                           sampling_ratio=h.POOLER_SAMPLING_RATIO, pooler_type=h.POOLER_TYPE)
        shape = ShapeSpec(channels=channels.pop(), height=h.POOLER_RESOLUTION, width=h.POOLER_RESOLUTION)
        return {
            "densepose_in_features": list(in_features),
            "densepose_pooler": pooler,
            "densepose_head": build_densepose_head(cfg, shape),
            "densepose_fg_iou": h.FG_IOU_THRESHOLD,
            "densepose_loss_weights": {"part_weight": h.PART_LOSS_WEIGHT, "uv_weight": h.UV_LOSS_WEIGHT,
                                       "segm_weight": h.COARSE_SEGM_LOSS_WEIGHT},
        }

    def forward(self, images, features, proposals, targets=None):
        instances, losses = super().forward(images, features, proposals, targets)
        if self.training:
            losses.update(self._forward_densepose(features, instances))
        return instances, losses

    def forward_with_given_boxes(self, features, instances):
        instances = super().forward_with_given_boxes(features, instances)
        return self._forward_densepose(features, instances)

    def _select_training_rois(self, proposals):
        """Per image the foreground proposals with IoU >= ``densepose_fg_iou`` to their matched annotated person."""
        fg, _ = select_foreground_proposals(proposals, self.num_classes)
        out = []
        for p in fg:
            if len(p) == 0:
                out.append(p)
                continue
            if not p.has("gt_densepose"):
                raise ValueError("DensePoseROIHeads: the ground truth has no gt_densepose field: the training loader "
                                 "must use the DensePose mapper (SEGX.DATA.MAPPER DensePose, set by "
                                 "configs/DensePose/Base-DensePose-RCNN-FPN.yaml)")
            iou = matched_pairwise_iou(p.proposal_boxes, p.gt_boxes)
            has_dp = torch.tensor([t is not None for t in p.gt_densepose.targets], dtype=torch.bool,
                                  device=iou.device)
            out.append(p[(iou >= self.densepose_fg_iou) & has_dp])
        return out

    def _forward_densepose(self, features, instances):
        """Training: DensePose losses of ``instances`` (proposals with ground truth). Inference: ``instances`` with
        ``pred_densepose`` set."""
        if not self.densepose_on:
            return {} if self.training else instances
        feats = [features[f] for f in self.densepose_in_features]
        if self.training:
            rois = self._select_training_rois(instances)
            boxes = [r.proposal_boxes for r in rois]
            outputs = self.densepose_head(self.densepose_pooler(feats, boxes))
            targets = [t for r in rois if len(r) for t in r.gt_densepose.targets]
            flat_boxes = torch.cat([b.tensor for b in boxes])
            return densepose_losses(outputs, flat_boxes, targets, **self.densepose_loss_weights)
        outputs = self.densepose_head(self.densepose_pooler(feats, [x.pred_boxes for x in instances]))
        if len(instances) == 1:  # no split by a Python count: a traced model then serves any number of boxes
            chunks = {k: [v] for k, v in outputs.items()}
        else:
            sizes = [len(x) for x in instances]
            chunks = {k: v.split(sizes) for k, v in outputs.items()}
        for n, x in enumerate(instances):
            x.pred_densepose = DensePoseOutput(*(chunks[k][n] for k in ("coarse_segm", "fine_segm", "u", "v")))
        return instances
