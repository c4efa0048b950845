"""Export of a video architecture's per-frame graphs (YolactEdge's key / non-key frame, VPSNet's first / next frame),
written once: each graph is traced to TorchScript and ONNX and each file is checked against eager (TorchScript
reloaded from disk, ONNX in onnxruntime), at the traced size and, with ``second_cases``, at a second size.

A graph is an ``nn.Module`` whose inputs are tensors: images (``[3,H,W]``, named in ``image_inputs``: height and
width are dynamic axes) and state tensors a previous graph returned (every axis dynamic). Every output axis is
dynamic. ``flow_warp`` is exported as its ``grid_sample`` reference in ONNX (opset 16 ``GridSample``), as the kernel
in TorchScript when ``segx._C`` is built.
"""
import inspect
import json
import os

import torch

__all__ = ["export_graphs", "export_video_cli"]

OPSET = 16


def _max_diff(eager, out):
    from segx.export.export_model import _max_abs_diff

    return max(_max_abs_diff(eager, out), default=0.0)


def _dynamic_axes(input_names, output_names, args, eager, image_inputs):
    axes = {}
    for n, t in zip(input_names, args):
        axes[n] = {t.dim() - 2: f"{n}_height", t.dim() - 1: f"{n}_width"} if n in image_inputs else \
            {d: f"{n}_dim{d}" for d in range(t.dim())}
    axes.update({n: {d: f"{n}_dim{d}" for d in range(t.dim())} for n, t in zip(output_names, eager) if t.dim()})
    return axes


def export_graphs(graphs, cases, input_names, output_names, output_dir, formats=("torchscript", "onnx"),
                  second_cases=None, count=("num_detections", 1), image_inputs=("image",)):
    """Traces each ``graphs[name]`` on ``cases[name]`` (a tuple of input tensors) and writes ``<name>.ts`` and
    ``<name>.onnx`` into ``output_dir``, with ``export_info.json``. Returns ``{name: {...}}``: the files, output
    names and shapes, ``count[0]`` (the length of output ``count[1]``), the max |diff| to eager of the TorchScript
    file and of onnxruntime (or ``onnx_error``: the stage that failed and why; the TorchScript result stands on its
    own), and with ``second_cases`` (the same graphs' inputs at another size) ``"second_size"``: the size, the count
    and both differences there."""
    os.makedirs(output_dir, exist_ok=True)
    report = {}
    for name, graph in graphs.items():
        graph.eval()
        args = cases[name]
        second = second_cases[name] if second_cases is not None else None
        with torch.no_grad():
            eager = graph(*args)
            eager2 = graph(*second) if second is not None else None
        r = {"output_names": list(output_names[name]), "output_shapes": [list(t.shape) for t in eager],
             count[0]: int(eager[count[1]].shape[0])}
        if second is not None:
            r["second_size"] = {"size": list(second[0].shape[-2:]), count[0]: int(eager2[count[1]].shape[0])}
        if "torchscript" in formats:
            path = os.path.join(output_dir, f"{name}.ts")
            with torch.no_grad():
                torch.jit.trace(graph, args, check_trace=False).save(path)
                loaded = torch.jit.load(path)
                r["torchscript"], r["torchscript_max_diff"] = path, _max_diff(eager, loaded(*args))
                if second is not None:
                    r["second_size"]["torchscript_max_diff"] = _max_diff(eager2, loaded(*second))
        if "onnx" in formats:
            path = os.path.join(output_dir, f"{name}.onnx")
            r["onnx"] = path
            stage = "torch.onnx.export"
            try:
                import onnxruntime as ort

                kwargs = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
                with torch.no_grad():
                    torch.onnx.export(graph, args, path, opset_version=OPSET, input_names=list(input_names[name]),
                                      output_names=list(output_names[name]),
                                      dynamic_axes=_dynamic_axes(input_names[name], output_names[name], args, eager,
                                                                 image_inputs), **kwargs)
                stage = "onnxruntime"
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                run = lambda a: sess.run(None, {i.name: t.cpu().numpy() for i, t in zip(sess.get_inputs(), a)})  # noqa: E731
                r["onnx_max_diff"] = _max_diff(eager, run(args))
                if second is not None:
                    r["second_size"]["onnx_max_diff"] = _max_diff(eager2, run(second))
            except Exception as e:
                first_line = str(e).splitlines()[0] if str(e) else ""
                r["onnx_error"] = f"{stage} failed: {type(e).__name__}: {first_line}"
        report[name] = r
    with open(os.path.join(output_dir, "export_info.json"), "w") as f:
        json.dump({"inputs": {k: list(v) for k, v in input_names.items()}, **report}, f, indent=2)
    return report


