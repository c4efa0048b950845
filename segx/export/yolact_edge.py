"""Export of YolactEdge's two paths to TorchScript and ONNX, each checked against eager (TorchScript reloaded from
disk, ONNX in onnxruntime).

* key frame (``KeyFrameGraph``): ``image [3,H,W]`` → ``boxes [N,4]``, ``scores [N]``, ``classes [N]``,
  ``masks [N,H,W]`` (bool, at the image's size), and the key features ``lateral``, ``p4``, ``p5``
  (``[1,C,h,w]``: C3's lateral and the phase-1 P4/P5) for the following frames;
* non-key frame (``NonKeyFrameGraph``): ``image``, ``lateral``, ``p4``, ``p5`` → ``boxes``, ``scores``,
  ``classes``, ``masks``.

A runtime keeps the key features a key-frame graph returned and feeds them to the non-key graph for the next k-1
frames. ``flow_warp`` is exported as its ``grid_sample`` reference in ONNX (opset 16 ``GridSample``), as the kernel
in TorchScript when ``segx._C`` is built.

    python tools/export_yolact_edge.py --config-file configs/YolactEdge/yolact_edge_R_18_shapes_video.yaml \
        --output output/export_yolact_edge MODEL.WEIGHTS output/yolact_edge_R_18_shapes_video/model_final.pth
"""
import inspect
import json
import os

import numpy as np
import torch
from torch import nn

from segx.modeling.yolact.edge import key_frame_features, partial_feature_transform

__all__ = ["KeyFrameGraph", "NonKeyFrameGraph", "export_yolact_edge", "OUTPUT_NAMES"]

DETECTION_OUTPUTS = ("boxes", "scores", "classes", "masks")


def _detections(model, features, images, inputs):
    inst = model.decode(model.predict(features, images), images, inputs)[0]
    return inst.pred_boxes.tensor, inst.scores, inst.pred_classes, inst.pred_masks


class KeyFrameGraph(nn.Module):
    """A YolactEdge key frame as a traceable module (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.key_names = ["lateral", *model.backbone.phase1_features[1:]]

    def forward(self, image):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        features, key, _ = key_frame_features(m.backbone, images.tensor)
        return (*_detections(m, features, images, inputs), *[key[k] for k in self.key_names])


class NonKeyFrameGraph(nn.Module):
    """A YolactEdge non-key frame with the key features as inputs (module docstring)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.key_names = ["lateral", *model.backbone.phase1_features[1:]]

    def forward(self, image, lateral, p4, p5):
        m, inputs = self.model, [{"image": image}]
        images = m.preprocess_image(inputs)
        key = dict(zip(self.key_names, (lateral, p4, p5)))
        features, _, _ = partial_feature_transform(m.backbone, m.flow_net, m.refinement, images.tensor, key)
        return _detections(m, features, images, inputs)


OUTPUT_NAMES = {"key_frame": [*DETECTION_OUTPUTS, "lateral", "p4", "p5"], "nonkey_frame": list(DETECTION_OUTPUTS)}
INPUT_NAMES = {"key_frame": ["image"], "nonkey_frame": ["image", "lateral", "p4", "p5"]}


def _max_diff(ref, out):
    diffs = []
    for i, (a, b) in enumerate(zip(ref, out)):
        a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
        b = b.detach().cpu().numpy() if torch.is_tensor(b) else np.asarray(b)
        if a.shape != b.shape:
            raise AssertionError(f"output {i}: shape {b.shape} differs from eager {a.shape}")
        diffs.append(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0)
    return max(diffs, default=0.0)


def export_yolact_edge(model, key_image, nonkey_image, output_dir, formats=("torchscript", "onnx")):
    """Traces both paths of ``model`` (a ``YolactEdge``; ``key_image`` then ``nonkey_image``, ``[3,H,W]``, e.g. two
    frames of one video) and writes ``key_frame.{ts,onnx}``, ``nonkey_frame.{ts,onnx}`` into ``output_dir``.
    Returns ``{"key_frame": {...}, "nonkey_frame": {...}}``: per path the files, output shapes, the number of
    detections and the max |diff| to eager of the TorchScript file and of onnxruntime."""
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    key_graph, nonkey_graph = KeyFrameGraph(model).eval(), NonKeyFrameGraph(model).eval()
    with torch.no_grad():
        key_out = key_graph(key_image)
    key_features = tuple(t.detach() for t in key_out[len(DETECTION_OUTPUTS):])
    cases = {"key_frame": (key_graph, (key_image,)), "nonkey_frame": (nonkey_graph, (nonkey_image, *key_features))}
    report = {}
    for name, (graph, args) in cases.items():
        with torch.no_grad():
            eager = graph(*args)
        r = {"output_names": OUTPUT_NAMES[name], "output_shapes": [list(t.shape) for t in eager],
             "num_detections": int(eager[1].shape[0])}
        if "torchscript" in formats:
            path = os.path.join(output_dir, f"{name}.ts")
            with torch.no_grad():
                traced = torch.jit.trace(graph, args, check_trace=False)
            traced.save(path)
            with torch.no_grad():
                out = torch.jit.load(path)(*args)
            r["torchscript"], r["torchscript_max_diff"] = path, _max_diff(eager, out)
        if "onnx" in formats:
            import onnxruntime as ort

            path = os.path.join(output_dir, f"{name}.onnx")
            kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
            with torch.no_grad():
                torch.onnx.export(graph, args, path, opset_version=16, input_names=INPUT_NAMES[name],
                                  output_names=OUTPUT_NAMES[name], **kwargs)
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            feeds = {i.name: a.cpu().numpy() for i, a in zip(sess.get_inputs(), args)}
            r["onnx"], r["onnx_max_diff"] = path, _max_diff(eager, sess.run(None, feeds))
        report[name] = r
    with open(os.path.join(output_dir, "export_info.json"), "w") as f:
        json.dump({"inputs": INPUT_NAMES, **report}, f, indent=2)
    return report
