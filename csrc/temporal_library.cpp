// Temporal operators: schemas and autograd in C++.
//
// Each differentiable operator has an Autograd-key kernel (as torchvision's operators do): a
// torch::autograd::Function that runs the operator below autograd and, in its backward, the
// operator's compiled backward, which computes only the gradients that are needed. So a TIN block
// costs one operator call forward and one backward, with no Python on the way. The backward
// operators are not differentiable themselves: their Autograd kernels refuse double backward and
// otherwise pass through.
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/autograd.h>
#include <torch/csrc/autograd/functions/basic_ops.h>
#include <torch/csrc/autograd/functions/utils.h>
#include <torch/library.h>

#include <type_traits>
#include <utility>

#include "temporal_ops.h"

namespace tin {
namespace {

using torch::autograd::AutogradContext;
using torch::autograd::variable_list;

template <typename Signature>
c10::TypedOperatorHandle<Signature> typed_op(const char* name) {
  return c10::Dispatcher::singleton().findSchemaOrThrow(name, "").typed<Signature>();
}

using InterlaceSignature = at::Tensor(const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t);
using InterlaceBackwardSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, int64_t, int64_t, std::array<bool, 3>);
using BlockSignature = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor>(const at::Tensor&, at::TensorList,
                                                                                  int64_t, int64_t, bool, double);
using BlockBackwardSignature = std::tuple<at::Tensor, std::vector<at::Tensor>>(
    const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&, at::TensorList,
    int64_t, int64_t, bool, double, std::array<bool, 2>);
using ShiftSignature = at::Tensor(const at::Tensor&, int64_t, int64_t);

class InterlaceFunction : public torch::autograd::Function<InterlaceFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, const at::Tensor& offset,
                            const at::Tensor& weight, int64_t num_segments, int64_t shift_channels) {
    static const auto op = typed_op<InterlaceSignature>("tin::interlace");
    ctx->saved_data["num_segments"] = num_segments;
    ctx->saved_data["shift_channels"] = shift_channels;
    ctx->save_for_backward({x, offset, weight});
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x, offset, weight, num_segments, shift_channels);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<InterlaceBackwardSignature>("tin::interlace_backward");
    const variable_list saved = ctx->get_saved_variables();
    const std::array<bool, 3> mask{ctx->needs_input_grad(0), ctx->needs_input_grad(1), ctx->needs_input_grad(2)};
    auto [grad_x, grad_offset, grad_weight] =
        op.call(grads[0], saved[0], saved[1], saved[2], ctx->saved_data["num_segments"].toInt(),
                ctx->saved_data["shift_channels"].toInt(), mask);
    return {mask[0] ? grad_x : at::Tensor(), mask[1] ? grad_offset : at::Tensor(),
            mask[2] ? grad_weight : at::Tensor(), at::Tensor(), at::Tensor()};
  }
};

class BlockFunction : public torch::autograd::Function<BlockFunction> {
 public:
  static variable_list forward(AutogradContext* ctx, const at::Tensor& x, at::TensorList parameters,
                               int64_t num_segments, int64_t shift_channels, bool reverse, double offset_scale) {
    static const auto op = typed_op<BlockSignature>("tin::temporal_interlace");
    auto [out, offset, weight, descriptor] = [&] {
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      return op.call(x, parameters, num_segments, shift_channels, reverse, offset_scale);
    }();
    ctx->saved_data["num_segments"] = num_segments;
    ctx->saved_data["shift_channels"] = shift_channels;
    ctx->saved_data["reverse"] = reverse;
    ctx->saved_data["offset_scale"] = offset_scale;
    variable_list saved{x, descriptor, offset, weight};
    saved.insert(saved.end(), parameters.begin(), parameters.end());
    ctx->save_for_backward(saved);
    ctx->mark_non_differentiable({offset, weight, descriptor});
    ctx->set_materialize_grads(false);  // the three outputs above have no gradients to make zeros for
    return {out, offset, weight, descriptor};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<BlockBackwardSignature>("tin::temporal_interlace_backward");
    variable_list result(1 + kNetParameters + 4);  // x, the parameters, then the four non-tensor arguments
    if (!grads[0].defined()) return result;
    const variable_list saved = ctx->get_saved_variables();
    bool need_parameters = false;
    for (int index = 0; index < kNetParameters; ++index) need_parameters |= ctx->needs_input_grad(1 + index);
    const std::array<bool, 2> mask{ctx->needs_input_grad(0), need_parameters};
    const std::vector<at::Tensor> parameters(saved.begin() + 4, saved.end());
    auto [grad_x, parameter_grads] =
        op.call(grads[0], saved[0], saved[1], saved[2], saved[3], parameters, ctx->saved_data["num_segments"].toInt(),
                ctx->saved_data["shift_channels"].toInt(), ctx->saved_data["reverse"].toBool(),
                ctx->saved_data["offset_scale"].toDouble(), mask);
    if (mask[0]) result[0] = grad_x;
    for (int index = 0; index < kNetParameters; ++index) {
      if (need_parameters && ctx->needs_input_grad(1 + index)) result[1 + index] = parameter_grads[index];
    }
    return result;
  }
};

