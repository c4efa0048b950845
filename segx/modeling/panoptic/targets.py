"""Training targets of UPSNet's semantic and panoptic heads, from detectron2's "separated" panoptic data.

Semantic labels are detectron2's "separated" labels (``register_coco_panoptic_separated``): 0 = any thing,
``1..S`` = stuff, ``ignore`` (255) = unlabelled. Stuff label ``l`` is semantic channel ``l - 1``; thing class
``c`` is channel ``S + c``.
"""
import numpy as np
import torch
import torch.nn.functional as F

from detectron2.structures import BitMasks, PolygonMasks

__all__ = [
    "gt_bitmasks",
    "thing_semantic_targets",
    "upsnet_panoptic_targets",
    "sample_labels_in_boxes",
    "sample_kept_instances",
]


def gt_bitmasks(instances, height, width):
    """GT masks of ``instances`` (polygons or bitmasks, or none) as ``[N, height, width]`` bool on the device of
    ``instances.gt_classes``, padded with False to the padded image size. (Polygons stay NumPy arrays when
    ``Instances.to`` moves the rest: they are rasterised on the CPU and moved here.)"""
    n = len(instances)
    device = instances.gt_classes.device
    if n == 0 or not instances.has("gt_masks"):
        return torch.zeros((n, height, width), dtype=torch.bool, device=device)
    m = instances.gt_masks
    h, w = instances.image_size
    if isinstance(m, PolygonMasks):
        m = BitMasks.from_polygon_masks(m, h, w)
    t = m.tensor.to(device=device, dtype=torch.bool)
    return F.pad(t, (0, width - t.shape[2], 0, height - t.shape[1]))


def thing_semantic_targets(sem_labels, gt_masks, gt_classes, num_stuff, ignore_value=255):
    """UPSNet semantic-head labels from separated labels: stuff ``l`` → channel ``l-1``, a thing pixel →
    ``S + class`` of the instance mask covering it (later masks win), thing pixels under no mask → ignore.

    ``sem_labels``: ``[H,W]`` long; ``gt_masks``: ``[N,H,W]`` bool; ``gt_classes``: ``[N]``."""
    out = torch.where((sem_labels > 0) & (sem_labels != ignore_value), sem_labels - 1,
                      torch.full_like(sem_labels, ignore_value))
    for m, c in zip(gt_masks, gt_classes):
        out[m & (sem_labels != ignore_value)] = num_stuff + int(c)
    return out


def upsnet_panoptic_targets(sem_labels, gt_masks, keep, num_stuff, with_unknown, ignore_value=255):
    """Target of the panoptic logits: stuff label ``l`` → ``l-1``; the pixels of the ``j``-th kept instance
    → ``S + j``; thing pixels of dropped instances or of no instance → the unknown channel ``S + #kept``
    (ignore without it). ``sem_labels``: ``[H,W]`` separated labels; ``gt_masks``: ``[N,H,W]`` bool;
    ``keep``: ``[N]`` bool."""
    num_kept = int(keep.sum())
    unknown = num_stuff + num_kept if with_unknown else ignore_value
    out = torch.where(sem_labels == 0, torch.full_like(sem_labels, unknown), sem_labels - 1)
    out[sem_labels == ignore_value] = ignore_value
    j = 0
    for m, k in zip(gt_masks, keep):
        if bool(k):
            out[m] = num_stuff + j
            j += 1
        else:
            out[m] = unknown
    return out


def sample_labels_in_boxes(labels, rois, size):
    """Nearest labels at the centres of a ``size``×``size`` grid over each RoI: ``labels`` ``[B,H,W]``,
    ``rois`` ``[R,5]`` (batch index, x0, y0, x1, y1 in label pixels) → ``[R,size,size]``."""
    h, w = labels.shape[-2:]
    t = (torch.arange(size, device=rois.device, dtype=rois.dtype) + 0.5) / size
    xs = rois[:, 1:2] + t[None] * (rois[:, 3:4] - rois[:, 1:2])
    ys = rois[:, 2:3] + t[None] * (rois[:, 4:5] - rois[:, 2:3])
    xi = xs.floor().long().clamp(0, w - 1)
    yi = ys.floor().long().clamp(0, h - 1)
    bi = rois[:, 0].long()
    return labels[bi[:, None, None], yi[:, :, None], xi[:, None, :]]


def sample_kept_instances(num_instances, keep_fraction, device=None):
    """``[N]`` bool: the GT instances the panoptic head sees in training, ``max(int(N·keep_fraction), 1)`` of them
    drawn without replacement with NumPy's global RNG (all of them when ``keep_fraction >= 1``; the draw is made
    either way, so the random stream does not depend on the fraction). The dropped ones are the unknown
    channel's target."""
    keep = torch.zeros(num_instances, dtype=torch.bool, device=device)
    if num_instances > 0:
        k = max(int(num_instances * keep_fraction), 1) if keep_fraction < 1 else num_instances
        keep[torch.from_numpy(np.random.choice(num_instances, k, replace=False)).to(device)] = True
    return keep
