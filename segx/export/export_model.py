"""Export a model built from a segx / detectron2 config through detectron2's ``TracingAdapter``.

    segx-export --config-file configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml --output output/export \
        MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_scratch/model_final.pth

writes ``model.ts`` (TorchScript, ``torch.jit.trace``) and ``model.onnx``, then runs both (TorchScript reloaded
from disk, ONNX in onnxruntime) on the same input as the eager model and reports the largest difference of
each output. Inputs and outputs are flat tensors: the image ``[3,H,W]`` in the model's input format, and the
fields of ``Instances`` in ``TracingAdapter``'s order (``schema`` in ``export_info.json``).
"""
import argparse
import inspect
import json
import logging
import os
from dataclasses import dataclass, field

import numpy as np
import torch

import segx  # noqa: F401
from detectron2.config import get_cfg
from detectron2.data import DatasetCatalog, detection_utils
from detectron2.export.flatten import TracingAdapter
from detectron2.modeling import build_model

from segx.checkpoint import CheckedDetectionCheckpointer
from segx.config import add_segx_config
from segx.data.mappers import build_mapper

__all__ = ["ExportReport", "traceable_inference_fn", "make_tracing_adapter", "export_model", "sample_input", "cli"]

logger = logging.getLogger("segx.export")


def _onnx_opset():
    try:
        from detectron2.export import STABLE_ONNX_OPSET_VERSION  # detectron2 main only

        return max(STABLE_ONNX_OPSET_VERSION, 16)
    except ImportError:
        return 16  # RoIAlign with aligned=True needs opset 16


def traceable_inference_fn(model):
    """The function TracingAdapter should trace: ``model.inference(inputs, do_postprocess=False)`` when the
    model has it (results stay at the network's input resolution; resizing happens outside the graph),
    else ``model(inputs)``."""
    infer = getattr(model, "inference", None)
    if infer is not None and "do_postprocess" in inspect.signature(infer).parameters:

        def inference(model, inputs):
            outs = model.inference(inputs, do_postprocess=False)
            return [o if isinstance(o, dict) else {"instances": o} for o in outs]

        return inference
    return None


def make_tracing_adapter(model, image):
    """``TracingAdapter`` around ``model`` for one ``[3,H,W]`` image (no height/width: no resize in the graph)."""
    return TracingAdapter(model, [{"image": image}], traceable_inference_fn(model))


def _max_abs_diff(ref, out):
    if len(ref) != len(out):
        raise AssertionError(f"{len(out)} outputs, eager has {len(ref)}")
    diffs = []
    for i, (a, b) in enumerate(zip(ref, out)):
        a = a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)
        b = b.detach().cpu().numpy() if torch.is_tensor(b) else np.asarray(b)
        if a.shape != b.shape:
            raise AssertionError(f"output {i}: shape {b.shape} differs from eager {a.shape}")
        diffs.append(float(np.abs(a.astype(np.float64) - b.astype(np.float64)).max()) if a.size else 0.0)
    return diffs


@dataclass
class ExportReport:
    torchscript_path: str = None
    onnx_path: str = None
    num_outputs: int = 0
    output_shapes: list = field(default_factory=list)
    torchscript_max_diff: float = None  # max |traced - eager| over all outputs
    onnx_max_diff: float = None  # max |onnxruntime - eager|
    onnx_error: str = None

    def summary(self):
        lines = [f"outputs: {self.num_outputs} tensors, shapes {self.output_shapes}"]
        if self.torchscript_path:
            lines.append(f"TorchScript  {self.torchscript_path}: max |diff| to eager = {self.torchscript_max_diff:.3g}")
        if self.onnx_path:
            if self.onnx_error:
                lines.append(f"ONNX         {self.onnx_path}: FAILED: {self.onnx_error}")
            else:
                lines.append(f"ONNX         {self.onnx_path}: max |diff| to eager (onnxruntime) = {self.onnx_max_diff:.3g}")
        return "\n".join(lines)


