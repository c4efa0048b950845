"""RetinaFace's inference: SSD decoding, top-k, score threshold and NMS per image (traceable), and the rescaling
of the results to each input's size (with or without clipping to the image)."""
import torch
import torch.nn.functional as F

from detectron2.layers import batched_nms
from detectron2.structures import Boxes, Instances

from segx.modeling.postprocessing import rescale_instances
from segx.modeling.ssd_coding import DEFAULT_SCALE_CLAMP, decode_boxes, decode_landmarks

__all__ = ["NMS_MODES", "decode_faces", "face_detections", "face_nms", "rescale_faces"]

# "official": biubug6/Pytorch_Retinaface's py_cpu_nms, which counts widths, heights and overlaps with the +1-pixel
# convention (w = x1 − x0 + 1); "torchvision": IoU of the continuous boxes (torchvision / detectron2 NMS).
NMS_MODES = ("official", "torchvision")


def face_nms(boxes, scores, iou_threshold, mode="official"):
    """Greedy NMS of one image's ``boxes`` ``[N,4]`` (x0, y0, x1, y1, input pixels) by ``scores`` ``[N]``: the
    indices kept, by decreasing score. A box is dropped when its IoU with a kept box is > ``iou_threshold``.

    ``mode="official"``: IoU = inter / (area_a + area_b − inter) with area = (x1 − x0 + 1)(y1 − y0 + 1) and
    inter = max(0, min(x1) − max(x0) + 1) · max(0, min(y1) − max(y0) + 1), as ``py_cpu_nms`` computes it. That
    is exactly the continuous IoU of the boxes with x1 and y1 moved out by one pixel, which is what is run
    (torchvision's kernel, traceable). ``mode="torchvision"``: the continuous IoU of the boxes as they are.
    """
    if mode not in NMS_MODES:
        raise ValueError(f"face_nms: mode must be one of {NMS_MODES}, got {mode!r}")
    if mode == "official":
        boxes = torch.cat([boxes[:, :2], boxes[:, 2:] + 1], dim=1)
    return batched_nms(boxes, scores, torch.zeros_like(scores, dtype=torch.long), iou_threshold)


def decode_faces(logits, box_deltas, landmark_deltas, priors, image_sizes, *, variances=(0.1, 0.2),
                 scale_clamp=DEFAULT_SCALE_CLAMP, **limits):
    """``Instances`` per image from the head outputs ``[B,P,2]``, ``[B,P,4]``, ``[B,P,2K]`` and pixel priors
    ``[P,4]``. ``scale_clamp``: largest log(box side / prior side) (``ssd_coding.decode_boxes``; None: no clamp),
    so every decoded box is finite. ``limits``: the keyword arguments of ``face_detections``."""
    scores = F.softmax(logits, dim=-1)[..., 1]
    boxes = decode_boxes(box_deltas, priors, variances, scale_clamp=scale_clamp)
    b, p = landmark_deltas.shape[:2]
    landmarks = decode_landmarks(landmark_deltas.reshape(b, p, -1, 2), priors, variances)
    return [face_detections(scores[i], boxes[i], landmarks[i], size, **limits) for i, size in enumerate(image_sizes)]


def face_detections(scores, boxes, landmarks, image_size, *, score_thresh=0.02, topk_candidates=5000, nms_thresh=0.4,
                    max_detections=750, nms_mode="official"):
    """One image: ``scores`` ``[P]``, ``boxes`` ``[P,4]`` and ``landmarks`` ``[P,K,2]`` (input pixels) → ``Instances``
    with ``pred_boxes``, ``scores``, ``pred_classes`` (0) and ``pred_keypoints`` ``[N,K,3]`` (x, y, face score).
    ``nms_mode``: see ``face_nms``."""
    # Top-k before the score threshold keeps the same set as the official threshold-then-top-k and keeps
    # the number of candidates a function of the input size only (traceable).
    k = min(topk_candidates, scores.shape[0])
    scores, idx = scores.topk(k)
    boxes, landmarks = boxes[idx], landmarks[idx]
    keep = scores > score_thresh
    scores, boxes, landmarks = scores[keep], boxes[keep], landmarks[keep]
    classes = torch.zeros_like(scores, dtype=torch.long)
    keep = face_nms(boxes, scores, nms_thresh, nms_mode)[:max_detections]
    scores, boxes, landmarks, classes = scores[keep], boxes[keep], landmarks[keep], classes[keep]
    res = Instances(image_size)
    res.pred_boxes = Boxes(boxes)
    res.scores = scores
    res.pred_classes = classes
    res.pred_keypoints = torch.cat([landmarks, scores[:, None, None].expand(-1, landmarks.shape[1], 1)], dim=2)
    return res


def rescale_faces(results, batched_inputs, image_sizes, clip_boxes=False):
    """``[{"instances": ...}]`` with each image's faces rescaled from the network input to the input dict's
    ``height`` × ``width``. ``clip_boxes``: detectron2's ``detector_postprocess`` (boxes clipped to the image, empty
    ones dropped). Without it the boxes and landmarks are only scaled, as the official ``detect.py`` /
    ``test_widerface.py`` leave them (boxes may reach outside the image)."""
    if clip_boxes:
        return rescale_instances(results, batched_inputs, image_sizes)
    processed = []
    for inst, x, (h, w) in zip(results, batched_inputs, image_sizes):
        out_h, out_w = x.get("height", h), x.get("width", w)
        scale_x, scale_y = out_w / inst.image_size[1], out_h / inst.image_size[0]
        res = Instances((out_h, out_w), **inst.get_fields())
        boxes = inst.pred_boxes.tensor.clone()
        boxes[:, 0::2] *= scale_x
        boxes[:, 1::2] *= scale_y
        res.pred_boxes = Boxes(boxes)
        if inst.has("pred_keypoints"):
            kpts = inst.pred_keypoints.clone()
            kpts[:, :, 0] *= scale_x
            kpts[:, :, 1] *= scale_y
            res.pred_keypoints = kpts
        processed.append({"instances": res})
    return processed
