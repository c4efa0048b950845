// assemble_masks CPU kernels. Parallel over detections (forward, grad_coeffs) and over prototype planes
// (grad_protos, which sums over detections and so cannot be split by detection without atomics).
// Inner loops run along a row of the box (contiguous) and vectorise.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/zero.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "assemble_masks.h"

namespace segx {
namespace {

using namespace assemble_masks_impl;

struct Box {
  int64_t b, r0, r1, c0, c1;  // image, rows [r0,r1), cols [c0,c1)
  int64_t area() const { return (r1 - r0) * (c1 - c0); }
};

void check_inputs(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes,
                  const std::optional<at::Tensor>& batch_idx) {
  TORCH_CHECK(protos.dim() == 4, "assemble_masks: protos must be [B,k,H,W]");
  TORCH_CHECK(coeffs.dim() == 2 && coeffs.size(1) == protos.size(1), "assemble_masks: coeffs must be [N,k] with k=",
              protos.size(1), ", got ", coeffs.sizes());
  TORCH_CHECK(boxes.dim() == 2 && boxes.size(0) == coeffs.size(0) && boxes.size(1) == 4,
              "assemble_masks: boxes must be [N,4], got ", boxes.sizes());
  TORCH_CHECK(coeffs.scalar_type() == protos.scalar_type(), "assemble_masks: coeffs and protos dtypes differ");
  TORCH_CHECK(at::isFloatingType(boxes.scalar_type()), "assemble_masks: boxes must be floating point");
  if (batch_idx.has_value()) {
    TORCH_CHECK(batch_idx->dim() == 1 && batch_idx->size(0) == coeffs.size(0), "assemble_masks: batch_idx must be [N]");
  } else {
    TORCH_CHECK(protos.size(0) == 1 || coeffs.size(0) == 0,
                "assemble_masks: batch_idx is required when protos has more than one image");
  }
}

std::vector<Box> make_boxes(const at::Tensor& boxes_, const std::optional<at::Tensor>& batch_idx, bool crop,
                            int64_t B, int64_t H, int64_t W) {
  const int64_t N = boxes_.size(0);
  auto boxes = boxes_.to(at::kDouble).contiguous();
  const double* bp = boxes.const_data_ptr<double>();
  at::Tensor bi;
  if (batch_idx.has_value()) bi = batch_idx->to(at::kLong).contiguous();
  std::vector<Box> out(N);
  for (int64_t n = 0; n < N; ++n) {
    Box& r = out[n];
    r.b = bi.defined() ? bi.const_data_ptr<int64_t>()[n] : 0;
    TORCH_CHECK_INDEX(r.b >= 0 && r.b < B, "assemble_masks: batch_idx[", n, "] = ", r.b, " out of range [0, ", B, ")");
    if (crop) {
      pixel_range(bp[4 * n + 0], bp[4 * n + 2], W, &r.c0, &r.c1);
      pixel_range(bp[4 * n + 1], bp[4 * n + 3], H, &r.r0, &r.r1);
      if (r.c0 == r.c1 || r.r0 == r.r1) r.r0 = r.r1 = r.c0 = r.c1 = 0;
    } else {
      r.r0 = 0, r.r1 = H, r.c0 = 0, r.c1 = W;
    }
  }
  return out;
}

// logit[n] over its box, packed box after box at off[n]: lg[(i - r0) * bw + (j - c0)].
template <typename scalar_t>
void box_logits(const scalar_t* protos, const scalar_t* coeffs, const Box& r, int64_t n, int64_t K, int64_t H,
                int64_t W, scalar_t* lg) {
  const int64_t HW = H * W, bw = r.c1 - r.c0;
  const scalar_t* cn = coeffs + n * K;
  const scalar_t* pb = protos + r.b * K * HW;
  for (int64_t i = r.r0; i < r.r1; ++i, lg += bw) {
    const scalar_t* prow = pb + i * W + r.c0;
    const scalar_t c0 = cn[0];
    for (int64_t j = 0; j < bw; ++j) lg[j] = c0 * prow[j];
    for (int64_t k = 1; k < K; ++k) {
      prow += HW;
      const scalar_t ck = cn[k];
      for (int64_t j = 0; j < bw; ++j) lg[j] += ck * prow[j];
    }
  }
}

std::vector<int64_t> box_offsets(const std::vector<Box>& bx) {
  std::vector<int64_t> off(bx.size() + 1, 0);
  for (size_t n = 0; n < bx.size(); ++n) off[n + 1] = off[n] + bx[n].area();
  return off;
}

at::Tensor assemble_masks_forward_cpu(const at::Tensor& protos_, const at::Tensor& coeffs_, const at::Tensor& boxes,
                                      const std::optional<at::Tensor>& batch_idx, bool crop) {
  check_inputs(protos_, coeffs_, boxes, batch_idx);
  auto protos = protos_.contiguous();
  auto coeffs = coeffs_.contiguous();
  const int64_t B = protos.size(0), K = protos.size(1), H = protos.size(2), W = protos.size(3), HW = H * W;
  const int64_t N = coeffs.size(0);
  auto out = at::empty({N, H, W}, protos.options());
  if (out.numel() == 0) return out;
  const auto bx = make_boxes(boxes, batch_idx, crop, B, H, W);
  const auto off = box_offsets(bx);
  // Logits of all boxes in one packed buffer, so that the sigmoid runs as one (vectorised) ATen call.
  auto lg = at::empty({off[N]}, protos.options());
  AT_DISPATCH_FLOATING_TYPES(protos.scalar_type(), "assemble_masks_forward_cpu", [&] {
    const scalar_t* pp = protos.const_data_ptr<scalar_t>();
    const scalar_t* cp = coeffs.const_data_ptr<scalar_t>();
    scalar_t* lp = lg.mutable_data_ptr<scalar_t>();
    if (K > 0) {
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) box_logits(pp, cp, bx[n], n, K, H, W, lp + off[n]);
      });
    } else {
      lg.zero_();
    }
    lg.sigmoid_();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        const Box& r = bx[n];
        const int64_t bw = r.c1 - r.c0;
        scalar_t* on = op + n * HW;
        const scalar_t* src = lp + off[n];
        std::memset(on, 0, sizeof(scalar_t) * r.r0 * W);
        std::memset(on + r.r1 * W, 0, sizeof(scalar_t) * (H - r.r1) * W);
        for (int64_t i = r.r0; i < r.r1; ++i, src += bw) {
          scalar_t* orow = on + i * W;
          std::memset(orow, 0, sizeof(scalar_t) * r.c0);
          std::memcpy(orow + r.c0, src, sizeof(scalar_t) * bw);
          std::memset(orow + r.c1, 0, sizeof(scalar_t) * (W - r.c1));
        }
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> assemble_masks_backward_cpu(const at::Tensor& grad_out_, const at::Tensor& out_,
                                                               const at::Tensor& protos_, const at::Tensor& coeffs_,
                                                               const at::Tensor& boxes,
                                                               const std::optional<at::Tensor>& batch_idx, bool crop) {
  check_inputs(protos_, coeffs_, boxes, batch_idx);
  auto protos = protos_.contiguous();
  auto coeffs = coeffs_.contiguous();
  auto out = out_.contiguous();
  auto gout = grad_out_.to(protos.scalar_type()).contiguous();
  const int64_t B = protos.size(0), K = protos.size(1), H = protos.size(2), W = protos.size(3), HW = H * W;
  const int64_t N = coeffs.size(0);
  TORCH_CHECK(out.dim() == 3 && out.size(0) == N && out.size(1) == H && out.size(2) == W && gout.sizes() == out.sizes(),
              "assemble_masks_backward: grad_out/out must be [N,H,W]");
  auto gprotos = at::zeros_like(protos);
  auto gcoeffs = at::zeros_like(coeffs);
  if (N == 0 || HW == 0 || K == 0) return {gprotos, gcoeffs};
  const auto bx = make_boxes(boxes, batch_idx, crop, B, H, W);
  const auto off = box_offsets(bx);
  AT_DISPATCH_FLOATING_TYPES(protos.scalar_type(), "assemble_masks_backward_cpu", [&] {
    const scalar_t* pp = protos.const_data_ptr<scalar_t>();
    const scalar_t* cp = coeffs.const_data_ptr<scalar_t>();
    const scalar_t* op = out.const_data_ptr<scalar_t>();
    const scalar_t* gp = gout.const_data_ptr<scalar_t>();
    scalar_t* gpp = gprotos.mutable_data_ptr<scalar_t>();
    scalar_t* gcp = gcoeffs.mutable_data_ptr<scalar_t>();
    // d(loss)/d(logit) over each box, packed box after box.
    std::vector<scalar_t> dl(off[N]);
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      // Per-k partial sums kept per column, so the inner loop is a vertical multiply-add (vectorises)
      // instead of a serial reduction.
      std::vector<scalar_t> part(K * W);
      for (int64_t n = begin; n < end; ++n) {
        const Box& r = bx[n];
        const int64_t bw = r.c1 - r.c0;
        if (bw == 0 || r.r1 == r.r0) continue;
        std::fill(part.begin(), part.begin() + K * bw, scalar_t(0));
        const scalar_t* pb = pp + r.b * K * HW;
        scalar_t* d = dl.data() + off[n];
        for (int64_t i = r.r0; i < r.r1; ++i, d += bw) {
          const scalar_t* o = op + n * HW + i * W + r.c0;
          const scalar_t* g = gp + n * HW + i * W + r.c0;
          for (int64_t j = 0; j < bw; ++j) d[j] = g[j] * o[j] * (scalar_t(1) - o[j]);
          for (int64_t k = 0; k < K; ++k) {
            const scalar_t* prow = pb + k * HW + i * W + r.c0;
            scalar_t* pk = part.data() + k * bw;
            for (int64_t j = 0; j < bw; ++j) pk[j] += d[j] * prow[j];
          }
        }
        for (int64_t k = 0; k < K; ++k) {
          scalar_t s = 0;
          for (int64_t j = 0; j < bw; ++j) s += part[k * bw + j];
          gcp[n * K + k] = s;
        }
      }
    });
    at::parallel_for(0, B * K, 1, [&](int64_t begin, int64_t end) {
      for (int64_t bk = begin; bk < end; ++bk) {
        const int64_t b = bk / K, k = bk % K;
        scalar_t* plane = gpp + bk * HW;
        for (int64_t n = 0; n < N; ++n) {
          const Box& r = bx[n];
          if (r.b != b) continue;
          const int64_t bw = r.c1 - r.c0;
          const scalar_t c = cp[n * K + k];
          const scalar_t* d = dl.data() + off[n];
          for (int64_t i = r.r0; i < r.r1; ++i, d += bw) {
            scalar_t* prow = plane + i * W + r.c0;
            for (int64_t j = 0; j < bw; ++j) prow[j] += c * d[j];
          }
        }
      }
    });
  });
  return {gprotos, gcoeffs};
}

}  // namespace

TORCH_LIBRARY_IMPL(segx, CPU, m) {
  m.impl("assemble_masks_forward", assemble_masks_forward_cpu);
  m.impl("assemble_masks_backward", assemble_masks_backward_cpu);
}

}  // namespace segx
