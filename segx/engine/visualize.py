"""Drawing every output type of segx's architectures with detectron2's ``Visualizer``.

``draw_outputs(image_rgb, outputs, metadata)`` draws what ``outputs`` (one image's detectron2-style dict) holds:

* ``panoptic_seg``: stuff and thing segments (``draw_panoptic_seg``); thing segments with a ``"track_id"`` (VPSNet on a
  video) get one colour per identity and "#id" in their label;
* else ``sem_seg`` (argmax of the class scores), then ``instances``: boxes, classes and scores, masks (YOLACT, Mask
  R-CNN), keypoints (Stacked Hourglass heatmap keypoints, RetinaFace's 5 face landmarks, Mask R-CNN keypoints;
  connected when the metadata has ``keypoint_connection_rules``), ``track_ids`` (one colour per identity) and
  ``pred_densepose`` (the part index I as colours, U and V as iso-lines every 0.2, under the boxes).

Instances below ``score_threshold`` are not drawn. ``header``: a line of text at the top left (e.g. a video's frame
index and key-frame flag).
"""
import numpy as np

from detectron2.data.catalog import Metadata
from detectron2.utils.colormap import colormap
from detectron2.utils.visualizer import ColorMode, GenericMask, Visualizer, _create_text_labels

__all__ = ["draw_outputs", "complete_metadata", "track_colour", "densepose_overlay"]

_PALETTE = colormap(rgb=True, maximum=1)


def track_colour(track_id):
    """One colour (RGB in [0, 1]) per identity, the same in every frame."""
    return _PALETTE[(int(track_id) * 7 + 3) % len(_PALETTE)]


def complete_metadata(metadata, outputs=None):
    """A copy of ``metadata`` with the class names drawing needs: ``thing_classes`` / ``stuff_classes`` named by
    index ("class 3", "stuff 1") where the dataset's metadata has none or too few for ``outputs``."""
    values = dict(metadata.as_dict()) if metadata is not None else {}
    values.pop("name", None)
    n_thing, n_stuff = 0, 0
    if outputs is not None:
        inst = outputs.get("instances")
        if inst is not None and inst.has("pred_classes") and len(inst):
            n_thing = int(inst.pred_classes.max()) + 1
        pan = outputs.get("panoptic_seg")
        if pan is not None and pan[1] is not None:
            for s in pan[1]:
                if s.get("isthing"):
                    n_thing = max(n_thing, int(s["category_id"]) + 1)
                else:
                    n_stuff = max(n_stuff, int(s["category_id"]) + 1)
        sem = outputs.get("sem_seg")
        if sem is not None:
            n_stuff = max(n_stuff, int(sem.shape[0]))
    things = list(values.get("thing_classes") or [])
    stuff = list(values.get("stuff_classes") or [])
    things += [f"class {i}" for i in range(len(things), n_thing)]
    stuff += [f"stuff {i}" for i in range(len(stuff), n_stuff)]
    values["thing_classes"], values["stuff_classes"] = things, stuff
    if "stuff_colors" in values and len(values["stuff_colors"]) < len(stuff):
        values.pop("stuff_colors")
    if "thing_colors" in values and len(values["thing_colors"]) < len(things):
        values.pop("thing_colors")
    return Metadata(name="segx_predict", **values)


def densepose_overlay(image_rgb, instances, alpha=0.6):
    """``image_rgb`` with the DensePose charts of ``instances`` (``pred_densepose`` with ``paste_iuv``, pasted by
    ``segx.engine.densepose_vis.iuv_image``): each part in its colour (``densepose_vis.part_colours``), U and V
    iso-lines (every 0.2) in white. Highest score drawn on top. Returns a new uint8 image."""
    from segx.engine.densepose_vis import iuv_image, part_colours  # DensePose's own IUV pasting and part colours

    h, w = image_rgb.shape[:2]
    iuv = iuv_image(instances, (h, w)).numpy()
    parts = np.rint(iuv[0]).astype(np.int64)
    fg = parts > 0
    out = image_rgb.astype(np.float32).copy()
    if not fg.any():
        return image_rgb.copy()
    colours = part_colours(max(24, int(parts.max()))).astype(np.float32)
    out[fg] = (1 - alpha) * out[fg] + alpha * colours[parts[fg]]
    lines = np.zeros((h, w), bool)
    for chan in (iuv[1], iuv[2]):
        level = np.floor(np.clip(chan, 0, 0.999) * 5)
        lines[:, 1:] |= (level[:, 1:] != level[:, :-1]) & fg[:, 1:] & fg[:, :-1]
        lines[1:, :] |= (level[1:, :] != level[:-1, :]) & fg[1:, :] & fg[:-1, :]
    out[lines] = 255
    return out.astype(np.uint8)


