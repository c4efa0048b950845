"""A fake second device for CPU-only tests of device placement (issue 18: models that train on the CPU stopped on a
GPU because targets were built on the CPU and mixed with the model's tensors).

Inside ``fake_device()``, ``model.to(FAKE)`` puts a model on the fake device: its tensors say ``device="meta"`` but
hold real CPU data (``OnFake``, a wrapper tensor subclass), so the model really computes, data-dependent code
included. Every aten op is checked the way CUDA checks devices, before it runs on the CPU data:

* all tensor arguments must be on one device; a 0-dim CPU tensor is allowed beside device tensors (a scalar);
* indexing (``index``, ``index_put_``) may use CPU indices on a device tensor, never device indices on a CPU tensor
  (the error YOLACT hit: "indices should be either on cpu or on the same device as the indexed tensor"); the values
  written into a device tensor must be on the device;
* copies (``.to``, ``copy_``) cross devices freely.

A tensor made without ``device=`` (``torch.zeros(n)``, ``torch.from_numpy``, a rasterised polygon) is a CPU tensor,
and the first op that mixes it with the model's tensors raises ``DeviceMixError``, naming the op. ``torch.tensor``,
``torch.as_tensor`` and ``Tensor.new_tensor`` build their data below the Python dispatcher and ``Tensor.tolist``
refuses tensor subclasses, so those are patched while the context is active, and ``torch.autocast`` maps the fake
device to the CPU's (autocast has no "meta" type).

What it cannot see: code that branches on ``device.type == "cuda"`` takes its non-CUDA branch here, and a CUDA
kernel's own checks do not run. The GPU test (``tests/test_cuda_training.py``) covers those.
"""
import contextlib

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten, tree_map

__all__ = ["FAKE", "DeviceMixError", "OnFake", "fake_device"]

FAKE = torch.device("meta")
aten = torch.ops.aten

_CROSS_DEVICE_OPS = {aten._to_copy.default, aten.copy_.default, aten._copy_from.default,
                     aten._copy_from_and_resize.default, aten.copy.default}
_INDEX_OPS = {aten.index.Tensor, aten._unsafe_index.Tensor, aten.index_put_.default, aten.index_put.default,
              aten._index_put_impl_.default, aten._unsafe_index_put.default}


class DeviceMixError(RuntimeError):
    """An op mixed tensors of the fake device and of the CPU where CUDA would refuse them."""


class OnFake(torch.Tensor):
    """A tensor on the fake device: reports ``device="meta"``, computes on its CPU ``inner`` tensor."""

    inner: torch.Tensor

    @staticmethod
    def __new__(cls, inner):
        r = torch.Tensor._make_wrapper_subclass(
            cls, inner.size(), strides=inner.stride(), storage_offset=inner.storage_offset(), dtype=inner.dtype,
            layout=inner.layout, device=FAKE, requires_grad=inner.requires_grad)
        r.inner = inner
        return r

    def __repr__(self):
        return f"OnFake({self.inner!r})"

    __torch_function__ = torch._C._disabled_torch_function_impl

    @classmethod
    def __torch_dispatch__(cls, func, types, args=(), kwargs=None):
        return _run(func, args, kwargs or {})


def _shapes(ts):
    return [tuple(t.shape) for t in ts]


def _check(func, args, kwargs):
    if func in _CROSS_DEVICE_OPS:
        return
    tensors = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
    fake = [t for t in tensors if isinstance(t, OnFake)]
    if not fake:
        return
    if func in _INDEX_OPS:
        self_t, indices = args[0], [i for i in args[1] if i is not None]
        if not isinstance(self_t, OnFake):
            if any(isinstance(i, OnFake) for i in indices):
                raise DeviceMixError(f"{func}: indices on the device index a CPU tensor {tuple(self_t.shape)} (CUDA: "
                                     "'indices should be either on cpu or on the same device as the indexed tensor')")
            self_t = None
        values = [t for t in tree_flatten((args[2:], kwargs))[0] if isinstance(t, torch.Tensor)]
        cpu_values = [t for t in values if not isinstance(t, OnFake) and t.dim() > 0]
        if self_t is not None and cpu_values:
            raise DeviceMixError(f"{func}: CPU values {_shapes(cpu_values)} written into a device tensor "
                                 f"{tuple(self_t.shape)}")
        return
    cpu = [t for t in tensors if not isinstance(t, OnFake) and t.dim() > 0]
    if cpu:
        raise DeviceMixError(f"{func}: tensors on the device {_shapes(fake)} and on the CPU {_shapes(cpu)} (CUDA: "
                             "'Expected all tensors to be on the same device'); create tensors with device= or move "
                             "them with .to(device)")


