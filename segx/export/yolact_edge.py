"""Export of YolactEdge's two paths to TorchScript and ONNX, each checked against eager (TorchScript reloaded from
disk, ONNX in onnxruntime).

* key frame (``KeyFrameGraph``): ``image [3,H,W]`` → ``boxes [N,4]``, ``scores [N]``, ``classes [N]``,
  ``masks [N,H,W]`` (bool, at the image's size), and the key features ``lateral``, ``p4``, ``p5``
  (``[1,C,h,w]``: C3's lateral and the phase-1 P4/P5) for the following frames;
* non-key frame (``NonKeyFrameGraph``): ``image``, ``lateral``, ``p4``, ``p5`` → ``boxes``, ``scores``,
  ``classes``, ``masks``.

With ``MODEL.YOLACT_EDGE.NONKEY_PROTOTYPES "warp"`` the key features end with ``protos`` (``[1,k,Hp,Wp]``) as well.

A runtime keeps the key features a key-frame graph returned and feeds them to the non-key graph for the next k-1
frames. No image size is baked in: the image inputs (and every output) have dynamic axes in ONNX, and
``export_yolact_edge(..., second_images=(key, nonkey))`` checks both files at a second size too. ``flow_warp`` is exported as its ``grid_sample`` reference in ONNX (opset 16 ``GridSample``), as the kernel
in TorchScript when ``segx._C`` is built.

    python tools/export_yolact_edge.py --config-file configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml \
        --output output/export_yolact_edge MODEL.WEIGHTS output/yolact_edge_R_18_shapes_video/model_final.pth
"""
import torch
from torch import nn

from segx.export.graphs import export_graphs
from segx.modeling.yolact.edge import key_frame_features, partial_feature_transform

__all__ = ["KeyFrameGraph", "NonKeyFrameGraph", "export_yolact_edge", "OUTPUT_NAMES", "INPUT_NAMES", "key_names"]

DETECTION_OUTPUTS = ("boxes", "scores", "classes", "masks")


def key_names(model):
    """The key features a key-frame graph returns and a non-key graph takes: ``lateral``, ``p4``, ``p5``, and
    ``protos`` with ``NONKEY_PROTOTYPES "warp"``."""
    return ["lateral", *model.backbone.phase1_features[1:], *(["protos"] if model.nonkey_prototypes == "warp" else [])]


def _detections(model, features, images, inputs):
    predictions = model.predict(features, images)
    inst = model.decode(predictions, images, inputs)[0]
    return (inst.pred_boxes.tensor, inst.scores, inst.pred_classes, inst.pred_masks), predictions


class KeyFrameGraph(nn.Module):
    """A YolactEdge key frame as a traceable module (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.key_names = key_names(model)

    def forward(self, image):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        features, key, _ = key_frame_features(m.backbone, images.tensor)
        detections, predictions = _detections(m, features, images, inputs)
        key["protos"] = predictions["protos"]
        return (*detections, *[key[k] for k in self.key_names])


class NonKeyFrameGraph(nn.Module):
    """A YolactEdge non-key frame with the key features as inputs (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.key_names = key_names(model)

    def forward(self, image, *key_features):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        key = dict(zip(self.key_names, key_features))
        features, _, _ = partial_feature_transform(m.backbone, m.flow_net, m.refinement, images.tensor, key)
        return _detections(m, features, images, inputs)[0]


def OUTPUT_NAMES(model):  # noqa: N802  (a table, computed from the model's NONKEY_PROTOTYPES)
    return {"key_frame": [*DETECTION_OUTPUTS, *key_names(model)], "nonkey_frame": list(DETECTION_OUTPUTS)}


def INPUT_NAMES(model):  # noqa: N802
    return {"key_frame": ["image"], "nonkey_frame": ["image", *key_names(model)]}


def _cases(key_graph, nonkey_graph, key_image, nonkey_image):
    with torch.no_grad():
        key_out = key_graph(key_image)
    key_features = tuple(t.detach() for t in key_out[len(DETECTION_OUTPUTS):])
    return {"key_frame": (key_image,), "nonkey_frame": (nonkey_image, *key_features)}


def export_yolact_edge(model, key_image, nonkey_image, output_dir, formats=("torchscript", "onnx"),
                       second_images=None):
    """Traces both paths of ``model`` (a ``YolactEdge``; ``key_image`` then ``nonkey_image``, ``[3,H,W]``, e.g. two
    frames of one video) and writes ``key_frame.{ts,onnx}``, ``nonkey_frame.{ts,onnx}`` into ``output_dir``.
    Returns ``{"key_frame": {...}, "nonkey_frame": {...}}``: per path the files, output shapes, the number of
    detections and the max |diff| to eager of the TorchScript file and of onnxruntime; with ``second_images``
    (a key and a non-key frame of another size) also ``"second_size"``: the size and the same differences there."""
    model.eval()
    key_graph, nonkey_graph = KeyFrameGraph(model).eval(), NonKeyFrameGraph(model).eval()
    graphs = {"key_frame": key_graph, "nonkey_frame": nonkey_graph}
    second = _cases(key_graph, nonkey_graph, *second_images) if second_images is not None else None
    return export_graphs(graphs, _cases(key_graph, nonkey_graph, key_image, nonkey_image), INPUT_NAMES(model),
                         OUTPUT_NAMES(model), output_dir, formats, second, count=("num_detections", 1))