def _draw_instances(vis, instances, metadata):
    if instances.has("pred_densepose") and len(instances) and hasattr(instances.pred_densepose, "paste_iuv"):
        vis.output.reset_image(densepose_overlay(vis.img, instances))
    if not instances.has("track_ids"):
        if instances.has("pred_densepose"):  # the charts are the masks: draw boxes, labels, keypoints on top
            instances = _without(instances, "pred_masks")
        return vis.draw_instance_predictions(instances)
    classes = instances.pred_classes.tolist() if instances.has("pred_classes") else None
    scores = instances.scores if instances.has("scores") else None
    labels = _create_text_labels(classes, scores, metadata.get("thing_classes", None))
    ids = instances.track_ids.tolist()
    labels = [f"{lab} #{i}" if lab else f"#{i}" for lab, i in zip(labels or [""] * len(ids), ids)]
    masks = None
    if instances.has("pred_masks") and not instances.has("pred_densepose"):
        masks = [GenericMask(m, vis.output.height, vis.output.width) for m in np.asarray(instances.pred_masks)]
    vis.overlay_instances(boxes=instances.pred_boxes if instances.has("pred_boxes") else None, labels=labels,
                          masks=masks, keypoints=instances.pred_keypoints if instances.has("pred_keypoints") else None,
                          assigned_colors=[track_colour(i) for i in ids], alpha=0.5)
    return vis.output


def _without(instances, field):
    if not instances.has(field):
        return instances
    from detectron2.structures import Instances

    out = Instances(instances.image_size)
    for k, v in instances.get_fields().items():
        if k != field:
            out.set(k, v)
    return out


def _draw_panoptic(vis, panoptic_seg, segments_info, metadata):
    segments_info = [dict(s) for s in segments_info] if segments_info is not None else None
    tracked = segments_info is not None and any("track_id" in s for s in segments_info if s.get("isthing"))
    if not tracked:
        return vis.draw_panoptic_seg(panoptic_seg, segments_info)
    vis.draw_panoptic_seg(panoptic_seg, [s for s in segments_info if not s.get("isthing")])
    things = [s for s in segments_info if s.get("isthing")]
    if not things:
        return vis.output
    masks = [GenericMask((panoptic_seg == s["id"]).numpy(), vis.output.height, vis.output.width) for s in things]
    names = metadata.get("thing_classes")
    labels = []
    for s in things:
        label = names[s["category_id"]] if names and s["category_id"] < len(names) else str(s["category_id"])
        labels.append(f"{label} #{s['track_id']}" if "track_id" in s else label)
    colours = [track_colour(s["track_id"]) if "track_id" in s else _PALETTE[0] for s in things]
    vis.overlay_instances(masks=masks, labels=labels, assigned_colors=colours, alpha=0.6)
    return vis.output


def draw_outputs(image_rgb, outputs, metadata=None, score_threshold=0.5, scale=1.0, header=None):
    """``image_rgb`` (H×W×3 uint8, RGB) with ``outputs`` drawn on it; an RGB uint8 array (scaled by ``scale``)."""
    metadata = complete_metadata(metadata, outputs)
    vis = Visualizer(image_rgb, metadata, scale=scale, instance_mode=ColorMode.IMAGE)
    if "panoptic_seg" in outputs:
        panoptic_seg, segments_info = outputs["panoptic_seg"]
        _draw_panoptic(vis, panoptic_seg.to("cpu"), segments_info, metadata)
    else:
        if "sem_seg" in outputs:
            vis.draw_sem_seg(outputs["sem_seg"].argmax(dim=0).to("cpu"))
        if "instances" in outputs:
            inst = outputs["instances"].to("cpu")
            if inst.has("scores"):
                inst = inst[inst.scores >= score_threshold]
            _draw_instances(vis, inst, metadata)
    if header:
        vis.draw_text(header, (4, 4), horizontal_alignment="left", color="white",
                      font_size=max(vis._default_font_size, 8))
    return vis.output.get_image()
