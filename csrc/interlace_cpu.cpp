// Temporal interlace: operator schemas and the CPU kernels.
//
// The CPU kernels see a frame as "rows": runs of unit-stride elements that share one channel group.
//   contiguous:     row r < S is channel r, P = H*W elements long, group r / K
//   channels_last:  row r < P*G is the K = S/G channels of group r % G at position r / G
// For a fixed (clip, row) the kernels walk along t; the two source rows of a step (frames t-s and
// t-s-1) are the current and previous step's rows, so each element comes from memory once and the
// reuse hits the cache. Channels [S, C) are copied.
#include "interlace.h"

#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <utility>
#include <vector>

namespace tin {

InterlaceGeometry interlace_geometry(const at::Tensor& x, const at::Tensor& offset,
                                     const at::Tensor& weight, int64_t num_segments,
                                     int64_t shift_channels) {
  TORCH_CHECK(x.dim() == 4, "interlace: x must be (N*T, C, H, W), got ", x.sizes());
  TORCH_CHECK(num_segments > 0, "interlace: num_segments must be positive");
  TORCH_CHECK(x.size(0) % num_segments == 0, "interlace: N*T = ", x.size(0),
              " is not divisible by num_segments = ", num_segments);
  const int64_t clips = x.size(0) / num_segments;
  TORCH_CHECK(offset.dim() == 2 && offset.size(0) == clips, "interlace: offset must be (N, G)");
  const int64_t groups = offset.size(1);
  TORCH_CHECK(groups > 0, "interlace: offset must have at least one group");
  TORCH_CHECK(weight.dim() == 3 && weight.size(0) == clips && weight.size(1) == num_segments &&
                  weight.size(2) == groups,
              "interlace: weight must be (N, T, G)");
  TORCH_CHECK(shift_channels >= 0 && shift_channels <= x.size(1) && shift_channels % groups == 0,
              "interlace: shift_channels must lie in [0, C] and divide into G groups");
  const bool channels_last =
      !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast);
  TORCH_CHECK(x.is_contiguous() || channels_last,
              "interlace: x must be contiguous or channels_last");
  return {clips, num_segments, x.size(1), x.size(2) * x.size(3), shift_channels, groups,
          channels_last};
}

namespace {

// A run of `length` unit-stride elements at frame-local offset `start`, all in channel group `group`.
struct Row {
  int64_t start;
  int64_t length;
  int64_t group;
};

int64_t interlaced_rows(const InterlaceGeometry& geo) {
  if (geo.shifted == 0) return 0;
  return geo.channels_last ? geo.positions * geo.groups : geo.shifted;
}

Row interlaced_row(const InterlaceGeometry& geo, int64_t r) {
  if (geo.channels_last) {
    const int64_t group = r % geo.groups;
    return {(r / geo.groups) * geo.channels + group * geo.group_channels(), geo.group_channels(),
            group};
  }
  return {r * geo.positions, geo.positions, r / geo.group_channels()};
}

// Rows of the channels [S, C) that pass through unchanged, per frame.
int64_t passthrough_rows(const InterlaceGeometry& geo) {
  return geo.channels_last ? geo.positions : 1;
}

Row passthrough_row(const InterlaceGeometry& geo, int64_t r) {
  if (geo.channels_last) return {r * geo.channels + geo.shifted, geo.channels - geo.shifted, 0};
  return {geo.shifted * geo.positions, (geo.channels - geo.shifted) * geo.positions, 0};
}

// Enough elements per task to amortise the scheduling.
int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements_per_item));
}

template <typename scalar_t>
void copy_passthrough(const scalar_t* src, scalar_t* dst, const InterlaceGeometry& geo) {
  if (geo.shifted == geo.channels) return;
  const int64_t rows = passthrough_rows(geo);
  const int64_t length = passthrough_row(geo, 0).length;
  at::parallel_for(0, geo.clips * geo.frames * rows, grain_for(length), [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t at = (i / rows) * geo.frame_size() + passthrough_row(geo, i % rows).start;
      std::copy(src + at, src + at + length, dst + at);
    }
  });
}

// dst[j] = a_scale * a[j] + b_scale * b[j]
template <typename scalar_t, typename acc_t>
void blend_rows(scalar_t* dst, const scalar_t* a, acc_t a_scale, const scalar_t* b, acc_t b_scale,
                int64_t length) {
  for (int64_t j = 0; j < length; ++j) {
    dst[j] = static_cast<scalar_t>(a_scale * static_cast<acc_t>(a[j]) +
                                   b_scale * static_cast<acc_t>(b[j]));
  }
}

