// Temporal operators of TIN and TSM: what the CPU and CUDA kernels and the autograd layer share.
//
// x is (N*T, C, H, W), contiguous or channels_last. Both layouts store one frame as a dense block
// of F = C*H*W elements, frames of a clip one after another, so element (n, t, q) of a frame-local
// memory offset q lives at x[(n*T + t)*F + q]. Only the channel of q depends on the layout:
//   contiguous:     c = q / (H*W)
//   channels_last:  c = q % C
//
// Operators (kSchemas below):
//   interlace               out = interlace(x, offset, weight): the contract's operator
//   temporal_interlace      a whole TIN block (TemporalInterlace): the descriptor (spatial mean of the
//                           S interlaced channels), OffsetNet and WeightNet, then the interlace
//   temporal_shift          TSM's shift: a shifted copy
// and their backwards. The math of the block's two small networks lives here once, as functions of
// one output element, so that the CPU kernels loop over them and the CUDA kernels spread them over
// threads.
#pragma once

// Narrow includes (the Tensor class here, each operator's own header where it is called) instead of
// <ATen/ATen.h>: every machine compiles these sources on first use, and ATen.h alone costs about 7 s
// of compiler time per translation unit.
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>
#include <vector>

namespace tin {

// The operators' schemas (registered in temporal_library.cpp).
inline constexpr const char* kSchemas[] = {
    "interlace(Tensor x, Tensor offset, Tensor weight, int num_segments, int shift_channels) -> Tensor",
    "interlace_backward(Tensor grad_out, Tensor x, Tensor offset, Tensor weight, int num_segments, "
    "int shift_channels, bool[3] output_mask) -> (Tensor, Tensor, Tensor)",
    "temporal_interlace(Tensor x, Tensor[] parameters, int num_segments, int shift_channels, bool reverse, "
    "float offset_scale) -> (Tensor out, Tensor offset, Tensor weight, Tensor descriptor)",
    "temporal_interlace_backward(Tensor grad_out, Tensor x, Tensor descriptor, Tensor offset, Tensor weight, "
    "Tensor[] parameters, int num_segments, int shift_channels, bool reverse, float offset_scale, "
    "bool[2] output_mask) -> (Tensor, Tensor[])",
    "temporal_shift(Tensor x, int num_segments, int shift_channels) -> Tensor",
    "temporal_shift_backward(Tensor grad_out, int num_segments, int shift_channels) -> Tensor",
};

struct FrameGeometry {
  int64_t clips;      // N
  int64_t frames;     // T
  int64_t channels;   // C
  int64_t positions;  // H*W
  int64_t shifted;    // S: channels [0, S) are interlaced (or shifted)
  int64_t groups;     // G: channel groups of the interlaced channels, S/G channels each
  bool channels_last;

