"""Builds the ``segx`` package and its ``segx._C`` extension from ``csrc/``.

The CPU kernels are always built. CUDA kernels (``csrc/**/*.cu``) are built when a GPU is visible or
``FORCE_CUDA=1``. ``CUDA_HOME`` must point at the toolkit root (the folder holding
``lib64/libcudart.so``); when it is unset we look for that folder instead of trusting torch's guess from
the ``nvcc`` on PATH, which on some machines is a wrapper script outside the toolkit.
"""
import glob
import os
import shutil
import sys

from setuptools import find_packages, setup


def _find_cuda_root():
    """The CUDA toolkit root: $CUDA_HOME, else the first candidate that holds lib64/libcudart.so."""
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    candidates = []
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if glob.glob(os.path.join(root, "lib64", "libcudart.so*")):
            return root
    return None


def _want_cuda():
    if os.environ.get("FORCE_CUDA", "0") == "1":
        return True
    import torch

    return torch.cuda.is_available()


def get_extensions():
    with_cuda = _want_cuda()
    if with_cuda:
        root = _find_cuda_root()
        if root is None:
            raise RuntimeError(
                "segx: CUDA build requested (GPU visible or FORCE_CUDA=1) but no CUDA toolkit root with "
                "lib64/libcudart.so was found; set CUDA_HOME to it."
            )
        os.environ["CUDA_HOME"] = root  # before torch.utils.cpp_extension reads it
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            import torch

            if not torch.cuda.is_available():
                # No GPU to ask: compile for Ampere and Hopper rather than every arch torch knows.
                os.environ["TORCH_CUDA_ARCH_LIST"] = "8.0;9.0"
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    here = os.path.dirname(os.path.abspath(__file__))
    sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cuda_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    extra_compile_args = {"cxx": ["-O3"]}
    extra_link_args = []
    if sys.platform.startswith("linux"):
        # at::parallel_for is inlined into our code: without -fopenmp its "omp parallel" is dropped and
        # the CPU kernels run on one thread (torch links the same libgomp.so.1, so one runtime is shared).
        extra_compile_args["cxx"].append("-fopenmp")
        extra_link_args.append("-fopenmp")
    define_macros = []
    ext_cls = CppExtension
    if with_cuda:
        ext_cls = CUDAExtension
        sources += cuda_sources
        define_macros.append(("WITH_CUDA", None))
        extra_compile_args["nvcc"] = ["-O3", "--expt-relaxed-constexpr"]
    return [
        ext_cls(
            "segx._C",
            sources,
            include_dirs=[os.path.join(here, "csrc")],
            define_macros=define_macros,
            extra_compile_args=extra_compile_args,
            extra_link_args=extra_link_args,
        )
    ]


def _build_ext_cls():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=shutil.which("ninja") is not None)


setup(
    name="segx",
    version="0.1.0",
    description="Detectron2 extension: YOLACT, UPSNet, CornerNet/CenterNet, Hourglass, RetinaFace, ... as meta-arch plugins",
    packages=find_packages(exclude=("tests", "tests.*", "configs", "tools")),
    python_requires=">=3.9",
    ext_modules=get_extensions(),
    cmdclass={"build_ext": _build_ext_cls()},
    entry_points={"console_scripts": ["segx-train=segx.engine.train_net:cli", "segx-export=segx.export.export_model:cli"]},
    zip_safe=False,
)
