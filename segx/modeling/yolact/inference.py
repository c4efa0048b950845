"""YOLACT's input resize and its decoding: boxes from anchors, Fast NMS, masks assembled from prototypes,
YOLACT++ re-scoring, and the detections at any output resolution."""
import torch
import torch.nn.functional as F

from detectron2.structures import Boxes, Instances

from segx.layers import assemble_masks
from segx.modeling.fast_nms import multiclass_fast_nms
from segx.modeling.ssd_coding import DEFAULT_SCALE_CLAMP, decode_boxes

from .crop import crop_boxes

__all__ = ["square_resize", "detect", "detections_to_instances", "rescale_results", "official_output_boxes",
           "upsample_masks", "BOX_OUTPUT_MODES"]


def square_resize(image, size):
    """``[C,H,W]`` float image → ``[C,size,size]``: bilinear, half-pixel centres (``align_corners=False``, as
    cv2.INTER_LINEAR in dbolya/yolact), aspect ratio ignored."""
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def detect(predictions, *, input_size, box_variances=(0.1, 0.2), score_thresh=0.05, nms_thresh=0.5, topk=200,
           max_detections=100, crop_mode="official", maskiou_net=None, rescore_box=False,
           scale_clamp=DEFAULT_SCALE_CLAMP):
    """Per image of ``predictions`` (``YOLACT.predict``'s dict): ``{"boxes": [N,4]`` x0,y0,x1,y1 in fractions of the
    network input (the official units: multiply by an image's width and height to place them on it),
    ``"scores": [N]``, ``"classes": [N]``, ``"masks": [N,Hp,Wp]`` soft masks at prototype resolution, cropped to the
    box}, sorted by score (Fast NMS, official ``Detect``). Anchors: ``predictions["priors_relative"]`` (else
    ``"priors"`` / ``input_size``); decoding, Fast NMS and the crop then run on the official numbers bit for bit.

    With ``maskiou_net`` (YOLACT++) the mask score is the score times the predicted IoU of the mask for its class
    (official ``rescore_mask``): ``"mask_scores": [N]`` beside the unchanged box ``"scores"`` (official default,
    ``rescore_bbox`` off); with ``rescore_box`` both are re-scored and there is one ``"scores"``.
    ``scale_clamp``: ``decode_boxes``' bound on log(box size / anchor size) (None: no bound, as the official).
    """
    protos, coeffs = predictions["protos"], predictions["coeffs"]
    scores = predictions["logits"].softmax(dim=-1)[..., 1:]
    priors = predictions.get("priors_relative")
    if priors is None:
        priors = predictions["priors"] / input_size
    boxes = decode_boxes(predictions["box_deltas"], priors, box_variances, scale_clamp=scale_clamp)
    Hp, Wp = protos.shape[-2:]
    out = []
    for b in range(boxes.shape[0]):
        idx, classes, det_scores = multiclass_fast_nms(boxes[b], scores[b], score_thresh, nms_thresh, topk,
                                                       max_detections)
        det_boxes = boxes[b][idx]
        to_proto = torch.tensor([Wp, Hp, Wp, Hp], dtype=det_boxes.dtype, device=det_boxes.device)
        proto_boxes = det_boxes * to_proto
        soft = assemble_masks(protos[b], coeffs[b][idx], crop_boxes(proto_boxes, Hp, Wp, crop_mode))
        det = {"boxes": det_boxes, "scores": det_scores, "classes": classes, "masks": soft}
        if maskiou_net is not None:
            mask_scores = det_scores * maskiou_net(soft[:, None]).gather(1, classes[:, None])[:, 0]
            det["scores" if rescore_box else "mask_scores"] = mask_scores
        out.append(det)
    return out


def official_output_boxes(boxes, height, width):
    """dbolya/yolact's output boxes (``postprocess`` → ``sanitize_coordinates``, then ``.long()``): per axis the
    smaller corner first, x0 ≥ 0 and x1 ≤ ``width`` (y likewise with ``height``; one-sided, as the official
    clamps), then truncated to integers (kept as float). ``boxes`` ``[N,4]`` in output pixels."""
    w = torch.as_tensor(width).to(boxes)
    h = torch.as_tensor(height).to(boxes)
    x0 = torch.min(boxes[:, 0], boxes[:, 2]).clamp(min=0)
    x1 = torch.minimum(torch.max(boxes[:, 0], boxes[:, 2]), w)
    y0 = torch.min(boxes[:, 1], boxes[:, 3]).clamp(min=0)
    y1 = torch.minimum(torch.max(boxes[:, 1], boxes[:, 3]), h)
    out = torch.stack([x0, y0, x1, y1], dim=1)
    return out.abs().floor() * out.sign()  # trunc (toward zero, as .long()); ONNX has no Trunc before opset 18


