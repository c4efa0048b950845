"""YOLACT's input resize and its decoding: boxes from anchors, Fast NMS, masks assembled from prototypes,
YOLACT++ re-scoring, and the detections at any output resolution."""
import torch
import torch.nn.functional as F

from detectron2.structures import Boxes, Instances

from segx.layers import assemble_masks
from segx.modeling.fast_nms import multiclass_fast_nms
from segx.modeling.ssd_coding import decode_boxes

from .crop import crop_boxes

__all__ = ["square_resize", "detect", "detections_to_instances", "rescale_results"]


def square_resize(image, size):
    """``[C,H,W]`` float image → ``[C,size,size]``: bilinear, half-pixel centres (``align_corners=False``, as
    cv2.INTER_LINEAR in dbolya/yolact), aspect ratio ignored."""
    return F.interpolate(image[None], size=(size, size), mode="bilinear", align_corners=False)[0]


def detect(predictions, *, input_size, box_variances=(0.1, 0.2), score_thresh=0.05, nms_thresh=0.5, topk=200,
           max_detections=100, crop_mode="official", maskiou_net=None):
    """Per image of ``predictions`` (``YOLACT.predict``'s dict): ``{"boxes": [N,4]`` x0,y0,x1,y1 in pixels of the
    S×S network input, ``"scores": [N]``, ``"classes": [N]``, ``"masks": [N,Hp,Wp]`` soft masks at prototype
    resolution, cropped to the box}, sorted by score (Fast NMS, official ``Detect``). With ``maskiou_net``
    (YOLACT++) each score is multiplied by the predicted IoU of its mask for its class."""
    protos, coeffs = predictions["protos"], predictions["coeffs"]
    scores = predictions["logits"].softmax(dim=-1)[..., 1:]
    boxes = decode_boxes(predictions["box_deltas"], predictions["priors"], box_variances)
    Hp, Wp = protos.shape[-2:]
    S = input_size
    out = []
    for b in range(boxes.shape[0]):
        idx, classes, det_scores = multiclass_fast_nms(boxes[b], scores[b], score_thresh, nms_thresh, topk,
                                                       max_detections)
        det_boxes = boxes[b][idx]
        to_proto = torch.tensor([Wp / S, Hp / S, Wp / S, Hp / S], device=det_boxes.device)
        proto_boxes = det_boxes * to_proto
        soft = assemble_masks(protos[b], coeffs[b][idx], crop_boxes(proto_boxes, Hp, Wp, crop_mode))
        if maskiou_net is not None:
            det_scores = det_scores * maskiou_net(soft[:, None]).gather(1, classes[:, None])[:, 0]
        out.append({"boxes": det_boxes, "scores": det_scores, "classes": classes, "masks": soft})
    return out


def detections_to_instances(det, height, width, input_size, mask_thresh=0.5):
    """One image's ``detect`` output → ``Instances`` of size ``height×width``: boxes scaled from the S×S input
    (clipped), soft masks upsampled from prototype resolution straight to ``height×width`` (bilinear) and
    thresholded at ``mask_thresh`` (bool ``pred_masks``)."""
    S = input_size
    boxes = det["boxes"]
    scale = torch.stack([torch.as_tensor(width / S), torch.as_tensor(height / S)] * 2).to(boxes)
    out_boxes = Boxes(boxes * scale)
    out_boxes.clip((height, width))
    # detections as the batch dimension: interpolate accepts an empty batch, not empty channels
    masks = F.interpolate(det["masks"][:, None], size=(int(height), int(width)), mode="bilinear",
                          align_corners=False)[:, 0]
    inst = Instances((int(height), int(width)))
    inst.pred_boxes = out_boxes
    inst.scores = det["scores"]
    inst.pred_classes = det["classes"]
    inst.pred_masks = masks > mask_thresh
    # what postprocess needs to go to another resolution without resizing thresholded masks (not a field, so
    # neither export nor detectron2's evaluators see it)
    inst._detections = det
    return inst


def rescale_results(results, batched_inputs, input_size, mask_thresh=0.5):
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
                inst = detections_to_instances(det, height, width, input_size, mask_thresh)
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
