// assemble_masks CPU kernels. Parallel over detections (forward, grad_coeffs) and over prototype planes
// (grad_protos, which sums over detections and so cannot be split by detection without atomics).
// Inner loops run along a row of the box (contiguous) and vectorise. float on CPUs with AVX2+FMA takes
// register-blocked paths (logits: 32 columns x all k in registers; grad_coeffs: 8 prototypes per pass over the
// packed dlogits; grad_protos: 4 planes per pass, zeroed by their own thread just before use).
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/sigmoid.h>
#include <ATen/ops/zero.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <type_traits>
#include <vector>

#include "assemble_masks.h"

// x86 builds get an AVX2+FMA path for float, compiled with a target attribute (the extension itself is built
// for baseline x86-64) and chosen at run time when the CPU has both.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SEGX_AM_AVX2 1
#include <immintrin.h>
#define SEGX_TARGET_AVX2 __attribute__((target("avx2,fma")))
#else
#define SEGX_AM_AVX2 0
#endif

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

#if SEGX_AM_AVX2
bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// Lanes [0, n) set, for the last (n < 8) columns of a row: masked loads never touch the lanes left out.
SEGX_TARGET_AVX2 inline __m256i tail_mask(int64_t n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

SEGX_TARGET_AVX2 inline float hsum(__m256 v) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_movehdup_ps(s));
  return _mm_cvtss_f32(s);
}

// box_logits for float: per row, 32 (then 8, then a masked tail) columns held in registers across all k.
SEGX_TARGET_AVX2 void box_logits_avx2(const float* protos, const float* coeffs, const Box& r, int64_t n, int64_t K,
                                      int64_t H, int64_t W, float* lg) {
  const int64_t HW = H * W, bw = r.c1 - r.c0, tail = bw & 7;
  const __m256i tm = tail_mask(tail);
  const float* cn = coeffs + n * K;
  const float* pb = protos + r.b * K * HW;
  for (int64_t i = r.r0; i < r.r1; ++i, lg += bw) {
    const float* prow = pb + i * W + r.c0;
    int64_t j = 0;
    for (; j + 32 <= bw; j += 32) {
      __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
      const float* p = prow + j;
      for (int64_t k = 0; k < K; ++k, p += HW) {
        const __m256 c = _mm256_broadcast_ss(cn + k);
        a0 = _mm256_fmadd_ps(c, _mm256_loadu_ps(p), a0);
        a1 = _mm256_fmadd_ps(c, _mm256_loadu_ps(p + 8), a1);
        a2 = _mm256_fmadd_ps(c, _mm256_loadu_ps(p + 16), a2);
        a3 = _mm256_fmadd_ps(c, _mm256_loadu_ps(p + 24), a3);
      }
      _mm256_storeu_ps(lg + j, a0);
      _mm256_storeu_ps(lg + j + 8, a1);
      _mm256_storeu_ps(lg + j + 16, a2);
      _mm256_storeu_ps(lg + j + 24, a3);
    }
    for (; j + 8 <= bw; j += 8) {
      __m256 a0 = _mm256_setzero_ps();
      const float* p = prow + j;
      for (int64_t k = 0; k < K; ++k, p += HW) a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(cn + k), _mm256_loadu_ps(p), a0);
      _mm256_storeu_ps(lg + j, a0);
    }
    if (tail) {
      __m256 a0 = _mm256_setzero_ps();
      const float* p = prow + j;
      for (int64_t k = 0; k < K; ++k, p += HW)
        a0 = _mm256_fmadd_ps(_mm256_broadcast_ss(cn + k), _mm256_maskload_ps(p, tm), a0);
      _mm256_maskstore_ps(lg + j, tm, a0);
    }
  }
}

// One box of the float backward: dl = grad_out * s * (1 - s) over the box into its packed slot, then
// grad_coeffs[n, k] = sum over the box of dl * protos[k], 8 prototypes at a time (8 independent
// accumulators; each dl vector is loaded once per 8 prototypes).
SEGX_TARGET_AVX2 void box_dlogits_gcoeffs_avx2(const float* pb, const float* o_n, const float* g_n, const Box& r,
                                               int64_t K, int64_t H, int64_t W, float* dl, float* gc) {
  const int64_t HW = H * W, bw = r.c1 - r.c0, bh = r.r1 - r.r0, tail = bw & 7, bw8 = bw - tail;
  const __m256i tm = tail_mask(tail);
  {
    float* d = dl;
    for (int64_t i = r.r0; i < r.r1; ++i, d += bw) {
      const float* o = o_n + i * W + r.c0;
      const float* g = g_n + i * W + r.c0;
      for (int64_t j = 0; j < bw; ++j) d[j] = g[j] * o[j] * (1.f - o[j]);
    }
  }
  int64_t k = 0;
  for (; k + 8 <= K; k += 8) {
    __m256 a[8];
    for (int q = 0; q < 8; ++q) a[q] = _mm256_setzero_ps();
    const float* d = dl;
    for (int64_t i = 0; i < bh; ++i, d += bw) {
      const float* p = pb + k * HW + (r.r0 + i) * W + r.c0;
      for (int64_t j = 0; j < bw8; j += 8) {
        const __m256 dv = _mm256_loadu_ps(d + j);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) a[q] = _mm256_fmadd_ps(dv, _mm256_loadu_ps(p + q * HW + j), a[q]);
      }
      if (tail) {
        const __m256 dv = _mm256_maskload_ps(d + bw8, tm);
#pragma GCC unroll 8
        for (int q = 0; q < 8; ++q) a[q] = _mm256_fmadd_ps(dv, _mm256_maskload_ps(p + q * HW + bw8, tm), a[q]);
      }
    }
    for (int q = 0; q < 8; ++q) gc[k + q] = hsum(a[q]);
  }
  for (; k < K; ++k) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0;
    const float* d = dl;
    for (int64_t i = 0; i < bh; ++i, d += bw) {
      const float* p = pb + k * HW + (r.r0 + i) * W + r.c0;
      int64_t j = 0;
      for (; j + 16 <= bw8; j += 16) {
        a0 = _mm256_fmadd_ps(_mm256_loadu_ps(d + j), _mm256_loadu_ps(p + j), a0);
        a1 = _mm256_fmadd_ps(_mm256_loadu_ps(d + j + 8), _mm256_loadu_ps(p + j + 8), a1);
      }
      if (j < bw8) a0 = _mm256_fmadd_ps(_mm256_loadu_ps(d + j), _mm256_loadu_ps(p + j), a0);
      if (tail) a1 = _mm256_fmadd_ps(_mm256_maskload_ps(d + bw8, tm), _mm256_maskload_ps(p + bw8, tm), a1);
    }
    gc[k] = hsum(_mm256_add_ps(a0, a1));
  }
}

