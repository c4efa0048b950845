"""Export a model built from a segx / detectron2 config through detectron2's ``TracingAdapter``.

    segx-export --config-file configs/MaskRCNN/mask_rcnn_R_18_FPN_scratch.yaml --output output/export \
        MODEL.WEIGHTS output/mask_rcnn_R_18_FPN_scratch/model_final.pth

writes ``model.ts`` (TorchScript, ``torch.jit.trace``) and ``model.onnx``, then runs both (TorchScript reloaded
from disk, ONNX in onnxruntime) on the traced image and on a second image of another size and aspect ratio, as the
eager model, and reports the largest difference of each output at each size. No image size is baked into the
graphs: the ONNX input has dynamic height and width axes, and every output's axes are dynamic. Inputs and outputs
are flat tensors: the image ``[3,H,W]`` in the model's input format, and the fields of ``Instances`` in
``TracingAdapter``'s order (``schema`` in ``export_info.json``).

The tolerances the exported files are held to (``EXPORT_TOLERANCES``, by meta-architecture; the tests use the same
table) are checked by the command line, which exits with status 1 when a difference exceeds them.
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

__all__ = ["ExportReport", "traceable_inference_fn", "make_tracing_adapter", "export_model", "sample_input",
           "second_size_image", "export_tolerances", "EXPORT_TOLERANCES", "cli"]

logger = logging.getLogger("segx.export")

# Largest |exported - eager| allowed, per meta-architecture: (TorchScript, ONNX in onnxruntime), at the traced size
# and at a second size. TorchScript runs the same kernels as eager; onnxruntime's convolutions and resizes differ in
# float rounding, which grows with depth and is largest in pixel-valued outputs (boxes of up to a few hundred px,
# UPSNet's panoptic logits). The export tests (tests/test_export_any_size.py and each architecture's) and README use
# this table.
DEFAULT_TOLERANCE = (1e-4, 1e-3)
EXPORT_TOLERANCES = {
    "GeneralizedRCNN": (1e-4, 1e-3),  # detectron2's Mask / Faster R-CNN, and DensePose R-CNN
    "PanopticFPN": (1e-4, 1e-3),
    "YOLACT": (1e-4, 1e-3),
    "YolactEdge": (1e-4, 1e-3),
    "CornerNet": (1e-4, 1e-3),
    "CenterNetTriplets": (1e-4, 1e-3),
    "CenterNet": (1e-4, 1e-3),
    "StackedHourglass": (1e-4, 1e-3),
    "RetinaFace": (1e-4, 1e-2),
    "UPSNet": (1e-3, 1e-2),
    "VPSNet": (1e-4, 1e-3),  # segx/export/vpsnet.py: every frame its own reference (tests/test_vpsnet.py)
}


def export_tolerances(model):
    """(TorchScript, ONNX) tolerance of ``model``'s meta-architecture (``EXPORT_TOLERANCES``)."""
    return EXPORT_TOLERANCES.get(type(model).__name__, DEFAULT_TOLERANCE)


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
    """``TracingAdapter`` around ``model`` for one ``[3,H,W]`` image (no height/width: no resize in the graph).
    In eval mode, as ``model``: ``torch.onnx.export`` restores the adapter's mode afterwards, recursively, and a
    fresh adapter in training mode would leave ``model`` training."""
    return TracingAdapter(model, [{"image": image}], traceable_inference_fn(model)).train(model.training)


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
    """What ``export_model`` wrote and measured. ``torchscript_max_diff`` / ``onnx_max_diff``: at the traced size;
    ``sizes``: one entry per checked image (the traced one first) with its ``size`` [H, W], ``output_shapes``,
    ``torchscript_max_diff``, ``onnx_max_diff`` and ``error`` (e.g. an output whose shape differs from eager's)."""

    torchscript_path: str = None
    onnx_path: str = None
    num_outputs: int = 0
    output_shapes: list = field(default_factory=list)
    torchscript_max_diff: float = None  # max |traced - eager| over all outputs
    onnx_max_diff: float = None  # max |onnxruntime - eager|
    onnx_error: str = None
    sizes: list = field(default_factory=list)

    def max_diffs(self):
        """(TorchScript, ONNX) largest difference over every checked size (None when not exported)."""
        ts = [s["torchscript_max_diff"] for s in self.sizes if s.get("torchscript_max_diff") is not None]
        ox = [s["onnx_max_diff"] for s in self.sizes if s.get("onnx_max_diff") is not None]
        return (max(ts) if ts else None), (max(ox) if ox else None)

    def errors(self):
        return [f"{s['size'][0]}x{s['size'][1]}: {s['error']}" for s in self.sizes if s.get("error")]

    def summary(self, tolerances=None):
        lines = [f"outputs: {self.num_outputs} tensors, shapes {self.output_shapes}"]
        if self.torchscript_path:
            lines.append(f"TorchScript  {self.torchscript_path}")
        if self.onnx_path:
            lines.append(f"ONNX         {self.onnx_path}" + (f": FAILED: {self.onnx_error}" if self.onnx_error else
                                                              " (dynamic height/width)"))
        for i, s in enumerate(self.sizes):
            what = "traced size" if i == 0 else "second size"
            parts = []
            for key, name in (("torchscript_max_diff", "TorchScript"), ("onnx_max_diff", "onnxruntime")):
                if s.get(key) is not None:
                    parts.append(f"{name} {s[key]:.3g}")
            line = f"  {s['size'][0]}x{s['size'][1]} ({what}): max |diff| to eager: " + (", ".join(parts) or "-")
            if s.get("error"):
                line += f"; FAILED: {s['error']}"
            lines.append(line)
        if tolerances is not None:
            lines.append(f"tolerance: TorchScript {tolerances[0]:g}, ONNX {tolerances[1]:g} "
                         f"({'within' if not self.exceeds(tolerances) else 'EXCEEDED'})")
        return "\n".join(lines)

    def exceeds(self, tolerances):
        """Messages for every difference above ``tolerances`` (TorchScript, ONNX) and every failed size."""
        out = list(self.errors())
        for s in self.sizes:
            for key, tol, name in (("torchscript_max_diff", tolerances[0], "TorchScript"),
                                   ("onnx_max_diff", tolerances[1], "ONNX")):
                if s.get(key) is not None and s[key] > tol:
                    out.append(f"{s['size'][0]}x{s['size'][1]}: {name} differs from eager by {s[key]:.3g} > {tol:g}")
        return out