def _is_fake_device(device):
    return device is not None and torch.device(device).type == FAKE.type


def _run(func, args, kwargs):
    _check(func, args, kwargs)
    to_fake = any(isinstance(t, OnFake) for t in tree_flatten((args, kwargs))[0])
    if "device" in kwargs:
        if _is_fake_device(kwargs["device"]):
            kwargs = dict(kwargs, device=torch.device("cpu"))
            to_fake = True
        elif kwargs["device"] is not None:
            to_fake = False  # e.g. .to("cpu"), torch.zeros(..., device="cpu")
    wrappers = {}

    def unwrap(t):
        if isinstance(t, OnFake):
            wrappers[id(t.inner)] = t
            return t.inner
        return t

    out = func(*tree_map(unwrap, args), **tree_map(unwrap, kwargs))
    first = args[0] if args else None
    if isinstance(first, OnFake) and (first.shape != first.inner.shape or first.stride() != first.inner.stride()):
        # an in-place op changed the metadata (unsqueeze_, transpose_, resize_): change the wrapper's the same way;
        # with Python dispatch off the wrapper is a data-less meta tensor, so this runs the meta kernel
        with torch._C._DisableTorchDispatch():
            func(*args, **kwargs)

    def wrap(t):
        if not isinstance(t, torch.Tensor) or isinstance(t, OnFake):
            return t
        if id(t) in wrappers:  # in-place and out= ops return their argument
            return wrappers[id(t)]
        return OnFake(t) if to_fake else t

    return tree_map(wrap, out)


class _FakeDeviceMode(TorchDispatchMode):
    """Routes factory calls with ``device=FAKE`` (no tensor argument to dispatch on) to ``_run``."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if any(issubclass(t, OnFake) for t in types) or _is_fake_device(kwargs.get("device")):
            return _run(func, args, kwargs)
        return func(*args, **kwargs)


_tensor, _as_tensor, _new_tensor, _tolist, _autocast = (
    torch.tensor, torch.as_tensor, torch.Tensor.new_tensor, torch.Tensor.tolist, torch.autocast)


def _patched_tensor(data, *, device=None, **kwargs):
    if _is_fake_device(device):
        return OnFake(_tensor(data, device="cpu", **kwargs))
    return _tensor(data, device=device, **kwargs)


def _patched_as_tensor(data, dtype=None, device=None):
    if _is_fake_device(device) and not isinstance(data, OnFake):
        t = _as_tensor(data, dtype=dtype, device="cpu")
        return OnFake(t.clone() if isinstance(data, torch.Tensor) else t)  # a copy, as a move to a device is
    return _as_tensor(data, dtype=dtype, device=device)


def _patched_new_tensor(self, data, dtype=None, device=None, requires_grad=False):
    if _is_fake_device(device) or (device is None and isinstance(self, OnFake)):
        return OnFake(_tensor(data, dtype=dtype or self.dtype, device="cpu", requires_grad=requires_grad))
    return _new_tensor(self, data, dtype=dtype, device=device, requires_grad=requires_grad)


def _patched_tolist(self):
    return _tolist(self.inner if isinstance(self, OnFake) else self)


class _PatchedAutocast(_autocast):
    def __init__(self, device_type, *args, **kwargs):
        super().__init__("cpu" if device_type == FAKE.type else device_type, *args, **kwargs)


@contextlib.contextmanager
def fake_device():
    """While active, ``module.to(FAKE)`` / ``tensor.to(FAKE)`` put things on the fake device and every op is
    device-checked (module docstring). Not thread-safe: it patches ``torch.tensor``, ``torch.as_tensor``,
    ``Tensor.new_tensor``, ``Tensor.tolist`` and ``torch.autocast`` for its duration."""
    saved = (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor, torch.Tensor.tolist, torch.autocast,
             torch.amp.autocast)
    torch.tensor, torch.as_tensor = _patched_tensor, _patched_as_tensor
    torch.Tensor.new_tensor, torch.Tensor.tolist = _patched_new_tensor, _patched_tolist
    torch.autocast = torch.amp.autocast = _PatchedAutocast
    try:
        with _FakeDeviceMode():
            yield
    finally:
        (torch.tensor, torch.as_tensor, torch.Tensor.new_tensor, torch.Tensor.tolist, torch.autocast,
         torch.amp.autocast) = saved
