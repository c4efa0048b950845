"""Bridges between detectron2 builds and today's torch / Pillow / setuptools / numpy.

detectron2 0.6 (the PyPI copy of its Python sources, which lacks the ``detectron2._C`` extension) does not
import or run as-is on current dependencies. Each bridge below checks for the feature it replaces and is
applied only when that feature is missing, so on an official detectron2 build none (or few) of them apply.
segx's own code never relies on a bridge being applied: it works on detectron2 main without them.

``apply_all()`` runs once on ``import segx`` and logs one line naming the bridges it applied;
``APPLIED`` keeps their names.
"""
import functools
import importlib
import importlib.util
import inspect
import logging
import os
import random
import sys
import types

__all__ = ["apply_all", "APPLIED", "D2_HAS_C", "MissingDetectron2Op"]

logger = logging.getLogger("segx.compat")

APPLIED = []
D2_HAS_C = None  # True when detectron2 was built with its C++/CUDA extension


class MissingDetectron2Op(RuntimeError):
    """Raised by ops of ``detectron2._C`` when detectron2 was installed without its extension."""


def _bridge(name):
    """Decorates ``fn() -> bool``; records ``name`` in APPLIED when ``fn`` applied something."""

    def deco(fn):
        @functools.wraps(fn)
        def run():
            if fn():
                APPLIED.append(name)
                return True
            return False

        run.bridge_name = name
        return run

    return deco


# --- before detectron2 is imported -------------------------------------------------------------------------


@_bridge("pkg_resources")
def bridge_pkg_resources():
    """setuptools >= 81 has no ``pkg_resources``; detectron2.model_zoo imports it for ``resource_filename``."""
    if importlib.util.find_spec("pkg_resources") is not None:
        return False
    shim = types.ModuleType("pkg_resources")
    shim.__doc__ = "segx stand-in for setuptools' pkg_resources: only resource_filename/resource_exists."

    def resource_filename(package, resource):
        import importlib.resources

        return str(importlib.resources.files(package).joinpath(resource))

    def resource_exists(package, resource):
        return os.path.exists(resource_filename(package, resource))

    shim.resource_filename = resource_filename
    shim.resource_exists = resource_exists
    sys.modules["pkg_resources"] = shim
    return True


@_bridge("PIL.Image.LINEAR")
def bridge_pil_linear():
    """Pillow 10 removed ``Image.LINEAR`` (= BILINEAR); detectron2 0.6 uses it as a default argument."""
    from PIL import Image

    if hasattr(Image, "LINEAR"):
        return False
    Image.LINEAR = Image.BILINEAR
    return True


def _missing_op(op_name):
    def op(*args, **kwargs):
        raise MissingDetectron2Op(
            f"detectron2 op '{op_name}' needs detectron2's compiled extension (detectron2._C), which this "
            "detectron2 install lacks (the PyPI copy of v0.6's Python sources). Rotated boxes, RoIAlignRotated "
            "and the fast COCO evaluator need it; install detectron2 from source to get it: "
            "pip install --no-build-isolation 'git+https://github.com/facebookresearch/detectron2.git'"
        )

    op.__name__ = op_name
    return op


@_bridge("detectron2._C stand-in")
def bridge_detectron2_c():
    """``detectron2.layers`` imports ``detectron2._C`` at module level; give it a module whose ops say what is missing."""
    global D2_HAS_C
    if "detectron2._C" in sys.modules and not getattr(sys.modules["detectron2._C"], "_segx_stand_in", False):
        D2_HAS_C = True
        return False
    if importlib.util.find_spec("detectron2._C") is not None:
        D2_HAS_C = True
        return False
    D2_HAS_C = False
    import detectron2

    stand_in = types.ModuleType("detectron2._C")
    stand_in._segx_stand_in = True
    stand_in.__getattr__ = lambda name: _missing_op(name) if not name.startswith("__") else _raise_attr(name)
    # detectron2.utils.collect_env reports these; say plainly that there is no build.
    stand_in.get_compiler_version = lambda: "none: detectron2._C not built (segx stand-in)"
    stand_in.get_cuda_version = lambda: "none: detectron2._C not built (segx stand-in)"
    stand_in.has_cuda = lambda: False
    sys.modules["detectron2._C"] = stand_in
    detectron2._C = stand_in
    return True


def _raise_attr(name):
    raise AttributeError(name)


# --- after detectron2 imports --------------------------------------------------------------------------------


