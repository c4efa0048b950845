from .coco import (  # noqa: F401
    DatasetValidationError,
    register_coco_dataset,
    register_coco_panoptic_dataset,
    validate_coco_json,
)
from .builtin import SYNTHETIC_SPECS, ensure_builtin_dataset  # noqa: F401
from . import panoptic_separated  # noqa: F401  (registers segx_shapes_panoptic_*_separated)
from . import faces  # noqa: F401  (registers segx_faces_*; register_wider_face_retinaface, register_face_keypoints_coco)
from . import keypoints  # noqa: F401  (registers segx_figures_*; register_mpii, register_coco_keypoints)
from .youtube_vis import register_youtube_vis  # noqa: F401  (registers segx_videos_*, ytvis_2019_*)
from . import densepose  # noqa: F401  (registers segx_densepose_*; DensePose-COCO format and checks)
from . import cityscapes_vps  # noqa: F401  (registers segx_vps_shapes_*, cityscapes_vps_*; register_cityscapes_vps)
