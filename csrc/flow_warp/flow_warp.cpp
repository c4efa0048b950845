// flow_warp: schema, autograd and dispatch.
//
// x [B,C,H,W], flow [B,2,H,W] (channel 0 = dx, channel 1 = dy, in pixels of x) -> out [B,C,H,W]:
//   out[b,c,y,x] = bilinear sample of x[b,c] at (x + dx[b,y,x], y + dy[b,y,x]); a corner of the bilinear
//   stencil outside the map contributes 0 (grid_sample's padding_mode="zeros", align_corners=True).
// Gradients flow to x and to flow; the derivative w.r.t. flow is the one-sided one grid_sample uses
// (floor() taken at the sample point), so it jumps where a sample point crosses an integer grid line.
#include <torch/autograd.h>
#include <torch/library.h>

namespace segx {
namespace {

at::Tensor flow_warp_forward(const at::Tensor& x, const at::Tensor& flow) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::flow_warp_forward", "")
                       .typed<decltype(flow_warp_forward)>();
  return op.call(x, flow);
}

std::tuple<at::Tensor, at::Tensor> flow_warp_backward(const at::Tensor& grad_out, const at::Tensor& x,
                                                      const at::Tensor& flow) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::flow_warp_backward", "")
                       .typed<decltype(flow_warp_backward)>();
  return op.call(grad_out, x, flow);
}

class FlowWarpFunction : public torch::autograd::Function<FlowWarpFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x,
                                                const at::Tensor& flow) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = flow_warp_forward(x, flow);
    ctx->save_for_backward({x, flow});
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 const torch::autograd::variable_list& grad_outputs) {
    auto saved = ctx->get_saved_variables();
    auto [gx, gflow] = flow_warp_backward(grad_outputs[0], saved[0], saved[1]);
    return {gx, gflow};
  }
};

at::Tensor flow_warp_autograd(const at::Tensor& x, const at::Tensor& flow) {
  return FlowWarpFunction::apply(x, flow)[0];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(segx, m) {
  m.def("flow_warp_forward(Tensor x, Tensor flow) -> Tensor");
  m.def("flow_warp_backward(Tensor grad_out, Tensor x, Tensor flow) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(segx, Autograd, m) {
  m.impl("flow_warp_forward", flow_warp_autograd);
}

}  // namespace segx