@_bridge("deform conv -> torchvision")
def bridge_deform_conv():
    """Without ``detectron2._C``, route detectron2's DeformConv / ModulatedDeformConv to torchvision's kernel."""
    if D2_HAS_C:
        return False
    from torchvision.ops import deform_conv2d

    from detectron2.layers import deform_conv as d2_deform

    def deform_forward(self, x, offset):
        out = deform_conv2d(
            x, offset, self.weight, getattr(self, "bias", None),
            stride=self.stride, padding=self.padding, dilation=self.dilation,
        )
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    def modulated_forward(self, x, offset, mask):
        out = deform_conv2d(
            x, offset, self.weight, self.bias,
            stride=self.stride, padding=self.padding, dilation=self.dilation, mask=mask,
        )
        if self.norm is not None:
            out = self.norm(out)
        if self.activation is not None:
            out = self.activation(out)
        return out

    d2_deform.DeformConv.forward = deform_forward
    d2_deform.ModulatedDeformConv.forward = modulated_forward
    return True


class _NumpyWithAliases(types.ModuleType):
    """numpy as seen by one old module: the aliases numpy 1.24 removed (np.int, np.float, ...) plus numpy."""

    _ALIASES = {"int": int, "float": float, "bool": bool, "object": object, "str": str, "complex": complex}

    def __init__(self, numpy):
        super().__init__("numpy")
        self._numpy = numpy

    def __getattr__(self, name):
        if name in self._ALIASES and not hasattr(self._numpy, name):
            return self._ALIASES[name]
        return getattr(self._numpy, name)


@_bridge("numpy type aliases")
def bridge_numpy_aliases():
    """detectron2 0.6 uses ``np.int``/``np.float``/``np.bool`` (removed in numpy 1.24); patch only its modules."""
    import numpy as np

    if all(hasattr(np, a) for a in ("int", "float", "bool")):
        return False
    patched = False
    for mod_name in (
        "detectron2.evaluation.sem_seg_evaluation",
        "detectron2.evaluation.pascal_voc_evaluation",
        "detectron2.structures.masks",
    ):
        mod = importlib.import_module(mod_name)
        src = inspect.getsource(mod)
        if any(f"np.{a})" in src or f"np.{a}," in src or f"np.{a}\n" in src for a in ("int", "float", "bool")):
            mod.np = _NumpyWithAliases(np)
            patched = True
    return patched


@_bridge("COCOEvaluator use_fast_impl=False")
def bridge_coco_evaluator():
    """The fast COCO evaluation path needs ``detectron2._C``; fall back to pycocotools' evaluation."""
    if D2_HAS_C:
        return False
    from detectron2.evaluation import coco_evaluation

    cls = coco_evaluation.COCOEvaluator
    if getattr(cls.__init__, "_segx_bridged", False):
        return True
    if "use_fast_impl" not in inspect.signature(cls.__init__).parameters:
        return False
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        kwargs["use_fast_impl"] = False
        orig_init(self, *args, **kwargs)

    __init__._segx_bridged = True
    cls.__init__ = __init__
    return True


@_bridge("detectron2.export without caffe2")
def bridge_export_package():
    """detectron2 0.6's ``detectron2.export/__init__`` imports caffe2 (gone from torch).

    Register the package without running that ``__init__`` so ``detectron2.export.flatten`` (TracingAdapter)
    and ``detectron2.export.torchscript`` import; the caffe2 exporters stay unavailable.
    """
    if "detectron2.export" in sys.modules:
        return getattr(sys.modules["detectron2.export"], "_segx_stand_in", False)
    spec = importlib.util.find_spec("detectron2.export")
    if spec is None or importlib.util.find_spec("caffe2") is not None:
        return False
    with open(spec.origin) as f:
        init_src = f.read()
    if "from .api import" not in init_src or "try:" in init_src:
        return False  # main guards the caffe2 import itself
    pkg = types.ModuleType("detectron2.export")
    pkg.__path__ = list(spec.submodule_search_locations)
    pkg.__file__ = spec.origin
    pkg.__package__ = "detectron2.export"
    pkg._segx_stand_in = True
    pkg.__doc__ = "segx stand-in: detectron2.export without its caffe2 exporters"
    sys.modules["detectron2.export"] = pkg
    import detectron2

    detectron2.export = pkg
    from detectron2.export.flatten import TracingAdapter
    from detectron2.export.torchscript import dump_torchscript_IR, scripting_with_instances

    pkg.TracingAdapter = TracingAdapter
    pkg.dump_torchscript_IR = dump_torchscript_IR
    pkg.scripting_with_instances = scripting_with_instances
    return True


