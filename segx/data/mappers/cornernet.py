"""The keypoint detectors' mapper: detectron2's ``DatasetMapper`` + the heatmap targets of CornerNet and CenterNet
(keypoint triplets), built in the loader workers (``segx.modeling.keypoints.CornerTargets``)."""
import torch

from detectron2.config import configurable
from detectron2.modeling import META_ARCH_REGISTRY

from segx.data.mappers.base import MAPPER_REGISTRY, TargetMapper

__all__ = ["CornerNetMapper", "model_target_builder"]


def model_target_builder(cfg):
    """The target builder (``model.target_builder``) of ``cfg``'s meta-architecture. The model is built on the meta
    device (no memory, no initialisation work), so the stride, the padding (``size_divisibility``) and the target
    options are the model's own: mapper and model cannot disagree."""
    with torch.device("meta"):
        model = META_ARCH_REGISTRY.get(cfg.MODEL.META_ARCHITECTURE)(cfg)
    return model.target_builder


class CornerNetMapper(TargetMapper):
    """Adds ``"targets"`` to training records: per keypoint kind ("tl", "br", and "ct" for CenterNetTriplets) the
    image's heatmaps ``[C,h,w]`` (its own padded map, h·stride × w·stride), integer map coordinates ``[N,2]`` and
    offsets ``[N,2]`` (see ``CornerTargets``), on the CPU. The model pads the heatmaps to the batch's map and
    builds the flat indices when it collates the batch."""

    @configurable
    def __init__(self, is_train=True, *, target_builder=None, **kwargs):
        """``target_builder``: a ``segx.modeling.keypoints`` target builder (None: no targets); the other arguments
        are ``DatasetMapper``'s."""
        super().__init__(is_train, **kwargs)
        self.target_builder = target_builder

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["target_builder"] = model_target_builder(cfg) if is_train else None
        return ret

    def build_targets(self, mapped):
        if self.target_builder is None:
            return None  # the model builds them
        inst = mapped["instances"]
        return self.target_builder(inst.gt_boxes.tensor, inst.gt_classes, tuple(mapped["image"].shape[-2:]))


MAPPER_REGISTRY._do_register("CornerNet", CornerNetMapper)
MAPPER_REGISTRY._do_register("CenterNetTriplets", CornerNetMapper)
