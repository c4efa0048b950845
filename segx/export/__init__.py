"""Export through detectron2's TracingAdapter: TorchScript (trace) and ONNX (checked in onnxruntime)."""
from .export_model import ExportReport, export_model, make_tracing_adapter, sample_input  # noqa: F401
