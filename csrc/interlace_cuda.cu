// Temporal interlace: CUDA kernels.
//
// One thread owns a column (clip n, frame-local memory offset q) and walks it along t, so each
// element of x and grad_out is loaded once and the previous frame's value stays in a register.
// The columns are cut into tiles of kThreads consecutive q of one clip, so consecutive threads own
// consecutive q and loads and stores stay coalesced in both layouts. A launch has as many blocks as
// the device keeps resident for the kernel (occupancy times SMs, at most one per tile), and each
// block walks the tiles in a grid-stride loop: one launch and one wave for any N and frame size.
//
// The backward fuses grad_x with the offset/weight correlations in that same walk, and it loads
// step t + 1's inputs into registers before step t's arithmetic and reductions, so the loads are in
// flight while the warp shuffles run. The sums are reduced over the lanes of a warp that share a
// channel group, then in shared memory over the block's tiles of one clip, then with one global
// atomic per block, clip and (group, frame). Float atomics add in a varying order, so those two
// gradients can differ in the last bits from run to run: torch.use_deterministic_algorithms is told.
// Nothing is copied to the host.
#include "interlace.h"

#include <ATen/Context.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

namespace tin {
namespace {

constexpr int kThreads = 256;
constexpr int kWarp = 32;
constexpr size_t kMaxSharedBytes = 48 * 1024;  // dynamic shared memory a block gets without opting in

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

struct DeviceGeometry {
  int64_t clips, frames, channels, positions, shifted, groups, frame_size, tiles_per_clip;
  bool channels_last;

  C10_HOST_DEVICE int64_t tiles() const { return clips * tiles_per_clip; }
  __device__ int64_t channel_of(int64_t q) const {
    return channels_last ? q % channels : q / positions;
  }
  __device__ int64_t group_of(int64_t channel) const { return channel / (shifted / groups); }
};

DeviceGeometry device_geometry(const InterlaceGeometry& geo) {
  return {geo.clips, geo.frames, geo.channels, geo.positions, geo.shifted, geo.groups, geo.frame_size(),
          ceil_div(geo.frame_size(), kThreads), geo.channels_last};
}

// A thread's column in a tile, with what walking it takes: its group's whole shift s, blend
// fraction f and row of T frame weights.
template <typename acc_t>
struct Column {
  int64_t clip;
  int64_t q;
  bool active;      // q < F (a clip's last tile can reach past its frame)
  bool interlaced;  // active and in a channel < S
  int group;        // -1 unless interlaced
  int64_t s;
  acc_t f;
  const acc_t* w;
};

template <typename acc_t>
__device__ __forceinline__ Column<acc_t> column_of(int64_t tile, const acc_t* __restrict__ offset,
                                                   const acc_t* __restrict__ weight, const DeviceGeometry& geo) {
  Column<acc_t> column{};
  column.clip = tile / geo.tiles_per_clip;
  column.q = (tile - column.clip * geo.tiles_per_clip) * kThreads + threadIdx.x;
  column.active = column.q < geo.frame_size;
  const int64_t channel = column.active ? geo.channel_of(column.q) : geo.shifted;
  column.interlaced = channel < geo.shifted;
  column.group = -1;
  column.w = weight;
  if (column.interlaced) {
    column.group = static_cast<int>(geo.group_of(channel));
    const int64_t row = column.clip * geo.groups + column.group;
    const acc_t o = offset[row];
    column.s = whole_shift(o, geo.frames);
    column.f = o - floor(o);
    column.w = weight + row * geo.frames;
  }
  return column;
}

// Element q of frame t of a clip as acc_t, zero outside [0, T).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t frame_value(const scalar_t* __restrict__ clip, int64_t t, int64_t q,
                                             const DeviceGeometry& geo) {
  return (t >= 0 && t < geo.frames) ? static_cast<acc_t>(clip[t * geo.frame_size + q]) : acc_t(0);
}

template <typename scalar_t>
__device__ __forceinline__ void copy_column(const scalar_t* __restrict__ src, scalar_t* __restrict__ dst,
                                            int64_t q, const DeviceGeometry& geo) {
  for (int64_t t = 0; t < geo.frames; ++t) dst[t * geo.frame_size + q] = src[t * geo.frame_size + q];
}

// Blocks for a grid-stride launch over `tiles` tiles: those the device keeps resident at once.
template <typename Kernel>
unsigned resident_grid(Kernel kernel, size_t shared_bytes, int64_t tiles) {
  int blocks_per_sm = 0;
  C10_CUDA_CHECK(cudaOccupancyMaxActiveBlocksPerMultiprocessor(&blocks_per_sm, kernel, kThreads, shared_bytes));
  int sms = 0;
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, c10::cuda::current_device()));
  return static_cast<unsigned>(std::min(tiles, std::max<int64_t>(1, blocks_per_sm) * int64_t(sms)));
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
interlace_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ offset,
                         const acc_t* __restrict__ weight, scalar_t* __restrict__ out, DeviceGeometry geo) {
  for (int64_t tile = blockIdx.x; tile < geo.tiles(); tile += gridDim.x) {
    const Column<acc_t> column = column_of(tile, offset, weight, geo);
    if (!column.active) continue;
    const int64_t clip_start = column.clip * geo.frames * geo.frame_size;
    const scalar_t* clip = x + clip_start;
    scalar_t* clip_out = out + clip_start;
    if (!column.interlaced) {
      copy_column(clip, clip_out, column.q, geo);
      continue;
    }
    acc_t far = frame_value<scalar_t, acc_t>(clip, -column.s - 1, column.q, geo);  // x[t - s - 1] for t = 0
    for (int64_t t = 0; t < geo.frames; ++t) {
      const acc_t near = frame_value<scalar_t, acc_t>(clip, t - column.s, column.q, geo);
      clip_out[t * geo.frame_size + column.q] =
          static_cast<scalar_t>(column.w[t] * ((1 - column.f) * near + column.f * far));
      far = near;
    }
  }
}