def export_model(model, image, output_dir, formats=("torchscript", "onnx")):
    """Traces ``model`` on ``image`` ([3,H,W] tensor), writes the requested formats into ``output_dir``,
    runs them on ``image`` and returns an ``ExportReport`` with the max difference to eager."""
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    adapter = make_tracing_adapter(model, image)
    report = ExportReport()
    with torch.no_grad():
        eager = adapter(image)
    report.num_outputs = len(eager)
    report.output_shapes = [list(t.shape) for t in eager]
    if "torchscript" in formats:
        path = os.path.join(output_dir, "model.ts")
        with torch.no_grad():
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
        traced.save(path)
        loaded = torch.jit.load(path)
        with torch.no_grad():
            out = loaded(image)
        report.torchscript_path = path
        report.torchscript_max_diff = max(_max_abs_diff(eager, out), default=0.0)
    if "onnx" in formats:
        import onnxruntime as ort

        path = os.path.join(output_dir, "model.onnx")
        kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        report.onnx_path = path
        stage = "torch.onnx.export"
        try:  # report, don't hide: the TorchScript result is still useful (e.g. deform_conv2d has no ONNX symbolic)
            with torch.no_grad():
                torch.onnx.export(adapter, (image,), path, opset_version=_onnx_opset(), input_names=["image"], **kwargs)
            stage = "onnxruntime"
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            out = sess.run(None, {sess.get_inputs()[0].name: image.cpu().numpy()})
            report.onnx_max_diff = max(_max_abs_diff(eager, out), default=0.0)
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            report.onnx_error = f"{stage} failed: {type(e).__name__}: {first_line}"
    with open(os.path.join(output_dir, "export_info.json"), "w") as f:
        json.dump(
            {
                "input": "image: float32 [3,H,W], channel order as cfg.INPUT.FORMAT, 0-255",
                "outputs_schema": repr(adapter.outputs_schema),
                "output_shapes": report.output_shapes,
                "torchscript_max_diff": report.torchscript_max_diff,
                "onnx_max_diff": report.onnx_max_diff,
                "onnx_error": report.onnx_error,
            },
            f,
            indent=2,
        )
    return report


def sample_input(cfg, image_path=None):
    """A ``[3,H,W]`` float image resized as at test time (the architecture's test mapper, ``segx.data.mappers``):
    ``image_path`` or the first test-set image."""
    mapper = build_mapper(cfg, is_train=False)
    if image_path:
        if not os.path.isfile(image_path):
            raise FileNotFoundError(f"--sample-image {image_path} does not exist")
        img = detection_utils.read_image(image_path, format=cfg.INPUT.FORMAT)
        record = {"file_name": image_path, "height": img.shape[0], "width": img.shape[1]}
    else:
        if not cfg.DATASETS.TEST:
            raise ValueError("no --sample-image and cfg.DATASETS.TEST is empty: nothing to trace the model on")
        record = DatasetCatalog.get(cfg.DATASETS.TEST[0])[0]
    return mapper(dict(record))["image"].float()


def cli(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True, metavar="FILE")
    parser.add_argument("--output", default="output/export", help="folder for model.ts / model.onnx")
    parser.add_argument("--format", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    parser.add_argument("--sample-image", default=None, help="image to trace on (default: first test image)")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides, e.g. MODEL.WEIGHTS x.pth")
    args = parser.parse_args(argv)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    bad = [f for f in formats if f not in ("torchscript", "onnx")]
    if bad or not formats:
        raise SystemExit(f"segx-export: --format {args.format!r}: expected a comma-separated list of torchscript, onnx")
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"segx-export: config file {args.config_file} does not exist")
    logging.basicConfig(level=logging.INFO)
    cfg = get_cfg()
    add_segx_config(cfg)
    cfg.merge_from_file(args.config_file)
    cfg.merge_from_list(args.opts)
    cfg.MODEL.DEVICE = "cpu"  # onnxruntime compares on the CPU
    cfg.freeze()
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        CheckedDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)  # names a truncated or corrupt file
    else:
        logger.warning("MODEL.WEIGHTS is empty: exporting a randomly initialised model")
    report = export_model(model, sample_input(cfg, args.sample_image), args.output, formats)
    print(report.summary())
    if report.onnx_error:
        raise SystemExit(1)
    return report


if __name__ == "__main__":
    cli()
