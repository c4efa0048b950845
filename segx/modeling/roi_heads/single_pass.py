"""``SinglePassROIHeads``: detectron2's ``StandardROIHeads`` that also hands out what its heads computed on the way
(per-class boxes, class probabilities, mask logits), so a model that needs them runs each head once."""
import torch

from detectron2.modeling import ROI_HEADS_REGISTRY
from detectron2.modeling.roi_heads import StandardROIHeads
from detectron2.modeling.roi_heads.fast_rcnn import fast_rcnn_inference
from detectron2.structures import Boxes, Instances

__all__ = ["SinglePassROIHeads"]


def _empty_like(instances):
    out = Instances(instances.image_size)
    out.pred_boxes = instances.pred_boxes[:0]
    out.scores = instances.scores[:0]
    out.pred_classes = instances.pred_classes[:0]
    return out


@ROI_HEADS_REGISTRY.register()
class SinglePassROIHeads(StandardROIHeads):
    """``StandardROIHeads`` (same config, parameters, training and ``forward``) with ``predict``: one box-head
    pass and one mask-head pass give the Mask R-CNN detections *and* the per-class boxes and class probabilities
    of every proposal *and* the mask logits of further boxes chosen from those (e.g. UPSNet's panoptic
    instances), where calling ``forward`` and then the heads again would run each head twice.

    ``mask_logits(features, boxes, classes)`` gives the mask head's logits of given boxes (e.g. GT boxes in
    training).
    """

    def predict(self, features, proposals, select=None):
        """Inference in one pass of each head.

        Args:
            features: ``dict[str, Tensor]`` of the backbone.
            proposals: per image ``Instances`` with ``proposal_boxes``.
            select: optional ``select(boxes [R, K*4], scores [R, K+1], image_size) -> Instances`` (``pred_boxes``,
                ``scores``, ``pred_classes``) choosing further instances from the box head's raw output.
        Returns:
            dict: ``"instances"``: per image the detections exactly as ``forward`` returns them (``pred_boxes``,
            ``scores``, ``pred_classes``, ``pred_masks`` ``[N,1,M,M]`` probabilities, ...); ``"boxes"``, ``"scores"``:
            per image ``[R, K*4]`` per-class boxes (input pixels, unclipped) and ``[R, K+1]`` class probabilities of
            every proposal; ``"selected"``: per image what ``select`` chose (empty without it) with
            ``pred_mask_logits`` ``[N,M,M]``, the mask logits of each one's class.
        """
        assert not self.training, "SinglePassROIHeads.predict is inference only (training: forward)"
        instances, boxes, scores = self.predict_boxes(features, proposals)
        if select is not None:
            selected = [select(b, s, p.image_size) for b, s, p in zip(boxes, scores, proposals)]
        else:
            selected = [_empty_like(x) for x in instances]
        instances, selected = self.predict_masks(features, instances, selected)
        instances = self._forward_keypoint(features, instances)
        return {"instances": instances, "boxes": boxes, "scores": scores, "selected": selected}

    def predict_boxes(self, features, proposals):
        """One box-head pass: (detections as ``FastRCNNOutputLayers.inference`` gives them, per-class boxes,
        class probabilities) — the last two per image, ``[R, K*4]`` and ``[R, K+1]``."""
        x = self.box_pooler([features[f] for f in self.box_in_features], [p.proposal_boxes for p in proposals])
        predictions = self.box_predictor(self.box_head(x))
        predictor = self.box_predictor
        boxes = predictor.predict_boxes(predictions, proposals)
        scores = predictor.predict_probs(predictions, proposals)
        sizes = [p.image_size for p in proposals]
        instances, _ = fast_rcnn_inference(boxes, scores, sizes, predictor.test_score_thresh, predictor.test_nms_thresh,
                                           predictor.test_topk_per_image)
        return instances, boxes, scores

    def predict_masks(self, features, instances, selected):
        """One mask-head pass over the detections ``instances`` and the ``selected`` instances (per image): sets
        ``pred_masks`` ``[N,1,M,M]`` (probabilities, as ``StandardROIHeads``) on the former and
        ``pred_mask_logits`` ``[N,M,M]`` on the latter; returns both lists."""
        if not self.mask_on:
            return instances, selected
        if self.mask_pooler is None:
            raise ValueError("SinglePassROIHeads needs a mask pooler (MODEL.ROI_MASK_HEAD.POOLER_TYPE)")
        boxes, classes, sizes = [], [], []
        for det, sel in zip(instances, selected):
            boxes.append(torch.cat([det.pred_boxes.tensor, sel.pred_boxes.tensor]))
            classes += [det.pred_classes, sel.pred_classes]
            sizes += [det.pred_boxes.tensor.shape[0], sel.pred_boxes.tensor.shape[0]]  # sizes, not len(): traced
        # One dummy box after the last image's boxes keeps the mask head's batch non-empty (GroupNorm's reshape of
        # an empty batch fails in onnxruntime); its logits are dropped.
        boxes[-1] = torch.cat([boxes[-1], boxes[-1].new_tensor([[0.0, 0.0, 1.0, 1.0]])])
        classes.append(classes[-1].new_zeros(1))
        logits = self._class_logits(self._mask_layers(features, [Boxes(b) for b in boxes]), torch.cat(classes))
        parts = logits.split(sizes + [1])
        for i, (det, sel) in enumerate(zip(instances, selected)):
            det.pred_masks = parts[2 * i].sigmoid()[:, None]
            sel.pred_mask_logits = parts[2 * i + 1]
        return instances, selected

    def mask_logits(self, features, boxes, classes):
        """Mask-head logits ``[N, M, M]`` of each box's class: ``boxes`` per image (``Boxes``, input pixels),
        ``classes`` ``[N]`` for all images in order."""
        return self._class_logits(self._mask_layers(features, boxes), classes)

    def _mask_layers(self, features, boxes):
        x = self.mask_pooler([features[f] for f in self.mask_in_features], boxes)
        return self.mask_head.layers(x)

    @staticmethod
    def _class_logits(logits, classes):
        """``[N, C, M, M]`` (C = 1: class-agnostic) → ``[N, M, M]`` of each row's class."""
        if logits.shape[1] == 1:
            return logits[:, 0]
        return logits[torch.arange(logits.shape[0], device=logits.device), classes]