def _compare(eager, out):
    """(max |diff|, error message or None)."""
    try:
        return max(_max_abs_diff(eager, out), default=0.0), None
    except AssertionError as e:
        return None, str(e)


def export_model(model, image, output_dir, formats=("torchscript", "onnx"), second_image=None):
    """Traces ``model`` on ``image`` ([3,H,W] tensor), writes the requested formats into ``output_dir``,
    runs them on ``image`` (and on ``second_image``, another size, when given) and returns an ``ExportReport`` with
    the max difference to eager at each size. The ONNX graph has dynamic image height / width axes. A model with an
    ``exportable()`` context (VPSNet) is traced and compared inside it."""
    with exportable(model):
        return _export_model(model, image, output_dir, formats, second_image)


def exportable(model):
    """``model.exportable()`` when the model has one (a mode whose traced graph fits every input size), else a no-op
    context."""
    import contextlib

    return model.exportable() if hasattr(model, "exportable") else contextlib.nullcontext(model)


def _export_model(model, image, output_dir, formats, second_image):
    model.eval()
    os.makedirs(output_dir, exist_ok=True)
    adapter = make_tracing_adapter(model, image)
    report = ExportReport()
    images = [image] + ([second_image] if second_image is not None else [])
    with torch.no_grad():
        eager = [adapter(img) for img in reversed(images)][::-1]  # the traced image last: its output schema stays
    report.num_outputs = len(eager[0])
    report.output_shapes = [list(t.shape) for t in eager[0]]
    report.sizes = [{"size": list(img.shape[-2:]), "output_shapes": [list(t.shape) for t in e]}
                    for img, e in zip(images, eager)]
    if "torchscript" in formats:
        path = os.path.join(output_dir, "model.ts")
        with torch.no_grad():
            traced = torch.jit.trace(adapter, (image,), check_trace=False)
        traced.save(path)
        loaded = torch.jit.load(path)
        report.torchscript_path = path
        for img, e, entry in zip(images, eager, report.sizes):
            with torch.no_grad():
                diff, err = _compare(e, loaded(img))
            entry["torchscript_max_diff"] = diff
            if err:
                entry["error"] = f"TorchScript: {err}"
        report.torchscript_max_diff = report.sizes[0]["torchscript_max_diff"]
    if "onnx" in formats:
        import onnxruntime as ort

        path = os.path.join(output_dir, "model.onnx")
        kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        names = [f"output_{i}" for i in range(len(eager[0]))]
        dynamic = {"image": {1: "height", 2: "width"}}
        dynamic.update({n: {d: f"{n}_dim{d}" for d in range(t.dim())} for n, t in zip(names, eager[0]) if t.dim()})
        report.onnx_path = path
        stage = "torch.onnx.export"
        try:  # report, don't hide: the TorchScript result is still useful
            with torch.no_grad():
                torch.onnx.export(adapter, (image,), path, opset_version=_onnx_opset(), input_names=["image"],
                                  output_names=names, dynamic_axes=dynamic, **kwargs)
            stage = "onnxruntime"
            sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
            for img, e, entry in zip(images, eager, report.sizes):
                out = sess.run(None, {sess.get_inputs()[0].name: img.cpu().numpy()})
                diff, err = _compare(e, out)
                entry["onnx_max_diff"] = diff
                if err:
                    entry["error"] = (entry.get("error", "") + "; " if entry.get("error") else "") + f"ONNX: {err}"
            report.onnx_max_diff = report.sizes[0]["onnx_max_diff"]
        except Exception as e:
            first_line = str(e).splitlines()[0] if str(e) else ""
            report.onnx_error = f"{stage} failed: {type(e).__name__}: {first_line}"
    with open(os.path.join(output_dir, "export_info.json"), "w") as f:
        json.dump(
            {
                "input": "image: float32 [3,H,W] (any H, W), channel order as cfg.INPUT.FORMAT, 0-255",
                "outputs_schema": repr(adapter.outputs_schema),
                "output_shapes": report.output_shapes,
                "torchscript_max_diff": report.torchscript_max_diff,
                "onnx_max_diff": report.onnx_max_diff,
                "onnx_error": report.onnx_error,
                "sizes": report.sizes,
            },
            f,
            indent=2,
        )
    return report


