"""ROI heads for detectron2's R-CNN family (registered in ``ROI_HEADS_REGISTRY`` on import): the single-pass
``SinglePassROIHeads`` used by UPSNet, and DensePose R-CNN's ``DensePoseROIHeads`` (``densepose/``)."""
from segx.modeling.roi_heads.single_pass import SinglePassROIHeads
from segx.modeling.roi_heads.densepose import DensePoseROIHeads, DensePoseOutput

__all__ = ["SinglePassROIHeads", "DensePoseROIHeads", "DensePoseOutput"]
