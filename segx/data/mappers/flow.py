"""The known flow target of the flow training stages (YolactEdge, VPSNet), written once: from a synthetic video's
``motion_file`` (``segx.data.synthetic_video``), through the resizes and flips the frame went through."""
import torch
import torch.nn.functional as F

from detectron2.data import transforms as T

from segx.data.synthetic_video import known_flow, load_motion

__all__ = ["known_flow_target"]


def _resize(flow, size):
    h, w = flow.shape[-2:]
    if (h, w) == tuple(size):
        return flow
    flow = F.interpolate(flow[None], size=tuple(size), mode="nearest")[0]
    return flow * flow.new_tensor([size[1] / w, size[0] / h]).view(2, 1, 1)


def known_flow_target(record, frame, ref, transforms, image_shape, who, where, sets):
    """``[2,H,W]`` float32 flow in pixels of the transformed frame: frame(p) = ref_frame(p + flow(p)).

    ``record``: the frame's dataset dict (its ``motion_file``); ``frame`` / ``ref``: frame indices in that video;
    ``transforms``: detectron2 transforms the image went through (resizes, flips, no-ops; others are an error);
    ``image_shape``: the transformed image's (H, W), checked. ``who``, ``where`` and ``sets`` (the datasets that have
    motion files) name the mapper, the frame and the remedy in errors."""
    path = record.get("motion_file")
    if not path:
        raise ValueError(f"{who}: {where} has no 'motion_file': the flow stage trains on frames with known motion "
                         f"({sets})")
    layer_ids, positions = load_motion(path)
    flow = torch.from_numpy(known_flow(layer_ids[frame], positions[frame], positions[ref]))  # [2,H,W] pixels
    for t in transforms:
        if isinstance(t, T.ResizeTransform):
            flow = _resize(flow, (t.new_h, t.new_w))
        elif isinstance(t, T.HFlipTransform):
            flow = flow.flip(-1) * flow.new_tensor([-1.0, 1.0]).view(2, 1, 1)
        elif isinstance(t, T.VFlipTransform):
            flow = flow.flip(-2) * flow.new_tensor([1.0, -1.0]).view(2, 1, 1)
        elif not isinstance(t, T.NoOpTransform):
            raise ValueError(f"{who}: {where}: the flow stage supports resizes and flips, not {type(t).__name__} "
                             "(INPUT augmentations)")
    if tuple(flow.shape[-2:]) != tuple(image_shape):
        raise ValueError(f"{who}: {where}: the flow is {tuple(flow.shape[-2:])}, the image {tuple(image_shape)}")
    return flow.contiguous()
