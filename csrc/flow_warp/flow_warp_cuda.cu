// flow_warp CUDA kernels: one thread per output pixel computes the bilinear stencil once and loops over
// channels (reads of x are gathers, writes of out are coalesced). Backward scatters into grad_x with
// atomics (into an fp32 buffer for half/bfloat16 inputs) and sums the flow gradient over channels in a
// register, so grad_flow needs no atomics.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <ATen/cuda/Atomic.cuh>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

namespace segx {
namespace {

constexpr int kThreads = 256;

template <typename acc_t>
struct Stencil {
  int64_t idx[4];  // nw, ne, sw, se plane offsets (0 when outside)
  acc_t w[4];      // bilinear weights (0 when outside)
  acc_t dwx[4];    // d w / d px
  acc_t dwy[4];    // d w / d py
};

template <typename acc_t>
__device__ __forceinline__ acc_t clamp_coord(acc_t v, acc_t lo, acc_t hi) {
  return v < lo ? lo : (v > hi ? hi : v);
}

template <typename acc_t, bool kGrad>
__device__ __forceinline__ void make_stencil(acc_t px, acc_t py, int64_t H, int64_t W, Stencil<acc_t>& s) {
  // Beyond one pixel outside only zeros are sampled; clamping keeps the int conversion defined.
  px = clamp_coord(px, acc_t(-2), static_cast<acc_t>(W + 1));
  py = clamp_coord(py, acc_t(-2), static_cast<acc_t>(H + 1));
  const acc_t fx = floor(px), fy = floor(py);
  const int64_t x0 = static_cast<int64_t>(fx), y0 = static_cast<int64_t>(fy);
  const acc_t ax = px - fx, ay = py - fy, bx = acc_t(1) - ax, by = acc_t(1) - ay;
  const acc_t w[4] = {bx * by, ax * by, bx * ay, ax * ay};
  const acc_t dwx[4] = {-by, by, -ay, ay};
  const acc_t dwy[4] = {-bx, -ax, bx, ax};
#pragma unroll
  for (int k = 0; k < 4; ++k) {
    const int64_t xx = x0 + (k & 1), yy = y0 + (k >> 1);
    const bool in = xx >= 0 && xx < W && yy >= 0 && yy < H;
    s.idx[k] = in ? yy * W + xx : 0;
    s.w[k] = in ? w[k] : acc_t(0);
    if (kGrad) {
      s.dwx[k] = in ? dwx[k] : acc_t(0);
      s.dwy[k] = in ? dwy[k] : acc_t(0);
    }
  }
}

template <typename scalar_t>
__global__ void flow_warp_forward_kernel(const scalar_t* __restrict__ x, const scalar_t* __restrict__ flow,
                                         scalar_t* __restrict__ out, int64_t B, int64_t C, int64_t H, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = H * W;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < B * HW; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = q / HW, p = q % HW;
    Stencil<acc_t> s;
    make_stencil<acc_t, false>(static_cast<acc_t>(p % W) + static_cast<acc_t>(flow[(b * 2) * HW + p]),
                               static_cast<acc_t>(p / W) + static_cast<acc_t>(flow[(b * 2 + 1) * HW + p]), H, W, s);
    for (int64_t c = 0; c < C; ++c) {
      const scalar_t* xc = x + (b * C + c) * HW;
      acc_t v = s.w[0] * static_cast<acc_t>(xc[s.idx[0]]) + s.w[1] * static_cast<acc_t>(xc[s.idx[1]]) +
                s.w[2] * static_cast<acc_t>(xc[s.idx[2]]) + s.w[3] * static_cast<acc_t>(xc[s.idx[3]]);
      out[(b * C + c) * HW + p] = static_cast<scalar_t>(v);
    }
  }
}

// gx_t is scalar_t for float/double and float for half/bfloat16.
template <typename scalar_t, typename gx_t>
__global__ void flow_warp_backward_kernel(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ x,
                                          const scalar_t* __restrict__ flow, gx_t* __restrict__ gx,
                                          scalar_t* __restrict__ gflow, int64_t B, int64_t C, int64_t H, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = H * W;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < B * HW; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = q / HW, p = q % HW;
    Stencil<acc_t> s;
    make_stencil<acc_t, true>(static_cast<acc_t>(p % W) + static_cast<acc_t>(flow[(b * 2) * HW + p]),
                              static_cast<acc_t>(p / W) + static_cast<acc_t>(flow[(b * 2 + 1) * HW + p]), H, W, s);
    acc_t gfx = 0, gfy = 0;
    for (int64_t c = 0; c < C; ++c) {
      const int64_t base = (b * C + c) * HW;
      const acc_t g = static_cast<acc_t>(gout[base + p]);
      acc_t dx = 0, dy = 0;
#pragma unroll
      for (int k = 0; k < 4; ++k) {
        const acc_t v = static_cast<acc_t>(x[base + s.idx[k]]);
        dx += s.dwx[k] * v;
        dy += s.dwy[k] * v;
        if (s.w[k] != acc_t(0)) gpuAtomicAdd(gx + base + s.idx[k], static_cast<gx_t>(s.w[k] * g));
      }
      gfx += g * dx;
      gfy += g * dy;
    }
    gflow[(b * 2) * HW + p] = static_cast<scalar_t>(gfx);
    gflow[(b * 2 + 1) * HW + p] = static_cast<scalar_t>(gfy);
  }
}

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

