// Temporal operators: the CPU kernels.
//
// The interlace kernels see a frame as "rows": runs of unit-stride elements that share one channel
// group. One parallel work item is a clip's
//   contiguous:     interlaced channel c < S, a row of P = H*W elements in group c / K, or a chunk
//                   of the copied channels [S, C), which are one block per frame
//   channels_last:  position p: G rows of K = S/G channels, then the C - S copied channels
// and it walks its rows along t. The two source rows of a step (frames t-s and t-s-1) are the
// current and previous step's rows, so each element comes from memory once and the reuse hits the
// cache. Interlacing and copying share one parallel region: one barrier per call.
//
// A TIN block (temporal_interlace) adds the descriptor (one pass over the S interlaced channels)
// and the two small networks, one clip per work item, before the interlace. Its backward takes two
// passes, as the CUDA kernels do: the offset/weight sums (reading grad_out and x in the S
// interlaced channels), then the networks' backward per clip, then grad_x in one pass that adds
// the descriptor's gradient to the interlace's. The parameters' gradients are sums over clips in a
// fixed order: every result is deterministic.
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <utility>
#include <vector>

#include "temporal_ops.h"

namespace tin {
namespace {

// A run of `length` unit-stride elements at frame-local offset `start`. Interlaced rows belong to
// channel group `group` and have index `index` among a clip's interlaced rows, group-major (the
// rows of group g are g * pieces .. (g + 1) * pieces - 1); copied rows have group -1.
struct Row {
  int64_t start;
  int64_t length;
  int64_t group;
  int64_t index;
};

// Contiguous layout: the copied channels of a frame form one block, copied in chunks of whole
// channels at least this long, so small frames do not cost a call per channel.
constexpr int64_t kCopyChunk = 16384;

int64_t channels_per_copy_chunk(const FrameGeometry& geo) {
  return std::max<int64_t>(1, kCopyChunk / std::max<int64_t>(1, geo.positions));
}

int64_t items_per_clip(const FrameGeometry& geo) {
  if (geo.channels_last) return geo.positions;
  const int64_t per_chunk = channels_per_copy_chunk(geo);
  return geo.shifted + (geo.channels - geo.shifted + per_chunk - 1) / per_chunk;
}

// Interlaced rows of one channel group in a clip: its channels (contiguous) or positions (channels_last).
int64_t rows_per_group(const FrameGeometry& geo) {
  return geo.channels_last ? (geo.shifted > 0 ? geo.positions : 0) : geo.group_channels();
}

// Length of the longest interlaced row (the size of a row of zeros standing in for absent frames).
int64_t interlaced_row_length(const FrameGeometry& geo) {
  return geo.channels_last ? geo.group_channels() : geo.positions;
}

// Calls visit(row) for every row of one item.
template <typename Visit>
void for_each_row(const FrameGeometry& geo, int64_t item, Visit&& visit) {
  if (!geo.channels_last) {
    if (item < geo.shifted) {
      visit(Row{item * geo.positions, geo.positions, item / geo.group_channels(), item});
      return;
    }
    const int64_t per_chunk = channels_per_copy_chunk(geo);
    const int64_t first = geo.shifted + (item - geo.shifted) * per_chunk;
    const int64_t channels = std::min(per_chunk, geo.channels - first);
    visit(Row{first * geo.positions, channels * geo.positions, -1, -1});
    return;
  }
  const int64_t position_start = item * geo.channels;
  if (geo.shifted > 0) {
    for (int64_t group = 0; group < geo.groups; ++group) {
      visit(Row{position_start + group * geo.group_channels(), geo.group_channels(), group,
                group * geo.positions + item});
    }
  }
  if (geo.shifted < geo.channels) {
    visit(Row{position_start + geo.shifted, geo.channels - geo.shifted, -1, -1});
  }
}

// Runs work(n, item, zeros) over all (clip, item) pairs in one parallel region; `zeros` is a row of
// zeros standing in for frames outside the clip.
template <typename scalar_t, typename Work>
void parallel_items(const FrameGeometry& geo, int64_t passes, Work&& work) {
  const int64_t items = items_per_clip(geo);
  const int64_t elements_per_item = passes * geo.frames * geo.frame_size() / std::max<int64_t>(1, items);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements_per_item));
  at::parallel_for(0, geo.clips * items, grain, [&](int64_t begin, int64_t end) {
    const std::vector<scalar_t> zeros(interlaced_row_length(geo), scalar_t(0));
    for (int64_t i = begin; i < end; ++i) work(i / items, i % items, zeros.data());
  });
}

