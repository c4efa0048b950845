"""Landmarks from the crop outputs back in image pixels (traceable), and the official MPII coordinate truncation."""
import torch
import torch.nn.functional as F

from detectron2.structures import Boxes, Instances

from segx.modeling.keypoints.heatmaps import argmax_decode
from segx.modeling.landmarks.crops import crop_to_image

__all__ = ["DECODINGS", "official_heatmap_decode", "decode_crop_landmarks", "landmark_instances",
           "truncate_coordinates"]

# "official": princeton-vl/pytorch_stacked_hourglass's test-time decoding (``official_heatmap_decode``);
# "segx": arg-max of the raw maps, quarter-pixel shift only toward a strictly larger neighbour, not at the border
# (``keypoints.heatmaps.argmax_decode``; pose-hg-train's ``getPreds`` + ``postprocess`` except that it puts a
# landmark whose maximum is not positive at pixel (0, 0)).
DECODINGS = ("official", "segx")


def official_heatmap_decode(heatmaps):
    """pytorch_stacked_hourglass's decoding of heatmaps ``[N,K,H,W]`` (``test.py`` ``inference`` and
    ``utils/group.py`` ``HeatmapParser``, without the flip test).

    1. The maps are clamped at 1 (``np.minimum(det, 1)``).
    2. The peak is the maximum of the 3×3-max-suppressed map (pixels that are not the maximum of their 3×3
       window set to 0), found with ``topk(1)`` as the official parser does (between equal values, e.g. a plateau
       at the clamp, the pixel ``topk`` returns: implementation-defined, the same as the official code's under
       the same torch build); its value is the confidence, so a landmark whose map has no positive local maximum
       gets confidence 0 (or the map's value, when every pixel is a local maximum).
    3. When that value is > 0, x moves +0.25 when the right neighbour is larger than the left one, else −0.25
       (ties go −0.25); at a border the missing neighbour is the peak itself, so the left border always goes
       −0.25 and the right border +0.25 unless the peak ties its left neighbour. Likewise y (down / up). Then
       +0.5: the point is in continuous coordinates (pixel i spans [i, i+1)).
    4. When it is not > 0, the point is the peak pixel's index, unshifted and without the +0.5.

    Returns: points ``[N,K,2]`` (x, y) in continuous heatmap pixels, confidences ``[N,K]``. Traceable.
    """
    hm = heatmaps.clamp(max=1.0)
    n, k, h, w = hm.shape
    peaks = hm * (F.max_pool2d(hm, 3, stride=1, padding=1) == hm).to(hm.dtype)
    flat = hm.reshape(n, k, h * w)
    val, index = peaks.reshape(n, k, h * w).topk(1, dim=2)  # as the official parser: ties are topk's choice
    val, index = val[..., 0], index[..., 0]
    x = index % w
    y = torch.div(index, w, rounding_mode="floor")

    def at(xx, yy):
        return flat.gather(2, (yy.clamp(0, h - 1) * w + xx.clamp(0, w - 1))[..., None])[..., 0]

    dx = torch.where(at(x + 1, y) > at(x - 1, y), 0.25, -0.25).to(hm.dtype)
    dy = torch.where(at(x, y + 1) > at(x, y - 1), 0.25, -0.25).to(hm.dtype)
    plain = torch.stack([x, y], dim=2).to(hm.dtype)
    shifted = plain + torch.stack([dx, dy], dim=2) + 0.5
    return torch.where((val > 0)[..., None], shifted, plain), val


def decode_crop_landmarks(output, centres, half, heatmap_size=None, decoding="segx"):
    """Image points ``[N,K,2]`` and confidences ``[N,K]`` of ``N`` unrotated crops.

    ``output``: heatmaps ``[N,K,H_m,H_m]`` (``heatmap_size`` = H_m; ``decoding`` "official":
    ``official_heatmap_decode``, "segx": arg-max with the quarter-pixel shift, confidence = the maximum) or
    regressed crop coordinates ``[N,K,2]`` (``heatmap_size`` None; confidence 1).
    """
    if heatmap_size is not None:
        if decoding == "official":
            points, scores = official_heatmap_decode(output)
            u = points * 2 / heatmap_size - 1
        elif decoding == "segx":
            coords, scores = argmax_decode(output)
            u = (coords * 2 + 1) / heatmap_size - 1
        else:
            raise ValueError(f"decode_crop_landmarks: decoding must be one of {DECODINGS}, got {decoding!r}")
    else:
        u, scores = output, torch.ones_like(output[..., 0])
    return crop_to_image(u, centres, half), scores


def truncate_coordinates(points):
    """pose-hg-train's MPII post-processing (``transformPreds`` → ``transform``, which subtracts 1, maps the point
    to the image, truncates to an integer and adds 1; pytorch_stacked_hourglass's ``transform`` truncates too):
    the final coordinate x becomes the integer pixel ``trunc(x)`` (1-based: ``trunc(x) + 1``), written in
    detectron2's continuous coordinates as that pixel's centre, ``trunc(x) + 0.5``, so that distances to ground
    truth loaded by ``register_mpii`` equal the official ones. ``points`` ``[..., 2]`` (x, y) image pixels."""
    return torch.trunc(points) + 0.5


def landmark_instances(image_size, boxes, points, scores):
    """``Instances`` of one image: ``pred_boxes`` (the person boxes), ``scores`` (mean landmark confidence),
    ``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y, confidence)."""
    res = Instances(image_size)
    res.pred_boxes = Boxes(boxes)
    res.scores = scores.mean(dim=1)
    res.pred_classes = torch.zeros_like(scores[:, 0], dtype=torch.int64)
    res.pred_keypoints = torch.cat([points, scores[..., None]], dim=-1)
    return res