void check_inputs(const at::Tensor& x, const at::Tensor& flow) {
  TORCH_CHECK(x.dim() == 4 && x.is_cuda(), "flow_warp: x must be a [B,C,H,W] CUDA tensor");
  TORCH_CHECK(flow.dim() == 4 && flow.size(0) == x.size(0) && flow.size(1) == 2 && flow.size(2) == x.size(2) &&
                  flow.size(3) == x.size(3) && flow.device() == x.device(),
              "flow_warp: flow must be [B,2,H,W] matching x on the same device");
  TORCH_CHECK(x.scalar_type() == flow.scalar_type(), "flow_warp: x and flow dtypes differ");
}

at::Tensor flow_warp_forward_cuda(const at::Tensor& x_, const at::Tensor& flow_) {
  check_inputs(x_, flow_);
  c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto flow = flow_.contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto out = at::empty({B, C, H, W}, x.options());
  if (out.numel() == 0) return out;
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "flow_warp_forward_cuda", [&] {
    flow_warp_forward_kernel<scalar_t><<<blocks_for(B * H * W), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), B, C, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> flow_warp_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x_,
                                                           const at::Tensor& flow_) {
  check_inputs(x_, flow_);
  TORCH_CHECK(grad_out.sizes() == x_.sizes(), "flow_warp_backward: grad_out must match x");
  c10::cuda::CUDAGuard guard(x_.device());
  auto x = x_.contiguous();
  auto flow = flow_.contiguous();
  auto gout = grad_out.to(x.scalar_type()).contiguous();
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  const bool reduced = x.scalar_type() == at::kHalf || x.scalar_type() == at::kBFloat16;
  auto gx = at::zeros({B, C, H, W}, x.options().dtype(reduced ? at::kFloat : x.scalar_type()));
  auto gflow = at::zeros({B, 2, H, W}, x.options());
  if (B * H * W == 0 || C == 0) return {gx.to(x.scalar_type()), gflow};
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "flow_warp_backward_cuda", [&] {
    using gx_t = std::conditional_t<std::is_same_v<scalar_t, double>, double, float>;
    flow_warp_backward_kernel<scalar_t, gx_t><<<blocks_for(B * H * W), kThreads, 0, stream>>>(
        gout.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), flow.const_data_ptr<scalar_t>(),
        gx.mutable_data_ptr<gx_t>(), gflow.mutable_data_ptr<scalar_t>(), B, C, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {reduced ? gx.to(x.scalar_type()) : gx, gflow};
}

}  // namespace

TORCH_LIBRARY_IMPL(segx, CUDA, m) {
  m.impl("flow_warp_forward", flow_warp_forward_cuda);
  m.impl("flow_warp_backward", flow_warp_backward_cuda);
}

}  // namespace segx
