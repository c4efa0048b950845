"""RetinaFace (faces with 5 landmarks): FPN + SSH neck, per-level 1×1 heads, priors, prior matching and the
multibox loss, decoding. The meta-architecture (``segx/modeling/meta_arch/retinaface.py``) composes them."""
from .decoding import NMS_MODES, decode_faces, face_detections, face_nms, rescale_faces
from .fpn import SSH, RetinaFaceFPN, default_leaky
from .heads import flatten_levels, level_heads
from .losses import label_priors, multibox_losses
from .priors import RetinaFacePriors, retinaface_priors

__all__ = [
    "RetinaFaceFPN", "SSH", "default_leaky", "level_heads", "flatten_levels", "retinaface_priors", "RetinaFacePriors",
    "label_priors", "multibox_losses", "NMS_MODES", "decode_faces", "face_detections", "face_nms", "rescale_faces",
]
