// assemble_masks: helpers shared by the CPU and CUDA kernels.
#pragma once
#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define SEGX_HD __host__ __device__ inline
#else
#define SEGX_HD inline
#endif

namespace segx {
namespace assemble_masks_impl {

// First pixel index j in [0, size] whose centre j + 0.5 is >= v (size when there is none). Computed from
// ceil(v - 0.5) and then corrected with the exact comparison the pure-PyTorch reference makes, so kernel
// and reference agree on every pixel even when v - 0.5 rounds.
SEGX_HD int64_t first_centre_at_least(double v, int64_t size) {
  double c = ceil(v - 0.5);
  c = c < 0.0 ? 0.0 : (c > static_cast<double>(size) ? static_cast<double>(size) : c);
  int64_t j = static_cast<int64_t>(c);
  while (j > 0 && static_cast<double>(j - 1) + 0.5 >= v) --j;
  while (j < size && static_cast<double>(j) + 0.5 < v) ++j;
  return j;
}

// Pixels [begin, end) along one axis whose centres satisfy lo <= centre < hi. NaN bounds give no pixels.
SEGX_HD void pixel_range(double lo, double hi, int64_t size, int64_t* begin, int64_t* end) {
  if (lo != lo || hi != hi) {
    *begin = *end = 0;
    return;
  }
  const int64_t a = first_centre_at_least(lo, size);
  const int64_t b = first_centre_at_least(hi, size);
  *begin = a;
  *end = b > a ? b : a;
}

}  // namespace assemble_masks_impl
}  // namespace segx
