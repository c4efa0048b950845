// corner_pool CUDA kernels: one thread per lane (a column for top/bottom, a row for left/right) runs the
// scan of that lane, so consecutive threads read consecutive columns for top/bottom (coalesced). For
// left/right each thread walks its own row; neighbouring threads hit different cache lines, but every
// 32-byte sector fetched is reused over the next iterations through L1.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "corner_pool.h"

namespace segx {
namespace {

using namespace corner_pool_impl;

constexpr int kThreads = 256;

struct Geom {
  int64_t lanes;  // total lanes over all planes
  int64_t M;      // lanes per plane
  int64_t L, sL, sM, plane;
  bool backwards;
};

Geom make_geom(Direction d, int64_t planes, int64_t H, int64_t W) {
  if (is_vertical(d)) return {planes * W, W, H, W, 1, H * W, scans_backwards(d)};
  return {planes * H, H, W, 1, W, H * W, scans_backwards(d)};
}

template <typename scalar_t>
__global__ void corner_pool_forward_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, Geom g) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < g.lanes; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t step = g.backwards ? -g.sL : g.sL;
    int64_t off = (q / g.M) * g.plane + (q % g.M) * g.sM + (g.backwards ? (g.L - 1) * g.sL : 0);
    acc_t run = static_cast<acc_t>(x[off]);
    out[off] = x[off];
    for (int64_t t = 1; t < g.L; ++t) {
      off += step;
      const acc_t v = static_cast<acc_t>(x[off]);
      if (v > run) run = v;
      out[off] = static_cast<scalar_t>(run);
    }
  }
}

// Reverse walk: accumulate grad_out until a position that raised the running max, which takes the sum.
template <typename scalar_t>
__global__ void corner_pool_backward_kernel(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ out,
                                            scalar_t* __restrict__ gx, Geom g) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < g.lanes; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t step = g.backwards ? -g.sL : g.sL;
    const int64_t first = (q / g.M) * g.plane + (q % g.M) * g.sM + (g.backwards ? (g.L - 1) * g.sL : 0);
    int64_t off = first + (g.L - 1) * step;
    acc_t acc = 0;
    for (int64_t t = g.L - 1; t >= 1; --t) {
      const int64_t prev = off - step;
      acc += static_cast<acc_t>(gout[off]);
      if (static_cast<acc_t>(out[off]) > static_cast<acc_t>(out[prev])) {
        gx[off] = static_cast<scalar_t>(acc);
        acc = 0;
      } else {
        gx[off] = scalar_t(0);
      }
      off = prev;
    }
    gx[off] = static_cast<scalar_t>(acc + static_cast<acc_t>(gout[off]));
  }
}

int blocks_for(int64_t n) {
  return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535));
}

at::Tensor corner_pool_forward_cuda(const at::Tensor& x_, c10::string_view direction) {
  const Direction d = parse_direction(direction);
  TORCH_CHECK(x_.dim() == 4 && x_.is_cuda(), "corner_pool: x must be a [B,C,H,W] CUDA tensor");
  c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  if (x.numel() == 0) return out;
  const Geom g = make_geom(d, x.size(0) * x.size(1), x.size(2), x.size(3));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "corner_pool_forward_cuda", [&] {
    corner_pool_forward_kernel<scalar_t><<<blocks_for(g.lanes), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

at::Tensor corner_pool_backward_cuda(const at::Tensor& grad_out, const at::Tensor& out_, c10::string_view direction) {
  const Direction d = parse_direction(direction);
  TORCH_CHECK(out_.dim() == 4 && out_.is_cuda() && grad_out.sizes() == out_.sizes(),
              "corner_pool_backward: grad_out and out must be [B,C,H,W] CUDA tensors of one shape");
  c10::cuda::CUDAGuard guard(out_.device());
  auto out = out_.contiguous();
  auto gout = grad_out.to(out.scalar_type()).contiguous();
  auto gx = at::empty_like(out, at::MemoryFormat::Contiguous);
  if (out.numel() == 0) return gx;
  const Geom g = make_geom(d, out.size(0) * out.size(1), out.size(2), out.size(3));
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "corner_pool_backward_cuda", [&] {
    corner_pool_backward_kernel<scalar_t><<<blocks_for(g.lanes), kThreads, 0, stream>>>(
        gout.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), gx.mutable_data_ptr<scalar_t>(), g);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(segx, CUDA, m) {
  m.impl("corner_pool_forward", corner_pool_forward_cuda);
  m.impl("corner_pool_backward", corner_pool_backward_cuda);
}

}  // namespace segx
