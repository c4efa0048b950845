"""DensePose R-CNN's parts for detectron2's ``GeneralizedRCNN``: ``DensePoseROIHeads`` (in ``ROI_HEADS_REGISTRY``), the
head (``ROI_DENSEPOSE_HEAD_REGISTRY``), the losses and the structures ``gt_densepose`` / ``pred_densepose``."""
from segx.modeling.roi_heads.densepose.structures import (  # noqa: F401
    DensePoseInstanceTarget,
    DensePoseOutput,
    DensePoseTargets,
    box_grid,
    resample_labels,
    sample_maps,
)
from segx.modeling.roi_heads.densepose.head import (  # noqa: F401
    ROI_DENSEPOSE_HEAD_REGISTRY,
    DensePoseConvHead,
    build_densepose_head,
)
from segx.modeling.roi_heads.densepose.losses import densepose_losses, gather_point_targets  # noqa: F401
from segx.modeling.roi_heads.densepose.roi_heads import DensePoseROIHeads  # noqa: F401
