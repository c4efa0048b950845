"""Losses of the top-down landmark models, one value per stack (intermediate supervision)."""
import torch

__all__ = ["heatmap_mse_loss", "coordinate_loss", "zero_loss"]


def heatmap_mse_loss(pred, target, weight):
    """Mean squared error over all heatmap pixels (the paper's loss): ``pred``, ``target`` ``[N,K,H,W]``,
    ``weight`` ``[N,K]`` per landmark (0 drops a landmark's map)."""
    return ((pred - target) ** 2 * weight[:, :, None, None]).mean()


def coordinate_loss(pred, points, visible, kind="l1"):
    """L1 (``kind="l1"``) or squared error (``"l2"``) of regressed crop coordinates ``pred`` ``[N,K,2]`` against
    ``points`` ``[N,K,2]``, averaged over the coordinates of the ``visible`` ``[N,K]`` landmarks."""
    w = visible.to(pred.dtype)[..., None]  # invisible landmarks have no position to regress
    diff = (pred - points) * w
    err = diff.abs() if kind == "l1" else diff**2
    return err.sum() / (w.sum() * 2).clamp(min=1)


def zero_loss(module):
    """A zero that reaches every parameter of ``module`` (a batch without people still steps every parameter)."""
    return sum(p.sum() for p in module.parameters()) * 0.0

