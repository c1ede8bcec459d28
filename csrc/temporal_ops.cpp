// Temporal operators: the argument checks and helpers every device's kernels share.
#include <ATen/OpMathType.h>

#include <utility>

#include "temporal_ops.h"

namespace tin {

FrameGeometry frame_geometry(const at::Tensor& x, int64_t num_segments, int64_t shift_channels, int64_t groups,
                             const char* op) {
  TORCH_CHECK(x.dim() == 4, op, ": x must be (N*T, C, H, W), got ", x.sizes());
  TORCH_CHECK(num_segments > 0, op, ": num_segments must be positive");
  TORCH_CHECK(x.size(0) % num_segments == 0, op, ": N*T = ", x.size(0), " is not divisible by num_segments = ",
              num_segments);
  TORCH_CHECK(groups > 0, op, ": there must be at least one channel group");
  TORCH_CHECK(shift_channels >= 0 && shift_channels <= x.size(1) && shift_channels % groups == 0, op,
              ": shift_channels = ", shift_channels, " must lie in [0, C = ", x.size(1), "] and divide into ", groups,
              " groups");
  const bool channels_last = !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || channels_last, op, ": x must be contiguous or channels_last");
  return {x.size(0) / num_segments, num_segments, x.size(1), x.size(2) * x.size(3), shift_channels, groups,
          channels_last};
}

FrameGeometry shift_geometry(const at::Tensor& x, int64_t num_segments, int64_t fold) {
  TORCH_CHECK(fold >= 0 && x.dim() == 4 && 2 * fold <= x.size(1),
              "temporal_shift: 2 * shift_channels must lie in [0, C]; got shift_channels = ", fold, " for x of shape ",
              x.sizes());
  return frame_geometry(x, num_segments, 2 * fold, 1, "temporal_shift");
}

FrameGeometry interlace_geometry(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                                 int64_t num_segments, int64_t shift_channels) {
  TORCH_CHECK(offset.dim() == 2, "interlace: offset must be (N, G)");
  const FrameGeometry geo = frame_geometry(x, num_segments, shift_channels, offset.size(1), "interlace");
  TORCH_CHECK(offset.size(0) == geo.clips, "interlace: offset must be (N, G)");
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == geo.clips && weight.size(1) == num_segments &&
                  weight.size(2) == geo.groups,
              "interlace: weight must be (N, T, G)");
  return geo;
}

std::vector<at::Tensor> net_parameters(const at::Tensor& x, at::TensorList parameters, int64_t num_segments,
                                       int64_t shift_channels, bool reverse) {
  constexpr const char* op = "temporal_interlace";
  TORCH_CHECK(parameters.size() == kNetParameters, op, ": expected the ", kNetParameters,
              " parameters of TemporalInterlace, got ", parameters.size());
  TORCH_CHECK(parameters[5].dim() == 1 && parameters[5].size(0) > 0, op,
              ": offset_net.4.bias must be (g,) with g > 0");
  const int64_t predicted = parameters[5].size(0);
  const int64_t fold = shift_channels, frames = num_segments;
  struct Shape {
    size_t rank;
    std::array<int64_t, 3> sizes;
    at::IntArrayRef ref() const { return {sizes.data(), rank}; }
  };
  const Shape shapes[kNetParameters] = {{3, {1, fold, 3}},          {1, {1}},         {2, {frames, frames}},
                                        {1, {frames}},              {2, {predicted, frames}}, {1, {predicted}},
                                        {3, {predicted, fold, 3}}, {1, {predicted}}};
  static const char* const names[kNetParameters] = {"offset_net.0.weight", "offset_net.0.bias", "offset_net.2.weight",
                                                    "offset_net.2.bias",   "offset_net.4.weight", "offset_net.4.bias",
                                                    "weight_net.weight",   "weight_net.bias"};
  const auto acc_type = at::toOpMathType(x.scalar_type());
  std::vector<at::Tensor> checked;
  checked.reserve(kNetParameters);
  for (int index = 0; index < kNetParameters; ++index) {
    const at::Tensor& parameter = parameters[index];
    TORCH_CHECK(parameter.sizes() == shapes[index].ref(), op, ": ", names[index], " must have shape ",
                shapes[index].ref(), " for S = ", fold, ", T = ", frames, ", g = ", predicted, "; got ",
                parameter.sizes());
    TORCH_CHECK(parameter.scalar_type() == acc_type, op, ": ", names[index], " is ", parameter.scalar_type(),
                "; the parameters must be ", acc_type, " for x of ", x.scalar_type());
    TORCH_CHECK(parameter.device() == x.device(), op, ": ", names[index], " is on ", parameter.device(),
                " but x is on ", x.device());
    checked.push_back(parameter.contiguous());
  }
  const int64_t groups = (reverse ? 2 : 1) * predicted;
  TORCH_CHECK(fold >= groups && fold % groups == 0, op, ": S = ", fold, " interlaced channels do not split into ",
              groups, " equal channel groups");
  return checked;
}

void check_block_intermediates(const at::Tensor& descriptor, const at::Tensor& offset, const at::Tensor& weight,
                               const FrameGeometry& geo, at::ScalarType acc_type) {
  const std::pair<const at::Tensor*, std::vector<int64_t>> expected[] = {
      {&descriptor, {geo.clips, geo.frames, geo.shifted}},
      {&offset, {geo.clips, geo.groups}},
      {&weight, {geo.clips, geo.frames, geo.groups}}};
  const char* const names[] = {"descriptor", "offset", "weight"};
  for (int index = 0; index < 3; ++index) {
    const at::Tensor& tensor = *expected[index].first;
    TORCH_CHECK(tensor.sizes() == at::IntArrayRef(expected[index].second) && tensor.scalar_type() == acc_type &&
                    tensor.is_contiguous() && tensor.device() == descriptor.device(),
                "temporal_interlace_backward: ", names[index], " must be the forward's: contiguous ", acc_type, " of shape ",
                at::IntArrayRef(expected[index].second), "; got ", tensor.scalar_type(), " ", tensor.sizes());
  }
}

std::tuple<at::Tensor, at::Tensor> opmath_offset_and_weight(const at::Tensor& offset, const at::Tensor& weight,
                                                            at::ScalarType acc_type) {
  auto ready = [&](const at::Tensor& tensor) { return tensor.scalar_type() == acc_type && tensor.is_contiguous(); };
  if (ready(offset) && ready(weight)) return {offset, weight};  // the usual case, without dispatching
  return {offset.to(acc_type).contiguous(), weight.to(acc_type).contiguous()};
}

}  // namespace tin
