"""The mapper registry and the base of the architecture mappers."""
from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY", "TargetMapper", "build_mapper"]

MAPPER_REGISTRY = Registry("SEGX_MAPPER")
MAPPER_REGISTRY.__doc__ = """Mappers by meta-architecture name; ``build_mapper`` looks them up."""


def build_mapper(cfg, is_train):
    """The dataset mapper of ``cfg.MODEL.META_ARCHITECTURE`` (detectron2's ``DatasetMapper`` by default)."""
    name = cfg.MODEL.META_ARCHITECTURE
    if name in MAPPER_REGISTRY:
        return MAPPER_REGISTRY.get(name)(cfg, is_train)
    return DatasetMapper(cfg, is_train)


class TargetMapper(DatasetMapper):
    """detectron2's ``DatasetMapper`` followed by an architecture's target step.

    ``__call__`` maps as ``DatasetMapper`` does, then (training only, when the record has ``instances``) stores
    ``self.build_targets(mapped)`` under ``"targets"``. The meta-architecture uses ``x["targets"]`` when present
    and builds the same targets itself (same function) when a caller feeds it plain ``DatasetMapper`` output.
    """

    def __call__(self, dataset_dict):
        mapped = super().__call__(dataset_dict)
        if self.is_train and "instances" in mapped:
            mapped["targets"] = self.build_targets(mapped)
        return mapped

    def build_targets(self, mapped):
        raise NotImplementedError
