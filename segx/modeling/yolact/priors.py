"""YOLACT's anchors ("priors"): generated from the feature-map sizes, cached per size and device."""
import math

import torch

__all__ = ["make_priors", "octave_scales", "YolactPriors"]


def octave_scales(scales, scales_per_octave=1):
    """Per level, each base scale s → s·2^(j/n) for j = 0..n−1 (n = ``scales_per_octave``), in double precision
    (YOLACT++: ``[[s * 2 ** (j / 3) for j in range(3)] for s in (24, 48, 96, 192, 384)]``). n = 1 keeps them."""
    n = int(scales_per_octave)
    if n < 1:
        raise ValueError(f"YOLACT: ANCHOR_SCALES_PER_OCTAVE must be >= 1, got {scales_per_octave}")
    return [[float(s) * 2.0 ** (j / n) for s in level for j in range(n)] for level in scales]


def make_priors(feature_sizes, input_size, scales, ratios, square, device=None, relative=False):
    """YOLACT's anchors, ``[P,4]`` (cx, cy, w, h) in input pixels (``relative``: in fractions of the input).

    Level l with an ``Hl×Wl`` map has centres ((j + 0.5)·S/Wl, (i + 0.5)·S/Hl) (official: the map size, not
    the stride), and at each location, for each scale s of ``scales[l]`` then each ratio r:
    w = s·√r, h = s/√r (h = w when ``square``). Order: rows, columns, scales, ratios.

    ``relative=True`` gives the official ``make_priors`` values bit for bit: (j + 0.5)/Wl, s·√r/S, s/√r/S computed
    in double precision, then rounded to float32 (what inference decodes with, so its boxes equal the official
    ones). The pixel anchors (training targets) are computed in float32.
    """
    if len(feature_sizes) != len(scales):
        raise ValueError(f"make_priors: {len(feature_sizes)} feature maps but {len(scales)} ANCHOR_SCALES lists")
    dtype = torch.float64 if relative else torch.float32
    out = []
    for (h, w), level_scales in zip(feature_sizes, scales):
        wh = []
        for s in level_scales:
            for r in ratios:
                if relative:
                    pw = s * math.sqrt(r) / input_size
                    wh.append((pw, pw if square else s / math.sqrt(r) / input_size))
                else:
                    pw = s * math.sqrt(r)
                    wh.append((pw, pw if square else s / math.sqrt(r)))
        wh = torch.tensor(wh, dtype=dtype, device=device)  # [A,2]
        if relative:
            cy = (torch.arange(h, dtype=dtype, device=device) + 0.5) / h
            cx = (torch.arange(w, dtype=dtype, device=device) + 0.5) / w
        else:
            cy = (torch.arange(h, dtype=dtype, device=device) + 0.5) * (input_size / h)
            cx = (torch.arange(w, dtype=dtype, device=device) + 0.5) * (input_size / w)
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        centers = torch.stack([cx, cy], dim=-1).reshape(-1, 1, 2).expand(-1, wh.shape[0], 2)
        out.append(torch.cat([centers, wh[None].expand(centers.shape[0], -1, -1)], dim=-1).reshape(-1, 4))
    return torch.cat(out, 0).float()


class YolactPriors:
    """The anchors of a YOLACT model: ``priors(features)`` → ``[P,4]`` (cx, cy, w, h) in input pixels for these
    feature maps (a list of ``[B,C,Hl,Wl]``; ``priors(features, relative=True)``: in fractions of the input),
    computed once per map sizes, device and units.

    Args:
        input_size: S, the side of the square network input (pixels).
        scales: anchor sizes in input pixels, one list per level, the same count on every level (one shared head).
        ratios: aspect ratios w/h at each location.
        square: h = w for every anchor (official YOLACT, not ++).
        scales_per_octave: n > 1 expands every scale s into s·2^(j/n), j = 0..n−1 (``octave_scales``).
    """

    def __init__(self, input_size, scales, ratios=(1.0, 0.5, 2.0), square=True, scales_per_octave=1):
        scales = octave_scales(scales, scales_per_octave)
        if len({len(s) for s in scales}) != 1:
            raise ValueError("YOLACT: every level of ANCHOR_SCALES needs the same number of scales (one shared head)")
        self.input_size = int(input_size)
        self.scales = [tuple(float(x) for x in s) for s in scales]
        self.ratios = tuple(float(r) for r in ratios)
        self.square = bool(square)
        self._cache = {}

    @property
    def num_levels(self):
        return len(self.scales)

    @property
    def num_anchors(self):
        """Anchors per location."""
        return len(self.scales[0]) * len(self.ratios)

    def __call__(self, features, relative=False):
        """``[P,4]`` anchors for these maps, in input pixels (``relative``: fractions of the input, official)."""
        sizes = tuple((int(f.shape[-2]), int(f.shape[-1])) for f in features)
        key = (sizes, str(features[0].device), bool(relative))
        if key not in self._cache:
            self._cache[key] = make_priors(sizes, self.input_size, self.scales, self.ratios, self.square,
                                           device=features[0].device, relative=relative)
        return self._cache[key]
