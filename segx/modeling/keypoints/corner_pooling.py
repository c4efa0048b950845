"""Corner pooling (CornerNet), cascade corner pooling and center pooling (CenterNet: keypoint triplets).

All three are built on ``segx.layers.corner_pool(x, direction)`` (C++ kernel, traceable, with a reference for
ONNX): "top" = max over the rows below and at a position, "left" = max over the columns to the right, "bottom"
/ "right" the mirror images. A top-left corner looks right and down, hence top + left pooling.

Layouts follow princeton-vl/CornerNet ``models/py_utils/kp.py`` (``pool``) and Duankaiwen/CenterNet
``models/py_utils/kp.py`` (``pool``, ``pool_cross``); the parameter names are segx's own.
"""
from torch import nn
from torch.nn import functional as F

from segx.layers import conv_norm_act, corner_pool

__all__ = ["CORNER_DIRECTIONS", "CornerPoolModule", "CascadeCornerPoolModule", "CenterPoolModule"]

# The two pooling directions of each corner type.
CORNER_DIRECTIONS = {"tl": ("top", "left"), "br": ("bottom", "right")}


class _PoolModuleBase(nn.Module):
    """Shared tail: ``ReLU(norm(3×3 conv(pooled)) + norm(1×1 conv(x)))`` → 3×3 conv-norm-ReLU."""

    def __init__(self, channels, pool_channels, norm):
        super().__init__()
        self.pooled_conv = conv_norm_act(pool_channels, channels, 3, norm=norm, activation=None)
        self.skip_conv = conv_norm_act(channels, channels, 1, norm=norm, activation=None)
        self.out_conv = conv_norm_act(channels, channels, 3, norm=norm)

    def _tail(self, x, pooled):
        return self.out_conv(F.relu(self.pooled_conv(pooled) + self.skip_conv(x)))


class CornerPoolModule(_PoolModuleBase):
    """CornerNet's corner pooling: two 3×3 conv-norm-ReLU branches, one pooled along each of ``directions``
    (("top","left") for top-left corners, ("bottom","right") for bottom-right), summed, then the tail.
    ``[B,channels,H,W]`` → same shape."""

    def __init__(self, channels, directions, pool_channels=128, norm="BN"):
        super().__init__(channels, pool_channels, norm)
        self.directions = tuple(directions)
        self.branch1 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        self.branch2 = conv_norm_act(channels, pool_channels, 3, norm=norm)

    def forward(self, x):
        d1, d2 = self.directions
        return self._tail(x, corner_pool(self.branch1(x), d1) + corner_pool(self.branch2(x), d2))


class CascadeCornerPoolModule(_PoolModuleBase):
    """CenterNet's cascade corner pooling: each branch first adds a feature max-pooled along the *other*
    direction ("look" branch: 3×3 conv-norm-ReLU → pool along the orthogonal direction), runs a 3×3 conv,
    and only then pools along its own direction, so a corner sees the maximum of the boundary *and* of the
    object's interior. ``[B,channels,H,W]`` → same shape."""

    def __init__(self, channels, directions, pool_channels=128, norm="BN"):
        super().__init__(channels, pool_channels, norm)
        self.directions = tuple(directions)
        self.branch1 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        self.branch2 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        self.look1 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        self.look2 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        # plain 3x3 convs (no norm / activation), as in the official module
        self.merge1 = nn.Conv2d(pool_channels, pool_channels, 3, padding=1, bias=False)
        self.merge2 = nn.Conv2d(pool_channels, pool_channels, 3, padding=1, bias=False)

    def forward(self, x):
        d1, d2 = self.directions
        p1 = corner_pool(self.merge1(self.branch1(x) + corner_pool(self.look1(x), d2)), d1)
        p2 = corner_pool(self.merge2(self.branch2(x) + corner_pool(self.look2(x), d1)), d2)
        return self._tail(x, p1 + p2)


class CenterPoolModule(_PoolModuleBase):
    """CenterNet's center pooling: one branch takes the maximum of its whole column (top then bottom pooling),
    the other the maximum of its whole row (left then right), summed, then the tail.
    ``[B,channels,H,W]`` → same shape."""

    def __init__(self, channels, pool_channels=128, norm="BN"):
        super().__init__(channels, pool_channels, norm)
        self.branch1 = conv_norm_act(channels, pool_channels, 3, norm=norm)
        self.branch2 = conv_norm_act(channels, pool_channels, 3, norm=norm)

    def forward(self, x):
        column = corner_pool(corner_pool(self.branch1(x), "top"), "bottom")
        row = corner_pool(corner_pool(self.branch2(x), "left"), "right")
        return self._tail(x, column + row)
