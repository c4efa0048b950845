"""The CUDA kernels compile (sm_90 only, to stay fast) even on a machine without a GPU.

Runs ``FORCE_CUDA=1 python setup.py build_ext`` into a temporary folder, i.e. exactly the project's own
build with the .cu files added. Needs nvcc and a CUDA toolkit root (lib64/libcudart.so); set
SEGX_SKIP_CUDA_BUILD_TEST=1 to skip it (it takes a few minutes on 2 cores).
"""
import glob
import os
import shutil
import subprocess
import sys
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _cuda_root():
    if os.environ.get("CUDA_HOME"):
        return os.environ["CUDA_HOME"]
    nvcc = shutil.which("nvcc")
    candidates = [os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))] if nvcc else []
    candidates += ["/usr/local/cuda"] + sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in candidates:
        if glob.glob(os.path.join(root, "lib64", "libcudart.so*")) and os.path.exists(os.path.join(root, "bin", "nvcc")):
            return root
    return None


@pytest.mark.slow
@pytest.mark.skipif(bool(os.environ.get("SEGX_SKIP_CUDA_BUILD_TEST")), reason="SEGX_SKIP_CUDA_BUILD_TEST is set")
def test_cuda_extension_builds(tmp_path):
    root = _cuda_root()
    if root is None:
        pytest.skip("no CUDA toolkit (nvcc + lib64/libcudart.so) found")
    env = dict(os.environ, FORCE_CUDA="1", CUDA_HOME=root, TORCH_CUDA_ARCH_LIST="9.0")
    env["PATH"] = os.path.join(root, "bin") + os.pathsep + env.get("PATH", "")
    # Objects go to a persistent, git-ignored folder: ninja then recompiles only what changed on later runs.
    build_temp = os.path.join(ROOT, "build", "cuda_build_test")
    cmd = [sys.executable, "setup.py", "build_ext", "--build-temp", build_temp, "--build-lib", str(tmp_path / "lib")]
    t0 = time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=1800)
    elapsed = time.time() - t0
    assert proc.returncode == 0, f"CUDA build failed after {elapsed:.0f}s:\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
    built = glob.glob(str(tmp_path / "lib" / "segx" / "_C*.so"))
    assert built, f"no segx/_C*.so produced; output:\n{proc.stdout[-2000:]}"
    objects = glob.glob(os.path.join(build_temp, "**", "*_cuda.o"), recursive=True)
    assert len(objects) == len(glob.glob(os.path.join(ROOT, "csrc", "**", "*.cu"), recursive=True)), objects
    print(f"CUDA build took {elapsed:.0f}s")
