"""RetinaFace's 1×1 prediction heads, one per level (``class_head`` / ``bbox_head`` / ``landmark_head`` keep the
official ``ClassHead`` / ``BboxHead`` / ``LandmarkHead`` order, see ``segx/checkpoint/retinaface.py``)."""
import torch
from torch import nn

__all__ = ["level_heads", "flatten_levels"]


def level_heads(channels, out_per_prior, num_priors, num_levels=3):
    """``ModuleList`` of ``num_levels`` 1×1 convs, ``channels`` → ``num_priors · out_per_prior``."""
    return nn.ModuleList([nn.Conv2d(channels, num_priors * out_per_prior, 1) for _ in range(num_levels)])


def flatten_levels(heads, features, width):
    """Runs ``heads[l]`` on ``features[l]`` and flattens to ``[B,P,width]``, P over levels, rows, columns and the
    priors of a location (the order of ``retinaface_priors``)."""
    return torch.cat([h(x).permute(0, 2, 3, 1).reshape(x.shape[0], -1, width) for h, x in zip(heads, features)], dim=1)
