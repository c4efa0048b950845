// Entry point of the segx._C extension.
//
// Each op lives in csrc/<op>/: <op>.cpp declares its schema with TORCH_LIBRARY_FRAGMENT(segx, m) and
// dispatches; <op>_cpu.cpp and <op>_cuda.cu register kernels with TORCH_LIBRARY_IMPL(segx, <Backend>, m).
// Ops are reached as torch.ops.segx.<name> so that they survive torch.jit.trace / TorchScript.
#include <Python.h>
#include <torch/library.h>

#ifdef WITH_CUDA
#include <cuda.h>
#endif

namespace segx {

// Version of CUDA the extension was compiled against (e.g. 13000), or -1 for a CPU-only build.
int64_t cuda_version() {
#ifdef WITH_CUDA
  return CUDA_VERSION;
#else
  return -1;
#endif
}

TORCH_LIBRARY(segx, m) {
  m.def("cuda_version", &cuda_version);
}

}  // namespace segx

// A plain Python module: importing segx._C runs the static registrations above.
static PyModuleDef segx_C_module = {PyModuleDef_HEAD_INIT, "_C", "segx C++/CUDA ops (torch.ops.segx)", -1, nullptr};
PyMODINIT_FUNC PyInit__C(void) { return PyModule_Create(&segx_C_module); }
