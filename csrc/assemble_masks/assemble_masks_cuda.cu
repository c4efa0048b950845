// assemble_masks CUDA kernels.
//   ranges:      one thread per detection -> (image, r0, r1, c0, c1), asserting batch_idx is in range.
//   forward:     one thread per output pixel; the k-term dot product runs only inside the box.
//   backward:    d(logit) per pixel into an accumulation-type buffer, then grad_coeffs with one block per
//                (detection, k) reducing over the box, and grad_protos with one thread per prototype pixel
//                summing over the detections whose box covers it (deterministic, no atomics).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "assemble_masks.h"

namespace segx {
namespace {

using namespace assemble_masks_impl;

constexpr int kThreads = 256;

int blocks_for(int64_t n) { return static_cast<int>(std::min<int64_t>((n + kThreads - 1) / kThreads, 65535)); }

__global__ void ranges_kernel(const double* __restrict__ boxes, const int64_t* __restrict__ batch_idx, int64_t N,
                              int64_t B, int64_t H, int64_t W, bool crop, int64_t* __restrict__ rng) {
  for (int64_t n = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; n < N; n += (int64_t)gridDim.x * blockDim.x) {
    const int64_t b = batch_idx ? batch_idx[n] : 0;
    CUDA_KERNEL_ASSERT(b >= 0 && b < B);
    int64_t r0 = 0, r1 = H, c0 = 0, c1 = W;
    if (crop) {
      pixel_range(boxes[4 * n + 0], boxes[4 * n + 2], W, &c0, &c1);
      pixel_range(boxes[4 * n + 1], boxes[4 * n + 3], H, &r0, &r1);
    }
    rng[5 * n + 0] = b;
    rng[5 * n + 1] = r0;
    rng[5 * n + 2] = r1;
    rng[5 * n + 3] = c0;
    rng[5 * n + 4] = c1;
  }
}

__device__ __forceinline__ bool inside(const int64_t* r, int64_t i, int64_t j) {
  return i >= r[1] && i < r[2] && j >= r[3] && j < r[4];
}

template <typename scalar_t>
__global__ void forward_kernel(const scalar_t* __restrict__ protos, const scalar_t* __restrict__ coeffs,
                               const int64_t* __restrict__ rng, scalar_t* __restrict__ out, int64_t N, int64_t K,
                               int64_t H, int64_t W) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t HW = H * W;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < N * HW; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = q / HW, p = q % HW;
    const int64_t* r = rng + 5 * n;
    scalar_t v = scalar_t(0);
    if (inside(r, p / W, p % W)) {
      const scalar_t* pb = protos + r[0] * K * HW + p;
      acc_t s = 0;
      for (int64_t k = 0; k < K; ++k) s += static_cast<acc_t>(coeffs[n * K + k]) * static_cast<acc_t>(pb[k * HW]);
      v = static_cast<scalar_t>(acc_t(1) / (acc_t(1) + exp(-s)));
    }
    out[q] = v;
  }
}

template <typename scalar_t, typename acc_t>
__global__ void dlogit_kernel(const scalar_t* __restrict__ gout, const scalar_t* __restrict__ out,
                              const int64_t* __restrict__ rng, acc_t* __restrict__ dl, int64_t N, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < N * HW; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t n = q / HW, p = q % HW;
    acc_t d = 0;
    if (inside(rng + 5 * n, p / W, p % W)) {
      const acc_t s = static_cast<acc_t>(out[q]);
      d = static_cast<acc_t>(gout[q]) * s * (acc_t(1) - s);
    }
    dl[q] = d;
  }
}