// dst[j] = a_scale * a[j] + b_scale * b[j] (+ bias[j * bias_stride] where bias is given)
template <typename scalar_t, typename acc_t>
void blend_rows(scalar_t* dst, const scalar_t* a, acc_t a_scale, const scalar_t* b, acc_t b_scale, int64_t length,
                const acc_t* bias = nullptr, int64_t bias_stride = 0) {
  if (bias == nullptr) {
    for (int64_t j = 0; j < length; ++j) {
      dst[j] = static_cast<scalar_t>(a_scale * static_cast<acc_t>(a[j]) + b_scale * static_cast<acc_t>(b[j]));
    }
    return;
  }
  for (int64_t j = 0; j < length; ++j) {
    dst[j] = static_cast<scalar_t>(a_scale * static_cast<acc_t>(a[j]) + b_scale * static_cast<acc_t>(b[j]) +
                                   bias[j * bias_stride]);
  }
}

// (sum g[j] * a[j], sum g[j] * b[j]). Sums into kLanes independent partials: a single running sum
// is a chain of dependent additions the compiler may not reorder into vector lanes.
constexpr int64_t kLanes = 8;

template <typename scalar_t, typename acc_t>
std::pair<acc_t, acc_t> correlate_rows(const scalar_t* g, const scalar_t* a, const scalar_t* b, int64_t length) {
  acc_t with_a[kLanes] = {};
  acc_t with_b[kLanes] = {};
  int64_t j = 0;
  for (; j + kLanes <= length; j += kLanes) {
    for (int64_t lane = 0; lane < kLanes; ++lane) {
      const acc_t gj = static_cast<acc_t>(g[j + lane]);
      with_a[lane] += gj * static_cast<acc_t>(a[j + lane]);
      with_b[lane] += gj * static_cast<acc_t>(b[j + lane]);
    }
  }
  for (int64_t lane = 0; j < length; ++j, ++lane) {
    const acc_t gj = static_cast<acc_t>(g[j]);
    with_a[lane] += gj * static_cast<acc_t>(a[j]);
    with_b[lane] += gj * static_cast<acc_t>(b[j]);
  }
  acc_t total_a = 0;
  acc_t total_b = 0;
  for (int64_t lane = 0; lane < kLanes; ++lane) {
    total_a += with_a[lane];
    total_b += with_b[lane];
  }
  return {total_a, total_b};
}

// One row of a clip seen along t: frame t's copy of the row, or zeros outside [0, T).
template <typename scalar_t>
struct Column {
  const scalar_t* first;  // the row in frame 0
  const scalar_t* zeros;
  int64_t frame_size;
  int64_t frames;

  const scalar_t* frame(int64_t t) const { return (t >= 0 && t < frames) ? first + t * frame_size : zeros; }
};

template <typename scalar_t>
void copy_column(const scalar_t* src, scalar_t* dst, const Row& row, const FrameGeometry& geo) {
  for (int64_t t = 0; t < geo.frames; ++t) {
    const int64_t at = t * geo.frame_size() + row.start;
    std::copy(src + at, src + at + row.length, dst + at);
  }
}

// The frame weights of one (clip, group): w[t * G] of weight (N, T, G).
template <typename acc_t>
struct FrameWeights {
  const acc_t* first;
  int64_t stride;

  acc_t operator[](int64_t t) const { return first[t * stride]; }
};

