"""Datasets (synthetic defaults registered on import; COCO-format helpers for users' data)."""
from . import synthetic  # noqa: F401
from .datasets import (  # noqa: F401
    SYNTHETIC_SPECS,
    DatasetValidationError,
    ensure_builtin_dataset,
    register_coco_dataset,
    register_coco_panoptic_dataset,
    validate_coco_json,
)
