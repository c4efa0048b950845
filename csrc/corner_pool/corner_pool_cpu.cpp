// corner_pool CPU kernels. Each (b, c) plane is scanned independently; lanes (columns for top/bottom,
// rows for left/right) are processed in chunks so that the scan of a chunk keeps its running state in
// registers/L1. For top/bottom the lanes are contiguous and the inner loop vectorises; for left/right
// the chunk gives kChunk independent dependency chains instead of one long serial one.
// float left/right on CPUs with AVX2 take a separate path (below): 8 rows at a time, 8x8 blocks transposed in
// registers so that the scan runs across 8 rows per vector op; the generic tile code serves the other dtypes.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <vector>

#include "corner_pool.h"

// x86 builds get an AVX2 path for float left/right, compiled with a target attribute (the extension itself is
// built for baseline x86-64) and chosen at run time when the CPU has AVX2.
#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define SEGX_CP_AVX2 1
#include <immintrin.h>
#define SEGX_TARGET_AVX2 __attribute__((target("avx2")))
#else
#define SEGX_CP_AVX2 0
#endif

namespace segx {
namespace {

using namespace corner_pool_impl;

// Geometry of one plane: L scan positions with stride sL, M lanes with stride sM.
struct PlaneGeom {
  int64_t L, sL, M, sM;
  bool backwards;
};

inline PlaneGeom geom(Direction d, int64_t H, int64_t W) {
  if (is_vertical(d)) return {H, W, W, 1, scans_backwards(d)};
  return {W, 1, H, W, scans_backwards(d)};
}

// Rows are visited from the last one upwards for "top" (and for the backward of "bottom"); the hardware
// prefetchers of the machines we measured on do not follow such descending streams, so fetch a few rows ahead.
constexpr int64_t kAhead = 4;

template <typename scalar_t>
inline void prefetch_row(const scalar_t* src, const scalar_t* dst, int64_t off, int64_t n, bool valid) {
  if (!valid) return;
  constexpr int64_t kLine = 64 / sizeof(scalar_t);
  for (int64_t c = 0; c < n; c += kLine) {
    __builtin_prefetch(src + off + c, 0);
    __builtin_prefetch(dst + off + c, 1);
  }
}

template <typename scalar_t, int64_t kChunk, bool kUnitLane>
void forward_plane(const scalar_t* x, scalar_t* out, const PlaneGeom& g) {
  const int64_t sM = kUnitLane ? 1 : g.sM;
  const int64_t step = g.backwards ? -g.sL : g.sL;
  const int64_t first = g.backwards ? (g.L - 1) * g.sL : 0;
  for (int64_t m0 = 0; m0 < g.M; m0 += kChunk) {
    const int64_t mc = std::min(kChunk, g.M - m0);
    scalar_t run[kChunk];
    int64_t off = first + m0 * sM;
    for (int64_t c = 0; c < mc; ++c) {
      run[c] = x[off + c * sM];
      out[off + c * sM] = run[c];
    }
    for (int64_t t = 1; t < g.L; ++t) {
      off += step;
      if (kUnitLane) prefetch_row(x, out, off + kAhead * step, mc, t + kAhead < g.L);
      for (int64_t c = 0; c < mc; ++c) {
        const scalar_t v = x[off + c * sM];
        run[c] = v > run[c] ? v : run[c];
        out[off + c * sM] = run[c];
      }
    }
  }
}

// Walks the scan in reverse: acc collects grad_out until it reaches a position that set a new running max,
// which receives the whole run.
template <typename scalar_t, int64_t kChunk, bool kUnitLane>
void backward_plane(const scalar_t* gout, const scalar_t* out, scalar_t* gx, const PlaneGeom& g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t sM = kUnitLane ? 1 : g.sM;
  const int64_t step = g.backwards ? -g.sL : g.sL;  // forward scan step
  const int64_t first = g.backwards ? (g.L - 1) * g.sL : 0;
  for (int64_t m0 = 0; m0 < g.M; m0 += kChunk) {
    const int64_t mc = std::min(kChunk, g.M - m0);
    acc_t acc[kChunk];
    for (int64_t c = 0; c < mc; ++c) acc[c] = acc_t(0);
    int64_t off = first + (g.L - 1) * step + m0 * sM;
    for (int64_t t = g.L - 1; t >= 1; --t) {
      const int64_t prev = off - step;
      if (kUnitLane && t > kAhead) {
        prefetch_row(gout, gx, off - kAhead * step, mc, true);
        prefetch_row(out, out, off - (kAhead + 1) * step, mc, true);
      }
      for (int64_t c = 0; c < mc; ++c) {
        const acc_t a = acc[c] + static_cast<acc_t>(gout[off + c * sM]);
        const bool is_new = out[off + c * sM] > out[prev + c * sM];
        gx[off + c * sM] = static_cast<scalar_t>(is_new ? a : acc_t(0));
        acc[c] = is_new ? acc_t(0) : a;
      }
      off = prev;
    }
    for (int64_t c = 0; c < mc; ++c) gx[off + c * sM] = static_cast<scalar_t>(acc[c] + static_cast<acc_t>(gout[off + c * sM]));
  }
}

// left/right: a block of kRows rows is transposed into a [W, kRows] tile, scanned like top/bottom (kRows
// contiguous lanes, vectorised), and transposed back; rows are read and written front to back.
constexpr int64_t kRows = 16;

template <typename scalar_t>
void forward_plane_rows(const scalar_t* x, scalar_t* out, int64_t H, int64_t W, bool backwards, scalar_t* tile) {
  const PlaneGeom tg{W, kRows, kRows, 1, backwards};
  for (int64_t r0 = 0; r0 < H; r0 += kRows) {
    const int64_t rc = std::min(kRows, H - r0);
    for (int64_t r = 0; r < kRows; ++r) {
      const scalar_t* row = x + (r0 + std::min(r, rc - 1)) * W;
      for (int64_t j = 0; j < W; ++j) tile[j * kRows + r] = row[j];
    }
    forward_plane<scalar_t, kRows, true>(tile, tile + W * kRows, tg);
    const scalar_t* res = tile + W * kRows;
    for (int64_t r = 0; r < rc; ++r) {
      scalar_t* row = out + (r0 + r) * W;
      for (int64_t j = 0; j < W; ++j) row[j] = res[j * kRows + r];
    }
  }
}

template <typename scalar_t>
void backward_plane_rows(const scalar_t* gout, const scalar_t* out, scalar_t* gx, int64_t H, int64_t W, bool backwards,
                         scalar_t* tile) {
  const PlaneGeom tg{W, kRows, kRows, 1, backwards};
  scalar_t* tg_out = tile;
  scalar_t* tg_o = tile + W * kRows;
  scalar_t* tg_gx = tile + 2 * W * kRows;
  for (int64_t r0 = 0; r0 < H; r0 += kRows) {
    const int64_t rc = std::min(kRows, H - r0);
    for (int64_t r = 0; r < kRows; ++r) {
      const int64_t rr = r0 + std::min(r, rc - 1);
      const scalar_t* grow = gout + rr * W;
      const scalar_t* orow = out + rr * W;
      for (int64_t j = 0; j < W; ++j) {
        tg_out[j * kRows + r] = grow[j];
        tg_o[j * kRows + r] = orow[j];
      }
    }
    backward_plane<scalar_t, kRows, true>(tg_out, tg_o, tg_gx, tg);
    for (int64_t r = 0; r < rc; ++r) {
      scalar_t* row = gx + (r0 + r) * W;
      for (int64_t j = 0; j < W; ++j) row[j] = tg_gx[j * kRows + r];
    }
  }
}

#if SEGX_CP_AVX2
// Outputs at least this large are written with streaming stores by the full-block float left/right paths.
constexpr int64_t kStreamBytes = int64_t(4) << 20;

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

// In-register 8x8 transpose: r[q] lane c  ->  r[c] lane q.
SEGX_TARGET_AVX2 inline void transpose8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u1 = _mm256_shuffle_ps(t0, t2, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u3 = _mm256_shuffle_ps(t1, t3, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u5 = _mm256_shuffle_ps(t4, t6, _MM_SHUFFLE(3, 2, 3, 2));
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(1, 0, 1, 0));
  const __m256 u7 = _mm256_shuffle_ps(t5, t7, _MM_SHUFFLE(3, 2, 3, 2));
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

// 8 rows of W floats -> tile[j * 8 + q] (column j of row q), 8x8 blocks transposed in registers.
// The 8 rows are read side by side, 32 bytes of each at a time, which the hardware prefetchers measured here
// do not follow (fwd+bwd ran ~2x slower on a 16 MB map than on an L2-resident one), so the same cache lines
// `ahead` elements further on (the next block of rows) are prefetched while this block is read.
SEGX_TARGET_AVX2 inline void rows_to_tile(const float* const* rows, int64_t W, float* tile, int64_t ahead) {
  int64_t j = 0;
  for (; j + 8 <= W; j += 8) {
    if ((j & 15) == 0)
      for (int q = 0; q < 8; ++q) __builtin_prefetch(rows[q] + ahead + j, 0);
    __m256 r[8];
    for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(rows[q] + j);
    transpose8(r);
    for (int c = 0; c < 8; ++c) _mm256_storeu_ps(tile + (j + c) * 8, r[c]);
  }
  for (; j < W; ++j)
    for (int q = 0; q < 8; ++q) tile[j * 8 + q] = rows[q][j];
}

// Inverse of rows_to_tile for the first rc (<= 8) rows.
SEGX_TARGET_AVX2 inline void tile_to_rows(const float* tile, float* const* rows, int64_t rc, int64_t W,
                                          int64_t ahead) {
  int64_t j = 0;
  for (; j + 8 <= W; j += 8) {
    if ((j & 15) == 0)
      for (int q = 0; q < 8; ++q) __builtin_prefetch(rows[q] + ahead + j, 1);
    __m256 r[8];
    for (int c = 0; c < 8; ++c) r[c] = _mm256_loadu_ps(tile + (j + c) * 8);
    transpose8(r);
    for (int q = 0; q < rc; ++q) _mm256_storeu_ps(rows[q] + j, r[q]);
  }
  for (; j < W; ++j)
    for (int q = 0; q < rc; ++q) rows[q][j] = tile[j * 8 + q];
}

// Full blocks (8 rows, W a multiple of 8) skip the tile: each 8x8 block is transposed in registers,
// scanned column by column and transposed back. Forward: `run` carries the running max from block to block.
// The next block of rows is prefetched (the 8 rows are read side by side, 32 bytes of each at a time, which
// the hardware prefetchers measured here did not follow well). With `nt` (outputs of >= kStreamBytes, which
// do not stay in cache anyway; 32-byte aligned) the result goes out with streaming stores: no read for
// ownership of the output lines, which measured ~1.4x faster fwd+bwd on [2,128,128,128].
SEGX_TARGET_AVX2 inline void forward_block8_avx2(const float* x, float* out, int64_t W, bool backwards, bool nt) {
  __m256 run = _mm256_set1_ps(-std::numeric_limits<float>::infinity());  // max(v, -inf) = v: first position
  for (int64_t b = 0; b < W; b += 8) {
    const int64_t j = backwards ? W - 8 - b : b;
    if ((b & 15) == 0)
      for (int q = 0; q < 8; ++q) {
        __builtin_prefetch(x + (8 + q) * W + j, 0);
        if (!nt) __builtin_prefetch(out + (8 + q) * W + j, 1);
      }
    __m256 r[8];
    for (int q = 0; q < 8; ++q) r[q] = _mm256_loadu_ps(x + q * W + j);
    transpose8(r);
    if (backwards) {
      for (int c = 7; c >= 0; --c) r[c] = run = _mm256_max_ps(r[c], run);
    } else {
      for (int c = 0; c < 8; ++c) r[c] = run = _mm256_max_ps(r[c], run);
    }
    transpose8(r);
    if (nt) {
      for (int q = 0; q < 8; ++q) _mm256_stream_ps(out + q * W + j, r[q]);
    } else {
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(out + q * W + j, r[q]);
    }
  }
}

// Backward of a full block: "raised the running max" is decided in the row domain (out against its
// neighbour, previously scanned, loaded unaligned; the first scanned column is always new), then the mask and
// grad_out blocks are transposed and walked against the scan direction.
SEGX_TARGET_AVX2 inline void backward_block8_avx2(const float* gout, const float* out, float* gx, int64_t W,
                                                  bool backwards, bool nt) {
  __m256 acc = _mm256_setzero_ps();
  for (int64_t b = 0; b < W; b += 8) {
    const int64_t j = backwards ? b : W - 8 - b;  // walk order: left walks 0 -> W-1, right W-1 -> 0
    if ((b & 15) == 0)
      for (int q = 0; q < 8; ++q) {
        __builtin_prefetch(gout + (8 + q) * W + j, 0);
        __builtin_prefetch(out + (8 + q) * W + j, 0);
        if (!nt) __builtin_prefetch(gx + (8 + q) * W + j, 1);
      }
    __m256 m[8], g[8];
    if (backwards) {  // scanned from W-1: out[j] > out[j+1]
      const bool last = j + 8 == W;
      for (int q = 0; q < 8; ++q) {
        const __m256 o = _mm256_loadu_ps(out + q * W + j);
        const __m256 nb = last ? _mm256_permutevar8x32_ps(o, _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7))
                               : _mm256_loadu_ps(out + q * W + j + 1);
        m[q] = _mm256_cmp_ps(o, nb, _CMP_GT_OQ);
        if (last) m[q] = _mm256_or_ps(m[q], _mm256_castsi256_ps(_mm256_setr_epi32(0, 0, 0, 0, 0, 0, 0, -1)));
      }
    } else {  // scanned from 0: out[j] > out[j-1]
      const bool first = j == 0;
      for (int q = 0; q < 8; ++q) {
        const __m256 o = _mm256_loadu_ps(out + q * W + j);
        const __m256 nb = first ? _mm256_permutevar8x32_ps(o, _mm256_setr_epi32(0, 0, 1, 2, 3, 4, 5, 6))
                                : _mm256_loadu_ps(out + q * W + j - 1);
        m[q] = _mm256_cmp_ps(o, nb, _CMP_GT_OQ);
        if (first) m[q] = _mm256_or_ps(m[q], _mm256_castsi256_ps(_mm256_setr_epi32(-1, 0, 0, 0, 0, 0, 0, 0)));
      }
    }
    transpose8(m);
    for (int q = 0; q < 8; ++q) g[q] = _mm256_loadu_ps(gout + q * W + j);
    transpose8(g);
    if (backwards) {
      for (int c = 0; c < 8; ++c) {
        const __m256 a = _mm256_add_ps(acc, g[c]);
        g[c] = _mm256_and_ps(m[c], a);
        acc = _mm256_andnot_ps(m[c], a);
      }
    } else {
      for (int c = 7; c >= 0; --c) {
        const __m256 a = _mm256_add_ps(acc, g[c]);
        g[c] = _mm256_and_ps(m[c], a);
        acc = _mm256_andnot_ps(m[c], a);
      }
    }
    transpose8(g);
    if (nt) {
      for (int q = 0; q < 8; ++q) _mm256_stream_ps(gx + q * W + j, g[q]);
    } else {
      for (int q = 0; q < 8; ++q) _mm256_storeu_ps(gx + q * W + j, g[q]);
    }
  }
}

// left/right on float: blocks of 8 rows go through an [W, 8] tile (4 KB for W = 128, stays in L1) via
// in-register 8x8 transposes; the scan over the tile is one 8-lane vector op per column. Rows past H in
// the last block repeat the last row and are not stored.
SEGX_TARGET_AVX2 void forward_rows_avx2(const float* x, float* out, int64_t H, int64_t W, bool backwards,
                                        float* tile, bool nt) {
  int64_t r0 = 0;
  if (W % 8 == 0)
    for (; r0 + 8 <= H; r0 += 8) forward_block8_avx2(x + r0 * W, out + r0 * W, W, backwards, nt);
  for (; r0 < H; r0 += 8) {
    const int64_t rc = std::min<int64_t>(8, H - r0);
    const float* src[8];
    float* dst[8];
    for (int64_t q = 0; q < 8; ++q) {
      src[q] = x + (r0 + std::min(q, rc - 1)) * W;
      dst[q] = out + (r0 + std::min(q, rc - 1)) * W;
    }
    rows_to_tile(src, W, tile, 8 * W);
    // max(v, run) is "v > run ? v : run", the scalar kernels' update.
    if (backwards) {
      __m256 run = _mm256_loadu_ps(tile + (W - 1) * 8);
      for (int64_t t = W - 2; t >= 0; --t) {
        run = _mm256_max_ps(_mm256_loadu_ps(tile + t * 8), run);
        _mm256_storeu_ps(tile + t * 8, run);
      }
    } else {
      __m256 run = _mm256_loadu_ps(tile);
      for (int64_t t = 1; t < W; ++t) {
        run = _mm256_max_ps(_mm256_loadu_ps(tile + t * 8), run);
        _mm256_storeu_ps(tile + t * 8, run);
      }
    }
    tile_to_rows(tile, dst, rc, W, 8 * W);
  }
}

SEGX_TARGET_AVX2 void backward_rows_avx2(const float* gout, const float* out, float* gx, int64_t H, int64_t W,
                                         bool backwards, float* tile, bool nt) {
  float* tg = tile;
  float* to = tile + 8 * W;
  float* tx = tile + 16 * W;
  int64_t r0 = 0;
  if (W % 8 == 0)
    for (; r0 + 8 <= H; r0 += 8) backward_block8_avx2(gout + r0 * W, out + r0 * W, gx + r0 * W, W, backwards, nt);
  for (; r0 < H; r0 += 8) {
    const int64_t rc = std::min<int64_t>(8, H - r0);
    const float* gsrc[8];
    const float* osrc[8];
    float* dst[8];
    for (int64_t q = 0; q < 8; ++q) {
      const int64_t o = (r0 + std::min(q, rc - 1)) * W;
      gsrc[q] = gout + o;
      osrc[q] = out + o;
      dst[q] = gx + o;
    }
    rows_to_tile(gsrc, W, tg, 8 * W);
    rows_to_tile(osrc, W, to, 8 * W);
    // Reverse walk of the scan: a position that raised the running max (out > out at the previously
    // scanned position) takes the grad_out accumulated since; the first scanned position takes the rest.
    __m256 acc = _mm256_setzero_ps();
    if (backwards) {  // scanned W-1 -> 0, walked 0 -> W-1
      for (int64_t t = 0; t < W - 1; ++t) {
        const __m256 a = _mm256_add_ps(acc, _mm256_loadu_ps(tg + t * 8));
        const __m256 is_new = _mm256_cmp_ps(_mm256_loadu_ps(to + t * 8), _mm256_loadu_ps(to + (t + 1) * 8), _CMP_GT_OQ);
        _mm256_storeu_ps(tx + t * 8, _mm256_and_ps(is_new, a));
        acc = _mm256_andnot_ps(is_new, a);
      }
      _mm256_storeu_ps(tx + (W - 1) * 8, _mm256_add_ps(acc, _mm256_loadu_ps(tg + (W - 1) * 8)));
    } else {  // scanned 0 -> W-1, walked W-1 -> 0
      for (int64_t t = W - 1; t >= 1; --t) {
        const __m256 a = _mm256_add_ps(acc, _mm256_loadu_ps(tg + t * 8));
        const __m256 is_new = _mm256_cmp_ps(_mm256_loadu_ps(to + t * 8), _mm256_loadu_ps(to + (t - 1) * 8), _CMP_GT_OQ);
        _mm256_storeu_ps(tx + t * 8, _mm256_and_ps(is_new, a));
        acc = _mm256_andnot_ps(is_new, a);
      }
      _mm256_storeu_ps(tx, _mm256_add_ps(acc, _mm256_loadu_ps(tg)));
    }
    tile_to_rows(tx, dst, rc, W, 8 * W);
  }
}
#endif  // SEGX_CP_AVX2

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.dim() == 4, "corner_pool: ", name, " must be [B,C,H,W], got ", t.dim(), " dims");
  TORCH_CHECK(t.device().is_cpu(), "corner_pool: ", name, " must be a CPU tensor");
}