// out[t] = w[t] * ((1 - f) * x[t - s] + f * x[t - s - 1]) along one column.
template <typename scalar_t>
void forward_column(const Column<scalar_t>& x, scalar_t* out, FrameWeights<at::opmath_type<scalar_t>> w,
                    at::opmath_type<scalar_t> offset, int64_t length) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t s = whole_shift(offset, x.frames);
  const acc_t f = offset - std::floor(offset);
  for (int64_t t = 0; t < x.frames; ++t) {
    blend_rows(out + t * x.frame_size, x.frame(t - s), w[t] * (1 - f), x.frame(t - s - 1), w[t] * f, length);
  }
}

template <typename acc_t>
FrameWeights<acc_t> frame_weights(const acc_t* weight, int64_t n, int64_t group, const FrameGeometry& geo) {
  return {weight + n * geo.frames * geo.groups + group, geo.groups};
}

// offset is (N, G), weight (N, T, G), both contiguous.
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const at::opmath_type<scalar_t>* offset, const at::opmath_type<scalar_t>* weight,
                    scalar_t* out, const FrameGeometry& geo) {
  const int64_t clip_size = geo.frames * geo.frame_size();
  parallel_items<scalar_t>(geo, 2, [&](int64_t n, int64_t item, const scalar_t* zeros) {
    const scalar_t* clip = x + n * clip_size;
    scalar_t* clip_out = out + n * clip_size;
    for_each_row(geo, item, [&](const Row& row) {
      if (row.group < 0) return copy_column(clip, clip_out, row, geo);
      forward_column<scalar_t>({clip + row.start, zeros, geo.frame_size(), geo.frames}, clip_out + row.start,
                               frame_weights(weight, n, row.group, geo), offset[n * geo.groups + row.group],
                               row.length);
    });
  });
}

// The gradient of a descriptor entry reaches every element it averages: (T, S) per clip, already
// divided by P. A row sees it as one number per frame (contiguous: one channel) or as the row's
// channels of each frame (channels_last).
template <typename acc_t>
struct DescriptorGrad {
  const acc_t* clip;  // (T, S) of the clip, or null
  int64_t fold;

  // bias pointer and stride for frame t of a row starting at channel c
  std::pair<const acc_t*, int64_t> of(int64_t t, int64_t c, bool channels_last) const {
    if (clip == nullptr) return {nullptr, 0};
    return {clip + t * fold + c, channels_last ? 1 : 0};
  }
};

// Gradients for one (clip, row) column. With t' = t - s - 1, output frame t feeds x frames t' + 1
// (scale (1 - f) * w[t]) and t' (scale f * w[t]), so
//   grad_x[t'] = (1 - f) * w[t - 1] * grad_out[t - 1] + f * w[t] * grad_out[t]    for t in [0, T]
// (plus the descriptor's gradient where it is given) and the offset and frame-weight gradients are
// correlations of grad_out[t] with x[t-s], x[t-s-1]. `partial`, when given, receives T frame-weight
// sums and then the offset sum.
template <typename scalar_t>
void backward_column(const Column<scalar_t>& grad_out, const Column<scalar_t>& x, scalar_t* grad_x,
                     FrameWeights<at::opmath_type<scalar_t>> weight, at::opmath_type<scalar_t> offset, int64_t length,
                     at::opmath_type<scalar_t>* partial, const DescriptorGrad<at::opmath_type<scalar_t>>& extra,
                     int64_t channel, bool channels_last) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t frames = x.frames;
  const int64_t s = whole_shift(offset, frames);
  const acc_t f = offset - std::floor(offset);
  auto weight_at = [&](int64_t t) { return (t >= 0 && t < frames) ? weight[t] : acc_t(0); };
  acc_t offset_sum = 0;
  for (int64_t t = 0; t <= frames; ++t) {
    const int64_t target = t - s - 1;
    if (grad_x != nullptr && target >= 0 && target < frames) {
      const auto [bias, stride] = extra.of(target, channel, channels_last);
      blend_rows(grad_x + target * x.frame_size, grad_out.frame(t - 1), (1 - f) * weight_at(t - 1),
                 grad_out.frame(t), f * weight_at(t), length, bias, stride);
    }
    if (partial != nullptr && t < frames) {
      const auto [near, far] =
          correlate_rows<scalar_t, acc_t>(grad_out.frame(t), x.frame(t - s), x.frame(t - s - 1), length);
      partial[t] = (1 - f) * near + f * far;
      offset_sum += weight[t] * (far - near);
    }
  }
  if (partial != nullptr) partial[frames] = offset_sum;
  if (grad_x != nullptr) {
    // Frames that no output frame reads from get no interlace gradient.
    for (int64_t target = 0; target < frames; ++target) {
      if (target < -s - 1 || target > frames - s - 1) {
        scalar_t* row = grad_x + target * x.frame_size;
        const auto [bias, stride] = extra.of(target, channel, channels_last);
        for (int64_t j = 0; j < length; ++j) row[j] = bias == nullptr ? scalar_t(0) : scalar_t(bias[j * stride]);
      }
    }
  }
}