def second_size_image(image, size=None):
    """``image`` ([3,H,W]) resized (bilinear) to ``size`` (H, W), by default about 3/4 of its height and 5/4 of its
    width (another aspect ratio), rounded to multiples of 8: the second size the exported graph is checked at."""
    h, w = image.shape[-2:]
    if size is None:
        size = (max(8, int(round(h * 0.75 / 8)) * 8), max(8, int(round(w * 1.25 / 8)) * 8))
    out = torch.nn.functional.interpolate(image[None].float(), size=tuple(int(v) for v in size), mode="bilinear",
                                          align_corners=False)[0]
    return out.round().clamp(0, 255)


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
    parser.add_argument("--second-size", default="auto", metavar="HxW",
                        help="also check the exported files on the sample image resized to HxW (default: auto, "
                             "3/4 of its height and 5/4 of its width; 'none': only the traced size)")
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
    image = sample_input(cfg, args.sample_image)
    second = None
    if args.second_size.lower() != "none":
        size = None
        if args.second_size.lower() != "auto":
            try:
                size = tuple(int(v) for v in args.second_size.lower().split("x"))
                assert len(size) == 2 and min(size) > 0
            except (ValueError, AssertionError):
                raise SystemExit(f"segx-export: --second-size {args.second_size!r}: expected HxW (e.g. 96x160), "
                                 "auto or none") from None
        second = second_size_image(image, size)
    report = export_model(model, image, args.output, formats, second_image=second)
    tolerances = export_tolerances(model)
    print(report.summary(tolerances))
    if report.onnx_error:
        raise SystemExit(1)
    problems = report.exceeds(tolerances)
    if problems:
        hint = ("" if cfg.MODEL.WEIGHTS else " (MODEL.WEIGHTS is empty: a random model's near-equal scores can be "
                "ordered differently by onnxruntime's rounding; check a trained model)")
        raise SystemExit("segx-export: the exported files differ from eager: " + "; ".join(problems) + hint)
    return report


if __name__ == "__main__":
    cli()
