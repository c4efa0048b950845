// assemble_masks: schema, autograd and dispatch.
//
// protos [B,k,H,W], coeffs [N,k], boxes [N,4] (x0,y0,x1,y1 in prototype pixels), batch_idx [N] int64 or
// None (all detections on image 0) -> out [N,H,W]:
//   out[n,i,j] = sigmoid(sum_k coeffs[n,k] * protos[b(n),k,i,j]) if x0 <= j+0.5 < x1 and y0 <= i+0.5 < y1
//   (or everywhere when crop=False), else 0. Pixels outside the box are never computed.
// Backward gives grads for protos and coeffs (nothing from outside the box); boxes and batch_idx get none.
#include <torch/autograd.h>
#include <torch/library.h>

namespace segx {
namespace {

at::Tensor assemble_masks_forward(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes,
                                  const std::optional<at::Tensor>& batch_idx, bool crop) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::assemble_masks_forward", "")
                       .typed<decltype(assemble_masks_forward)>();
  return op.call(protos, coeffs, boxes, batch_idx, crop);
}

std::tuple<at::Tensor, at::Tensor> assemble_masks_backward(const at::Tensor& grad_out, const at::Tensor& out,
                                                           const at::Tensor& protos, const at::Tensor& coeffs,
                                                           const at::Tensor& boxes,
                                                           const std::optional<at::Tensor>& batch_idx,
                                                           bool crop) {
  static auto op = c10::Dispatcher::singleton()
                       .findSchemaOrThrow("segx::assemble_masks_backward", "")
                       .typed<decltype(assemble_masks_backward)>();
  return op.call(grad_out, out, protos, coeffs, boxes, batch_idx, crop);
}

class AssembleMasksFunction : public torch::autograd::Function<AssembleMasksFunction> {
 public:
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx, const at::Tensor& protos,
                                                const at::Tensor& coeffs, const at::Tensor& boxes,
                                                const std::optional<at::Tensor>& batch_idx, bool crop) {
    at::AutoDispatchBelowADInplaceOrView guard;
    auto out = assemble_masks_forward(protos, coeffs, boxes, batch_idx, crop);
    ctx->save_for_backward({out, protos, coeffs, boxes, batch_idx.has_value() ? *batch_idx : at::Tensor()});
    ctx->saved_data["crop"] = crop;
    return {out};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 const torch::autograd::variable_list& grad_outputs) {
    auto s = ctx->get_saved_variables();
    std::optional<at::Tensor> batch_idx;
    if (s[4].defined()) batch_idx = s[4];
    auto [gp, gc] = assemble_masks_backward(grad_outputs[0], s[0], s[1], s[2], s[3], batch_idx,
                                            ctx->saved_data["crop"].toBool());
    return {gp, gc, at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

at::Tensor assemble_masks_autograd(const at::Tensor& protos, const at::Tensor& coeffs, const at::Tensor& boxes,
                                   const std::optional<at::Tensor>& batch_idx, bool crop) {
  return AssembleMasksFunction::apply(protos, coeffs, boxes, batch_idx, crop)[0];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(segx, m) {
  m.def("assemble_masks_forward(Tensor protos, Tensor coeffs, Tensor boxes, Tensor? batch_idx, bool crop) -> Tensor");
  m.def(
      "assemble_masks_backward(Tensor grad_out, Tensor out, Tensor protos, Tensor coeffs, Tensor boxes, "
      "Tensor? batch_idx, bool crop) -> (Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(segx, Autograd, m) {
  m.impl("assemble_masks_forward", assemble_masks_autograd);
}

}  // namespace segx