// A lane's place in its segment of the warp: a run of consecutive lanes with equal keys (the
// channel group, or -1 for lanes without an interlaced column).
struct WarpSegment {
  unsigned links;  // bit k: lane - 2^k exists and lies in this lane's segment
  bool tail;       // the last lane of its segment, which ends up holding the segment's sum
};

__device__ __forceinline__ WarpSegment warp_segment(int key, int lane) {
  const unsigned full = 0xffffffffu;
  const int previous = __shfl_up_sync(full, key, 1);
  const unsigned heads = __ballot_sync(full, lane == 0 || previous != key);
  // Segment index = number of segment heads at or below this lane: distinct per run, even where
  // a key repeats in a later run (channels_last with C < 32).
  const int segment = __popc(heads & (full >> (kWarp - 1 - lane)));
  unsigned links = 0;
  for (int k = 0, d = 1; d < kWarp; ++k, d <<= 1) {
    const int other = __shfl_up_sync(full, segment, d);
    if (lane >= d && other == segment) links |= 1u << k;
  }
  const unsigned next_links = __shfl_down_sync(full, links, 1);
  return {links, lane == kWarp - 1 || !(next_links & 1u)};
}

// Inclusive segmented scan (Hillis-Steele restricted to the segment).
template <typename acc_t>
__device__ __forceinline__ acc_t segmented_warp_sum(acc_t value, unsigned links) {
  for (int k = 0, d = 1; d < kWarp; ++k, d <<= 1) {
    const acc_t other = __shfl_up_sync(0xffffffffu, value, d);
    if (links & (1u << k)) value += other;
  }
  return value;
}

// Adds the segment sum held by the segment's tail lane to block_sums[index].
template <typename acc_t>
__device__ __forceinline__ void add_segment(acc_t* block_sums, int64_t index, acc_t value, const WarpSegment& segment,
                                            bool interlaced) {
  value = segmented_warp_sum(value, segment.links);
  if (interlaced && segment.tail) atomicAdd(&block_sums[index], value);
}

// Moves the block's shared sums of one clip into the clip's global sums and zeroes them. Called by
// the whole block.
template <typename acc_t>
__device__ void flush_block_sums(acc_t* block_sums, acc_t* __restrict__ clip_sums, int64_t count) {
  __syncthreads();  // every warp has added its last tile
  for (int64_t i = threadIdx.x; i < count; i += kThreads) {
    if (block_sums[i] != acc_t(0)) atomicAdd(&clip_sums[i], block_sums[i]);
    block_sums[i] = 0;
  }
  __syncthreads();  // zeroed before the next tile adds
}