  int64_t frame_size() const { return channels * positions; }
  int64_t group_channels() const { return shifted / groups; }
  at::MemoryFormat memory_format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
};

// Checks x (4-D, N*T frames, contiguous or channels_last) and S (in [0, C], G equal groups) and
// describes x. `op` names the operator in the messages.
FrameGeometry frame_geometry(const at::Tensor& x, int64_t num_segments, int64_t shift_channels, int64_t groups,
                             const char* op);

// frame_geometry of TSM's shift: `fold` channels move each way, so 2 * fold <= C.
FrameGeometry shift_geometry(const at::Tensor& x, int64_t num_segments, int64_t fold);

// frame_geometry, and offset (N, G) / weight (N, T, G) of a shape that fits x.
FrameGeometry interlace_geometry(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                                 int64_t num_segments, int64_t shift_channels);

// Integer part of an offset, clamped to [-T-1, T]: every larger shift empties the output alike,
// and the clamp keeps frame arithmetic far from integer overflow.
template <typename acc_t>
C10_HOST_DEVICE inline int64_t whole_shift(acc_t offset, int64_t frames) {
  const acc_t whole = floor(offset);
  if (!(whole > static_cast<acc_t>(-frames - 1))) return -frames - 1;  // also catches NaN
  if (whole > static_cast<acc_t>(frames)) return frames;
  return static_cast<int64_t>(whole);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t sigmoid(acc_t z) {
  return acc_t(1) / (acc_t(1) + exp(-z));
}

// ---------------------------------------------------------------------------------------------
// The two small networks of a TIN block, for one clip.
//
// d (T, S) is the clip's descriptor: the spatial mean of each interlaced channel in every frame.
//   OffsetNet  a[t]    = Conv1d(S -> 1, k=3, pad=1)(d)                 conv output 0
//              h[i]    = fc1_bias[i] + sum_j fc1_weight[i, j] a[j]     (pre-activation, T of them)
//              z[j]    = fc2_bias[j] + sum_i fc2_weight[j, i] relu(h[i])       (g of them)
//              offset[j] = offset_scale * (sigmoid(z[j]) - 0.5)
//   WeightNet  v[j, t] = Conv1d(S -> g, k=3, pad=1)(d)                 conv outputs 1..g
//              weight[t, j] = 2 * sigmoid(v[j, t])
// With reverse the G = 2g channel groups get offsets [+o, -o] and weights [w, w]; otherwise G = g.
// ---------------------------------------------------------------------------------------------

// The eight parameter tensors of TemporalInterlace, in this order (and the schema's).
constexpr int kNetParameters = 8;

template <typename acc_t>
struct InterlaceNets {
  const acc_t* offset_conv_weight;  // (1, S, 3)
  const acc_t* offset_conv_bias;    // (1)
  const acc_t* fc1_weight;          // (T, T)
  const acc_t* fc1_bias;            // (T)
  const acc_t* fc2_weight;          // (g, T)
  const acc_t* fc2_bias;            // (g)
  const acc_t* weight_conv_weight;  // (g, S, 3)
  const acc_t* weight_conv_bias;    // (g)
  int64_t fold;                     // S
  int64_t frames;                   // T
  int64_t predicted;                // g
  bool reverse;
  acc_t offset_scale;

  C10_HOST_DEVICE int64_t groups() const { return reverse ? 2 * predicted : predicted; }
  C10_HOST_DEVICE int64_t conv_outputs() const { return 1 + predicted; }
  // Kernel (S, 3) and bias of conv output o: 0 is OffsetNet's, 1 + j WeightNet's j-th.
  C10_HOST_DEVICE const acc_t* conv_kernel(int64_t o) const {
    return o == 0 ? offset_conv_weight : weight_conv_weight + (o - 1) * fold * 3;
  }
  C10_HOST_DEVICE acc_t conv_bias(int64_t o) const { return o == 0 ? offset_conv_bias[0] : weight_conv_bias[o - 1]; }
  // Elements of each parameter tensor, in kNetParameters order.
  C10_HOST_DEVICE int64_t parameter_size(int index) const {
    switch (index) {
      case 0: return fold * 3;
      case 1: return 1;
      case 2: return frames * frames;
      case 3: return frames;
      case 4: return predicted * frames;
      case 5: return predicted;
      case 6: return predicted * fold * 3;
      default: return predicted;
    }
  }
  C10_HOST_DEVICE int64_t parameter_elements() const {
    int64_t total = 0;
    for (int index = 0; index < kNetParameters; ++index) total += parameter_size(index);
    return total;
  }
};

// A clip's intermediate values, forward and backward, in one block of net_scratch_size numbers.
template <typename acc_t>
struct NetScratch {
  acc_t* conv;         // (1+g, T): a, then v
  acc_t* hidden;       // (T): h, before the ReLU
  acc_t* logits;       // (g): z
  acc_t* conv_grad;    // (1+g, T): d loss / d a, d loss / d v
  acc_t* hidden_grad;  // (T): d loss / d h
  acc_t* logit_grad;   // (g): d loss / d z

  C10_HOST_DEVICE static int64_t size(int64_t frames, int64_t predicted) {
    return 2 * (1 + predicted) * frames + 2 * frames + 2 * predicted;
  }
  C10_HOST_DEVICE static NetScratch at(acc_t* base, int64_t frames, int64_t predicted) {
    NetScratch s;
    s.conv = base;
    s.hidden = s.conv + (1 + predicted) * frames;
    s.logits = s.hidden + frames;
    s.conv_grad = s.logits + predicted;
    s.hidden_grad = s.conv_grad + (1 + predicted) * frames;
    s.logit_grad = s.hidden_grad + frames;
    return s;
  }
};

// Conv output o at frame t, bias excluded, summed over the channels begin, begin + step, ... < S
// (the CPU passes 0, 1; a CUDA warp splits the channels over its lanes).
template <typename acc_t>
C10_HOST_DEVICE acc_t conv_partial(const InterlaceNets<acc_t>& nets, const acc_t* d, int64_t o, int64_t t,
                                   int64_t begin, int64_t step) {
  const acc_t* kernel = nets.conv_kernel(o);
  acc_t sum = 0;
  for (int64_t k = 0; k < 3; ++k) {
    const int64_t source = t + k - 1;
    if (source < 0 || source >= nets.frames) continue;
    const acc_t* row = d + source * nets.fold;
    for (int64_t c = begin; c < nets.fold; c += step) sum += kernel[c * 3 + k] * row[c];
  }
  return sum;
}

template <typename acc_t>
C10_HOST_DEVICE acc_t hidden_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t i) {
  acc_t sum = nets.fc1_bias[i];
  for (int64_t j = 0; j < nets.frames; ++j) sum += nets.fc1_weight[i * nets.frames + j] * s.conv[j];
  return sum;
}

template <typename acc_t>
C10_HOST_DEVICE acc_t relu(acc_t value) {
  return value > acc_t(0) ? value : acc_t(0);
}

template <typename acc_t>
C10_HOST_DEVICE acc_t logit_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t j) {
  acc_t sum = nets.fc2_bias[j];
  for (int64_t i = 0; i < nets.frames; ++i) sum += nets.fc2_weight[j * nets.frames + i] * relu(s.hidden[i]);
  return sum;
}