def _distributed_worker_any_backend(
    local_rank, main_func, world_size, num_gpus_per_machine, machine_rank, dist_url, args, timeout=None
):
    """detectron2's per-process worker, with GLOO when there is no GPU (v0.6 asserts CUDA and uses NCCL only)."""
    import torch
    import torch.distributed as dist

    from detectron2.engine.launch import DEFAULT_TIMEOUT
    from detectron2.utils import comm

    has_gpu = torch.cuda.is_available()
    global_rank = machine_rank * num_gpus_per_machine + local_rank
    dist.init_process_group(
        backend="NCCL" if has_gpu else "GLOO",
        init_method=dist_url,
        world_size=world_size,
        rank=global_rank,
        timeout=timeout or DEFAULT_TIMEOUT,
    )
    assert comm._LOCAL_PROCESS_GROUP is None
    num_machines = world_size // num_gpus_per_machine
    for i in range(num_machines):
        ranks_on_i = list(range(i * num_gpus_per_machine, (i + 1) * num_gpus_per_machine))
        pg = dist.new_group(ranks_on_i)
        if i == machine_rank:
            comm._LOCAL_PROCESS_GROUP = pg
    if has_gpu:
        if num_gpus_per_machine > torch.cuda.device_count():
            raise RuntimeError(
                f"--num-gpus {num_gpus_per_machine} but only {torch.cuda.device_count()} GPUs are visible"
            )
        torch.cuda.set_device(local_rank)
    comm.synchronize()
    main_func(*args)


@_bridge("launch: GLOO on CPU")
def bridge_launch_cpu():
    """detectron2 0.6's ``launch`` workers assert CUDA and use NCCL only; use GLOO when there is no GPU."""
    launch_mod = importlib.import_module("detectron2.engine.launch")  # the package re-exports a function by that name
    worker = launch_mod._distributed_worker
    if worker is _distributed_worker_any_backend:
        return True
    src = inspect.getsource(worker)
    if "gloo" in src.lower():
        return False  # detectron2 main picks GLOO itself
    launch_mod._distributed_worker = _distributed_worker_any_backend
    return True


@_bridge("DDP on CPU")
def bridge_ddp_cpu():
    """``create_ddp_model`` passes ``device_ids=[local_rank]`` even for a CPU model, which DDP rejects."""
    defaults = importlib.import_module("detectron2.engine.defaults")
    create = defaults.create_ddp_model
    if getattr(create, "_segx_bridged", False):
        return True
    if 'kwargs["device_ids"] = [comm.get_local_rank()]' not in inspect.getsource(create):
        return False

    @functools.wraps(create)
    def create_ddp_model(model, *, fp16_compression=False, **kwargs):
        on_cpu = all(p.device.type == "cpu" for p in model.parameters())
        if on_cpu and "device_ids" not in kwargs:
            kwargs["device_ids"] = None
        return create(model, fp16_compression=fp16_compression, **kwargs)

    create_ddp_model._segx_bridged = True
    defaults.create_ddp_model = create_ddp_model
    return True


class _SetSamplingRandom(random.Random):
    """``random.Random`` whose ``sample`` also takes a set (sorted first), as Python < 3.11 did."""

    def sample(self, population, k, **kwargs):
        if isinstance(population, (set, frozenset)):
            population = sorted(population)
        return super().sample(population, k, **kwargs)


@_bridge("MapDataset fallback on Python >= 3.11")
def bridge_map_dataset_fallback():
    """When a mapper returns None (segx's ``SEGX.DATA.BAD_IMAGES skip``), detectron2's ``MapDataset`` picks another
    record with ``random.sample`` on a set, which Python >= 3.11 refuses (TypeError). Its random generator is given
    a ``sample`` that accepts sets (sorted, so the pick stays deterministic)."""
    try:
        random.Random(0).sample({0}, 1)
        return False
    except TypeError:
        pass
    from detectron2.data import common

    cls = common.MapDataset
    if getattr(cls.__init__, "_segx_bridged", False):
        return True
    orig_init = cls.__init__

    @functools.wraps(orig_init)
    def __init__(self, *args, **kwargs):
        orig_init(self, *args, **kwargs)
        if type(getattr(self, "_rng", None)) is random.Random:
            rng = _SetSamplingRandom()
            rng.setstate(self._rng.getstate())
            self._rng = rng

    __init__._segx_bridged = True
    cls.__init__ = __init__
    return True


BEFORE_IMPORT = (bridge_pkg_resources, bridge_pil_linear, bridge_detectron2_c)
AFTER_IMPORT = (
    bridge_deform_conv,
    bridge_numpy_aliases,
    bridge_coco_evaluator,
    bridge_export_package,
    bridge_launch_cpu,
    bridge_ddp_cpu,
    bridge_map_dataset_fallback,
)

_done = False


def apply_all():
    """Applies every bridge that this environment needs (once); returns the names applied."""
    global _done
    if _done:
        return list(APPLIED)
    if importlib.util.find_spec("detectron2") is None:
        raise ImportError(
            "segx needs detectron2, which is not installed. Run `make setup` (or scripts/install_detectron2.sh "
            "with your python) to install it; see README.md 'Installing detectron2'."
        )
    for bridge in BEFORE_IMPORT:
        bridge()
    import detectron2.layers  # noqa: F401  (must import now that _C resolves)

    for bridge in AFTER_IMPORT:
        bridge()
    _done = True
    if APPLIED:
        logger.info("segx compat bridges applied: %s", ", ".join(APPLIED))
    return list(APPLIED)
