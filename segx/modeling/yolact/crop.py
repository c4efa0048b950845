"""How YOLACT crops assembled masks to boxes."""
import torch

__all__ = ["crop_boxes", "CROP_MODES"]

CROP_MODES = ("official", "center")


def crop_boxes(boxes, height, width, mode="official"):
    """Boxes ``[N,4]`` in prototype pixels → the boxes ``assemble_masks`` should crop with.

    ``"center"``: unchanged (pixel (i, j) inside when x0 ≤ j + 0.5 < x1). ``"official"``: dbolya/yolact's
    ``crop(padding=1)``: pixel inside when max(x0 − 1, 0) ≤ j < min(x1 + 1, W) (index, not centre), which is
    the centre test on those bounds shifted by half a pixel.
    """
    if mode == "center":
        return boxes
    if mode != "official":
        raise ValueError(f"crop_boxes: mode must be 'official' or 'center', got {mode!r}")
    x0 = torch.min(boxes[:, 0], boxes[:, 2])
    x1 = torch.max(boxes[:, 0], boxes[:, 2])
    y0 = torch.min(boxes[:, 1], boxes[:, 3])
    y1 = torch.max(boxes[:, 1], boxes[:, 3])
    return torch.stack([
        (x0 - 1).clamp(min=0) + 0.5, (y0 - 1).clamp(min=0) + 0.5,
        (x1 + 1).clamp(max=width) + 0.5, (y1 + 1).clamp(max=height) + 0.5,
    ], dim=1)