// Offset of channel group g (of G) and the frame weight of group g at frame t.
template <typename acc_t>
C10_HOST_DEVICE acc_t offset_of(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t g) {
  const bool mirrored = g >= nets.predicted;
  const acc_t offset = nets.offset_scale * (sigmoid(s.logits[mirrored ? g - nets.predicted : g]) - acc_t(0.5));
  return mirrored ? -offset : offset;
}

template <typename acc_t>
C10_HOST_DEVICE acc_t weight_of(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t t, int64_t g) {
  const int64_t j = g >= nets.predicted ? g - nets.predicted : g;
  return 2 * sigmoid(s.conv[(1 + j) * nets.frames + t]);
}

// Backward, from the gradients of the applied offsets (G) and frame weights (T, G) of the clip.
template <typename acc_t>
C10_HOST_DEVICE acc_t logit_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s,
                                    const acc_t* offset_grad, int64_t j) {
  const acc_t grad = offset_grad[j] - (nets.reverse ? offset_grad[j + nets.predicted] : acc_t(0));
  const acc_t sig = sigmoid(s.logits[j]);
  return grad * nets.offset_scale * sig * (1 - sig);
}

// d loss / d v[j, t], from weight_grad (T, G) of the clip.
template <typename acc_t>
C10_HOST_DEVICE acc_t weight_logit_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s,
                                           const acc_t* weight_grad, int64_t j, int64_t t) {
  const int64_t groups = nets.groups();
  const acc_t grad = weight_grad[t * groups + j] + (nets.reverse ? weight_grad[t * groups + j + nets.predicted] : 0);
  const acc_t sig = sigmoid(s.conv[(1 + j) * nets.frames + t]);
  return grad * 2 * sig * (1 - sig);
}

template <typename acc_t>
C10_HOST_DEVICE acc_t hidden_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t i) {
  if (!(s.hidden[i] > acc_t(0))) return 0;
  acc_t sum = 0;
  for (int64_t j = 0; j < nets.predicted; ++j) sum += s.logit_grad[j] * nets.fc2_weight[j * nets.frames + i];
  return sum;
}

// d loss / d a[t]
template <typename acc_t>
C10_HOST_DEVICE acc_t offset_conv_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t t) {
  acc_t sum = 0;
  for (int64_t i = 0; i < nets.frames; ++i) sum += s.hidden_grad[i] * nets.fc1_weight[i * nets.frames + t];
  return sum;
}

// d loss / d d[t, c]: every conv output reads d[t, c] through three taps.
template <typename acc_t>
C10_HOST_DEVICE acc_t descriptor_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, int64_t t,
                                         int64_t c) {
  acc_t sum = 0;
  for (int64_t k = 0; k < 3; ++k) {
    const int64_t output_frame = t - k + 1;
    if (output_frame < 0 || output_frame >= nets.frames) continue;
    for (int64_t o = 0; o < nets.conv_outputs(); ++o) {
      sum += s.conv_grad[o * nets.frames + output_frame] * nets.conv_kernel(o)[c * 3 + k];
    }
  }
  return sum;
}