// (sum g[j] * a[j], sum g[j] * b[j])
template <typename scalar_t, typename acc_t>
std::pair<acc_t, acc_t> correlate_rows(const scalar_t* g, const scalar_t* a, const scalar_t* b,
                                       int64_t length) {
  acc_t with_a = 0;
  acc_t with_b = 0;
  for (int64_t j = 0; j < length; ++j) {
    const acc_t gj = static_cast<acc_t>(g[j]);
    with_a += gj * static_cast<acc_t>(a[j]);
    with_b += gj * static_cast<acc_t>(b[j]);
  }
  return {with_a, with_b};
}

// Frame t of one (clip, row) column, or a row of zeros when t lies outside [0, T).
template <typename scalar_t>
struct Column {
  const scalar_t* clip_start;  // element 0 of frame 0 of the clip, plus the row's start
  const scalar_t* zeros;
  int64_t frame_size;
  int64_t frames;

  const scalar_t* frame(int64_t t) const {
    return (t >= 0 && t < frames) ? clip_start + t * frame_size : zeros;
  }
};

// offset is (N, G); weight is (N, G, T), so every (clip, group) has a unit-stride row of weights.
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const at::opmath_type<scalar_t>* offset,
                    const at::opmath_type<scalar_t>* weight, scalar_t* out,
                    const InterlaceGeometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t rows = interlaced_rows(geo);
  const int64_t frames = geo.frames;
  const int64_t clip_size = frames * geo.frame_size();
  if (rows > 0) {
    const int64_t length = interlaced_row(geo, 0).length;
    at::parallel_for(0, geo.clips * rows, grain_for(length * frames), [&](int64_t begin, int64_t end) {
      const std::vector<scalar_t> zeros(length, scalar_t(0));
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / rows;
        const Row row = interlaced_row(geo, i % rows);
        const Column<scalar_t> source{x + n * clip_size + row.start, zeros.data(), geo.frame_size(), frames};
        const acc_t o = offset[n * geo.groups + row.group];
        const acc_t* w_row = weight + (n * geo.groups + row.group) * frames;
        const int64_t s = whole_shift(o, frames);
        const acc_t f = o - std::floor(o);
        for (int64_t t = 0; t < frames; ++t) {
          const acc_t w = w_row[t];
          blend_rows(out + n * clip_size + t * geo.frame_size() + row.start, source.frame(t - s),
                     w * (1 - f), source.frame(t - s - 1), w * f, row.length);
        }
      }
    });
  }
  copy_passthrough(x, out, geo);
}

// Gradients for one (clip, row) column. With t' = t - s - 1, output frame t feeds x frames t' + 1
// (scale (1 - f) * w[t]) and t' (scale f * w[t]), so
//   grad_x[t'] = (1 - f) * w[t - 1] * grad_out[t - 1] + f * w[t] * grad_out[t]    for t in [0, T]
// and the offset and frame-weight gradients are correlations of grad_out[t] with x[t-s], x[t-s-1].
// `partial`, when given, receives T frame-weight sums and then the offset sum.
template <typename scalar_t>
void backward_column(const Column<scalar_t>& grad_out, const Column<scalar_t>& x, scalar_t* grad_x,
                     const at::opmath_type<scalar_t>* weight, at::opmath_type<scalar_t> offset,
                     int64_t length, at::opmath_type<scalar_t>* partial) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t frames = x.frames;
  const int64_t s = whole_shift(offset, frames);
  const acc_t f = offset - std::floor(offset);
  auto weight_at = [&](int64_t t) { return (t >= 0 && t < frames) ? weight[t] : acc_t(0); };
  acc_t offset_sum = 0;
  for (int64_t t = 0; t <= frames; ++t) {
    const int64_t target = t - s - 1;
    if (grad_x != nullptr && target >= 0 && target < frames) {
      blend_rows(grad_x + target * x.frame_size, grad_out.frame(t - 1), (1 - f) * weight_at(t - 1),
                 grad_out.frame(t), f * weight_at(t), length);
    }
    if (partial != nullptr && t < frames) {
      const auto [near, far] = correlate_rows<scalar_t, acc_t>(grad_out.frame(t), x.frame(t - s),
                                                               x.frame(t - s - 1), length);
      partial[t] = (1 - f) * near + f * far;
      offset_sum += weight[t] * (far - near);
    }
  }
  if (partial != nullptr) partial[frames] = offset_sum;
  if (grad_x != nullptr) {
    // Frames that no output frame reads from get no gradient.
    for (int64_t target = 0; target < frames; ++target) {
      if (target < -s - 1 || target > frames - s - 1) {
        std::fill(grad_x + target * x.frame_size, grad_x + target * x.frame_size + length, scalar_t(0));
      }
    }
  }
}

