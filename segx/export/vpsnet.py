"""Export of VPSNet's per-frame path to TorchScript and ONNX, the reference frame's features as inputs, each file checked
against eager (TorchScript reloaded from disk, ONNX in onnxruntime).

* first frame (``FirstFrameGraph``): ``image [3,H,W]`` → the frame's outputs (below), the frame being its own reference
  (zero flow, as ``VPSNet`` streams a video's first frame);
* next frames (``NextFrameGraph``): ``image``, ``ref_image`` (the previous frame) and ``ref_p2 .. ref_p6`` (its own FPN
  levels, which the previous graph returned) → the frame's outputs.

Outputs, in this order (``OUTPUT_NAMES``): the instances that entered the panoptic head (``boxes [N,4]``, ``scores``,
``classes``, ``embeddings [N,D]``: what the tracker matches), ``kept`` (indices of those left after mask removal: the
panoptic channels ``S..S+K-1``), ``panoptic_logits [S+K(+1),h,w]`` and the frame's own levels ``p2 .. p6`` (the next
frame's reference). The tracker (``segx.modeling.panoptic.track_head.TrackMatcher`` on a ``StreamState``) and the merge
(``segx.modeling.panoptic.merge_panoptic_logits``) run outside the graph, on those tensors. ``flow_warp`` is exported as
its ``grid_sample`` reference in ONNX (opset 16 ``GridSample``), as the kernel in TorchScript when ``segx._C`` is built.
"""
import torch
from torch import nn

from segx.export.graphs import export_graphs

__all__ = ["FirstFrameGraph", "NextFrameGraph", "export_vpsnet", "OUTPUT_NAMES"]

INSTANCE_OUTPUTS = ("boxes", "scores", "classes", "embeddings", "kept", "panoptic_logits")


def _frame_outputs(model, features, images, inputs):
    predictions = model.predict(features, images)
    selected = predictions["panoptic_instances"][0]
    result = model.decode(predictions, images, inputs)[0]
    return (selected.pred_boxes.tensor, selected.scores, selected.pred_classes, selected.track_embeddings,
            result["panoptic_instances"].panoptic_index, result["panoptic_logits"])


class FirstFrameGraph(nn.Module):
    """A video's first frame (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        features = m.backbone(images.tensor)
        fused = m.fuse(features, features, images.tensor, None)
        own = [features[f] for f in m.fuse_in_features]
        return (*_frame_outputs(m, fused, images, inputs), *own)


class NextFrameGraph(nn.Module):
    """A later frame with the previous frame's image and own levels as inputs (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, image, ref_image, *ref_levels):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        refs = m.preprocess_image([{"image": ref_image}])
        features = m.backbone(images.tensor)
        fused = m.fuse(features, dict(zip(m.fuse_in_features, ref_levels)), images.tensor, refs.tensor)
        own = [features[f] for f in m.fuse_in_features]
        return (*_frame_outputs(m, fused, images, inputs), *own)


def OUTPUT_NAMES(model):  # noqa: N802  (a table, computed from the model's fused levels)
    return [*INSTANCE_OUTPUTS, *model.fuse_in_features]


def _cases(first, first_image, next_image):
    with torch.no_grad():
        first_out = first(first_image)
    ref_levels = tuple(t.detach() for t in first_out[len(INSTANCE_OUTPUTS):])
    return {"first_frame": (first_image,), "next_frame": (next_image, first_image, *ref_levels)}


def export_vpsnet(model, first_image, next_image, output_dir, formats=("torchscript", "onnx"), second_images=None):
    """Traces both graphs of ``model`` (a ``VPSNet``; ``first_image`` then ``next_image``, ``[3,H,W]``, two frames of
    one video) and writes ``first_frame.{ts,onnx}`` and ``next_frame.{ts,onnx}`` into ``output_dir``. Returns
    ``{"first_frame": {...}, "next_frame": {...}}``: per graph the files, output shapes, the number of instances and
    the max |diff| to eager of the TorchScript file and of onnxruntime (or ``onnx_error``); with ``second_images``
    (two frames of another size) also ``"second_size"`` (``segx.export.graphs.export_graphs``)."""
    model.eval()
    first, nxt = FirstFrameGraph(model).eval(), NextFrameGraph(model).eval()
    names = OUTPUT_NAMES(model)
    inputs = {"first_frame": ["image"], "next_frame": ["image", "ref_image", *[f"ref_{f}" for f in model.fuse_in_features]]}
    with model.exportable():  # size-independent pooling in the fusion; eager is compared in the same mode
        second = _cases(first, *second_images) if second_images is not None else None
        return export_graphs({"first_frame": first, "next_frame": nxt}, _cases(first, first_image, next_image),
                             inputs, {"first_frame": names, "next_frame": names}, output_dir, formats, second,
                             count=("num_instances", 0), image_inputs=("image", "ref_image"))