// The clip's gradient of parameter element e of the flattened kNetParameters tensors.
template <typename acc_t>
C10_HOST_DEVICE acc_t parameter_grad_at(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s,
                                        const acc_t* d, int64_t e) {
  const int64_t frames = nets.frames;
  int index = 0;
  while (e >= nets.parameter_size(index)) e -= nets.parameter_size(index++);
  auto conv_weight_grad = [&](int64_t o, int64_t c, int64_t k) {
    acc_t sum = 0;
    for (int64_t t = 0; t < frames; ++t) {
      const int64_t source = t + k - 1;
      if (source >= 0 && source < frames) sum += s.conv_grad[o * frames + t] * d[source * nets.fold + c];
    }
    return sum;
  };
  auto conv_bias_grad = [&](int64_t o) {
    acc_t sum = 0;
    for (int64_t t = 0; t < frames; ++t) sum += s.conv_grad[o * frames + t];
    return sum;
  };
  switch (index) {
    case 0: return conv_weight_grad(0, e / 3, e % 3);
    case 1: return conv_bias_grad(0);
    case 2: return s.hidden_grad[e / frames] * s.conv[e % frames];
    case 3: return s.hidden_grad[e];
    case 4: return s.logit_grad[e / frames] * relu(s.hidden[e % frames]);
    case 5: return s.logit_grad[e];
    case 6: return conv_weight_grad(1 + e / (nets.fold * 3), (e / 3) % nets.fold, e % 3);
    default: return conv_bias_grad(1 + e);
  }
}

// The parameter tensors of the schema, checked against each other and x, as InterlaceNets of the
// accumulation type (the tensors are contiguous and of that dtype: see net_parameters).
template <typename acc_t>
InterlaceNets<acc_t> interlace_nets(const std::vector<at::Tensor>& parameters, int64_t fold, int64_t frames,
                                    bool reverse, double offset_scale) {
  InterlaceNets<acc_t> nets{};
  const acc_t* pointers[kNetParameters];
  for (int index = 0; index < kNetParameters; ++index) pointers[index] = parameters[index].const_data_ptr<acc_t>();
  nets.offset_conv_weight = pointers[0];
  nets.offset_conv_bias = pointers[1];
  nets.fc1_weight = pointers[2];
  nets.fc1_bias = pointers[3];
  nets.fc2_weight = pointers[4];
  nets.fc2_bias = pointers[5];
  nets.weight_conv_weight = pointers[6];
  nets.weight_conv_bias = pointers[7];
  nets.fold = fold;
  nets.frames = frames;
  nets.predicted = parameters[5].size(0);
  nets.reverse = reverse;
  nets.offset_scale = static_cast<acc_t>(offset_scale);
  return nets;
}

// Checks the eight parameters (shapes against S, T and each other; one floating dtype, the
// accumulation dtype of x's; x's device) and returns them contiguous. Also checks x and S.
std::vector<at::Tensor> net_parameters(const at::Tensor& x, at::TensorList parameters, int64_t num_segments,
                                       int64_t shift_channels, bool reverse);

// Checks that the backward's descriptor (N, T, S), offset (N, G) and weight (N, T, G) are what the
// forward made: contiguous and of the accumulation dtype.
void check_block_intermediates(const at::Tensor& descriptor, const at::Tensor& offset, const at::Tensor& weight,
                               const FrameGeometry& geo, at::ScalarType acc_type);

// Channel groups G of a block: 2g with reverse offsets, else g (g = fc2 outputs).
inline int64_t block_groups(at::TensorList parameters, bool reverse) {
  return (reverse ? 2 : 1) * parameters[5].size(0);
}

// Sums of per-piece group partials (N, G, pieces, T+1) -- T frame-weight sums, then the offset
// sum -- of clip n into weight_grad (T, G) and offset_grad (G), in a fixed order.
template <typename acc_t>
C10_HOST_DEVICE void sum_group_partial(const acc_t* partials, int64_t pieces, int64_t frames, int64_t groups,
                                       int64_t n, int64_t g, int64_t t, acc_t* weight_grad, acc_t* offset_grad) {
  const acc_t* piece = partials + ((n * groups + g) * pieces) * (frames + 1) + t;
  acc_t sum = 0;
  for (int64_t i = 0; i < pieces; ++i) sum += piece[i * (frames + 1)];
  if (t < frames) {
    weight_grad[t * groups + g] = sum;
  } else {
    offset_grad[g] = sum;
  }
}

// ------------------------------------------------------------------- kernels of each device

at::Tensor interlace_forward_cpu(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                                 int64_t num_segments, int64_t shift_channels);
std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                                      const at::Tensor& offset,
                                                                      const at::Tensor& weight, int64_t num_segments,
                                                                      int64_t shift_channels,
                                                                      std::array<bool, 3> output_mask);

// Offsets (N, G) and weights (N, T, G) in the accumulation dtype, contiguous.
std::tuple<at::Tensor, at::Tensor> opmath_offset_and_weight(const at::Tensor& offset, const at::Tensor& weight,
                                                            at::ScalarType acc_type);

}  // namespace tin