// grad_x (where not null) and partials (N, G, rows_per_group, T+1) (where not null);
// descriptor_grad (N, T, S) is added to grad_x's interlaced channels where given.
template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* x, const at::opmath_type<scalar_t>* offset,
                     const at::opmath_type<scalar_t>* weight, scalar_t* grad_x, at::opmath_type<scalar_t>* partials,
                     const at::opmath_type<scalar_t>* descriptor_grad, const FrameGeometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t clip_size = geo.frames * geo.frame_size();
  const int64_t rows = geo.groups * rows_per_group(geo);
  parallel_items<scalar_t>(geo, 3, [&](int64_t n, int64_t item, const scalar_t* zeros) {
    const int64_t at = n * clip_size;
    for_each_row(geo, item, [&](const Row& row) {
      if (row.group < 0) {
        if (grad_x != nullptr) copy_column(grad_out + at, grad_x + at, row, geo);
        return;
      }
      const DescriptorGrad<acc_t> extra{
          descriptor_grad == nullptr ? nullptr : descriptor_grad + n * geo.frames * geo.shifted, geo.shifted};
      const int64_t channel = geo.channels_last ? row.group * geo.group_channels() : item;
      backward_column<scalar_t>({grad_out + at + row.start, zeros, geo.frame_size(), geo.frames},
                                {x + at + row.start, zeros, geo.frame_size(), geo.frames},
                                grad_x != nullptr ? grad_x + at + row.start : nullptr,
                                frame_weights(weight, n, row.group, geo), offset[n * geo.groups + row.group], row.length,
                                partials != nullptr ? partials + (n * rows + row.index) * (geo.frames + 1) : nullptr,
                                extra, channel, geo.channels_last);
    });
  });
}

// d (N, T, S): the spatial mean of every interlaced channel in every frame, summed in acc_t.
template <typename scalar_t>
void descriptor_kernel(const scalar_t* x, at::opmath_type<scalar_t>* d, const FrameGeometry& geo) {
  using acc_t = at::opmath_type<scalar_t>;
  const acc_t scale = acc_t(1) / static_cast<acc_t>(geo.positions);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, geo.shifted * geo.positions));
  at::parallel_for(0, geo.clips * geo.frames, grain, [&](int64_t begin, int64_t end) {
    std::vector<acc_t> sums(geo.shifted);
    for (int64_t frame = begin; frame < end; ++frame) {
      const scalar_t* source = x + frame * geo.frame_size();
      std::fill(sums.begin(), sums.end(), acc_t(0));
      if (geo.channels_last) {
        for (int64_t p = 0; p < geo.positions; ++p) {
          const scalar_t* position = source + p * geo.channels;
          for (int64_t c = 0; c < geo.shifted; ++c) sums[c] += static_cast<acc_t>(position[c]);
        }
      } else {
        for (int64_t c = 0; c < geo.shifted; ++c) {
          acc_t lanes[kLanes] = {};
          const scalar_t* row = source + c * geo.positions;
          int64_t p = 0;
          for (; p + kLanes <= geo.positions; p += kLanes) {
            for (int64_t lane = 0; lane < kLanes; ++lane) lanes[lane] += static_cast<acc_t>(row[p + lane]);
          }
          for (int64_t lane = 0; p < geo.positions; ++p, ++lane) lanes[lane] += static_cast<acc_t>(row[p]);
          for (int64_t lane = 0; lane < kLanes; ++lane) sums[c] += lanes[lane];
        }
      }
      for (int64_t c = 0; c < geo.shifted; ++c) d[frame * geo.shifted + c] = sums[c] * scale;
    }
  });
}

