"""Chooses between a compiled ``torch.ops.segx`` kernel and the pure-PyTorch reference."""
import contextlib
import warnings

import torch

from segx import _ext

__all__ = ["use_kernel"]

# dtypes each backend's kernels are compiled for, per op
_CPU_DTYPES = {
    "corner_pool_forward": (torch.float32, torch.float64, torch.float16, torch.bfloat16),
    "flow_warp_forward": (torch.float32, torch.float64),
    "assemble_masks_forward": (torch.float32, torch.float64),
}
_CUDA_DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def _has_backend_kernel(op: str, device_type: str) -> bool:
    key = {"cpu": "CPU", "cuda": "CUDA"}.get(device_type)
    if key is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(f"segx::{op}", key)


def use_kernel(op: str, t: torch.Tensor) -> bool:
    """True when ``torch.ops.segx.<op>`` should run for tensors like ``t``.

    False during ONNX export (onnxruntime cannot run custom ops, so the reference is exported), when the
    extension or the op is missing, or when no kernel exists for ``t``'s device / dtype.
    """
    if torch.onnx.is_in_onnx_export():
        return False
    if not _ext.has_op(op):  # looked up on the module so tests can monkeypatch it
        return False
    if not _has_backend_kernel(op, t.device.type):
        return False
    dtypes = _CPU_DTYPES.get(op, ()) if t.device.type == "cpu" else _CUDA_DTYPES
    return t.dtype in dtypes


def check_tensor(t, name: str, fn: str, floating: bool = True) -> None:
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{fn}: {name} must be a torch.Tensor, got {type(t).__name__}")
    if floating and not t.is_floating_point():
        raise ValueError(f"{fn}: {name} must be a floating-point tensor, got dtype {t.dtype}")


def check_same(a: torch.Tensor, b: torch.Tensor, name_a: str, name_b: str, fn: str, dtype: bool = True) -> None:
    if a.device != b.device:
        raise ValueError(f"{fn}: {name_b} is on {b.device} but {name_a} is on {a.device}; they must be on the same device")
    if dtype and a.dtype != b.dtype:
        raise ValueError(f"{fn}: {name_b} has dtype {b.dtype} but {name_a} has {a.dtype}; they must match")


@contextlib.contextmanager
def quiet_tracer_warnings():
    """Input checks compare shapes, which under torch.jit.trace are traced values: silence the
    TracerWarning they raise (the checks guard the traced call, they do not shape the graph)."""
    if not torch.jit.is_tracing():
        yield
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        yield