at::Tensor corner_pool_forward_cpu(const at::Tensor& x_, c10::string_view direction) {
  const Direction d = parse_direction(direction);
  check_input(x_, "x");
  auto x = x_.contiguous();
  auto out = at::empty_like(x, at::MemoryFormat::Contiguous);
  const int64_t planes = x.size(0) * x.size(1), H = x.size(2), W = x.size(3);
  if (x.numel() == 0) return out;
  const PlaneGeom g = geom(d, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "corner_pool_forward_cpu", [&] {
    const scalar_t* xp = x.const_data_ptr<scalar_t>();
    scalar_t* op = out.mutable_data_ptr<scalar_t>();
#if SEGX_CP_AVX2
    // (a plain `if`: the dispatch lambda is no template, so the other dtypes compile this branch too)
    if (std::is_same_v<scalar_t, float> && !is_vertical(d) && cpu_has_avx2()) {
      const bool nt = x.numel() * 4 >= kStreamBytes && reinterpret_cast<uintptr_t>(op) % 32 == 0;
      at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> tile(8 * W);
        for (int64_t p = begin; p < end; ++p)
          forward_rows_avx2(reinterpret_cast<const float*>(xp) + p * H * W, reinterpret_cast<float*>(op) + p * H * W,
                            H, W, g.backwards, tile.data(), nt);
        if (nt) _mm_sfence();
      });
      return;
    }
#endif
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> tile(is_vertical(d) ? 0 : 2 * W * kRows);
      for (int64_t p = begin; p < end; ++p) {
        if (is_vertical(d))
          forward_plane<scalar_t, 256, true>(xp + p * H * W, op + p * H * W, g);
        else
          forward_plane_rows<scalar_t>(xp + p * H * W, op + p * H * W, H, W, g.backwards, tile.data());
      }
    });
  });
  return out;
}