// The forward half of a clip's scratch (conv outputs, hidden, logits) from its descriptor (T, S).
template <typename acc_t>
void net_forward(const InterlaceNets<acc_t>& nets, const acc_t* d, const NetScratch<acc_t>& s) {
  for (int64_t o = 0; o < nets.conv_outputs(); ++o) {
    for (int64_t t = 0; t < nets.frames; ++t) s.conv[o * nets.frames + t] = nets.conv_bias(o) + conv_partial(nets, d, o, t, 0, 1);
  }
  for (int64_t i = 0; i < nets.frames; ++i) s.hidden[i] = hidden_at(nets, s, i);
  for (int64_t j = 0; j < nets.predicted; ++j) s.logits[j] = logit_at(nets, s, j);
}

// The backward half, from the gradients of the clip's applied offsets (G) and weights (T, G).
template <typename acc_t>
void net_backward(const InterlaceNets<acc_t>& nets, const NetScratch<acc_t>& s, const acc_t* offset_grad,
                  const acc_t* weight_grad) {
  for (int64_t j = 0; j < nets.predicted; ++j) {
    s.logit_grad[j] = logit_grad_at(nets, s, offset_grad, j);
    for (int64_t t = 0; t < nets.frames; ++t) {
      s.conv_grad[(1 + j) * nets.frames + t] = weight_logit_grad_at(nets, s, weight_grad, j, t);
    }
  }
  for (int64_t i = 0; i < nets.frames; ++i) s.hidden_grad[i] = hidden_grad_at(nets, s, i);
  for (int64_t t = 0; t < nets.frames; ++t) s.conv_grad[t] = offset_conv_grad_at(nets, s, t);
}

// The dtype the kernels compute in for x: float32 for 16-bit floats.
at::ScalarType accumulation_type(const at::Tensor& x) {
  return at::toOpMathType(x.scalar_type());
}

}  // namespace

// ------------------------------------------------------------------------------------ interlace

at::Tensor interlace_forward_cpu(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                                 int64_t num_segments, int64_t shift_channels) {
  const FrameGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  at::Tensor out = at::empty_like(x, geo.memory_format());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_forward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, accumulation_type(x));
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(),
                             weight_acc.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), geo);
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cpu(const at::Tensor& grad_out, const at::Tensor& x,
                                                                      const at::Tensor& offset,
                                                                      const at::Tensor& weight, int64_t num_segments,
                                                                      int64_t shift_channels,
                                                                      std::array<bool, 3> output_mask) {
  const FrameGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "interlace: grad_out must have the shape of x");
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  const bool group_grads = output_mask[1] || output_mask[2];
  const auto acc_type = accumulation_type(x);
  at::Tensor grad_x = output_mask[0] ? at::empty_like(x, geo.memory_format()) : x.new_empty({0});
  at::Tensor offset_grad, weight_grad;
  if (group_grads) {
    offset_grad = at::empty({geo.clips, geo.groups}, x.options().dtype(acc_type));
    weight_grad = at::empty({geo.clips, geo.frames, geo.groups}, x.options().dtype(acc_type));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, acc_type);
    const int64_t pieces = rows_per_group(geo);
    at::Tensor partials;
    if (group_grads) partials = at::empty({geo.clips, geo.groups, pieces, geo.frames + 1}, x.options().dtype(acc_type));
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
                              output_mask[0] ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                              group_grads ? partials.mutable_data_ptr<acc_t>() : nullptr, nullptr, geo);
    if (!group_grads) return;
    const acc_t* sums = partials.const_data_ptr<acc_t>();
    acc_t* offsets = offset_grad.mutable_data_ptr<acc_t>();
    acc_t* weights = weight_grad.mutable_data_ptr<acc_t>();
    at::parallel_for(0, geo.clips, 1, [&](int64_t begin, int64_t end) {
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t g = 0; g < geo.groups; ++g) {
          for (int64_t t = 0; t <= geo.frames; ++t) {
            sum_group_partial(sums, pieces, geo.frames, geo.groups, n, g, t,
                              weights + n * geo.frames * geo.groups, offsets + n * geo.groups);
          }
        }
      }
    });
  });
  return {grad_x, output_mask[1] ? offset_grad.to(offset.scalar_type()) : offset.new_empty({0}),
          output_mask[2] ? weight_grad.to(weight.scalar_type()) : weight.new_empty({0})};
}

