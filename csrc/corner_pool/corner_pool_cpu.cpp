// corner_pool CPU kernels. Each (b, c) plane is scanned independently; lanes (columns for top/bottom,
// rows for left/right) are processed in chunks so that the scan of a chunk keeps its running state in
// registers/L1. For top/bottom the lanes are contiguous and the inner loop vectorises; for left/right
// the chunk gives kChunk independent dependency chains instead of one long serial one.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <ATen/ops/empty_like.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "corner_pool.h"

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
