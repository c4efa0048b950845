"""DensePose structures: the ground truth of one image's people (``gt_densepose``) and the dense outputs of the
detections (``pred_densepose``).

Coordinate convention (training and evaluation alike): a per-RoI map of S×S cells covers its box
[x0, x1) × [y0, y1) with cell (i, j) centred at (x0 + (j + 0.5)·w/S, y0 + (i + 0.5)·h/S); a point inside the box is
read from the map by bilinear interpolation between cell centres (``grid_sample`` with ``align_corners=False``,
border padding).
"""
import math
from dataclasses import dataclass
from typing import Optional

import torch
from torch.nn import functional as F

from detectron2.structures import Instances

__all__ = ["DensePoseInstanceTarget", "DensePoseTargets", "DensePoseOutput", "box_grid", "sample_maps", "resample_labels"]


def box_grid(points, boxes):
    """``grid_sample`` coordinates in [-1, 1] (align_corners=False) of ``points`` [P,2] (x, y, input pixels) in the
    frame of ``boxes`` [P,4] (XYXY): -1 at x0 / y0, +1 at x1 / y1."""
    wh = (boxes[:, 2:] - boxes[:, :2]).clamp(min=1e-6)
    return (points - boxes[:, :2]) / wh * 2.0 - 1.0


def sample_maps(maps, index, grid, channel=None):
    """Bilinear samples of per-RoI maps at points.

    Args:
        maps: ``[R,C,S,S]``. index: ``[P]`` long, the RoI of each point. grid: ``[P,2]`` in [-1, 1] (``box_grid``).
        channel: optional ``[P]`` long: sample only that channel of each point's map.
    Returns: ``[P,C]`` (``[P]`` with ``channel``); differentiable in ``maps`` (identical to ``grid_sample(...,
        align_corners=False, padding_mode="border")`` of each point's map, without building a grid per RoI).
    """
    s_h, s_w = maps.shape[-2:]
    gx = ((grid[:, 0] + 1) * s_w - 1) / 2
    gy = ((grid[:, 1] + 1) * s_h - 1) / 2
    x0f, y0f = gx.floor(), gy.floor()
    wx, wy = (gx - x0f)[:, None], (gy - y0f)[:, None]
    x0 = x0f.long()
    y0 = y0f.long()
    xs = (x0.clamp(0, s_w - 1), (x0 + 1).clamp(0, s_w - 1))
    ys = (y0.clamp(0, s_h - 1), (y0 + 1).clamp(0, s_h - 1))

    if channel is not None:
        wx, wy = wx[:, 0], wy[:, 0]

    def at(y, x):
        return maps[index, :, y, x] if channel is None else maps[index, channel, y, x]

    return ((1 - wy) * ((1 - wx) * at(ys[0], xs[0]) + wx * at(ys[0], xs[1]))
            + wy * ((1 - wx) * at(ys[1], xs[0]) + wx * at(ys[1], xs[1])))


@dataclass
class DensePoseInstanceTarget:
    """One person's DensePose annotation after the mapper's transforms (input-image coordinates).

    points ``[P,2]`` float (x, y, input pixels); parts ``[P]`` long (1..24); uv ``[P,2]`` float in [0, 1];
    uv_valid ``[P]`` bool (False: no U/V loss, e.g. a flip without the dataset's U/V symmetry);
    segm ``[M,M]`` uint8 coarse part labels (0 = background, 1..14) over ``segm_box`` ``[4]`` (XYXY, input pixels),
    or None when the annotation has no ``dp_masks``.
    """

    points: torch.Tensor
    parts: torch.Tensor
    uv: torch.Tensor
    uv_valid: torch.Tensor
    segm: Optional[torch.Tensor] = None
    segm_box: Optional[torch.Tensor] = None

    def to(self, device):
        return DensePoseInstanceTarget(*(None if t is None else t.to(device) for t in (
            self.points, self.parts, self.uv, self.uv_valid, self.segm, self.segm_box)))

    def __len__(self):
        return len(self.parts)


