"""Top-down landmark models (Stacked Hourglass): person-crop geometry, crop targets built in the loader workers
(``segx.data.mappers.hourglass``) or in the model, heads on the backbone's features, losses and decoding.

The network itself (stacked hourglasses with their heatmap heads) is a backbone,
``segx/modeling/backbone/stacked_hourglass.py``; heatmap drawing and arg-max decoding are shared with the
keypoint detectors (``segx.modeling.heatmaps``).
"""
from .crops import (
    crop_grid, crop_jitter, crop_to_image, image_to_crop, person_boxes, sample_crops, square_crops, whole_image_box,
)
from .decoding import (
    DECODINGS, decode_crop_landmarks, landmark_instances, official_heatmap_decode, truncate_coordinates,
)
from .heads import RegressionHead
from .losses import coordinate_loss, heatmap_mse_loss, zero_loss
from .targets import HEATMAP_KINDS, CropTargets, heatmap_targets

__all__ = [
    "square_crops", "crop_jitter", "crop_grid", "image_to_crop", "crop_to_image", "sample_crops", "whole_image_box",
    "person_boxes",
    "CropTargets", "heatmap_targets", "HEATMAP_KINDS", "RegressionHead", "heatmap_mse_loss", "coordinate_loss",
    "zero_loss", "DECODINGS", "official_heatmap_decode", "decode_crop_landmarks", "truncate_coordinates",
    "landmark_instances",
]
