"""Training targets of the keypoint detectors, built per image and collated per batch.

Per image (in the loader workers, ``segx.data.mappers.CornerNetMapper`` / ``CenterNetMapper``, or in the model when
an input has no ``"targets"``): Gaussian heatmaps on the image's own output map — the image padded to the model's
``size_divisibility``, divided by the stride — and, per object, integer map coordinates (x, y) and regression
targets. Per batch (in the model, ``collate``): the heatmaps zero-padded to the batch's map (images of a batch are
padded to the largest) and the flat indices y·W + x into that map. For a batch of equal-size images this is exactly
what a batch-level builder gives; for mixed sizes each image's targets no longer depend on the other images.

Devices: the per-image targets are always built on the CPU (``CPU``; the loader workers have no accelerator, and
drawing Gaussians is a per-object loop), whatever device the given boxes are on; ``collate`` assembles the batch
on the CPU and moves each batch tensor once to the model's ``device``. Every tensor is created with an explicit
``device``, so no CPU index tensor meets a device tensor.
"""
import math

import torch
from torch.nn import functional as F

from segx.modeling.keypoints.heatmaps import GAUSSIAN_RADIUS_VARIANTS, draw_gaussian, gaussian_radius

__all__ = ["padded_map_size", "HeatmapTargets", "CornerTargets", "CenterTargets"]

CPU = torch.device("cpu")


