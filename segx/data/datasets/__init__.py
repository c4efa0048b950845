from .coco import (  # noqa: F401
    DatasetValidationError,
    register_coco_dataset,
    register_coco_panoptic_dataset,
    validate_coco_json,
)
from .builtin import SYNTHETIC_SPECS, ensure_builtin_dataset  # noqa: F401
