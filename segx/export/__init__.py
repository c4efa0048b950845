"""Export through detectron2's TracingAdapter: TorchScript (trace) and ONNX (checked in onnxruntime)."""
from .export_model import (  # noqa: F401
    EXPORT_TOLERANCES,
    ExportReport,
    export_model,
    export_tolerances,
    make_tracing_adapter,
    sample_input,
    second_size_image,
)
