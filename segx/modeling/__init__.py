"""segx models: importing this package registers the backbones, the family packages' heads (ROI heads,
semantic-segmentation heads, YOLACT's FPN backbone) and the meta-architectures."""
from segx.modeling import backbone  # noqa: F401
from segx.modeling import yolact, panoptic, roi_heads, keypoints, landmarks, retinaface  # noqa: F401
from segx.modeling import flow  # noqa: F401
from segx.modeling import meta_arch  # noqa: F401