// --------------------------------------------------------------------------- temporal_interlace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> temporal_interlace_cpu(
    const at::Tensor& x, at::TensorList parameters, int64_t num_segments, int64_t shift_channels, bool reverse,
    double offset_scale) {
  const std::vector<at::Tensor> params = net_parameters(x, parameters, num_segments, shift_channels, reverse);
  const FrameGeometry geo =
      frame_geometry(x, num_segments, shift_channels, block_groups(parameters, reverse), "temporal_interlace");
  const auto acc_options = x.options().dtype(accumulation_type(x));
  at::Tensor out = at::empty_like(x, geo.memory_format());
  at::Tensor descriptor = at::empty({geo.clips, geo.frames, geo.shifted}, acc_options);
  at::Tensor offset = at::empty({geo.clips, geo.groups}, acc_options);
  at::Tensor weight = at::empty({geo.clips, geo.frames, geo.groups}, acc_options);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_interlace_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const InterlaceNets<acc_t> nets = interlace_nets<acc_t>(params, geo.shifted, geo.frames, reverse, offset_scale);
    acc_t* d = descriptor.mutable_data_ptr<acc_t>();
    descriptor_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), d, geo);
    acc_t* offsets = offset.mutable_data_ptr<acc_t>();
    acc_t* weights = weight.mutable_data_ptr<acc_t>();
    at::parallel_for(0, geo.clips, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> scratch(NetScratch<acc_t>::size(geo.frames, nets.predicted));
      const auto s = NetScratch<acc_t>::at(scratch.data(), geo.frames, nets.predicted);
      for (int64_t n = begin; n < end; ++n) {
        net_forward(nets, d + n * geo.frames * geo.shifted, s);
        for (int64_t g = 0; g < geo.groups; ++g) {
          offsets[n * geo.groups + g] = offset_of(nets, s, g);
          for (int64_t t = 0; t < geo.frames; ++t) weights[(n * geo.frames + t) * geo.groups + g] = weight_of(nets, s, t, g);
        }
      }
    });
    forward_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), offsets, weights, out.mutable_data_ptr<scalar_t>(), geo);
  });
  return {out, offset, weight, descriptor};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> temporal_interlace_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& descriptor, const at::Tensor& offset,
    const at::Tensor& weight, at::TensorList parameters, int64_t num_segments, int64_t shift_channels, bool reverse,
    double offset_scale, std::array<bool, 2> output_mask) {
  const std::vector<at::Tensor> params = net_parameters(x, parameters, num_segments, shift_channels, reverse);
  const FrameGeometry geo =
      frame_geometry(x, num_segments, shift_channels, block_groups(parameters, reverse), "temporal_interlace");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "temporal_interlace: grad_out must have the shape of x");
  const bool need_x = output_mask[0], need_parameters = output_mask[1];
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  const auto acc_type = accumulation_type(x);
  check_block_intermediates(descriptor, offset, weight, geo, acc_type);
  const auto acc_options = x.options().dtype(acc_type);
  at::Tensor grad_x = need_x ? at::empty_like(x, geo.memory_format()) : x.new_empty({0});
  std::vector<at::Tensor> parameter_grads;
  if (need_parameters) {
    for (const at::Tensor& parameter : params) parameter_grads.push_back(at::empty_like(parameter));
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_interlace_backward_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const InterlaceNets<acc_t> nets = interlace_nets<acc_t>(params, geo.shifted, geo.frames, reverse, offset_scale);
    const int64_t frames = geo.frames, groups = geo.groups, fold = geo.shifted;
    const acc_t* offsets = offset.const_data_ptr<acc_t>();  // the forward's outputs: contiguous, acc_t
    const acc_t* weights = weight.const_data_ptr<acc_t>();
    const scalar_t* go = grad.const_data_ptr<scalar_t>();
    const scalar_t* xs = x.const_data_ptr<scalar_t>();
    // Pass 1: the offset and weight sums.
    const int64_t pieces = rows_per_group(geo);
    at::Tensor partials = at::empty({geo.clips, groups, pieces, frames + 1}, acc_options);
    backward_kernel<scalar_t>(go, xs, offsets, weights, nullptr, partials.mutable_data_ptr<acc_t>(), nullptr, geo);
    // The networks' backward per clip: the scratch of every clip, and the descriptor's gradient.
    const int64_t scratch_size = NetScratch<acc_t>::size(frames, nets.predicted);
    at::Tensor scratch = at::empty({geo.clips, scratch_size}, acc_options);
    at::Tensor descriptor_grad = at::empty({need_x ? geo.clips : 0, frames, fold}, acc_options);
    const acc_t* d = descriptor.const_data_ptr<acc_t>();
    const acc_t* sums = partials.const_data_ptr<acc_t>();
    acc_t* scratch_data = scratch.mutable_data_ptr<acc_t>();
    acc_t* d_grad = descriptor_grad.mutable_data_ptr<acc_t>();
    const acc_t inverse_positions = acc_t(1) / static_cast<acc_t>(geo.positions);
    at::parallel_for(0, geo.clips, 1, [&](int64_t begin, int64_t end) {
      std::vector<acc_t> offset_grad(groups), weight_grad(frames * groups);
      for (int64_t n = begin; n < end; ++n) {
        for (int64_t g = 0; g < groups; ++g) {
          for (int64_t t = 0; t <= frames; ++t) {
            sum_group_partial(sums, pieces, frames, groups, n, g, t, weight_grad.data(), offset_grad.data());
          }
        }
        const auto s = NetScratch<acc_t>::at(scratch_data + n * scratch_size, frames, nets.predicted);
        const acc_t* clip_d = d + n * frames * fold;
        net_forward(nets, clip_d, s);
        net_backward(nets, s, offset_grad.data(), weight_grad.data());
        if (!need_x) continue;
        for (int64_t t = 0; t < frames; ++t) {
          for (int64_t c = 0; c < fold; ++c) {
            d_grad[(n * frames + t) * fold + c] = descriptor_grad_at(nets, s, t, c) * inverse_positions;
          }
        }
      }
    });
    // Pass 2: grad_x.
    if (need_x) {
      backward_kernel<scalar_t>(go, xs, offsets, weights, grad_x.mutable_data_ptr<scalar_t>(), nullptr, d_grad, geo);
    }
    if (!need_parameters) return;
    // The parameters' gradients: per element, the clips' contributions in order.
    std::vector<acc_t*> outputs;
    for (at::Tensor& parameter_grad : parameter_grads) outputs.push_back(parameter_grad.mutable_data_ptr<acc_t>());
    const int64_t elements = nets.parameter_elements();
    at::parallel_for(0, elements, 64, [&](int64_t begin, int64_t end) {
      for (int64_t e = begin; e < end; ++e) {
        acc_t sum = 0;
        for (int64_t n = 0; n < geo.clips; ++n) {
          const auto s = NetScratch<acc_t>::at(scratch_data + n * scratch_size, frames, nets.predicted);
          sum += parameter_grad_at(nets, s, d + n * frames * fold, e);
        }
        int index = 0;
        int64_t local = e;
        while (local >= nets.parameter_size(index)) local -= nets.parameter_size(index++);
        outputs[index][local] = sum;
      }
    });
  });
  return {grad_x, parameter_grads};
}

