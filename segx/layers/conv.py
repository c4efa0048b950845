"""``conv_norm_act``: the one conv → norm → activation helper of segx's backbones and heads."""
from torch import nn

from detectron2.layers import Conv2d, get_norm

__all__ = ["conv_norm_act"]


def _activation(activation):
    if activation is None or isinstance(activation, nn.Module):
        return activation
    if activation == "relu":
        return nn.ReLU(inplace=True)
    if isinstance(activation, (int, float)) and not isinstance(activation, bool):
        return nn.LeakyReLU(float(activation), inplace=True)
    raise ValueError(f"conv_norm_act: activation must be None, 'relu', a LeakyReLU slope or a module, got {activation!r}")


def conv_norm_act(in_channels, out_channels, kernel_size, stride=1, *, norm="BN", activation="relu", groups=1,
                  dilation=1, bias=None):
    """detectron2 ``Conv2d`` (``padding = dilation·(k-1)/2``, so stride 1 keeps the size; no bias when normed
    unless ``bias``) with ``norm`` (a detectron2 norm name, "" for none) and ``activation`` (None, "relu", a
    float = LeakyReLU slope, or a module). State-dict keys: ``weight`` (``bias``), ``norm.*``."""
    return Conv2d(
        in_channels, out_channels, kernel_size, stride=stride, padding=dilation * (kernel_size - 1) // 2,
        dilation=dilation, groups=groups, bias=(not norm) if bias is None else bias,
        norm=get_norm(norm, out_channels), activation=_activation(activation),
    )