// One column of the backward. With t' = t - s - 1, output frame t reads x[t' + 1] (scale
// (1 - f) * w[t]) and x[t'] (scale f * w[t]):
//   grad_x[t'] = (1 - f) * w[t - 1] * grad_out[t - 1] + f * w[t] * grad_out[t]   for t in [0, T];
//   d/d w[t]   = sum grad_out[t] * ((1 - f) * x[t - s] + f * x[t - s - 1]);
//   d/d offset = sum_t w[t] * grad_out[t] * (x[t - s - 1] - x[t - s]).
// Every lane of the block takes every step, as the warp shuffles require; lanes without an
// interlaced column load nothing and contribute zeros. block_sums is (G, T+1): T frame-weight sums,
// then the offset sum.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void backward_column(const Column<acc_t>& column, const scalar_t* __restrict__ go,
                                                const scalar_t* __restrict__ xs, scalar_t* __restrict__ gx,
                                                acc_t* block_sums, int lane, const DeviceGeometry& geo,
                                                bool need_x, bool need_groups) {
  const bool interlaced = column.interlaced;
  const int64_t q = column.q;
  const int64_t s = column.s;
  const acc_t f = column.f;
  const int64_t sums_row = column.group * (geo.frames + 1);
  auto load = [&](const scalar_t* clip, int64_t t) {
    return interlaced ? frame_value<scalar_t, acc_t>(clip, t, q, geo) : acc_t(0);
  };
  auto weight_at = [&](int64_t t) { return interlaced ? column.w[t] : acc_t(0); };
  const WarpSegment segment = need_groups ? warp_segment(column.group, lane) : WarpSegment{0u, false};

  // Step t consumes grad_out[t], w[t] and x[t - s], loaded one step ahead, and x[t - s - 1], which
  // step t - 1 loaded as its x[t - s].
  acc_t g_next = load(go, 0);
  acc_t w_next = weight_at(0);
  acc_t near_next = need_groups ? load(xs, -s) : acc_t(0);
  acc_t far = need_groups ? load(xs, -s - 1) : acc_t(0);
  acc_t carry = 0;  // (1 - f) * w[t - 1] * grad_out[t - 1]
  acc_t offset_sum = 0;
  for (int64_t t = 0; t < geo.frames; ++t) {
    const acc_t g = g_next;
    const acc_t wt = w_next;
    const acc_t near = near_next;
    if (t + 1 < geo.frames) {
      g_next = load(go, t + 1);
      w_next = weight_at(t + 1);
      if (need_groups) near_next = load(xs, t + 1 - s);
    }
    if (need_x && interlaced) {
      const int64_t target = t - s - 1;
      if (target >= 0 && target < geo.frames) {
        gx[target * geo.frame_size + q] = static_cast<scalar_t>(carry + f * wt * g);
      }
      carry = (1 - f) * wt * g;
    }
    if (need_groups) {
      offset_sum += wt * g * (far - near);
      add_segment(block_sums, sums_row + t, g * ((1 - f) * near + f * far), segment, interlaced);
      far = near;
    }
  }
  if (need_groups) add_segment(block_sums, sums_row + geo.frames, offset_sum, segment, interlaced);
  if (need_x && interlaced) {
    const int64_t last_target = geo.frames - s - 1;  // step t = T: grad_out[T] is zero
    for (int64_t target = 0; target < geo.frames; ++target) {
      // Targets below -s - 1 or above T - s - 1 are read by no output frame.
      if (target == last_target) {
        gx[target * geo.frame_size + q] = static_cast<scalar_t>(carry);
      } else if (target < -s - 1 || target > last_target) {
        gx[target * geo.frame_size + q] = scalar_t(0);
      }
    }
  }
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
interlace_backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                          const acc_t* __restrict__ offset, const acc_t* __restrict__ weight,
                          scalar_t* __restrict__ grad_x, acc_t* __restrict__ group_sums, DeviceGeometry geo,
                          bool need_x, bool need_groups) {
  extern __shared__ __align__(16) unsigned char shared_bytes[];
  acc_t* block_sums = reinterpret_cast<acc_t*>(shared_bytes);  // (G, T+1) of the clip being walked
  const int64_t sums_per_clip = geo.groups * (geo.frames + 1);
  if (need_groups) {
    for (int64_t i = threadIdx.x; i < sums_per_clip; i += kThreads) block_sums[i] = 0;
    __syncthreads();
  }
  const int lane = threadIdx.x % kWarp;
  for (int64_t tile = blockIdx.x; tile < geo.tiles(); tile += gridDim.x) {
    const Column<acc_t> column = column_of(tile, offset, weight, geo);
    const int64_t clip_start = column.clip * geo.frames * geo.frame_size;
    scalar_t* gx = need_x ? grad_x + clip_start : nullptr;
    if (need_x && column.active && !column.interlaced) copy_column(grad_out + clip_start, gx, column.q, geo);
    backward_column(column, grad_out + clip_start, x + clip_start, gx, block_sums, lane, geo, need_x, need_groups);
    // The clip is block-uniform, so the whole block flushes or none of it.
    const int64_t next = tile + gridDim.x;
    if (need_groups && (next >= geo.tiles() || next / geo.tiles_per_clip != column.clip)) {
      flush_block_sums(block_sums, group_sums + column.clip * sums_per_clip, sums_per_clip);
    }
  }
}

