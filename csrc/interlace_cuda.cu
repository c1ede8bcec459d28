// Temporal interlace: CUDA kernels.
//
// One thread owns a column (clip n, frame-local memory offset q) and walks it along t, so each
// element of x and grad_out is loaded once and the previous frame's value stays in a register.
// Consecutive threads own consecutive q, which keeps loads and stores coalesced in both layouts.
// The backward fuses grad_x with the offset/weight correlations in that same walk; the sums are
// reduced over the lanes of a warp that share a channel group, then in shared memory, then with one
// global atomic per block and (group, frame). Nothing is copied to the host.
#include "interlace.h"

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
constexpr int64_t kMaxGridY = 65535;

struct DeviceGeometry {
  int64_t frames, channels, positions, shifted, groups, frame_size;
  bool channels_last;

  __device__ int64_t channel_of(int64_t q) const {
    return channels_last ? q % channels : q / positions;
  }
  __device__ int64_t group_of(int64_t channel) const { return channel / (shifted / groups); }
};

DeviceGeometry device_geometry(const InterlaceGeometry& geo) {
  return {geo.frames, geo.channels, geo.positions, geo.shifted, geo.groups, geo.frame_size(),
          geo.channels_last};
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

// Blocks along q per clip: enough to fill the device a few times over, no more (the backward
// flushes one set of shared sums per block).
dim3 grid_for(int64_t frame_size, int64_t clips) {
  int device = 0;
  int sms = 0;
  C10_CUDA_CHECK(cudaGetDevice(&device));
  C10_CUDA_CHECK(cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, device));
  const int64_t needed = (frame_size + kThreads - 1) / kThreads;
  const int64_t wanted = std::max<int64_t>(1, (8 * int64_t(sms) + clips - 1) / clips);
  return dim3(static_cast<unsigned>(std::min(needed, wanted)), static_cast<unsigned>(std::min(clips, kMaxGridY)));
}

