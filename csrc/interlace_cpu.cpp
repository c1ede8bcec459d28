// Temporal interlace: operator schemas and the CPU kernels.
//
// The CPU kernels see a frame as "rows": runs of unit-stride elements that share one channel group.
// One parallel work item is a clip's
//   contiguous:     interlaced channel c < S, a row of P = H*W elements in group c / K, or a chunk
//                   of the copied channels [S, C), which are one block per frame
//   channels_last:  position p: G rows of K = S/G channels, then the C - S copied channels
// and it walks its rows along t. The two source rows of a step (frames t-s and t-s-1) are the
// current and previous step's rows, so each element comes from memory once and the reuse hits the
// cache. Interlacing and copying share one parallel region: one barrier per call.
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

// A run of `length` unit-stride elements at frame-local offset `start`. Interlaced rows belong to
// channel group `group` and have index `index` among a clip's interlaced rows; copied rows have
// group -1.
struct Row {
  int64_t start;
  int64_t length;
  int64_t group;
  int64_t index;
};

// Contiguous layout: the copied channels of a frame form one block, copied in chunks of whole
// channels at least this long, so small frames do not cost a call per channel.
constexpr int64_t kCopyChunk = 16384;

int64_t channels_per_copy_chunk(const InterlaceGeometry& geo) {
  return std::max<int64_t>(1, kCopyChunk / std::max<int64_t>(1, geo.positions));
}

int64_t items_per_clip(const InterlaceGeometry& geo) {
  if (geo.channels_last) return geo.positions;
  const int64_t per_chunk = channels_per_copy_chunk(geo);
  return geo.shifted + (geo.channels - geo.shifted + per_chunk - 1) / per_chunk;
}

int64_t interlaced_rows_per_clip(const InterlaceGeometry& geo) {
  return geo.channels_last ? (geo.shifted > 0 ? geo.positions * geo.groups : 0) : geo.shifted;
}

// Length of the longest interlaced row (the size of a row of zeros standing in for absent frames).
int64_t interlaced_row_length(const InterlaceGeometry& geo) {
  return geo.channels_last ? geo.group_channels() : geo.positions;
}

// Calls visit(row) for every row of one item.
template <typename Visit>
void for_each_row(const InterlaceGeometry& geo, int64_t item, Visit&& visit) {
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
                item * geo.groups + group});
    }
  }
  if (geo.shifted < geo.channels) {
    visit(Row{position_start + geo.shifted, geo.channels - geo.shifted, -1, -1});
  }
}

