// corner_pool: schema, autograd and dispatch.
//
// x [B,C,H,W] -> out [B,C,H,W]:
//   top:    out[i,j] = max_{i' >= i} x[i',j]      bottom: out[i,j] = max_{i' <= i} x[i',j]
//   left:   out[i,j] = max_{j' >= j} x[i,j']      right:  out[i,j] = max_{j' <= j} x[i,j']
// The pool is a running max scanned from the far end (top: last row upwards, bottom: first row
// downwards, left: last column leftwards, right: first column rightwards). The running arg-max only
// moves on a strictly greater value, so on ties the gradient goes to the tied element met first in scan
// order (the one farthest from the output position). Backward only needs `out`: scan position p holds
// its own arg-max iff it is the first scanned element or out[p] > out[previous scanned position]; it then
// receives the sum of grad_out over its run, i.e. up to (excluding) the next such position.
// NaN inputs are not supported (the result is unspecified).
#include <torch/autograd.h>
#include <torch/library.h>

#include "corner_pool.h"

namespace segx {
namespace {

at::Tensor corner_pool_forward(const at::Tensor& x, c10::string_view direction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::corner_pool_forward", "")
                       .typed<decltype(corner_pool_forward)>();
  return op.call(x, direction);
}

at::Tensor corner_pool_backward(const at::Tensor& grad_out, const at::Tensor& out, c10::string_view direction) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::corner_pool_backward", "")
                       .typed<decltype(corner_pool_backward)>();
  return op.call(grad_out, out, direction);
}

class CornerPoolFunction : public torch::autograd::Function<CornerPoolFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                c10::string_view direction) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = corner_pool_forward(x, direction);
    ctx->save_for_backward({out});
    ctx->saved_data["direction"] = std::string(direction);
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 const torch::autograd::variable_list& grad_outputs) {
    auto out = ctx->get_saved_variables()[0];
    auto direction = ctx->saved_data["direction"].toStringRef();
    auto gx = corner_pool_backward(grad_outputs[0], out, direction);
    return {gx, at::Tensor()};
  }
};

at::Tensor corner_pool_autograd(const at::Tensor& x, c10::string_view direction) {
  return CornerPoolFunction::apply(x, direction)[0];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(segx, m) {
  m.def("corner_pool_forward(Tensor x, str direction) -> Tensor");
  m.def("corner_pool_backward(Tensor grad_out, Tensor out, str direction) -> Tensor");
}

TORCH_LIBRARY_IMPL(segx, Autograd, m) {
  m.impl("corner_pool_forward", corner_pool_autograd);
}

}  // namespace segx
