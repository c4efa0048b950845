"""Prediction heads of the keypoint detectors.

* CornerNet / CenterNet (keypoint triplets): per stack and per keypoint kind ("tl", "br", "ct") a pooling module
  (corner, cascade corner or center pooling) and ``KeypointHead``s for the heatmap, the sub-pixel offset and,
  for corners, the 1-d grouping embedding (princeton-vl/CornerNet ``models/py_utils/kp.py``).
* CenterNet (objects as points): per output map a heatmap ``hm``, size ``wh`` and offset ``reg`` head, in the
  official key layout (xingyizhou/CenterNet ``msra_resnet.py`` / ``pose_dla_dcn.py``).
"""
from torch import nn

from segx.modeling.keypoints.corner_pooling import (
    CORNER_DIRECTIONS,
    CascadeCornerPoolModule,
    CenterPoolModule,
    CornerPoolModule,
)

__all__ = ["KeypointHead", "build_corner_branches", "centernet_head", "build_centernet_heads"]

CORNER_BRANCHES = ("pools", "heatmap_heads", "offset_heads", "embedding_heads")


class KeypointHead(nn.Sequential):
    """CornerNet's prediction head: 3×3 conv (bias) → ReLU → 1×1 conv to ``out_channels``."""

    def __init__(self, in_channels, hidden_channels, out_channels, bias_init=None):
        super().__init__(
            nn.Conv2d(in_channels, hidden_channels, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, out_channels, 1),
        )
        if bias_init is not None:
            nn.init.constant_(self[-1].bias, bias_init)


def build_corner_branches(kinds, num_stacks, channels, num_classes, *, pool_channels=128, head_channels=256,
                          norm="BN", heatmap_bias_init=-2.19, cascade_corner_pool=False):
    """The modules of the corner detectors, each a ``ModuleDict`` kind → ``ModuleList`` (one per stack).

    Returns ``{"pools", "heatmap_heads", "offset_heads", "embedding_heads"}``: pooling (corner pooling for
    "tl" / "br", CenterNet's cascade corner pooling with ``cascade_corner_pool``, center pooling for "ct"),
    heatmap logits (``num_classes``, bias ``heatmap_bias_init``), offsets (2) and embeddings (1, corners only).
    Inputs and outputs of a stack: ``[B,channels,h,w]`` → ``[B,·,h,w]``.
    """
    corner_pool_cls = CascadeCornerPoolModule if cascade_corner_pool else CornerPoolModule

    def pool(kind):
        if kind in CORNER_DIRECTIONS:
            return corner_pool_cls(channels, CORNER_DIRECTIONS[kind], pool_channels, norm)
        if kind == "ct":
            return CenterPoolModule(channels, pool_channels, norm)
        raise ValueError(f"build_corner_branches: keypoint kind must be 'tl', 'br' or 'ct', got {kind!r}")

    def per_stack(make):
        return nn.ModuleList([make() for _ in range(num_stacks)])

    branches = {name: nn.ModuleDict() for name in CORNER_BRANCHES}
    for kind in kinds:
        branches["pools"][kind] = per_stack(lambda: pool(kind))
        branches["heatmap_heads"][kind] = per_stack(
            lambda: KeypointHead(channels, head_channels, num_classes, heatmap_bias_init)
        )
        branches["offset_heads"][kind] = per_stack(lambda: KeypointHead(channels, head_channels, 2))
        if kind in CORNER_DIRECTIONS:
            branches["embedding_heads"][kind] = per_stack(lambda: KeypointHead(channels, head_channels, 1))
    return branches


def centernet_head(in_channels, head_channels, out_channels):
    """3×3 conv (bias) → ReLU → 1×1 conv; keys ``0.*``, ``2.*`` as the official heads. ``head_channels=0``:
    a single 1×1 conv."""
    if head_channels <= 0:
        return nn.Conv2d(in_channels, out_channels, 1)
    return nn.Sequential(
        nn.Conv2d(in_channels, head_channels, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(head_channels, out_channels, 1),
    )


def build_centernet_heads(num_maps, channels, num_classes, head_channels=64, heatmap_bias_init=-2.19):
    """CenterNet's heads ``(hm, wh, reg)``: heatmap logits (``num_classes``), size (w, h) and offset (dx, dy), each a
    head (``num_maps == 1``, keys ``hm.0.*``) or a ``ModuleList`` of one per output map (keys ``hm.<map>.0.*``).
    Heatmap bias ``heatmap_bias_init``; size / offset: last conv N(0, 0.001), bias 0 (official init)."""

    def heads(out):
        mods = [centernet_head(channels, head_channels, out) for _ in range(num_maps)]
        return mods[0] if num_maps == 1 else nn.ModuleList(mods)

    hm, wh, reg = heads(num_classes), heads(2), heads(2)
    for name, module in (("hm", hm), ("wh", wh), ("reg", reg)):
        for head in [module] if num_maps == 1 else list(module):
            last = head[-1] if isinstance(head, nn.Sequential) else head
            if name == "hm":
                nn.init.constant_(last.bias, heatmap_bias_init)
            else:
                nn.init.normal_(last.weight, std=0.001)
                nn.init.zeros_(last.bias)
    return hm, wh, reg