// ------------------------------------------------------------------------------ temporal_shift

namespace {

// out[t] = x[t + step] in channels [0, fold), x[t - step] in [fold, 2 fold), x[t] elsewhere, zero
// outside the clip: step +1 is TSM's shift, -1 its adjoint (the backward).
template <typename scalar_t>
void shift_kernel(const scalar_t* x, scalar_t* out, const FrameGeometry& geo, int64_t fold, int64_t step) {
  // Frame-local runs of one channel class: contiguous one run each; channels_last one per position.
  const int64_t runs = geo.channels_last ? geo.positions : 1;
  const int64_t unit = geo.channels_last ? 1 : geo.positions;  // elements of a channel within a run
  const int64_t run_stride = geo.channels_last ? geo.channels : 0;
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, geo.frame_size()));
  at::parallel_for(0, geo.clips * geo.frames, grain, [&](int64_t begin, int64_t end) {
    for (int64_t frame = begin; frame < end; ++frame) {
      const int64_t t = frame % geo.frames;
      scalar_t* target = out + frame * geo.frame_size();
      const scalar_t* source = x + frame * geo.frame_size();
      // (first channel, channels, source frame offset)
      const std::array<std::array<int64_t, 3>, 3> classes{{{0, fold, step}, {fold, fold, -step},
                                                            {2 * fold, geo.channels - 2 * fold, 0}}};
      for (const auto& [first, channels, offset] : classes) {
        const bool inside = t + offset >= 0 && t + offset < geo.frames;
        const int64_t length = channels * unit;
        for (int64_t r = 0; r < runs; ++r) {
          scalar_t* dst = target + r * run_stride + first * unit;
          if (inside) {
            std::memcpy(dst, source + offset * geo.frame_size() + r * run_stride + first * unit,
                        length * sizeof(scalar_t));
          } else {
            std::fill(dst, dst + length, scalar_t(0));
          }
        }
      }
    }
  });
}

