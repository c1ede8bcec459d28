// Temporal interlace: shared declarations of the CPU and CUDA kernels.
//
// x is (N*T, C, H, W), contiguous or channels_last. Both layouts store one frame as a dense block
// of F = C*H*W elements, frames of a clip one after another, so element (n, t, q) of a frame-local
// memory offset q lives at x[(n*T + t)*F + q]. Only the channel of q depends on the layout:
//   contiguous:     c = q / (H*W)
//   channels_last:  c = q % C
// The kernels walk along t for a fixed (n, q), which reads every input element once.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <array>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace tin {

struct InterlaceGeometry {
  int64_t clips;           // N
  int64_t frames;          // T
  int64_t channels;        // C
  int64_t positions;       // H*W
  int64_t shifted;         // S: channels [0, S) are interlaced
  int64_t groups;          // G
  bool channels_last;

  int64_t frame_size() const { return channels * positions; }
  int64_t group_channels() const { return shifted / groups; }
  at::MemoryFormat memory_format() const {
    return channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
  }
};

// Validates the arguments (the Python wrapper gives friendlier messages first) and describes x.
InterlaceGeometry interlace_geometry(const at::Tensor& x, const at::Tensor& offset,
                                     const at::Tensor& weight, int64_t num_segments,
                                     int64_t shift_channels);

// Integer part of an offset, clamped to [-T-1, T]: every larger shift empties the output alike,
// and the clamp keeps frame arithmetic far from integer overflow.
template <typename acc_t>
C10_HOST_DEVICE inline int64_t whole_shift(acc_t offset, int64_t frames) {
  const acc_t whole = floor(offset);
  if (!(whole > static_cast<acc_t>(-frames - 1))) return -frames - 1;  // also catches NaN
  if (whole > static_cast<acc_t>(frames)) return frames;
  return static_cast<int64_t>(whole);
}

// offset (N, G) and weight transposed to (N, G, T), contiguous, in the accumulation dtype, so each
// (clip, group) has a unit-stride row of frame weights.
std::tuple<at::Tensor, at::Tensor> opmath_offset_and_weight(const at::Tensor& offset,
                                                            const at::Tensor& weight,
                                                            at::ScalarType acc_type);

// Splits per-group sums (N, G, T+1) -- T frame-weight sums, then the offset sum -- into
// contiguous grad_offset (N, G) and grad_weight (N, T, G) of the dtypes of offset and weight, each
// in a storage of its own (autograd may accumulate into either in place).
std::tuple<at::Tensor, at::Tensor> split_group_gradients(const at::Tensor& per_group,
                                                         const InterlaceGeometry& geo,
                                                         const at::Tensor& offset,
                                                         const at::Tensor& weight);

at::Tensor interlace_forward_cpu(const at::Tensor& x, const at::Tensor& offset,
                                 const at::Tensor& weight, int64_t num_segments,
                                 int64_t shift_channels);

std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
    const at::Tensor& weight, int64_t num_segments, int64_t shift_channels,
    std::array<bool, 3> output_mask);

}  // namespace tin