void check_cuda_inputs(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight) {
  TORCH_CHECK(x.is_cuda() && offset.device() == x.device() && weight.device() == x.device(),
              "interlace: x, offset and weight must be on the same CUDA device");
}

}  // namespace

at::Tensor interlace_forward_cuda(const at::Tensor& x, const at::Tensor& offset,
                                  const at::Tensor& weight, int64_t num_segments,
                                  int64_t shift_channels) {
  const InterlaceGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  check_cuda_inputs(x, offset, weight);
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x);
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const DeviceGeometry device_geo = device_geometry(geo);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] =
        opmath_offset_and_weight(offset, weight, c10::CppTypeToScalarType<acc_t>::value);
    const auto kernel = interlace_forward_kernel<scalar_t, acc_t>;
    kernel<<<resident_grid(kernel, 0, device_geo.tiles()), kThreads, 0, stream>>>(
        x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
        out.mutable_data_ptr<scalar_t>(), device_geo);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& offset,
    const at::Tensor& weight, int64_t num_segments, int64_t shift_channels,
    std::array<bool, 3> output_mask) {
  const InterlaceGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  check_cuda_inputs(x, offset, weight);
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "interlace: grad_out must have the shape of x");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  const bool need_x = output_mask[0];
  const bool need_groups = output_mask[1] || output_mask[2];
  if (need_groups) at::globalContext().alertNotDeterministic("interlace_backward_cuda");
  at::Tensor grad_x = need_x ? at::empty_like(x) : x.new_empty({0});
  at::Tensor grad_offset = offset.new_empty({0});
  at::Tensor grad_weight = weight.new_empty({0});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const DeviceGeometry device_geo = device_geometry(geo);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, acc_type);
    at::Tensor group_sums = at::zeros({geo.clips, geo.groups, geo.frames + 1}, x.options().dtype(acc_type));
    const size_t shared = need_groups ? geo.groups * (geo.frames + 1) * sizeof(acc_t) : 0;
    TORCH_CHECK(shared <= kMaxSharedBytes, "interlace: T * G = ", geo.frames * geo.groups,
                " is too large for the CUDA backward's shared-memory sums");
    if (x.numel() > 0) {
      const auto kernel = interlace_backward_kernel<scalar_t, acc_t>;
      kernel<<<resident_grid(kernel, shared, device_geo.tiles()), kThreads, shared, stream>>>(
          grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(),
          weight_acc.const_data_ptr<acc_t>(), need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr,
          group_sums.mutable_data_ptr<acc_t>(), device_geo, need_x, need_groups);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    if (need_groups) std::tie(grad_offset, grad_weight) = split_group_gradients(group_sums, geo, offset, weight);
  });
  if (!output_mask[1]) grad_offset = offset.new_empty({0});
  if (!output_mask[2]) grad_weight = weight.new_empty({0});
  return {grad_x, grad_offset, grad_weight};
}

}  // namespace tin

TORCH_LIBRARY_IMPL(tin, CUDA, m) {
  m.impl("interlace", &tin::interlace_forward_cuda);
  m.impl("interlace_backward", &tin::interlace_backward_cuda);
}
