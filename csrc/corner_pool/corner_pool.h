// corner_pool: CornerNet's directional max pooling. See corner_pool.cpp for the exact semantics.
#pragma once
#include <ATen/core/Tensor.h>
#include <c10/util/Exception.h>
#include <c10/util/string_view.h>

namespace segx {
namespace corner_pool_impl {

// "top": max over rows below-or-at (scan from the last row upwards), "bottom": rows above-or-at,
// "left": cols right-or-at (scan from the last col leftwards), "right": cols left-or-at.
enum Direction : int { kTop = 0, kBottom = 1, kLeft = 2, kRight = 3 };

inline Direction parse_direction(c10::string_view d) {
  if (d == "top") return kTop;
  if (d == "bottom") return kBottom;
  if (d == "left") return kLeft;
  if (d == "right") return kRight;
  TORCH_CHECK_VALUE(false, "corner_pool: direction must be one of 'top', 'bottom', 'left', 'right', got '",
                    std::string(d), "'");
}

inline bool is_vertical(Direction d) { return d == kTop || d == kBottom; }
// Scan runs from high to low index along the pooled axis for top/left.
inline bool scans_backwards(Direction d) { return d == kTop || d == kLeft; }

}  // namespace corner_pool_impl
}  // namespace segx