// Runs work(n, item, zeros) over all (clip, item) pairs in one parallel region; `zeros` is a row of
// zeros standing in for frames outside the clip.
template <typename scalar_t, typename Work>
void parallel_items(const InterlaceGeometry& geo, int64_t passes, Work&& work) {
  const int64_t items = items_per_clip(geo);
  const int64_t elements_per_item = passes * geo.frames * geo.frame_size() / std::max<int64_t>(1, items);
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(1, elements_per_item));
  at::parallel_for(0, geo.clips * items, grain, [&](int64_t begin, int64_t end) {
    const std::vector<scalar_t> zeros(interlaced_row_length(geo), scalar_t(0));
    for (int64_t i = begin; i < end; ++i) work(i / items, i % items, zeros.data());
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

// (sum g[j] * a[j], sum g[j] * b[j]). Sums into kLanes independent partials: a single running sum
// is a chain of dependent additions the compiler may not reorder into vector lanes.
constexpr int64_t kLanes = 8;

template <typename scalar_t, typename acc_t>
std::pair<acc_t, acc_t> correlate_rows(const scalar_t* g, const scalar_t* a, const scalar_t* b,
                                       int64_t length) {
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

  const scalar_t* frame(int64_t t) const {
    return (t >= 0 && t < frames) ? first + t * frame_size : zeros;
  }
};

template <typename scalar_t>
void copy_column(const scalar_t* src, scalar_t* dst, const Row& row, const InterlaceGeometry& geo) {
  for (int64_t t = 0; t < geo.frames; ++t) {
    const int64_t at = t * geo.frame_size() + row.start;
    std::copy(src + at, src + at + row.length, dst + at);
  }
}

// out[t] = w[t] * ((1 - f) * x[t - s] + f * x[t - s - 1]) along one column; w is the (clip, group)
// row of frame weights.
template <typename scalar_t>
void forward_column(const Column<scalar_t>& x, scalar_t* out, const at::opmath_type<scalar_t>* w,
                    at::opmath_type<scalar_t> offset, int64_t length) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t s = whole_shift(offset, x.frames);
  const acc_t f = offset - std::floor(offset);
  for (int64_t t = 0; t < x.frames; ++t) {
    blend_rows(out + t * x.frame_size, x.frame(t - s), w[t] * (1 - f), x.frame(t - s - 1), w[t] * f, length);
  }
}

// offset is (N, G); weight is (N, G, T), so every (clip, group) has a unit-stride row of weights.
template <typename scalar_t>
void forward_kernel(const scalar_t* x, const at::opmath_type<scalar_t>* offset,
                    const at::opmath_type<scalar_t>* weight, scalar_t* out,
                    const InterlaceGeometry& geo) {
  const int64_t clip_size = geo.frames * geo.frame_size();
  parallel_items<scalar_t>(geo, 2, [&](int64_t n, int64_t item, const scalar_t* zeros) {
    const scalar_t* clip = x + n * clip_size;
    scalar_t* clip_out = out + n * clip_size;
    for_each_row(geo, item, [&](const Row& row) {
      if (row.group < 0) return copy_column(clip, clip_out, row, geo);
      const int64_t clip_group = n * geo.groups + row.group;
      forward_column<scalar_t>({clip + row.start, zeros, geo.frame_size(), geo.frames},
                               clip_out + row.start, weight + clip_group * geo.frames,
                               offset[clip_group], row.length);
    });
  });
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

// partials: (N, interlaced rows, T+1) per-row sums, or null when no offset/weight gradient is wanted.
template <typename scalar_t>
void backward_kernel(const scalar_t* grad_out, const scalar_t* x,
                     const at::opmath_type<scalar_t>* offset, const at::opmath_type<scalar_t>* weight,
                     scalar_t* grad_x, at::opmath_type<scalar_t>* partials,
                     const InterlaceGeometry& geo) {
  const int64_t clip_size = geo.frames * geo.frame_size();
  const int64_t rows = interlaced_rows_per_clip(geo);
  parallel_items<scalar_t>(geo, 3, [&](int64_t n, int64_t item, const scalar_t* zeros) {
    const int64_t at = n * clip_size;
    for_each_row(geo, item, [&](const Row& row) {
      if (row.group < 0) {
        if (grad_x != nullptr) copy_column(grad_out + at, grad_x + at, row, geo);
        return;
      }
      const int64_t clip_group = n * geo.groups + row.group;
      backward_column<scalar_t>(
          {grad_out + at + row.start, zeros, geo.frame_size(), geo.frames},
          {x + at + row.start, zeros, geo.frame_size(), geo.frames},
          grad_x != nullptr ? grad_x + at + row.start : nullptr, weight + clip_group * geo.frames,
          offset[clip_group], row.length,
          partials != nullptr ? partials + (n * rows + row.index) * (geo.frames + 1) : nullptr);
    });
  });
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
  // Always copies: .to() and .contiguous() would return views of per_group where no conversion is needed and the
  // slice is already contiguous (N = G = 1), and the two gradients would then share one storage.
  constexpr bool kNonBlocking = false;
  constexpr bool kCopy = true;
  return {per_group.select(2, geo.frames).to(offset.scalar_type(), kNonBlocking, kCopy, at::MemoryFormat::Contiguous),
          per_group.narrow(2, 0, geo.frames)
              .transpose(1, 2)
              .to(weight.scalar_type(), kNonBlocking, kCopy, at::MemoryFormat::Contiguous)};
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
      partials = at::empty({geo.clips, interlaced_rows_per_clip(geo), geo.frames + 1}, x.options().dtype(acc_type));
    }
    backward_kernel<scalar_t>(grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
                              offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
                              output_mask[0] ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
                              group_grads ? partials.mutable_data_ptr<acc_t>() : nullptr, geo);
    if (group_grads) {
      // Per-row sums (N, rows, T+1) -> per-group sums (N, G, T+1). Sizes are spelled out, not -1: a view of an
      // empty tensor (N = 0) cannot infer one.
      const int64_t rows_per_group = interlaced_rows_per_clip(geo) / geo.groups;
      const at::Tensor per_group =
          geo.channels_last ? partials.view({geo.clips, rows_per_group, geo.groups, geo.frames + 1}).sum(1)
                            : partials.view({geo.clips, geo.groups, rows_per_group, geo.frames + 1}).sum(2);
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