template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* x,
                     const at::opmath_type<scalar_t>* offset, const at::opmath_type<scalar_t>* weight,
                     scalar_t* grad_x, at::opmath_type<scalar_t>* partials,
                     const InterlaceGeometry& geo, std::array<bool, 3> needed) {
  const int64_t rows = interlaced_rows(geo);
  const int64_t frames = geo.frames;
  const int64_t clip_size = frames * geo.frame_size();
  if (rows > 0) {
    const int64_t length = interlaced_row(geo, 0).length;
    at::parallel_for(0, geo.clips * rows, grain_for(3 * length * frames), [&](int64_t begin, int64_t end) {
      const std::vector<scalar_t> zeros(length, scalar_t(0));
      for (int64_t i = begin; i < end; ++i) {
        const int64_t n = i / rows;
        const Row row = interlaced_row(geo, i % rows);
        const int64_t at = n * clip_size + row.start;
        const int64_t clip_group = n * geo.groups + row.group;
        backward_column<scalar_t>({grad_out + at, zeros.data(), geo.frame_size(), frames},
                                  {x + at, zeros.data(), geo.frame_size(), frames},
                                  needed[0] ? grad_x + at : nullptr, weight + clip_group * frames,
                                  offset[clip_group], row.length,
                                  partials ? partials + i * (frames + 1) : nullptr);
      }
    });
  }
  if (needed[0]) copy_passthrough(grad_out, grad_x, geo);
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> opmath_offset_and_weight(const at::Tensor& offset,
                                                            const at::Tensor& weight,
                                                            at::ScalarType acc_type) {
  return {offset.to(acc_type).contiguous(), weight.to(acc_type).transpose(1, 2).contiguous()};
}

std::tuple<at::Tensor, at::Tensor> split_group_gradients(const at::Tensor& per_group,
                                                         const InterlaceGeometry& geo,
                                                         const at::Tensor& offset,
                                                         const at::Tensor& weight) {
  return {per_group.select(2, geo.frames).to(offset.scalar_type()).contiguous(),
          per_group.narrow(2, 0, geo.frames).transpose(1, 2).to(weight.scalar_type()).contiguous()};
}

at::Tensor interlace_forward_cpu(const at::Tensor& x, const at::Tensor& offset,
                                 const at::Tensor& weight, int64_t num_segments,
                                 int64_t shift_channels) {
  const InterlaceGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  at::Tensor out = at::empty_like(x, geo.memory_format());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] =
        opmath_offset_and_weight(offset, weight, c10::CppTypeToScalarType<acc_t>::value);
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(),
                             weight_acc.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), geo);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
    const at::Tensor& weight, int64_t num_segments, int64_t shift_channels,
    std::array<bool, 3> output_mask) {
  const InterlaceGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "interlace: grad_out must have the shape of x");
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  at::Tensor grad_x = output_mask[0] ? at::empty_like(x, geo.memory_format()) : x.new_empty({0});
  const bool group_grads = output_mask[1] || output_mask[2];
  at::Tensor grad_offset = offset.new_empty({0});
  at::Tensor grad_weight = weight.new_empty({0});
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, acc_type);
    at::Tensor partials;
    if (group_grads) {
      partials = at::empty({geo.clips, interlaced_rows(geo), geo.frames + 1}, x.options().dtype(acc_type));
    }
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
                              output_mask[0] ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                              group_grads ? partials.mutable_data_ptr<acc_t>() : nullptr, geo,
                              output_mask);
    if (group_grads) {
      // Per-row sums (N, rows, T+1) -> per-group sums (N, G, T+1).
      const at::Tensor per_group =
          geo.channels_last ? partials.view({geo.clips, -1, geo.groups, geo.frames + 1}).sum(1)
                            : partials.view({geo.clips, geo.groups, -1, geo.frames + 1}).sum(2);
      std::tie(grad_offset, grad_weight) = split_group_gradients(per_group, geo, offset, weight);
    }
  });
  if (!output_mask[1]) grad_offset = offset.new_empty({0});
  if (!output_mask[2]) grad_weight = weight.new_empty({0});
  return {grad_x, grad_offset, grad_weight};
}

}  // namespace tin

TORCH_LIBRARY(tin, m) {
  m.def("interlace(Tensor x, Tensor offset, Tensor weight, int num_segments, int shift_channels) -> Tensor");
  m.def(
      "interlace_backward(Tensor grad_out, Tensor x, Tensor offset, Tensor weight, int num_segments, "
      "int shift_channels, bool[3] output_mask) -> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(tin, CPU, m) {
  m.impl("interlace", &tin::interlace_forward_cpu);
  m.impl("interlace_backward", &tin::interlace_backward_cpu);
}