// grad_protos planes k0 .. k0+NK-1 of image b (zeroed here, while they are about to be used):
// plane[k] += coeffs[n, k] * dl[n] over every box n of image b, box rows as contiguous spans.
template <int NK>
SEGX_TARGET_AVX2 void grad_protos_planes_avx2(float* planes, int64_t b, int64_t k0, const float* cp, int64_t K,
                                              const std::vector<Box>& bx, const std::vector<int64_t>& off,
                                              const float* dl, int64_t W, int64_t HW) {
  std::memset(planes, 0, sizeof(float) * NK * HW);
  const int64_t N = static_cast<int64_t>(bx.size());
  for (int64_t n = 0; n < N; ++n) {
    const Box& r = bx[n];
    if (r.b != b) continue;
    const int64_t bw = r.c1 - r.c0, tail = bw & 7, bw8 = bw - tail;
    if (bw == 0) continue;
    const __m256i tm = tail_mask(tail);
    __m256 c[NK];
    for (int q = 0; q < NK; ++q) c[q] = _mm256_broadcast_ss(cp + n * K + k0 + q);
    const float* d = dl + off[n];
    for (int64_t i = r.r0; i < r.r1; ++i, d += bw) {
      float* prow = planes + i * W + r.c0;
      for (int64_t j = 0; j < bw8; j += 8) {
        const __m256 dv = _mm256_loadu_ps(d + j);
#pragma GCC unroll 8
        for (int q = 0; q < NK; ++q) {
          float* pq = prow + q * HW + j;
          _mm256_storeu_ps(pq, _mm256_fmadd_ps(c[q], dv, _mm256_loadu_ps(pq)));
        }
      }
      if (tail) {
        const __m256 dv = _mm256_maskload_ps(d + bw8, tm);
#pragma GCC unroll 8
        for (int q = 0; q < NK; ++q) {
          float* pq = prow + q * HW + bw8;
          _mm256_maskstore_ps(pq, tm, _mm256_fmadd_ps(c[q], dv, _mm256_maskload_ps(pq, tm)));
        }
      }
    }
  }
}
#endif  // SEGX_AM_AVX2

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
#if SEGX_AM_AVX2
        if (std::is_same_v<scalar_t, float> && cpu_has_avx2_fma()) {
          for (int64_t n = begin; n < end; ++n)
            box_logits_avx2(reinterpret_cast<const float*>(pp), reinterpret_cast<const float*>(cp), bx[n], n, K, H, W,
                            reinterpret_cast<float*>(lp) + off[n]);
          return;
        }
#endif
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
  if (N == 0 || HW == 0 || K == 0) return {at::zeros_like(protos), at::zeros_like(coeffs)};
  // Every grad_protos plane is zeroed by the thread that accumulates into it, just before it does.
  auto gprotos = at::empty_like(protos, at::MemoryFormat::Contiguous);
  auto gcoeffs = at::zeros_like(coeffs);
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
#if SEGX_AM_AVX2
    if (std::is_same_v<scalar_t, float> && cpu_has_avx2_fma()) {
      const float* fpp = reinterpret_cast<const float*>(pp);
      const float* fcp = reinterpret_cast<const float*>(cp);
      const float* fop = reinterpret_cast<const float*>(op);
      const float* fgp = reinterpret_cast<const float*>(gp);
      float* fdl = reinterpret_cast<float*>(dl.data());
      float* fgcp = reinterpret_cast<float*>(gcp);
      float* fgpp = reinterpret_cast<float*>(gpp);
      at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n) {
          const Box& r = bx[n];
          if (r.c1 == r.c0 || r.r1 == r.r0) continue;
          box_dlogits_gcoeffs_avx2(fpp + r.b * K * HW, fop + n * HW, fgp + n * HW, r, K, H, W, fdl + off[n],
                                   fgcp + n * K);
        }
      });
      constexpr int64_t kBlock = 4;
      const int64_t nkb = (K + kBlock - 1) / kBlock;
      at::parallel_for(0, B * nkb, 1, [&](int64_t begin, int64_t end) {
        for (int64_t bk = begin; bk < end; ++bk) {
          const int64_t b = bk / nkb, k0 = (bk % nkb) * kBlock;
          float* planes = fgpp + (b * K + k0) * HW;
          if (k0 + kBlock <= K) {
            grad_protos_planes_avx2<kBlock>(planes, b, k0, fcp, K, bx, off, fdl, W, HW);
          } else {
            for (int64_t k = k0; k < K; ++k)
              grad_protos_planes_avx2<1>(planes + (k - k0) * HW, b, k, fcp, K, bx, off, fdl, W, HW);
          }
        }
      });
      return;
    }
#endif
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
        std::memset(plane, 0, sizeof(scalar_t) * HW);
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
