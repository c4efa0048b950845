"""ROI heads for detectron2's R-CNN family (registered in ``ROI_HEADS_REGISTRY`` on import): the single-pass
``SinglePassROIHeads`` used by UPSNet (DensePose's heads will live here too)."""
from segx.modeling.roi_heads.single_pass import SinglePassROIHeads

__all__ = ["SinglePassROIHeads"]