def padded_map_size(image_size, stride, size_divisibility=0):
    """(h, w) of the output map of an image of ``image_size`` (h, w) padded to ``size_divisibility``."""
    div = max(int(size_divisibility), 1)
    return tuple(-(-((int(s) + div - 1) // div * div) // int(stride)) for s in image_size)


def _pad_to(heatmap, map_size):
    h, w = heatmap.shape[-2:]
    if (h, w) == tuple(map_size):
        return heatmap
    if h > map_size[0] or w > map_size[1]:
        raise ValueError(f"targets of a {h}x{w} map do not fit the batch's {map_size[0]}x{map_size[1]} output map")
    return F.pad(heatmap, (0, map_size[1] - w, 0, map_size[0] - h))


class HeatmapTargets:
    """Base of the target builders: geometry (``stride``, ``size_divisibility``), per-input selection and the
    check that a mapper's targets were built for this model. Plain attributes only: pickles into loader workers."""

    def __init__(self, num_classes, stride, size_divisibility=0, *, min_overlap=0.7, radius_variant="original"):
        if radius_variant not in GAUSSIAN_RADIUS_VARIANTS:
            raise ValueError(f"{type(self).__name__}: radius_variant must be one of {GAUSSIAN_RADIUS_VARIANTS}, "
                             f"got {radius_variant!r}")
        self.num_classes = int(num_classes)
        self.stride = int(stride)
        self.size_divisibility = int(size_divisibility)
        self.min_overlap = float(min_overlap)
        self.radius_variant = radius_variant

    def map_size(self, image_size):
        return padded_map_size(image_size, self.stride, self.size_divisibility)

    def radius(self, box_h, box_w):
        """Integer Gaussian radius of a box of ``box_h`` × ``box_w`` map pixels (ceil'ed before the formula)."""
        return max(0, int(gaussian_radius(math.ceil(box_h), math.ceil(box_w), self.min_overlap, self.radius_variant)))

    def __call__(self, gt_boxes, gt_classes, image_size):
        """Targets of one image: ``gt_boxes`` ``[N,4]`` x0,y0,x1,y1 input pixels, ``gt_classes`` ``[N]``,
        ``image_size`` (h, w) of the (unpadded) network input."""
        raise NotImplementedError

    def for_inputs(self, batched_inputs, image_sizes):
        """Per input: its ``"targets"`` (a mapper's), else built here from its ``instances``."""
        out = []
        for i, (x, size) in enumerate(zip(batched_inputs, image_sizes)):
            t = x.get("targets")
            if t is None:
                inst = x["instances"]
                t = self(inst.gt_boxes.tensor, inst.gt_classes, tuple(int(s) for s in size))
            elif tuple(t["map_size"]) != self.map_size(size):
                raise ValueError(
                    f"batched_inputs[{i}]['targets'] were built for a {tuple(t['map_size'])} output map, the model's "
                    f"is {self.map_size(size)}: the mapper's config (stride, padding) differs from the model's"
                )
            out.append(t)
        return out


class CornerTargets(HeatmapTargets):
    """CornerNet's targets, as its ``sample/coco.py`` builds them: each keypoint at floor(coordinate / stride)
    (clamped into the map), offset = the fractional remainder, Gaussian radius from ceil(box size / stride) and
    ``min_overlap``; "ct" (box centre, CenterNet triplets) uses the same radius and σ = diameter /
    ``center_sigma_divisor`` (corners: diameter / 6)."""

    def __init__(self, num_classes, stride, size_divisibility=0, *, kinds=("tl", "br"), min_overlap=0.3,
                 radius_variant="corrected", center_sigma_divisor=6.0):
        super().__init__(num_classes, stride, size_divisibility, min_overlap=min_overlap, radius_variant=radius_variant)
        self.kinds = tuple(kinds)
        self.center_sigma_divisor = float(center_sigma_divisor)

    def __call__(self, gt_boxes, gt_classes, image_size):
        """Returns ``{"map_size": (h, w), kind: {"heatmap": [C,h,w], "points": [N,2] long (x, y) map pixels,
        "offset": [N,2]}}``, every object kept."""
        h, w = self.map_size(image_size)
        scale = 1.0 / self.stride
        boxes = gt_boxes.detach().to(CPU, torch.float64)
        n = len(boxes)
        out = {"map_size": (h, w)}
        for kind in self.kinds:
            out[kind] = {"heatmap": torch.zeros(self.num_classes, h, w, device=CPU),
                         "points": torch.zeros(n, 2, dtype=torch.long, device=CPU),
                         "offset": torch.zeros(n, 2, device=CPU)}
        for j, (box, cls) in enumerate(zip(boxes.tolist(), gt_classes.tolist())):
            if not 0 <= cls < self.num_classes:
                raise ValueError(f"CornerTargets: object {j} has class {cls}, NUM_CLASSES is {self.num_classes}")
            fx0, fy0, fx1, fy1 = [v * scale for v in box]
            points = {"tl": (fx0, fy0), "br": (fx1, fy1), "ct": ((fx0 + fx1) / 2, (fy0 + fy1) / 2)}
            radius = self.radius(max(fy1 - fy0, 0.0), max(fx1 - fx0, 0.0))
            for kind in self.kinds:
                fx = min(max(points[kind][0], 0.0), w - 1e-3)
                fy = min(max(points[kind][1], 0.0), h - 1e-3)
                x, y = int(fx), int(fy)
                t = out[kind]
                sigma = (2 * radius + 1) / self.center_sigma_divisor if kind == "ct" else None
                draw_gaussian(t["heatmap"][cls], (x, y), radius, sigma=sigma)
                t["points"][j, 0], t["points"][j, 1] = x, y
                t["offset"][j, 0], t["offset"][j, 1] = fx - x, fy - y
        return out

    def collate(self, targets, map_size, device=None):
        """Per-image targets → the batch's on a ``map_size`` (H, W) map: kind → (heatmap ``[B,C,H,W]``, index
        ``[B,M]`` long into H·W, offset ``[B,M,2]``) and "mask" → ``[B,M]`` bool, M = max objects (at least 1),
        all on ``device`` (None: the CPU). Assembled on the CPU (per-image targets on any device are read there)."""
        H, W = (int(s) for s in map_size)
        b = len(targets)
        m = max([1] + [len(t[self.kinds[0]]["points"]) for t in targets])
        mask = torch.zeros(b, m, dtype=torch.bool, device=CPU)
        out = {}
        for kind in self.kinds:
            index = torch.zeros(b, m, dtype=torch.long, device=CPU)
            offset = torch.zeros(b, m, 2, device=CPU)
            for i, t in enumerate(targets):
                pts = t[kind]["points"].to(CPU)
                index[i, : len(pts)] = pts[:, 1] * W + pts[:, 0]
                offset[i, : len(pts)] = t[kind]["offset"].to(CPU)
                mask[i, : len(pts)] = True
            heat = torch.stack([_pad_to(t[kind]["heatmap"].to(CPU), (H, W)) for t in targets])
            out[kind] = (heat.to(device), index.to(device), offset.to(device))
        out["mask"] = mask.to(device)
        return out


class CenterTargets(HeatmapTargets):
    """CenterNet's targets (xingyizhou/CenterNet ``datasets/sample/ctdet.py``): boxes divided by the stride and
    clipped to [0, w−1] × [0, h−1] of the map, boxes with zero width or height after that skipped; a Gaussian at
    each floor'ed centre, size (w, h) and offset (centre − integer centre) in output pixels."""

    def __call__(self, gt_boxes, gt_classes, image_size):
        """Returns ``{"map_size": (h, w), "heatmap": [C,h,w], "points": [M,2] long (x, y) integer centres,
        "size": [M,2], "offset": [M,2]}`` for the M kept objects."""
        h, w = self.map_size(image_size)
        heat = torch.zeros(self.num_classes, h, w, device=CPU)
        if gt_boxes.numel() == 0:
            z = torch.zeros(0, 2, device=CPU)
            return {"map_size": (h, w), "heatmap": heat, "points": torch.zeros(0, 2, dtype=torch.long, device=CPU),
                    "size": z, "offset": z.clone()}
        boxes = gt_boxes.detach().to(CPU, torch.float32) / self.stride
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w - 1)
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h - 1)
        bw, bh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        keep = (bw > 0) & (bh > 0)
        boxes, bw, bh, classes = boxes[keep], bw[keep], bh[keep], gt_classes.to(CPU)[keep]
        ctr = torch.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], dim=1)
        ctr_int = ctr.floor()
        for i in range(len(boxes)):
            c = int(classes[i])
            if not 0 <= c < self.num_classes:
                raise ValueError(f"CenterTargets: gt class {c} outside [0, {self.num_classes}) "
                                 "(MODEL.CENTERNET.NUM_CLASSES)")
            draw_gaussian(heat[c], (int(ctr_int[i, 0]), int(ctr_int[i, 1])), self.radius(float(bh[i]), float(bw[i])))
        return {"map_size": (h, w), "heatmap": heat, "points": ctr_int.long(), "size": torch.stack([bw, bh], dim=1),
                "offset": ctr - ctr_int}

    def collate(self, targets, map_size, device=None):
        """Per-image targets → ``{"heatmap": [B,C,H,W], "index": [M] flat H·W, "batch": [M] image of each object,
        "size": [M,2], "offset": [M,2]}`` on a ``map_size`` (H, W) map, all on ``device`` (None: the CPU).
        Assembled on the CPU (per-image targets on any device are read there)."""
        W = int(map_size[1])
        heat = torch.stack([_pad_to(t["heatmap"].to(CPU), tuple(int(s) for s in map_size)) for t in targets])
        points = [t["points"].to(CPU) for t in targets]
        index = torch.cat([p[:, 1] * W + p[:, 0] for p in points])
        batch = torch.cat([torch.full((len(p),), i, dtype=torch.long, device=CPU) for i, p in enumerate(points)])
        return {
            "heatmap": heat.to(device), "index": index.to(device), "batch": batch.to(device),
            "size": torch.cat([t["size"].to(CPU) for t in targets]).to(device),
            "offset": torch.cat([t["offset"].to(CPU) for t in targets]).to(device),
        }
