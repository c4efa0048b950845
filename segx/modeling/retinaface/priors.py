"""RetinaFace's square priors (the official ``PriorBox``)."""
import math

import torch

__all__ = ["retinaface_priors", "RetinaFacePriors"]


def retinaface_priors(image_size, min_sizes, steps, feature_sizes=None, device=None, normalized=True, clip=False):
    """Square priors of RetinaFace, ``[P,4]`` (cx, cy, w, h).

    Order: level, then row, then column, then min size (the order the heads' outputs are flattened in).
    A level of step ``s`` has a ``ceil(H/s) × ceil(W/s)`` grid (or ``feature_sizes[level]`` when given), prior
    centres at ((col + 0.5)·s, (row + 0.5)·s) and width = height = each of ``min_sizes[level]``.

    Args:
        image_size: (H, W) of the network input in pixels.
        normalized: divide by (W, H, W, H) as the official code does (else pixels).
        clip: clamp to [0, 1] (official "clip" option; only with ``normalized``).
    """
    h, w = image_size
    out = []
    for level, (sizes, step) in enumerate(zip(min_sizes, steps)):
        if feature_sizes is not None:
            fh, fw = feature_sizes[level]
        else:
            fh, fw = math.ceil(h / step), math.ceil(w / step)
        cy = (torch.arange(fh, device=device, dtype=torch.float32) + 0.5) * step
        cx = (torch.arange(fw, device=device, dtype=torch.float32) + 0.5) * step
        cy, cx = torch.meshgrid(cy, cx, indexing="ij")
        a = len(sizes)
        size = torch.tensor(sizes, device=device, dtype=torch.float32)
        centers = torch.stack([cx, cy], dim=-1)[:, :, None, :].expand(fh, fw, a, 2)
        wh = size[None, None, :, None].expand(fh, fw, a, 2)
        out.append(torch.cat([centers, wh], dim=-1).reshape(-1, 4))
    priors = torch.cat(out, dim=0)
    if normalized:
        priors = priors / torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        if clip:
            priors = priors.clamp(0, 1)
    return priors


class RetinaFacePriors:
    """Pixel priors ``[P,4]`` (cx, cy, w, h) of an input, cached per (input size, feature sizes, device) when not
    tracing (per-frame prior generation is host time at batch 1, DESIGN.md §6).

    Args:
        min_sizes: per level, the prior sides in input pixels. steps: the level strides.
        clip: clamp the normalised priors to [0, 1] (the official "clip" option) before returning to pixels.
    """

    def __init__(self, min_sizes, steps, clip=False):
        self.min_sizes = [list(s) for s in min_sizes]
        self.steps = list(steps)
        self.clip = clip
        self._cache = {}

    def __call__(self, image_size, feature_sizes, device=None):
        if torch.jit.is_tracing():
            return self._make(image_size, feature_sizes, device)
        key = (tuple(int(s) for s in image_size), tuple(tuple(int(v) for v in s) for s in feature_sizes), device)
        if key not in self._cache:
            self._cache[key] = self._make(image_size, feature_sizes, device)
        return self._cache[key]

    def _make(self, image_size, feature_sizes, device):
        priors = retinaface_priors(image_size, self.min_sizes, self.steps, feature_sizes=feature_sizes, device=device,
                                   normalized=self.clip, clip=self.clip)
        if self.clip:  # clipping is defined on normalised priors; back to pixels
            h, w = image_size
            priors = priors * torch.tensor([w, h, w, h], device=device, dtype=torch.float32)
        return priors