// grid: N*K blocks of kThreads; block (n, k) reduces dl[n] * protos[b(n), k] over the box of n.
template <typename scalar_t, typename acc_t>
__global__ void grad_coeffs_kernel(const acc_t* __restrict__ dl, const scalar_t* __restrict__ protos,
                                   const int64_t* __restrict__ rng, scalar_t* __restrict__ gcoeffs, int64_t N,
                                   int64_t K, int64_t H, int64_t W) {
  __shared__ acc_t buf[kThreads];
  const int64_t HW = H * W;
  const int64_t n = blockIdx.x / K, k = blockIdx.x % K;
  const int64_t* r = rng + 5 * n;
  const int64_t bw = r[4] - r[3], area = (r[2] - r[1]) * bw;
  const scalar_t* pk = protos + (r[0] * K + k) * HW;
  const acc_t* dn = dl + n * HW;
  acc_t s = 0;
  for (int64_t t = threadIdx.x; t < area; t += blockDim.x) {
    const int64_t p = (r[1] + t / bw) * W + r[3] + t % bw;
    s += dn[p] * static_cast<acc_t>(pk[p]);
  }
  buf[threadIdx.x] = s;
  __syncthreads();
  for (int stride = kThreads / 2; stride > 0; stride >>= 1) {
    if (threadIdx.x < stride) buf[threadIdx.x] += buf[threadIdx.x + stride];
    __syncthreads();
  }
  if (threadIdx.x == 0) gcoeffs[n * K + k] = static_cast<scalar_t>(buf[0]);
}

template <typename scalar_t, typename acc_t>
__global__ void grad_protos_kernel(const acc_t* __restrict__ dl, const scalar_t* __restrict__ coeffs,
                                   const int64_t* __restrict__ rng, scalar_t* __restrict__ gprotos, int64_t B,
                                   int64_t N, int64_t K, int64_t H, int64_t W) {
  const int64_t HW = H * W;
  for (int64_t q = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; q < B * K * HW; q += (int64_t)gridDim.x * blockDim.x) {
    const int64_t bk = q / HW, p = q % HW, b = bk / K, k = bk % K;
    const int64_t i = p / W, j = p % W;
    acc_t s = 0;
    for (int64_t n = 0; n < N; ++n) {
      const int64_t* r = rng + 5 * n;
      if (r[0] == b && inside(r, i, j)) s += static_cast<acc_t>(coeffs[n * K + k]) * dl[n * HW + p];
    }
    gprotos[q] = static_cast<scalar_t>(s);
  }
}

void check_inputs(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes,
                  const std::optional<at::Tensor>& batch_idx) {
  TORCH_CHECK(protos.dim() == 4 && protos.is_cuda(), "assemble_masks: protos must be a [B,k,H,W] CUDA tensor");
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) == protos.size(1) && coeffs.device() == protos.device(),
              "assemble_masks: coeffs must be [N,k] on protos' device");
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == coeffs.size(0) && boxes.size(1) == 4 &&
                  boxes.device() == protos.device(),
              "assemble_masks: boxes must be [N,4] on protos' device");
  TORCH_CHECK(coeffs.scalar_type() == protos.scalar_type(), "assemble_masks: coeffs and protos dtypes differ");
  if (batch_idx.has_value()) {
    TORCH_CHECK(batch_idx->dim() == 1 && batch_idx->size(0) == coeffs.size(0) && batch_idx->device() == protos.device(),
                "assemble_masks: batch_idx must be [N] on protos' device");
  } else {
    TORCH_CHECK(protos.size(0) == 1 || coeffs.size(0) == 0,
                "assemble_masks: batch_idx is required when protos has more than one image");
  }
}

at::Tensor make_ranges(const at::Tensor& boxes, const std::optional<at::Tensor>& batch_idx, bool crop, int64_t B,
                       int64_t H, int64_t W) {
  const int64_t N = boxes.size(0);
  auto rng = at::empty({N, 5}, boxes.options().dtype(at::kLong));
  auto bxd = boxes.to(at::kDouble).contiguous();
  at::Tensor bi;
  if (batch_idx.has_value()) bi = batch_idx->to(at::kLong).contiguous();
  ranges_kernel<<<blocks_for(N), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
      bxd.const_data_ptr<double>(), bi.defined() ? bi.const_data_ptr<int64_t>() : nullptr, N, B, H, W, crop,
      rng.mutable_data_ptr<int64_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return rng;
}