class DensePoseTargets:
    """``Instances.gt_densepose``: per instance a ``DensePoseInstanceTarget`` or None (a person without DensePose
    annotation). Indexable like the other ``gt_*`` fields (int, slice, bool or index tensors)."""

    def __init__(self, targets):
        self.targets = list(targets)

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, item):
        if isinstance(item, int):
            return self.targets[item]
        if isinstance(item, slice):
            return DensePoseTargets(self.targets[item])
        item = torch.as_tensor(item)
        if item.dtype == torch.bool:
            item = item.nonzero().flatten()
        return DensePoseTargets([self.targets[int(i)] for i in item.tolist()])

    def to(self, device):
        return DensePoseTargets([None if t is None else t.to(device) for t in self.targets])

    @staticmethod
    def cat(lists):
        return DensePoseTargets([t for x in lists for t in x.targets])

    def __repr__(self):
        n = sum(t is not None for t in self.targets)
        return f"DensePoseTargets({len(self)} instances, {n} with DensePose annotation)"


class DensePoseOutput(Instances):
    """``instances.pred_densepose``: the dense outputs of N detections, each an S×S map over its box.

    Fields (raw head outputs): ``coarse_segm`` [N,D,S,S] (logits, D = 2 person/background or 15 coarse parts),
    ``fine_segm`` [N,K+1,S,S] (part logits, 0 = background), ``u``, ``v`` [N,K+1,S,S] (per-part U and V, unclamped).
    It is an ``Instances`` of size (S, S), so detectron2's ``TracingAdapter`` flattens it; ``from_instances`` turns
    a rebuilt one back into this class.

    ``labels()`` / ``iuv()`` decode per RoI; ``sample(index, grid)`` reads I, U, V at points; ``paste_iuv`` draws the
    per-pixel IUV image of an input image.
    """

    def __init__(self, coarse_segm=None, fine_segm=None, u=None, v=None, image_size=None):
        if image_size is None:
            image_size = tuple(fine_segm.shape[-2:]) if fine_segm is not None else (0, 0)
        super().__init__(image_size)
        if fine_segm is not None:
            self.coarse_segm, self.fine_segm, self.u, self.v = coarse_segm, fine_segm, u, v

    @classmethod
    def from_instances(cls, x):
        """A ``DensePoseOutput`` with the fields of ``x`` (e.g. what ``TracingAdapter``'s schema rebuilt)."""
        return cls(x.coarse_segm, x.fine_segm, x.u, x.v, image_size=x.image_size)

    def __getitem__(self, item):
        if isinstance(item, int):
            item = slice(item, item + 1) if item != -1 else slice(item, None)
        return DensePoseOutput(self.coarse_segm[item], self.fine_segm[item], self.u[item], self.v[item],
                               image_size=self.image_size)

    def to(self, *args, **kwargs):
        return DensePoseOutput(*(t.to(*args, **kwargs) for t in (self.coarse_segm, self.fine_segm, self.u, self.v)),
                               image_size=self.image_size)

    @staticmethod
    def cat(outputs):
        return DensePoseOutput(*(torch.cat([getattr(o, k) for o in outputs]) for k in
                                 ("coarse_segm", "fine_segm", "u", "v")), image_size=outputs[0].image_size)

    @staticmethod
    def decode(coarse_segm, fine_segm, u, v):
        """Per-position I (long; 0 where the coarse segmentation says background), U and V of that part (clamped
        to [0, 1]) from logits/values with the channel in dim 1; returns ``(I, U, V)`` of the shape without dim 1."""
        parts = fine_segm.argmax(1)
        parts = parts * (coarse_segm.argmax(1) > 0).long()
        idx = parts.unsqueeze(1)
        return parts, u.gather(1, idx).squeeze(1).clamp(0, 1), v.gather(1, idx).squeeze(1).clamp(0, 1)

    def labels(self):
        """``[N,S,S]`` long part index per cell (0 = background)."""
        return self.decode(self.coarse_segm, self.fine_segm, self.u, self.v)[0]

    def iuv(self):
        """``[N,3,S,S]`` float: I (part index), U, V per cell."""
        i, u, v = self.decode(self.coarse_segm, self.fine_segm, self.u, self.v)
        return torch.stack([i.to(u.dtype), u, v], 1)

    def sample(self, index, grid):
        """I ``[P]`` long, U ``[P]``, V ``[P]`` at points: ``index`` [P] (detection), ``grid`` [P,2] (``box_grid`` of
        the points in that detection's box). Logits and U/V are interpolated bilinearly, then decoded."""
        out = [sample_maps(t, index, grid) for t in (self.coarse_segm, self.fine_segm, self.u, self.v)]
        return self.decode(*out)

    def paste_iuv(self, boxes, image_size, order=None):
        """The per-pixel IUV image ``[3,H,W]`` (I as float part index, 0 = background; U, V) of detections with
        ``boxes`` [N,4] (XYXY, pixels of an image of ``image_size`` (H, W)); each pixel centre inside a box reads
        that detection's maps. Later detections in ``order`` (default: N-1 .. 0, so detection 0, the highest
        scored, ends on top) overwrite earlier ones where both show a part."""
        h, w = (int(s) for s in image_size)
        out = torch.zeros(3, h, w, device=self.fine_segm.device)
        boxes = torch.as_tensor(boxes, dtype=torch.float32, device=out.device).reshape(-1, 4)
        order = range(len(boxes) - 1, -1, -1) if order is None else order
        for n in order:
            x0, y0, x1, y1 = boxes[n].tolist()
            # pixels whose centre (c + 0.5, r + 0.5) lies in [x0, x1) x [y0, y1)
            c0, c1 = max(math.ceil(x0 - 0.5), 0), min(math.ceil(x1 - 0.5), w)
            r0, r1 = max(math.ceil(y0 - 0.5), 0), min(math.ceil(y1 - 0.5), h)
            if c1 <= c0 or r1 <= r0:
                continue
            ys, xs = torch.meshgrid(torch.arange(r0, r1, device=out.device) + 0.5,
                                    torch.arange(c0, c1, device=out.device) + 0.5, indexing="ij")
            pts = torch.stack([xs.flatten(), ys.flatten()], -1)
            grid = box_grid(pts, boxes[n].expand(len(pts), 4))
            i, u, v = self.sample(torch.full((len(pts),), n, dtype=torch.long, device=out.device), grid)
            fg = i > 0
            patch = out[:, r0:r1, c0:c1].reshape(3, -1)
            patch[:, fg] = torch.stack([i.to(u.dtype), u, v])[:, fg]
            out[:, r0:r1, c0:c1] = patch.reshape(3, r1 - r0, c1 - c0)
        return out


def resample_labels(segm, segm_boxes, boxes, size):
    """Nearest-neighbour resampling of label maps into other boxes' frames.

    Args:
        segm: ``[R,M,M]`` integer labels over ``segm_boxes`` [R,4]. boxes: ``[R,4]`` target frames. size: S.
    Returns: ``[R,S,S]`` long labels at the S×S cell centres of each target box (0 outside the source box).
    """
    r = len(boxes)
    if r == 0:
        return torch.zeros(0, size, size, dtype=torch.long, device=boxes.device)
    t = (torch.arange(size, device=boxes.device, dtype=torch.float32) + 0.5) / size
    xs = boxes[:, 0:1] + t[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # [R,S]
    ys = boxes[:, 1:2] + t[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    pts = torch.stack([xs[:, None, :].expand(r, size, size), ys[:, :, None].expand(r, size, size)], -1)
    wh = (segm_boxes[:, 2:] - segm_boxes[:, :2]).clamp(min=1e-6)
    grid = (pts - segm_boxes[:, None, None, :2]) / wh[:, None, None] * 2 - 1
    out = F.grid_sample(segm[:, None].float(), grid, mode="nearest", padding_mode="zeros", align_corners=False)
    return out[:, 0].round().long()