def upsample_masks(masks, height, width, layout="channels"):
    """Soft masks ``[N,h,w]`` → ``[N,height,width]``, bilinear (half-pixel centres).

    ``layout="channels"``: the detections as the channels of one image (``[1,N,h,w]``, as the official
    postprocess); ``"batch"``: as a batch of one-channel images (``[N,1,h,w]``). Both give the same values. The
    batch layout is used for N = 0 and while tracing (interpolate refuses zero channels; a traced graph must take
    any N)."""
    # traced: the sizes stay traced values (the graph takes any image size); eager: Python ints
    size = (height, width) if torch.jit.is_tracing() else (int(height), int(width))
    if layout == "batch" or torch.jit.is_tracing() or masks.shape[0] == 0:
        return F.interpolate(masks[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    if layout != "channels":
        raise ValueError(f"upsample_masks: layout must be 'channels' or 'batch', got {layout!r}")
    return F.interpolate(masks[None], size=size, mode="bilinear", align_corners=False)[0]


BOX_OUTPUT_MODES = ("official", "float")


def detections_to_instances(det, height, width, input_size=None, mask_thresh=0.5, box_mode="official"):
    """One image's ``detect`` output → ``Instances`` of size ``height×width``: boxes (fractions of the input)
    scaled by ``width``, ``height``,
    soft masks upsampled from prototype resolution straight to ``height×width`` (bilinear) and thresholded at
    ``mask_thresh`` (bool ``pred_masks``); ``mask_scores`` when ``det`` has them (YOLACT++).

    ``box_mode``: ``"official"`` (``official_output_boxes``: corners ordered, clamped, truncated to integers) or
    ``"float"`` (continuous coordinates clipped to the image, detectron2's ``Boxes.clip``).
    """
    del input_size  # boxes are in fractions of the input (kept for callers that pass S)
    boxes = det["boxes"]
    scale = torch.stack([torch.as_tensor(width), torch.as_tensor(height)] * 2).to(boxes)
    if box_mode == "official":
        out_boxes = Boxes(official_output_boxes(boxes * scale, height, width))
    elif box_mode == "float":
        out_boxes = Boxes(boxes * scale)
        out_boxes.clip((height, width))
    else:
        raise ValueError(f"YOLACT: BOX_OUTPUT_MODE must be one of {BOX_OUTPUT_MODES}, got {box_mode!r}")
    masks = upsample_masks(det["masks"], height, width)
    # traced: a size tensor, so the exported image_size follows the input (detectron2's shapes_to_tensor)
    size = torch.stack([torch.as_tensor(height), torch.as_tensor(width)]) if torch.jit.is_tracing() else None
    inst = Instances((int(height), int(width)) if size is None else size)
    inst.pred_boxes = out_boxes
    inst.scores = det["scores"]
    inst.pred_classes = det["classes"]
    inst.pred_masks = masks > mask_thresh
    if "mask_scores" in det:
        inst.mask_scores = det["mask_scores"]
    # what postprocess needs to go to another resolution without resizing thresholded masks (not a field, so
    # neither export nor detectron2's evaluators see it)
    inst._detections = det
    return inst


def rescale_results(results, batched_inputs, input_size, mask_thresh=0.5, box_mode="official"):
    """``decode``'s ``Instances`` → ``[{"instances": ...}]`` at each input's ``height`` × ``width`` (kept when
    absent). Masks are re-made from the prototype-resolution soft masks (one upsample, as at the input size);
    results without them (built elsewhere) get their bool masks resized."""
    processed = []
    for inst, x in zip(results, batched_inputs):
        h, w = inst.image_size
        height, width = x.get("height", h), x.get("width", w)
        if (int(height), int(width)) != (int(h), int(w)):
            det = getattr(inst, "_detections", None)
            if det is not None:
                inst = detections_to_instances(det, height, width, input_size, mask_thresh, box_mode)
            else:
                inst = _resize_instances(inst, int(height), int(width))
        vars(inst).pop("_detections", None)
        processed.append({"instances": inst})
    return processed


def _resize_instances(inst, height, width):
    h, w = inst.image_size
    out = Instances((height, width))
    for k, v in inst.get_fields().items():
        if k == "pred_boxes":
            v = Boxes(v.tensor * v.tensor.new_tensor([width / w, height / h, width / w, height / h]))
            v.clip((height, width))
        elif k == "pred_masks":
            v = F.interpolate(v[:, None].float(), size=(height, width), mode="bilinear", align_corners=False)[:, 0]
            v = v > 0.5
        out.set(k, v)
    return out