at::Tensor corner_pool_backward_cpu(const at::Tensor& grad_out_, const at::Tensor& out_, c10::string_view direction) {
  const Direction d = parse_direction(direction);
  check_input(grad_out_, "grad_out");
  check_input(out_, "out");
  TORCH_CHECK(grad_out_.sizes() == out_.sizes(), "corner_pool_backward: grad_out and out shapes differ");
  auto out = out_.contiguous();
  auto gout = grad_out_.to(out.scalar_type()).contiguous();
  auto gx = at::empty_like(out, at::MemoryFormat::Contiguous);
  const int64_t planes = out.size(0) * out.size(1), H = out.size(2), W = out.size(3);
  if (out.numel() == 0) return gx;
  const PlaneGeom g = geom(d, H, W);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, out.scalar_type(), "corner_pool_backward_cpu", [&] {
    const scalar_t* gp = gout.const_data_ptr<scalar_t>();
    const scalar_t* op = out.const_data_ptr<scalar_t>();
    scalar_t* xp = gx.mutable_data_ptr<scalar_t>();
#if SEGX_CP_AVX2
    // (a plain `if`: the dispatch lambda is no template, so the other dtypes compile this branch too)
    if (std::is_same_v<scalar_t, float> && !is_vertical(d) && cpu_has_avx2()) {
      const bool nt = out.numel() * 4 >= kStreamBytes && reinterpret_cast<uintptr_t>(xp) % 32 == 0;
      at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
        std::vector<float> tile(3 * 8 * W);
        for (int64_t p = begin; p < end; ++p) {
          const int64_t o = p * H * W;
          backward_rows_avx2(reinterpret_cast<const float*>(gp) + o, reinterpret_cast<const float*>(op) + o,
                             reinterpret_cast<float*>(xp) + o, H, W, g.backwards, tile.data(), nt);
        }
        if (nt) _mm_sfence();
      });
      return;
    }
#endif
    at::parallel_for(0, planes, 1, [&](int64_t begin, int64_t end) {
      std::vector<scalar_t> tile(is_vertical(d) ? 0 : 3 * W * kRows);
      for (int64_t p = begin; p < end; ++p) {
        const int64_t o = p * H * W;
        if (is_vertical(d))
          backward_plane<scalar_t, 256, true>(gp + o, op + o, xp + o, g);
        else
          backward_plane_rows<scalar_t>(gp + o, op + o, xp + o, H, W, g.backwards, tile.data());
      }
    });
  });
  return gx;
}

}  // namespace

TORCH_LIBRARY_IMPL(segx, CPU, m) {
  m.impl("corner_pool_forward", corner_pool_forward_cpu);
  m.impl("corner_pool_backward", corner_pool_backward_cpu);
}

}  // namespace segx
