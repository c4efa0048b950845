"""CenterNet's (objects as points) mapper: detectron2's ``DatasetMapper`` + the centre-heatmap targets, built in
the loader workers (``segx.modeling.keypoints.CenterTargets``)."""
from segx.data.mappers.base import MAPPER_REGISTRY
from segx.data.mappers.cornernet import CornerNetMapper

__all__ = ["CenterNetMapper"]


class CenterNetMapper(CornerNetMapper):
    """Adds ``"targets"`` to training records: the image's centre heatmap ``[C,h,w]`` (its own padded map), and per
    kept object its integer centre ``[M,2]`` (x, y), size ``[M,2]`` and offset ``[M,2]`` in output pixels (see
    ``CenterTargets``), on the CPU; the model pads and indexes them per batch. Same mechanism as
    ``CornerNetMapper``: the target builder is the model's own."""


MAPPER_REGISTRY._do_register("CenterNet", CenterNetMapper)
