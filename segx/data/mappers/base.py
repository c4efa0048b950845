"""The mapper registry, the base of the architecture mappers, and what every mapper does with unreadable images.

``build_mapper`` gives every mapper (detectron2's ``DatasetMapper``, each architecture's, a user's registered one)
the ``BadImageGuard`` step: when mapping a record fails and its image file turns out to be missing, empty,
truncated or corrupt, the error names the file and the image id (``BadImageError``), or, in training with
``cfg.SEGX.DATA.BAD_IMAGES "skip"``, the record is skipped (detectron2's loader then takes another one) with a
warning that counts the skipped images. Any other error is re-raised as it is.
"""
import collections
import logging

from detectron2.data import DatasetMapper
from detectron2.utils.registry import Registry

__all__ = ["MAPPER_REGISTRY", "TargetMapper", "build_mapper", "BadImageError", "BadImageGuard", "BAD_IMAGE_POLICIES",
           "with_bad_image_guard"]

logger = logging.getLogger(__name__)

MAPPER_REGISTRY = Registry("SEGX_MAPPER")
MAPPER_REGISTRY.__doc__ = """Mappers by meta-architecture name; ``build_mapper`` looks them up."""

BAD_IMAGE_POLICIES = ("raise", "skip")


class BadImageError(OSError):
    """A record's image file cannot be read; the message names the file and the image id."""


class BadImageGuard:
    """Mixin in front of a mapper class: names the file and image id of an unreadable image, or skips it.

    ``bad_image_policy``: "raise" (default) or "skip" (training mappers only; at test time a skipped image would
    silently change the evaluated set, so evaluation and export always raise). The image is examined only after
    the mapper failed, by decoding it with PIL.
    """

    bad_image_policy = "raise"
    _skipped = collections.Counter()  # per process (each loader worker counts its own)

    def __call__(self, dataset_dict):
        try:
            return super().__call__(dataset_dict)
        except Exception as e:
            problem = _image_problem(dataset_dict)
            if problem is None:
                raise
            where = f"image id {dataset_dict.get('image_id')}"
            if self.bad_image_policy == "skip" and getattr(self, "is_train", False):
                first = dataset_dict["file_name"] not in self._skipped
                self._skipped[dataset_dict["file_name"]] += 1
                if first:
                    logger.warning("Skipping %s: %s; %d bad image(s) skipped so far in this process "
                                   "(SEGX.DATA.BAD_IMAGES skip)", where, problem, len(self._skipped))
                return None
            hint = ("; SEGX.DATA.BAD_IMAGES skip leaves such images out of training" if getattr(self, "is_train", False)
                    else "; evaluation stops on it (SEGX.DATA.BAD_IMAGES skip applies to training only)")
            raise BadImageError(f"{where}: {problem}{hint}") from e


def _image_problem(dataset_dict):
    """Why the record's image cannot be read (a message naming the file), or None when it reads fine."""
    from segx.data.datasets.coco import check_image_file

    path = dataset_dict.get("file_name") if isinstance(dataset_dict, dict) else None
    if not isinstance(path, str):
        return None
    return check_image_file(path, "decode")


_GUARDED = {}


def with_bad_image_guard(cls):
    """``cls`` with ``BadImageGuard`` in front (cached; ``isinstance`` of ``cls`` still holds)."""
    if issubclass(cls, BadImageGuard):
        return cls
    if cls not in _GUARDED:
        _GUARDED[cls] = type(cls.__name__, (BadImageGuard, cls), {
            "__module__": cls.__module__, "__qualname__": f"BadImageGuard[{cls.__qualname__}]", "__doc__": cls.__doc__,
        })
    return _GUARDED[cls]


def build_mapper(cfg, is_train):
    """The dataset mapper of ``cfg.MODEL.META_ARCHITECTURE`` (detectron2's ``DatasetMapper`` by default) or the one
    named by ``cfg.SEGX.DATA.MAPPER``, with the ``BadImageGuard`` step set by ``cfg.SEGX.DATA.BAD_IMAGES``."""
    name = cfg.MODEL.META_ARCHITECTURE
    chosen = cfg.SEGX.DATA.get("MAPPER", "") if "SEGX" in cfg and "DATA" in cfg.SEGX else ""
    if chosen:
        if chosen not in MAPPER_REGISTRY:
            raise ValueError(f"SEGX.DATA.MAPPER {chosen!r} is not a registered mapper (known: "
                             f"{sorted(k for k, _ in MAPPER_REGISTRY)})")
        name = chosen
    cls = MAPPER_REGISTRY.get(name) if name in MAPPER_REGISTRY else DatasetMapper
    policy = cfg.SEGX.DATA.BAD_IMAGES if "SEGX" in cfg and "DATA" in cfg.SEGX else "raise"
    if policy not in BAD_IMAGE_POLICIES:
        raise ValueError(f"SEGX.DATA.BAD_IMAGES must be one of {BAD_IMAGE_POLICIES}, got {policy!r}")
    mapper = with_bad_image_guard(cls)(cfg, is_train)
    mapper.bad_image_policy = policy
    return mapper


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