template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
interlace_forward_kernel(const scalar_t* __restrict__ x, const acc_t* __restrict__ offset,
                         const acc_t* __restrict__ weight, scalar_t* __restrict__ out,
                         DeviceGeometry geo, int64_t first_clip) {
  const int64_t n = first_clip + blockIdx.y;
  const scalar_t* clip = x + n * geo.frames * geo.frame_size;
  scalar_t* clip_out = out + n * geo.frames * geo.frame_size;
  for (int64_t q = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; q < geo.frame_size;
       q += int64_t(gridDim.x) * blockDim.x) {
    const int64_t channel = geo.channel_of(q);
    if (channel >= geo.shifted) {
      copy_column(clip, clip_out, q, geo);
      continue;
    }
    const int64_t group_row = n * geo.groups + geo.group_of(channel);
    const acc_t o = offset[group_row];
    const int64_t s = whole_shift(o, geo.frames);
    const acc_t f = o - floor(o);
    const acc_t* w = weight + group_row * geo.frames;
    acc_t far = frame_value<scalar_t, acc_t>(clip, -s - 1, q, geo);  // x[t - s - 1] for t = 0
    for (int64_t t = 0; t < geo.frames; ++t) {
      const acc_t near = frame_value<scalar_t, acc_t>(clip, t - s, q, geo);
      clip_out[t * geo.frame_size + q] = static_cast<scalar_t>(w[t] * ((1 - f) * near + f * far));
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

// With t' = t - s - 1, output frame t reads x[t' + 1] (scale (1 - f) * w[t]) and x[t'] (f * w[t]):
//   grad_x[t'] = (1 - f) * w[t - 1] * grad_out[t - 1] + f * w[t] * grad_out[t]   for t in [0, T];
//   d/d w[t]   = sum grad_out[t] * ((1 - f) * x[t - s] + f * x[t - s - 1]);
//   d/d offset = sum_t w[t] * grad_out[t] * (x[t - s - 1] - x[t - s]).
// The grid-stride loop bounds are uniform per block, so every lane takes every step, as the warp
// shuffles require; `active` marks lanes that own a real column.
template <typename scalar_t, typename acc_t>
__global__ void __launch_bounds__(kThreads)
interlace_backward_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                          const acc_t* __restrict__ offset, const acc_t* __restrict__ weight,
                          scalar_t* __restrict__ grad_x, acc_t* __restrict__ group_sums,
                          DeviceGeometry geo, int64_t first_clip, bool need_x, bool need_groups) {
  extern __shared__ unsigned char shared_bytes[];
  acc_t* block_sums = reinterpret_cast<acc_t*>(shared_bytes);  // (G, T+1)
  const int64_t sums_per_clip = geo.groups * (geo.frames + 1);
  if (need_groups) {
    for (int64_t i = threadIdx.x; i < sums_per_clip; i += blockDim.x) block_sums[i] = 0;
    __syncthreads();
  }
  const int lane = threadIdx.x % kWarp;
  const int64_t n = first_clip + blockIdx.y;
  const int64_t clip_offset = n * geo.frames * geo.frame_size;
  const scalar_t* go = grad_out + clip_offset;
  const scalar_t* xs = x + clip_offset;
  scalar_t* gx = need_x ? grad_x + clip_offset : nullptr;

  for (int64_t base = blockIdx.x * int64_t(blockDim.x); base < geo.frame_size;
       base += int64_t(gridDim.x) * blockDim.x) {
    const int64_t q = base + threadIdx.x;
    const bool active = q < geo.frame_size;
    const int64_t channel = active ? geo.channel_of(q) : geo.channels;
    const bool interlaced = channel < geo.shifted;
    const int group = interlaced ? static_cast<int>(geo.group_of(channel)) : -1;
    if (active && !interlaced && need_x) copy_column(go, gx, q, geo);

    int64_t s = 0;
    acc_t f = 0;
    const acc_t* w = weight;
    if (interlaced) {
      const acc_t o = offset[n * geo.groups + group];
      s = whole_shift(o, geo.frames);
      f = o - floor(o);
      w += (n * geo.groups + group) * geo.frames;
    }
    const WarpSegment segment = need_groups ? warp_segment(group, lane) : WarpSegment{0u, false};
    acc_t far = (interlaced && need_groups) ? frame_value<scalar_t, acc_t>(xs, -s - 1, q, geo) : acc_t(0);
    acc_t carry = 0;  // (1 - f) * w[t - 1] * grad_out[t - 1]
    acc_t offset_sum = 0;
    for (int64_t t = 0; t <= geo.frames; ++t) {
      const bool in_clip = t < geo.frames;
      const acc_t g = (interlaced && in_clip) ? static_cast<acc_t>(go[t * geo.frame_size + q]) : acc_t(0);
      const acc_t wt = (interlaced && in_clip) ? w[t] : acc_t(0);
      if (interlaced && need_x) {
        const int64_t target = t - s - 1;
        if (target >= 0 && target < geo.frames) {
          gx[target * geo.frame_size + q] = static_cast<scalar_t>(carry + f * wt * g);
        }
        carry = (1 - f) * wt * g;
      }
      if (need_groups && in_clip) {
        acc_t correlation = 0;
        if (interlaced) {
          const acc_t near = frame_value<scalar_t, acc_t>(xs, t - s, q, geo);
          correlation = g * ((1 - f) * near + f * far);
          offset_sum += wt * g * (far - near);
          far = near;
        }
        correlation = segmented_warp_sum(correlation, segment.links);
        if (interlaced && segment.tail) atomicAdd(&block_sums[group * (geo.frames + 1) + t], correlation);
      }
    }
    if (need_groups) {
      offset_sum = segmented_warp_sum(offset_sum, segment.links);
      if (interlaced && segment.tail) atomicAdd(&block_sums[group * (geo.frames + 1) + geo.frames], offset_sum);
    }
    if (interlaced && need_x) {
      // Frames that no output frame reads from (targets outside [-s - 1, T - s - 1]) get zero.
      for (int64_t target = 0; target < geo.frames; ++target) {
        if (target < -s - 1 || target > geo.frames - s - 1) gx[target * geo.frame_size + q] = scalar_t(0);
      }
    }
  }
  if (need_groups) {
    __syncthreads();
    acc_t* clip_sums = group_sums + n * sums_per_clip;
    for (int64_t i = threadIdx.x; i < sums_per_clip; i += blockDim.x) {
      if (block_sums[i] != acc_t(0)) atomicAdd(&clip_sums[i], block_sums[i]);
    }
  }
}

void check_cuda_inputs(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight) {
  TORCH_CHECK(x.is_cuda() && offset.device() == x.device() && weight.device() == x.device(),
              "interlace: x, offset and weight must be on the same CUDA device");
}

// Launches `launch(grid, first_clip)` over clips in chunks that fit the grid's y dimension.
template <typename Launch>
void for_clip_chunks(const InterlaceGeometry& geo, Launch&& launch) {
  for (int64_t first = 0; first < geo.clips; first += kMaxGridY) {
    launch(grid_for(geo.frame_size(), std::min(kMaxGridY, geo.clips - first)), first);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
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
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] =
        opmath_offset_and_weight(offset, weight, c10::CppTypeToScalarType<acc_t>::value);
    for_clip_chunks(geo, [&](dim3 grid, int64_t first_clip) {
      interlace_forward_kernel<scalar_t, acc_t><<<grid, kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(),
          weight_acc.const_data_ptr<acc_t>(), out.mutable_data_ptr<scalar_t>(), device_geometry(geo),
          first_clip);
    });
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
  at::Tensor grad_x = need_x ? at::empty_like(x) : x.new_empty({0});
  at::Tensor grad_offset = offset.new_empty({0});
  at::Tensor grad_weight = weight.new_empty({0});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto acc_type = c10::CppTypeToScalarType<acc_t>::value;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, acc_type);
    at::Tensor group_sums = at::zeros({geo.clips, geo.groups, geo.frames + 1}, x.options().dtype(acc_type));
    const size_t shared = need_groups ? geo.groups * (geo.frames + 1) * sizeof(acc_t) : 0;
    TORCH_CHECK(shared <= 48 * 1024, "interlace: T * G = ", geo.frames * geo.groups,
                " is too large for the CUDA backward's shared-memory sums");
    if (x.numel() > 0) {
      for_clip_chunks(geo, [&](dim3 grid, int64_t first_clip) {
        interlace_backward_kernel<scalar_t, acc_t><<<grid, kThreads, shared, stream>>>(
            grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(),
            offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
            need_x ? grad_x.mutable_data_ptr<scalar_t>() : nullptr, group_sums.mutable_data_ptr<acc_t>(),
            device_geometry(geo), first_clip, need_x, need_groups);
      });
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