def export_video_cli(arch, export_fn, argv=None, doc=None):
    """``tools/export_<arch>.py``: builds the config's model (``MODEL.WEIGHTS`` loaded), takes frames 0 and 1 of the
    first video of ``DATASETS.TEST`` through the test mapper, calls ``export_fn(model, frame0, frame1, output_dir,
    formats, second_images=...)`` (the same frames at ``second_size_image``'s other size too), prints the report and
    exits non-zero when a file differs from eager by more than the architecture's tolerance (``EXPORT_TOLERANCES``)
    or did not export."""
    import argparse
    import logging

    from detectron2.data import DatasetCatalog
    from detectron2.modeling import build_model

    from segx.checkpoint import CheckedDetectionCheckpointer
    from segx.config import load_config
    from segx.data.mappers import build_mapper
    from segx.export.export_model import export_tolerances, second_size_image

    tool = f"export_{arch.lower()}"
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config-file", required=True)
    parser.add_argument("--output", default=f"output/{tool}")
    parser.add_argument("--format", default="torchscript,onnx", help="comma-separated: torchscript, onnx")
    parser.add_argument("opts", nargs=argparse.REMAINDER, help="KEY VALUE config overrides")
    args = parser.parse_args(argv)
    if not os.path.isfile(args.config_file):
        raise SystemExit(f"{tool}: config file {args.config_file} does not exist")
    logging.basicConfig(level=logging.INFO)
    cfg = load_config(args.config_file, args.opts, device="cpu", who=tool)
    if cfg.MODEL.META_ARCHITECTURE != arch:
        raise SystemExit(f"{tool}: {args.config_file} is not a {arch} config (MODEL.META_ARCHITECTURE "
                         f"{cfg.MODEL.META_ARCHITECTURE})")
    model = build_model(cfg)
    if cfg.MODEL.WEIGHTS:
        CheckedDetectionCheckpointer(model).load(cfg.MODEL.WEIGHTS)
    if not cfg.DATASETS.TEST:
        raise SystemExit(f"{tool}: cfg.DATASETS.TEST is empty: no frames to trace on")
    records = DatasetCatalog.get(cfg.DATASETS.TEST[0])
    frames = [r for r in records if r.get("video_id") == records[0].get("video_id")][:2]
    if len(frames) < 2:
        raise SystemExit(f"{tool}: the first video of {cfg.DATASETS.TEST[0]} has fewer than 2 frames")
    mapper = build_mapper(cfg, is_train=False)
    first, second = (mapper(dict(r))["image"].float() for r in frames)
    formats = tuple(f.strip() for f in args.format.split(",") if f.strip())
    # and at a second size with another aspect ratio: nothing of the traced size is baked into the graphs
    report = export_fn(model, first, second, args.output, formats,
                       second_images=(second_size_image(first), second_size_image(second)))
    print(json.dumps(report, indent=2))
    ts_tol, onnx_tol = export_tolerances(model)
    problems = [f"{name}: ONNX {r['onnx_error']}" for name, r in report.items() if r.get("onnx_error")]
    problems += [f"{name} {where}{kind}: {r[key]:.3g} > {tol:g}"
                 for name, rep in report.items() for where, r in (("", rep), ("at the second size, ", rep["second_size"]))
                 for kind, key, tol in (("TorchScript", "torchscript_max_diff", ts_tol),
                                        ("ONNX", "onnx_max_diff", onnx_tol))
                 if r.get(key) is not None and r[key] > tol]
    if problems:
        raise SystemExit(f"{tool}: the exported files differ from eager: " + "; ".join(problems))
    return 0