at::Tensor shift_cpu(const at::Tensor& x, int64_t num_segments, int64_t fold, int64_t step) {
  const FrameGeometry geo = shift_geometry(x, num_segments, fold);
  at::Tensor out = at::empty_like(x, geo.memory_format());
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_shift_cpu", [&] {
    shift_kernel<scalar_t>(x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), geo, fold, step);
  });
  return out;
}

}  // namespace

at::Tensor temporal_shift_cpu(const at::Tensor& x, int64_t num_segments, int64_t shift_channels) {
  return shift_cpu(x, num_segments, shift_channels, 1);
}

at::Tensor temporal_shift_backward_cpu(const at::Tensor& grad_out, int64_t num_segments, int64_t shift_channels) {
  return shift_cpu(grad_out.contiguous(grad_out.suggest_memory_format()), num_segments, shift_channels, -1);
}

}  // namespace tin

TORCH_LIBRARY_IMPL(tin, CPU, m) {
  m.impl("interlace", &tin::interlace_forward_cpu);
  m.impl("interlace_backward", &tin::interlace_backward_cpu);
  m.impl("temporal_interlace", &tin::temporal_interlace_cpu);
  m.impl("temporal_interlace_backward", &tin::temporal_interlace_backward_cpu);
  m.impl("temporal_shift", &tin::temporal_shift_cpu);
  m.impl("temporal_shift_backward", &tin::temporal_shift_backward_cpu);
}