at::Tensor assemble_masks_forward_cuda(const at::Tensor& protos_, const at::Tensor& coeffs_, const at::Tensor& boxes,
                                       const std::optional<at::Tensor>& batch_idx, bool crop) {
  check_inputs(protos_, coeffs_, boxes, batch_idx);
  c10::cuda::CUDAGuard guard(protos_.device());
  auto protos = protos_.contiguous();
  auto coeffs = coeffs_.contiguous();
  const int64_t B = protos.size(0), K = protos.size(1), H = protos.size(2), W = protos.size(3), N = coeffs.size(0);
  auto out = at::empty({N, H, W}, protos.options());
  if (out.numel() == 0) return out;
  auto rng = make_ranges(boxes, batch_idx, crop, B, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, protos.scalar_type(), "assemble_masks_forward_cuda", [&] {
    forward_kernel<scalar_t><<<blocks_for(N * H * W), kThreads, 0, c10::cuda::getCurrentCUDAStream()>>>(
        protos.const_data_ptr<scalar_t>(), coeffs.const_data_ptr<scalar_t>(), rng.const_data_ptr<int64_t>(),
        out.mutable_data_ptr<scalar_t>(), N, K, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> assemble_masks_backward_cuda(const at::Tensor& grad_out, const at::Tensor& out_,
                                                                const at::Tensor& protos_, const at::Tensor& coeffs_,
                                                                const at::Tensor& boxes,
                                                                const std::optional<at::Tensor>& batch_idx, bool crop) {
  check_inputs(protos_, coeffs_, boxes, batch_idx);
  c10::cuda::CUDAGuard guard(protos_.device());
  auto protos = protos_.contiguous();
  auto coeffs = coeffs_.contiguous();
  auto out = out_.contiguous();
  auto gout = grad_out.to(protos.scalar_type()).contiguous();
  const int64_t B = protos.size(0), K = protos.size(1), H = protos.size(2), W = protos.size(3), N = coeffs.size(0);
  TORCH_CHECK(out.dim() == 3 && out.size(0) == N && out.size(1) == H && out.size(2) == W && gout.sizes() == out.sizes(),
              "assemble_masks_backward: grad_out/out must be [N,H,W]");
  auto gprotos = at::zeros_like(protos);
  auto gcoeffs = at::zeros_like(coeffs);
  if (N == 0 || H * W == 0 || K == 0) return {gprotos, gcoeffs};
  auto rng = make_ranges(boxes, batch_idx, crop, B, H, W);
  auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, protos.scalar_type(), "assemble_masks_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    auto dl = at::empty({N, H, W}, protos.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
    dlogit_kernel<scalar_t, acc_t><<<blocks_for(N * H * W), kThreads, 0, stream>>>(
        gout.const_data_ptr<scalar_t>(), out.const_data_ptr<scalar_t>(), rng.const_data_ptr<int64_t>(),
        dl.mutable_data_ptr<acc_t>(), N, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_coeffs_kernel<scalar_t, acc_t><<<static_cast<unsigned>(N * K), kThreads, 0, stream>>>(
        dl.const_data_ptr<acc_t>(), protos.const_data_ptr<scalar_t>(), rng.const_data_ptr<int64_t>(),
        gcoeffs.mutable_data_ptr<scalar_t>(), N, K, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    grad_protos_kernel<scalar_t, acc_t><<<blocks_for(B * K * H * W), kThreads, 0, stream>>>(
        dl.const_data_ptr<acc_t>(), coeffs.const_data_ptr<scalar_t>(), rng.const_data_ptr<int64_t>(),
        gprotos.mutable_data_ptr<scalar_t>(), B, N, K, H, W);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {gprotos, gcoeffs};
}

}  // namespace

TORCH_LIBRARY_IMPL(segx, CUDA, m) {
  m.impl("assemble_masks_forward", assemble_masks_forward_cuda);
  m.impl("assemble_masks_backward", assemble_masks_backward_cuda);
}

}  // namespace segx