class ShiftFunction : public torch::autograd::Function<ShiftFunction> {
 public:
  static at::Tensor forward(AutogradContext* ctx, const at::Tensor& x, int64_t num_segments, int64_t shift_channels) {
    static const auto op = typed_op<ShiftSignature>("tin::temporal_shift");
    ctx->saved_data["num_segments"] = num_segments;
    ctx->saved_data["shift_channels"] = shift_channels;
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    return op.call(x, num_segments, shift_channels);
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto op = typed_op<ShiftSignature>("tin::temporal_shift_backward");
    return {op.call(grads[0], ctx->saved_data["num_segments"].toInt(), ctx->saved_data["shift_channels"].toInt()),
            at::Tensor(), at::Tensor()};
  }
};

at::Tensor interlace_autograd(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                              int64_t num_segments, int64_t shift_channels) {
  return InterlaceFunction::apply(x, offset, weight, num_segments, shift_channels);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> temporal_interlace_autograd(
    const at::Tensor& x, at::TensorList parameters, int64_t num_segments, int64_t shift_channels, bool reverse,
    double offset_scale) {
  const variable_list outputs = BlockFunction::apply(x, parameters, num_segments, shift_channels, reverse, offset_scale);
  return {outputs[0], outputs[1], outputs[2], outputs[3]};
}

at::Tensor temporal_shift_autograd(const at::Tensor& x, int64_t num_segments, int64_t shift_channels) {
  return ShiftFunction::apply(x, num_segments, shift_channels);
}

// A new autograd node: PyTorch holds them in std::shared_ptr up to 2.1x and in c10::intrusive_ptr
// later; this makes one the way the PyTorch being built against does.
template <typename NodeType, typename... Args>
auto make_node(Args&&... args) {
  using Held = std::decay_t<decltype(std::declval<const at::Tensor&>().grad_fn())>;
  if constexpr (std::is_same_v<Held, std::shared_ptr<torch::autograd::Node>>) {
    return std::make_shared<NodeType>(std::forward<Args>(args)...);
  } else {
    return c10::make_intrusive<NodeType>(std::forward<Args>(args)...);
  }
}

// Autograd kernel of the backward operators: they run below autograd, and where a graph is being
// recorded (backward with create_graph=True) their outputs get a node that refuses to be
// differentiated, so a double backward through them fails with the operator's name while other
// uses of create_graph work.
void not_differentiable(const c10::OperatorHandle& op, c10::DispatchKeySet keys, torch::jit::Stack* stack) {
  std::vector<at::Tensor> differentiable_inputs;
  if (at::GradMode::is_enabled()) {
    for (const c10::IValue& argument : torch::jit::last(*stack, op.schema().arguments().size())) {
      if (argument.isTensor() && argument.toTensor().requires_grad()) {
        differentiable_inputs.push_back(argument.toTensor());
      } else if (argument.isTensorList()) {
        for (const at::Tensor& tensor : argument.toTensorList().vec()) {
          if (tensor.requires_grad()) differentiable_inputs.push_back(tensor);
        }
      }
    }
  }
  {
    const at::AutoDispatchBelowADInplaceOrView below_autograd;
    op.redispatchBoxed(keys & c10::after_autograd_keyset, stack);
  }
  if (differentiable_inputs.empty()) return;
  const auto refusal = make_node<torch::autograd::Error>(
      op.schema().name() + ": the temporal operators have no double backward",
      torch::autograd::collect_next_edges(differentiable_inputs));
  for (const c10::IValue& output : torch::jit::last(*stack, op.schema().returns().size())) {
    std::vector<at::Tensor> tensors = output.isTensorList() ? output.toTensorList().vec() : std::vector<at::Tensor>{};
    if (output.isTensor()) tensors.push_back(output.toTensor());
    for (at::Tensor& tensor : tensors) {
      if (tensor.defined() && tensor.is_floating_point()) torch::autograd::set_history(tensor, refusal);
    }
  }
}

}  // namespace
}  // namespace tin

TORCH_LIBRARY(tin, m) {
  for (const char* schema : tin::kSchemas) m.def(schema);
}

TORCH_LIBRARY_IMPL(tin, Autograd, m) {
  m.impl("interlace", &tin::interlace_autograd);
  m.impl("temporal_interlace", &tin::temporal_interlace_autograd);
  m.impl("temporal_shift", &tin::temporal_shift_autograd);
  for (const char* name : {"interlace_backward", "temporal_interlace_backward", "temporal_shift_backward"}) {
    m.impl(name, torch::CppFunction::makeFromBoxedFunction<&tin::not_differentiable>());
  }
}
