"""Stacked Hourglass's mapper: detectron2's ``DatasetMapper`` (``MODEL.KEYPOINT_ON``) + the person crops with
their scale/rotation jitter and heatmap targets, built in the loader workers (``segx.modeling.landmarks``)."""
from detectron2.config import configurable

from segx.data.mappers.base import MAPPER_REGISTRY, TargetMapper
from segx.modeling.landmarks import CropTargets

__all__ = ["StackedHourglassMapper"]


class StackedHourglassMapper(TargetMapper):
    """Adds ``"targets"`` to training records: ``CropTargets`` of the mapped ``instances`` (crop centres, half-sides,
    rotation cos/sin, landmarks in crop coordinates and, for the heatmap head, the heatmaps ``[N,K,S/4,S/4]``),
    on the CPU. ``StackedHourglass`` samples the crops from the image on its device."""

    @configurable
    def __init__(self, is_train=True, *, crop_targets, **kwargs):
        """``crop_targets``: a ``CropTargets``; the other arguments are ``DatasetMapper``'s."""
        super().__init__(is_train, **kwargs)
        self.crop_targets = crop_targets

    @classmethod
    def from_config(cls, cfg, is_train=True):
        ret = super().from_config(cfg, is_train)
        ret["crop_targets"] = CropTargets(cfg)
        return ret

    def build_targets(self, mapped):
        return self.crop_targets(mapped["instances"])


MAPPER_REGISTRY._do_register("StackedHourglass", StackedHourglassMapper)
