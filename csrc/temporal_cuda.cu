// Temporal operators: the CUDA kernels.
//
// Memory walk. A clip's frame splits into regions of the same channels in every frame: the G
// interlaced channel groups, then the copied channels [S, C). A region is `rows` runs of `run`
// unit-stride elements (contiguous: one run of (channels x H*W); channels_last: one run of the
// region's channels per position). Threads own "units" of V elements inside a run -- V = 16 bytes
// of the dtype where pointers are 16-byte aligned and every run and row stride is a multiple of V,
// else 1 -- so loads and stores are 16-byte vectors, consecutive threads own consecutive units and
// accesses coalesce in both layouts. A block takes kThreads consecutive units of one region of one
// clip (a tile), and each thread walks its unit along t: every element of x and grad_out is read
// once, the previous frame's values stay in registers. Copied regions are plain vector copies.
//
// The offset/weight sums of the backward are kept in registers over a thread's walk (T frame
// weight sums in chunks of kChunk frames, and the offset sum), reduced once per block (warp
// shuffles, then the warps in order through shared memory) into one partial sum per tile, and
// finished in a fixed order by the next kernel: no atomics, the same bits on every run.
//
// A TIN block (temporal_interlace) is three kernels forward -- the descriptor's partial sums over
// position chunks, the two small networks (one block a clip), the interlace -- and four backward:
// the offset/weight sums, the networks' backward (one block a clip), the parameters' gradients (one
// thread a parameter element, summing the clips in order), and grad_x, which adds the descriptor's
// gradient while it writes the interlace's. No kernel asks the device anything at launch.
//
// With TIN_CUDA_EMULATION defined, this file compiles as C++ against tests/ops/cuda_emulation.h,
// which runs each kernel's blocks and threads on CPU threads: the tests' check of these kernels on
// machines without a GPU. Only the includes and the launch macro differ.
#ifdef TIN_CUDA_EMULATION
#include "cuda_emulation.h"
#else
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#define TIN_LAUNCH(kernel, blocks, threads, shared_bytes, stream) kernel<<<blocks, threads, shared_bytes, stream>>>
#define TIN_DYNAMIC_SHARED(name) extern __shared__ __align__(16) unsigned char name[]
#endif

#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/ops/empty.h>
#include <ATen/ops/empty_like.h>
#include <ATen/ops/zeros.h>
#include <ATen/ops/zeros_like.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <type_traits>

#include "temporal_ops.h"

#ifndef TIN_CUDA_THREADS
#define TIN_CUDA_THREADS 256  // threads a block (the emulation may take fewer to run faster)
#endif

namespace tin {
namespace {

constexpr int kThreads = TIN_CUDA_THREADS;
constexpr int kWarp = 32;
constexpr int kWarps = kThreads / kWarp;
constexpr int kChunk = 8;               // frames whose weight sums a thread keeps in registers at once
constexpr int64_t kChunkPositions = 1024;  // positions per block of the descriptor's partial sums
constexpr int64_t kMaxBlocks = std::numeric_limits<int32_t>::max();
constexpr size_t kMaxSharedBytes = 48 * 1024;  // dynamic shared memory a block gets without opting in
static_assert(kThreads % kWarp == 0, "whole warps");

constexpr int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

// V elements, 16 bytes for V = 16 / sizeof(T).
template <typename T, int V>
struct alignas(sizeof(T) * V) Pack {
  T v[V];
};

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> load(const T* p) {
  return *reinterpret_cast<const Pack<T, V>*>(p);
}

template <typename T, int V>
__device__ __forceinline__ void store(T* p, const Pack<T, V>& value) {
  *reinterpret_cast<Pack<T, V>*>(p) = value;
}

template <typename T, int V>
__device__ __forceinline__ Pack<T, V> zeros() {
  Pack<T, V> pack;
#pragma unroll
  for (int i = 0; i < V; ++i) pack.v[i] = T(0);
  return pack;
}

// One region of a frame: `rows` runs of `run` elements at start + r * row_stride (frame-local).
struct Region {
  int64_t start, rows, run, row_stride;
};

// x's geometry and how its regions are tiled, as the kernels see them.
struct Plan {
  int64_t clips, frames, channels, positions, shifted, groups, frame_size;
  bool channels_last;
  int vector;            // V: elements per unit
  int64_t group_tiles;   // tiles of one interlaced group of one clip
  int64_t copy_tiles;    // tiles of the copied channels of one clip
  int64_t clip_tiles;    // groups * group_tiles + copy_tiles

  __host__ __device__ int64_t group_channels() const { return shifted / groups; }
  __host__ __device__ Region group_region(int64_t g) const {
    const int64_t k = group_channels();
    return channels_last ? Region{g * k, positions, k, channels} : Region{g * k * positions, 1, k * positions, 0};
  }
  __host__ __device__ Region copy_region() const {
    return channels_last ? Region{shifted, positions, channels - shifted, channels}
                         : Region{shifted * positions, 1, (channels - shifted) * positions, 0};
  }
  __host__ __device__ int64_t units(const Region& region) const { return region.rows * (region.run / vector); }
  // Frame-local offset of unit u of a region.
  __host__ __device__ int64_t offset_of(const Region& region, int64_t u) const {
    const int64_t per_row = region.run / vector;
    return region.start + (u / per_row) * region.row_stride + (u % per_row) * vector;
  }
};

bool aligned(const void* pointer) { return reinterpret_cast<uintptr_t>(pointer) % 16 == 0; }

// The plan for x, vectorised with V = 16 / sizeof(scalar_t) where every pointer is 16-byte aligned
// and every run and row stride splits into whole vectors.
template <typename scalar_t>
Plan make_plan(const FrameGeometry& geo, std::initializer_list<const void*> pointers) {
  Plan plan{geo.clips,  geo.frames,    geo.channels, geo.positions, geo.shifted, geo.groups, geo.frame_size(),
            geo.channels_last, 1, 0, 0, 0};
  constexpr int wide = static_cast<int>(16 / sizeof(scalar_t));
  bool fits = std::all_of(pointers.begin(), pointers.end(), [](const void* p) { return p == nullptr || aligned(p); });
  if (geo.channels_last) {
    fits = fits && geo.channels % wide == 0 && (geo.shifted == 0 || geo.group_channels() % wide == 0);
  } else {
    fits = fits && geo.positions % wide == 0;
  }
  plan.vector = fits ? wide : 1;
  plan.group_tiles = geo.shifted > 0 ? ceil_div(plan.units(plan.group_region(0)), kThreads) : 0;
  plan.copy_tiles = geo.shifted < geo.channels ? ceil_div(plan.units(plan.copy_region()), kThreads) : 0;
  plan.clip_tiles = geo.groups * plan.group_tiles + plan.copy_tiles;
  return plan;
}

unsigned grid_of(int64_t blocks) { return static_cast<unsigned>(std::min(blocks, kMaxBlocks)); }

// One tile: its clip, its group (or -1 for the copied channels) and the unit this thread owns.
struct Tile {
  int64_t clip;
  int64_t group;
  int64_t index;  // among its region's tiles
  Region region;
  int64_t unit;
  bool active;  // the unit lies inside the region
};

__device__ __forceinline__ Tile tile_of(const Plan& plan, int64_t block, bool groups_only) {
  Tile tile;
  const int64_t per_clip = groups_only ? plan.groups * plan.group_tiles : plan.clip_tiles;
  tile.clip = block / per_clip;
  const int64_t local = block - tile.clip * per_clip;
  if (local < plan.groups * plan.group_tiles) {
    tile.group = local / plan.group_tiles;
    tile.index = local - tile.group * plan.group_tiles;
    tile.region = plan.group_region(tile.group);
  } else {
    tile.group = -1;
    tile.index = local - plan.groups * plan.group_tiles;
    tile.region = plan.copy_region();
  }
  tile.unit = tile.index * kThreads + threadIdx.x;
  tile.active = tile.unit < plan.units(tile.region);
  return tile;
}

// What walking a unit of an interlaced group takes: the group's whole shift s, blend fraction f, and
// its frame weights w[t * G] of weight (N, T, G).
template <typename acc_t>
struct GroupShift {
  int64_t s;
  acc_t f;
  const acc_t* w;
};

template <typename acc_t>
__device__ __forceinline__ GroupShift<acc_t> group_shift(const Plan& plan, const Tile& tile, const acc_t* offset,
                                                         const acc_t* weight) {
  const acc_t o = offset[tile.clip * plan.groups + tile.group];
  return {whole_shift(o, plan.frames), o - floor(o), weight + tile.clip * plan.frames * plan.groups + tile.group};
}

// Frame t of a clip's unit as a pack, zeros outside [0, T).
template <typename scalar_t, int V>
__device__ __forceinline__ Pack<scalar_t, V> frame_pack(const scalar_t* clip, int64_t t, int64_t q, const Plan& plan) {
  return (t >= 0 && t < plan.frames) ? load<scalar_t, V>(clip + t * plan.frame_size + q) : zeros<scalar_t, V>();
}

template <typename scalar_t, int V>
__device__ __forceinline__ void copy_unit(const scalar_t* src, scalar_t* dst, int64_t q, const Plan& plan) {
  for (int64_t t = 0; t < plan.frames; ++t) {
    store<scalar_t, V>(dst + t * plan.frame_size + q, load<scalar_t, V>(src + t * plan.frame_size + q));
  }
}

// ------------------------------------------------------------------------------ reductions

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t value) {
#pragma unroll
  for (int mask = kWarp / 2; mask > 0; mask /= 2) value += __shfl_xor_sync(0xffffffffu, value, mask);
  return value;
}

// Sums each of `count` values over the block (every thread of the block must call it); the totals
// are in shared[0, count) afterwards, for every thread. The warps' sums are added in warp order.
template <typename acc_t, int kCount>
__device__ __forceinline__ void block_sums(acc_t (&values)[kCount], acc_t* shared) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
#pragma unroll
  for (int i = 0; i < kCount; ++i) {
    const acc_t total = warp_sum(values[i]);
    if (lane == 0) shared[kCount + warp * kCount + i] = total;
  }
  __syncthreads();
  if (threadIdx.x < kCount) {
    acc_t total = 0;
    for (int w = 0; w < kWarps; ++w) total += shared[kCount + w * kCount + threadIdx.x];
    shared[threadIdx.x] = total;
  }
  __syncthreads();
}

template <typename acc_t, int kCount>
constexpr size_t block_sums_bytes() {
  return sizeof(acc_t) * kCount * (kWarps + 1);
}

// ------------------------------------------------------------------------------- interlace

// out[t] = w[t] * ((1 - f) * x[t - s] + f * x[t - s - 1]) on interlaced units, out = x on copied ones.
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
interlace_forward_kernel(const scalar_t* __restrict__ x, const at::opmath_type<scalar_t>* __restrict__ offset,
                         const at::opmath_type<scalar_t>* __restrict__ weight, scalar_t* __restrict__ out, Plan plan) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t block = blockIdx.x; block < plan.clips * plan.clip_tiles; block += gridDim.x) {
    const Tile tile = tile_of(plan, block, false);
    if (!tile.active) continue;
    const int64_t q = plan.offset_of(tile.region, tile.unit);
    const int64_t clip_start = tile.clip * plan.frames * plan.frame_size;
    const scalar_t* clip = x + clip_start;
    scalar_t* clip_out = out + clip_start;
    if (tile.group < 0) {
      copy_unit<scalar_t, V>(clip, clip_out, q, plan);
      continue;
    }
    const auto [s, f, w] = group_shift(plan, tile, offset, weight);
    Pack<scalar_t, V> far = frame_pack<scalar_t, V>(clip, -s - 1, q, plan);
    for (int64_t t = 0; t < plan.frames; ++t) {
      const Pack<scalar_t, V> near = frame_pack<scalar_t, V>(clip, t - s, q, plan);
      const acc_t near_scale = w[t * plan.groups] * (1 - f), far_scale = w[t * plan.groups] * f;
      Pack<scalar_t, V> result;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        result.v[i] = static_cast<scalar_t>(near_scale * static_cast<acc_t>(near.v[i]) +
                                            far_scale * static_cast<acc_t>(far.v[i]));
      }
      store<scalar_t, V>(clip_out + t * plan.frame_size + q, result);
      far = near;
    }
  }
}

// The offset and frame-weight sums of every tile of the interlaced groups, partials (N, G,
// group_tiles, T+1): T frame-weight sums, then the offset sum. Every thread of a block takes every
// step (the block reductions need them all); threads past their region add zeros.
//   d/d w[t]   = sum grad_out[t] * ((1 - f) * x[t - s] + f * x[t - s - 1])
//   d/d offset = sum_t w[t] * grad_out[t] * (x[t - s - 1] - x[t - s])
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
group_sums_kernel(const scalar_t* __restrict__ grad_out, const scalar_t* __restrict__ x,
                  const at::opmath_type<scalar_t>* __restrict__ offset, const at::opmath_type<scalar_t>* __restrict__ weight,
                  at::opmath_type<scalar_t>* __restrict__ partials, Plan plan) {
  using acc_t = at::opmath_type<scalar_t>;
  TIN_DYNAMIC_SHARED(shared_bytes);
  acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);
  for (int64_t block = blockIdx.x; block < plan.clips * plan.groups * plan.group_tiles; block += gridDim.x) {
    const Tile tile = tile_of(plan, block, true);
    const int64_t q = tile.active ? plan.offset_of(tile.region, tile.unit) : 0;
    const int64_t clip_start = tile.clip * plan.frames * plan.frame_size;
    const scalar_t* go = grad_out + clip_start;
    const scalar_t* xs = x + clip_start;
    const auto [s, f, w] = group_shift(plan, tile, offset, weight);
    acc_t* partial = partials + block * (plan.frames + 1);  // block = (clip, group, tile) in order
    auto load_x = [&](int64_t t) {
      return tile.active ? frame_pack<scalar_t, V>(xs, t, q, plan) : zeros<scalar_t, V>();
    };
    Pack<scalar_t, V> far = load_x(-s - 1);
    acc_t offset_sum[1] = {0};
    for (int64_t base = 0; base < plan.frames; base += kChunk) {
      acc_t weight_sums[kChunk];
#pragma unroll
      for (int i = 0; i < kChunk; ++i) {
        weight_sums[i] = 0;
        const int64_t t = base + i;
        if (t >= plan.frames) continue;
        const Pack<scalar_t, V> near = load_x(t - s);
        const Pack<scalar_t, V> g = tile.active ? load<scalar_t, V>(go + t * plan.frame_size + q) : zeros<scalar_t, V>();
        acc_t with_near = 0, with_far = 0;
#pragma unroll
        for (int j = 0; j < V; ++j) {
          with_near += static_cast<acc_t>(g.v[j]) * static_cast<acc_t>(near.v[j]);
          with_far += static_cast<acc_t>(g.v[j]) * static_cast<acc_t>(far.v[j]);
        }
        weight_sums[i] = (1 - f) * with_near + f * with_far;
        offset_sum[0] += w[t * plan.groups] * (with_far - with_near);
        far = near;
      }
      block_sums<acc_t, kChunk>(weight_sums, shared);
      if (threadIdx.x < kChunk && base + threadIdx.x < plan.frames) partial[base + threadIdx.x] = shared[threadIdx.x];
      __syncthreads();  // shared is reused by the next reduction
    }
    block_sums<acc_t, 1>(offset_sum, shared);
    if (threadIdx.x == 0) partial[plan.frames] = shared[0];
    __syncthreads();
  }
}

// grad_offset (N, G) and grad_weight (N, T, G) from the tiles' partial sums, one thread a sum.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
finish_group_sums_kernel(const acc_t* __restrict__ partials, acc_t* __restrict__ offset_grad,
                         acc_t* __restrict__ weight_grad, Plan plan) {
  const int64_t sums = plan.clips * plan.groups * (plan.frames + 1);
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < sums; i += int64_t(gridDim.x) * kThreads) {
    const int64_t t = i % (plan.frames + 1);
    const int64_t g = (i / (plan.frames + 1)) % plan.groups;
    const int64_t n = i / ((plan.frames + 1) * plan.groups);
    sum_group_partial(partials, plan.group_tiles, plan.frames, plan.groups, n, g, t,
                      weight_grad + n * plan.frames * plan.groups, offset_grad + n * plan.groups);
  }
}

// grad_x. With h(t) = w[t] * grad_out[t] (zero outside [0, T)), x[u] feeds output frames u + s
// (scale 1 - f) and u + s + 1 (scale f):
//   grad_x[u] = (1 - f) * h(u + s) + f * h(u + s + 1)   (+ the descriptor's gradient, given as
// descriptor_grad (N, T, S) already divided by H*W, for temporal_interlace)
// and grad_x = grad_out on the copied channels.
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
interlace_grad_x_kernel(const scalar_t* __restrict__ grad_out, const at::opmath_type<scalar_t>* __restrict__ offset,
                        const at::opmath_type<scalar_t>* __restrict__ weight,
                        const at::opmath_type<scalar_t>* __restrict__ descriptor_grad, scalar_t* __restrict__ grad_x,
                        Plan plan) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t block = blockIdx.x; block < plan.clips * plan.clip_tiles; block += gridDim.x) {
    const Tile tile = tile_of(plan, block, false);
    if (!tile.active) continue;
    const int64_t q = plan.offset_of(tile.region, tile.unit);
    const int64_t clip_start = tile.clip * plan.frames * plan.frame_size;
    const scalar_t* go = grad_out + clip_start;
    scalar_t* gx = grad_x + clip_start;
    if (tile.group < 0) {
      copy_unit<scalar_t, V>(go, gx, q, plan);
      continue;
    }
    const auto [s, f, w] = group_shift(plan, tile, offset, weight);
    // The channel of each of the unit's elements (one channel in the contiguous layout).
    const int64_t channel = plan.channels_last ? q % plan.channels : q / plan.positions;
    const int64_t channel_step = plan.channels_last ? 1 : 0;
    const acc_t* extra = descriptor_grad == nullptr ? nullptr : descriptor_grad + tile.clip * plan.frames * plan.shifted;
    // w by an init-capture: C++17 (older PyTorch builds) cannot capture a structured binding
    auto scaled = [&, frame_weights = w](int64_t t, acc_t (&h)[V]) {
      const bool inside = t >= 0 && t < plan.frames;
      const acc_t wt = inside ? frame_weights[t * plan.groups] : acc_t(0);
      const Pack<scalar_t, V> g = inside ? load<scalar_t, V>(go + t * plan.frame_size + q) : zeros<scalar_t, V>();
#pragma unroll
      for (int i = 0; i < V; ++i) h[i] = wt * static_cast<acc_t>(g.v[i]);
    };
    acc_t previous[V], next[V];
    scaled(s, previous);
    for (int64_t u = 0; u < plan.frames; ++u) {
      scaled(u + s + 1, next);
      Pack<scalar_t, V> result;
#pragma unroll
      for (int i = 0; i < V; ++i) {
        acc_t value = (1 - f) * previous[i] + f * next[i];
        if (extra != nullptr) value += extra[u * plan.shifted + channel + i * channel_step];
        result.v[i] = static_cast<scalar_t>(value);
        previous[i] = next[i];
      }
      store<scalar_t, V>(gx + u * plan.frame_size + q, result);
    }
  }
}

// ---------------------------------------------------------------------- temporal_interlace

// Partial sums of the descriptor over chunks of kChunkPositions positions: partials (N*T, chunks, S),
// one block a (frame, chunk). channels_last: a thread sums a vector of channels over every
// slices-th position of the chunk, and the slices are added in order through shared memory.
// Contiguous: a warp sums a channel's run of positions and reduces it with shuffles.
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
descriptor_kernel(const scalar_t* __restrict__ x, at::opmath_type<scalar_t>* __restrict__ partials, Plan plan,
                  int64_t chunks) {
  using acc_t = at::opmath_type<scalar_t>;
  TIN_DYNAMIC_SHARED(shared_bytes);
  acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);
  const int64_t fold = plan.shifted;
  for (int64_t block = blockIdx.x; block < plan.clips * plan.frames * chunks; block += gridDim.x) {
    const int64_t frame = block / chunks, chunk = block % chunks;
    const scalar_t* source = x + frame * plan.frame_size;
    const int64_t first = chunk * kChunkPositions;
    const int64_t last = std::min(first + kChunkPositions, plan.positions);
    acc_t* out = partials + block * fold;  // block = (frame, chunk) in order
    if (plan.channels_last) {
      const int64_t columns = fold / V;
      const int64_t slices = std::max<int64_t>(1, kThreads / columns);
      const int64_t slice = threadIdx.x / columns;  // >= slices for the threads left over, which idle
      for (int64_t column = threadIdx.x % columns; slice < slices && column < columns; column += kThreads) {
        acc_t sums[V] = {};
        for (int64_t p = first + slice; p < last; p += slices) {
          const Pack<scalar_t, V> values = load<scalar_t, V>(source + p * plan.channels + column * V);
#pragma unroll
          for (int i = 0; i < V; ++i) sums[i] += static_cast<acc_t>(values.v[i]);
        }
        acc_t* target = slices == 1 ? out + column * V : shared + slice * fold + column * V;
#pragma unroll
        for (int i = 0; i < V; ++i) target[i] = sums[i];
      }
      if (slices > 1) {
        __syncthreads();
        for (int64_t c = threadIdx.x; c < fold; c += kThreads) {
          acc_t total = 0;
          for (int64_t i = 0; i < slices; ++i) total += shared[i * fold + c];
          out[c] = total;
        }
        __syncthreads();
      }
    } else {
      const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
      for (int64_t c = warp; c < fold; c += kWarps) {
        const scalar_t* row = source + c * plan.positions;
        acc_t sum = 0;
        for (int64_t p = first + lane * V; p < last; p += kWarp * V) {
          const Pack<scalar_t, V> values = load<scalar_t, V>(row + p);
#pragma unroll
          for (int i = 0; i < V; ++i) sum += static_cast<acc_t>(values.v[i]);
        }
        sum = warp_sum(sum);
        if (lane == 0) out[c] = sum;
      }
    }
  }
}

// Bytes of shared memory descriptor_kernel needs.
template <typename acc_t>
size_t descriptor_shared_bytes(const Plan& plan) {
  if (!plan.channels_last) return 0;
  const int64_t columns = plan.shifted / plan.vector;
  const int64_t slices = std::max<int64_t>(1, kThreads / columns);
  return slices > 1 ? sizeof(acc_t) * slices * plan.shifted : 0;
}

// The forward half of a clip's network scratch in shared memory, from its descriptor (T, S). Every
// thread of the block calls it. A warp computes each conv output (lanes over the channels).
template <typename acc_t>
__device__ void net_forward_block(const InterlaceNets<acc_t>& nets, const acc_t* d, const NetScratch<acc_t>& s) {
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp;
  const int64_t frames = nets.frames;
  for (int64_t task = warp; task < nets.conv_outputs() * frames; task += kWarps) {
    const int64_t o = task / frames, t = task % frames;
    const acc_t sum = warp_sum(conv_partial(nets, d, o, t, lane, kWarp));
    if (lane == 0) s.conv[task] = nets.conv_bias(o) + sum;
  }
  __syncthreads();
  for (int64_t i = threadIdx.x; i < frames; i += kThreads) s.hidden[i] = hidden_at(nets, s, i);
  __syncthreads();
  for (int64_t j = threadIdx.x; j < nets.predicted; j += kThreads) s.logits[j] = logit_at(nets, s, j);
  __syncthreads();
}

// One block a clip: the descriptor (N, T, S) from the chunks' partial sums, the networks, and the
// offsets (N, G) and frame weights (N, T, G) they give.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
nets_forward_kernel(const acc_t* __restrict__ partials, InterlaceNets<acc_t> nets, int64_t chunks,
                    acc_t inverse_positions, acc_t* __restrict__ descriptor, acc_t* __restrict__ offset,
                    acc_t* __restrict__ weight, int64_t clips) {
  TIN_DYNAMIC_SHARED(shared_bytes);
  const auto s = NetScratch<acc_t>::at(reinterpret_cast<acc_t*>(shared_bytes), nets.frames, nets.predicted);
  const int64_t frames = nets.frames, fold = nets.fold, groups = nets.groups();
  for (int64_t n = blockIdx.x; n < clips; n += gridDim.x) {
    acc_t* d = descriptor + n * frames * fold;
    for (int64_t i = threadIdx.x; i < frames * fold; i += kThreads) {
      const int64_t t = i / fold, c = i % fold;
      const acc_t* piece = partials + ((n * frames + t) * chunks) * fold + c;
      acc_t sum = 0;
      for (int64_t chunk = 0; chunk < chunks; ++chunk) sum += piece[chunk * fold];
      d[i] = sum * inverse_positions;
    }
    __syncthreads();  // the block's writes to d are visible to all its threads
    net_forward_block(nets, d, s);
    for (int64_t g = threadIdx.x; g < groups; g += kThreads) offset[n * groups + g] = offset_of(nets, s, g);
    for (int64_t i = threadIdx.x; i < frames * groups; i += kThreads) {
      weight[n * frames * groups + i] = weight_of(nets, s, i / groups, i % groups);
    }
    __syncthreads();  // the scratch is reused by the next clip
  }
}

// One block a clip: the sums of its tiles into the gradients of its offsets and weights, the
// networks' backward, the clip's scratch (for the parameters' gradients) and, when x needs one,
// the descriptor's gradient divided by H*W.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
nets_backward_kernel(const acc_t* __restrict__ partials, const acc_t* __restrict__ descriptor, InterlaceNets<acc_t> nets,
                     int64_t group_tiles, acc_t inverse_positions, acc_t* __restrict__ scratch,
                     acc_t* __restrict__ descriptor_grad, int64_t clips) {
  TIN_DYNAMIC_SHARED(shared_bytes);
  const int64_t frames = nets.frames, fold = nets.fold, groups = nets.groups();
  const int64_t scratch_size = NetScratch<acc_t>::size(frames, nets.predicted);
  acc_t* shared = reinterpret_cast<acc_t*>(shared_bytes);
  const auto s = NetScratch<acc_t>::at(shared, frames, nets.predicted);
  acc_t* weight_grad = shared + scratch_size;  // (T, G)
  acc_t* offset_grad = weight_grad + frames * groups;  // (G)
  for (int64_t n = blockIdx.x; n < clips; n += gridDim.x) {
    for (int64_t i = threadIdx.x; i < groups * (frames + 1); i += kThreads) {
      sum_group_partial(partials, group_tiles, frames, groups, n, i / (frames + 1), i % (frames + 1), weight_grad,
                        offset_grad);
    }
    const acc_t* d = descriptor + n * frames * fold;
    net_forward_block(nets, d, s);  // starts and ends with the block in step
    for (int64_t j = threadIdx.x; j < nets.predicted; j += kThreads) s.logit_grad[j] = logit_grad_at(nets, s, offset_grad, j);
    for (int64_t i = threadIdx.x; i < nets.predicted * frames; i += kThreads) {
      const int64_t j = i / frames, t = i % frames;
      s.conv_grad[(1 + j) * frames + t] = weight_logit_grad_at(nets, s, weight_grad, j, t);
    }
    __syncthreads();
    for (int64_t i = threadIdx.x; i < frames; i += kThreads) s.hidden_grad[i] = hidden_grad_at(nets, s, i);
    __syncthreads();
    for (int64_t t = threadIdx.x; t < frames; t += kThreads) s.conv_grad[t] = offset_conv_grad_at(nets, s, t);
    __syncthreads();
    for (int64_t i = threadIdx.x; i < scratch_size; i += kThreads) scratch[n * scratch_size + i] = shared[i];
    if (descriptor_grad != nullptr) {
      for (int64_t i = threadIdx.x; i < frames * fold; i += kThreads) {
        descriptor_grad[n * frames * fold + i] = descriptor_grad_at(nets, s, i / fold, i % fold) * inverse_positions;
      }
    }
    __syncthreads();  // the shared memory is reused by the next clip
  }
}

template <typename acc_t>
struct ParameterGrads {
  acc_t* data[kNetParameters];
};

// One thread a parameter element: its gradient, the clips' contributions added in clip order.
template <typename acc_t>
__global__ void __launch_bounds__(kThreads)
parameter_grads_kernel(const acc_t* __restrict__ scratch, const acc_t* __restrict__ descriptor, InterlaceNets<acc_t> nets,
                       int64_t clips, ParameterGrads<acc_t> grads) {
  const int64_t elements = nets.parameter_elements();
  const int64_t scratch_size = NetScratch<acc_t>::size(nets.frames, nets.predicted);
  for (int64_t e = blockIdx.x * int64_t(kThreads) + threadIdx.x; e < elements; e += int64_t(gridDim.x) * kThreads) {
    acc_t sum = 0;
    for (int64_t n = 0; n < clips; ++n) {
      const auto s = NetScratch<acc_t>::at(const_cast<acc_t*>(scratch) + n * scratch_size, nets.frames, nets.predicted);
      sum += parameter_grad_at(nets, s, descriptor + n * nets.frames * nets.fold, e);
    }
    int index = 0;
    int64_t local = e;
    while (local >= nets.parameter_size(index)) local -= nets.parameter_size(index++);
    grads.data[index][local] = sum;
  }
}

// ----------------------------------------------------------------------------------- shift

// out[t] = x[t + step] in channels [0, fold), x[t - step] in [fold, 2 fold), x[t] elsewhere (zero
// outside the clip); one thread a unit of one frame.
template <typename scalar_t, int V>
__global__ void __launch_bounds__(kThreads)
shift_kernel(const scalar_t* __restrict__ x, scalar_t* __restrict__ out, Plan plan, int64_t fold, int64_t step) {
  const int64_t frame_units = plan.frame_size / V;
  const int64_t units = plan.clips * plan.frames * frame_units;
  for (int64_t i = blockIdx.x * int64_t(kThreads) + threadIdx.x; i < units; i += int64_t(gridDim.x) * kThreads) {
    const int64_t frame = i / frame_units;
    const int64_t q = (i - frame * frame_units) * V;
    const int64_t c = plan.channels_last ? q % plan.channels : q / plan.positions;
    const int64_t offset = c < fold ? step : (c < 2 * fold ? -step : 0);
    const int64_t t = frame % plan.frames + offset;
    const Pack<scalar_t, V> value = (t >= 0 && t < plan.frames)
                                        ? load<scalar_t, V>(x + (frame + offset) * plan.frame_size + q)
                                        : zeros<scalar_t, V>();
    store<scalar_t, V>(out + i * V, value);
  }
}

// ------------------------------------------------------------------------------ host side

// Calls launch(std::integral_constant<int, V>) with the plan's V.
template <typename scalar_t, typename Launch>
void with_vector(const Plan& plan, Launch&& launch) {
  constexpr int wide = static_cast<int>(16 / sizeof(scalar_t));
  if (plan.vector == wide) {
    launch(std::integral_constant<int, wide>{});
  } else {
    launch(std::integral_constant<int, 1>{});
  }
}

// Launches kernel on `blocks` blocks (capped: the kernels loop over the rest) unless there are none.
template <typename Kernel, typename... Args>
void launch(Kernel kernel, int64_t blocks, size_t shared_bytes, cudaStream_t stream, Args... args) {
  if (blocks <= 0) return;
  TIN_LAUNCH(kernel, grid_of(blocks), kThreads, shared_bytes, stream)(args...);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

void check_device(const at::Tensor& x, std::initializer_list<const at::Tensor*> others, const char* op) {
#ifndef TIN_CUDA_EMULATION
  TORCH_CHECK(x.is_cuda(), op, ": x must be a CUDA tensor");
#endif
  for (const at::Tensor* other : others) {
    TORCH_CHECK(other->device() == x.device(), op, ": every tensor must be on x's device ", x.device());
  }
}

at::ScalarType accumulation_type(const at::Tensor& x) { return at::toOpMathType(x.scalar_type()); }

template <typename scalar_t>
void launch_grad_x(const at::Tensor& grad, const at::opmath_type<scalar_t>* offset,
                   const at::opmath_type<scalar_t>* weight, const at::opmath_type<scalar_t>* descriptor_grad,
                   at::Tensor& grad_x, const FrameGeometry& geo, cudaStream_t stream) {
  const Plan plan = make_plan<scalar_t>(geo, {grad.const_data_ptr(), grad_x.const_data_ptr()});
  with_vector<scalar_t>(plan, [&](auto vector) {
    launch(interlace_grad_x_kernel<scalar_t, decltype(vector)::value>, plan.clips * plan.clip_tiles, 0, stream,
           grad.const_data_ptr<scalar_t>(), offset, weight, descriptor_grad, grad_x.mutable_data_ptr<scalar_t>(), plan);
  });
}

// The tiles' offset/weight partial sums (N, G, group_tiles, T+1).
template <typename scalar_t>
at::Tensor launch_group_sums(const at::Tensor& grad, const at::Tensor& x, const at::opmath_type<scalar_t>* offset,
                             const at::opmath_type<scalar_t>* weight, const FrameGeometry& geo, Plan& plan,
                             cudaStream_t stream) {
  using acc_t = at::opmath_type<scalar_t>;
  plan = make_plan<scalar_t>(geo, {grad.const_data_ptr(), x.const_data_ptr()});
  at::Tensor partials =
      at::empty({geo.clips, geo.groups, plan.group_tiles, geo.frames + 1}, x.options().dtype(accumulation_type(x)));
  if (partials.numel() == 0) return partials;
  const size_t shared = std::max(block_sums_bytes<acc_t, kChunk>(), block_sums_bytes<acc_t, 1>());
  with_vector<scalar_t>(plan, [&](auto vector) {
    launch(group_sums_kernel<scalar_t, decltype(vector)::value>, geo.clips * geo.groups * plan.group_tiles, shared,
           stream, grad.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>(), offset, weight,
           partials.mutable_data_ptr<acc_t>(), plan);
  });
  return partials;
}

size_t checked_shared_bytes(size_t bytes, const char* what) {
  TORCH_CHECK(bytes <= kMaxSharedBytes, "temporal_interlace: ", what, " needs ", bytes,
              " bytes of shared memory, more than the ", kMaxSharedBytes, " a CUDA block gets (T is too large)");
  return bytes;
}

}  // namespace

at::Tensor interlace_forward_cuda(const at::Tensor& x, const at::Tensor& offset, const at::Tensor& weight,
                                  int64_t num_segments, int64_t shift_channels) {
  const FrameGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  check_device(x, {&offset, &weight}, "interlace");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x, geo.memory_format());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_forward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, accumulation_type(x));
    const Plan plan = make_plan<scalar_t>(geo, {x.const_data_ptr(), out.const_data_ptr()});
    with_vector<scalar_t>(plan, [&](auto vector) {
      launch(interlace_forward_kernel<scalar_t, decltype(vector)::value>, plan.clips * plan.clip_tiles, 0, stream,
             x.const_data_ptr<scalar_t>(), offset_acc.const_data_ptr<acc_t>(), weight_acc.const_data_ptr<acc_t>(),
             out.mutable_data_ptr<scalar_t>(), plan);
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> interlace_backward_cuda(const at::Tensor& grad_out, const at::Tensor& x,
                                                                       const at::Tensor& offset,
                                                                       const at::Tensor& weight, int64_t num_segments,
                                                                       int64_t shift_channels,
                                                                       std::array<bool, 3> output_mask) {
  const FrameGeometry geo = interlace_geometry(x, offset, weight, num_segments, shift_channels);
  check_device(x, {&offset, &weight, &grad_out}, "interlace");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "interlace: grad_out must have the shape of x");
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  const bool group_grads = output_mask[1] || output_mask[2];
  const auto acc_options = x.options().dtype(accumulation_type(x));
  at::Tensor grad_x = output_mask[0] ? at::empty_like(x, geo.memory_format()) : x.new_empty({0});
  // The sums run where there is something to sum; elsewhere the gradients are zero.
  const bool sums_run = group_grads && geo.shifted > 0 && x.numel() > 0;
  const auto make = [&](at::IntArrayRef sizes) { return sums_run ? at::empty(sizes, acc_options) : at::zeros(sizes, acc_options); };
  at::Tensor offset_grad = make({group_grads ? geo.clips : 0, geo.groups});
  at::Tensor weight_grad = make({group_grads ? geo.clips : 0, geo.frames, geo.groups});
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  if (x.numel() > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "interlace_backward_cuda", [&] {
      using acc_t = at::opmath_type<scalar_t>;
      const auto [offset_acc, weight_acc] = opmath_offset_and_weight(offset, weight, accumulation_type(x));
      const acc_t* offsets = offset_acc.const_data_ptr<acc_t>();
      const acc_t* weights = weight_acc.const_data_ptr<acc_t>();
      if (sums_run) {
        Plan plan{};
        const at::Tensor partials = launch_group_sums<scalar_t>(grad, x, offsets, weights, geo, plan, stream);
        const int64_t sums = geo.clips * geo.groups * (geo.frames + 1);
        launch(finish_group_sums_kernel<acc_t>, ceil_div(sums, kThreads), 0, stream, partials.const_data_ptr<acc_t>(),
               offset_grad.mutable_data_ptr<acc_t>(), weight_grad.mutable_data_ptr<acc_t>(), plan);
      }
      if (output_mask[0]) launch_grad_x<scalar_t>(grad, offsets, weights, nullptr, grad_x, geo, stream);
    });
  }
  return {grad_x, output_mask[1] ? offset_grad.to(offset.scalar_type()) : offset.new_empty({0}),
          output_mask[2] ? weight_grad.to(weight.scalar_type()) : weight.new_empty({0})};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> temporal_interlace_cuda(
    const at::Tensor& x, at::TensorList parameters, int64_t num_segments, int64_t shift_channels, bool reverse,
    double offset_scale) {
  const std::vector<at::Tensor> params = net_parameters(x, parameters, num_segments, shift_channels, reverse);
  const FrameGeometry geo =
      frame_geometry(x, num_segments, shift_channels, block_groups(parameters, reverse), "temporal_interlace");
  check_device(x, {}, "temporal_interlace");
  const c10::cuda::CUDAGuard guard(x.device());
  const auto acc_options = x.options().dtype(accumulation_type(x));
  at::Tensor out = at::empty_like(x, geo.memory_format());
  at::Tensor descriptor = at::empty({geo.clips, geo.frames, geo.shifted}, acc_options);
  at::Tensor offset = at::empty({geo.clips, geo.groups}, acc_options);
  at::Tensor weight = at::empty({geo.clips, geo.frames, geo.groups}, acc_options);
  if (geo.clips == 0) return {out, offset, weight, descriptor};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_interlace_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const InterlaceNets<acc_t> nets = interlace_nets<acc_t>(params, geo.shifted, geo.frames, reverse, offset_scale);
    // 1. the descriptor's partial sums over position chunks
    const FrameGeometry described{geo.clips, geo.frames, geo.channels, geo.positions, geo.shifted, 1, geo.channels_last};
    const Plan plan = make_plan<scalar_t>(described, {x.const_data_ptr()});
    const int64_t chunks = std::max<int64_t>(1, ceil_div(geo.positions, kChunkPositions));
    at::Tensor partials = at::empty({geo.clips * geo.frames, chunks, geo.shifted}, acc_options);
    with_vector<scalar_t>(plan, [&](auto vector) {
      launch(descriptor_kernel<scalar_t, decltype(vector)::value>, geo.clips * geo.frames * chunks,
             descriptor_shared_bytes<acc_t>(plan), stream, x.const_data_ptr<scalar_t>(),
             partials.mutable_data_ptr<acc_t>(), plan, chunks);
    });
    // 2. the networks, one block a clip
    const size_t shared =
        checked_shared_bytes(sizeof(acc_t) * NetScratch<acc_t>::size(geo.frames, nets.predicted), "the networks");
    launch(nets_forward_kernel<acc_t>, geo.clips, shared, stream, partials.const_data_ptr<acc_t>(), nets, chunks,
           acc_t(1) / static_cast<acc_t>(geo.positions), descriptor.mutable_data_ptr<acc_t>(),
           offset.mutable_data_ptr<acc_t>(), weight.mutable_data_ptr<acc_t>(), geo.clips);
    // 3. the interlace
    const Plan interlaced = make_plan<scalar_t>(geo, {x.const_data_ptr(), out.const_data_ptr()});
    with_vector<scalar_t>(interlaced, [&](auto vector) {
      launch(interlace_forward_kernel<scalar_t, decltype(vector)::value>, interlaced.clips * interlaced.clip_tiles, 0,
             stream, x.const_data_ptr<scalar_t>(), offset.const_data_ptr<acc_t>(), weight.const_data_ptr<acc_t>(),
             out.mutable_data_ptr<scalar_t>(), interlaced);
    });
  });
  return {out, offset, weight, descriptor};
}

std::tuple<at::Tensor, std::vector<at::Tensor>> temporal_interlace_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& descriptor, const at::Tensor& offset,
    const at::Tensor& weight, at::TensorList parameters, int64_t num_segments, int64_t shift_channels, bool reverse,
    double offset_scale, std::array<bool, 2> output_mask) {
  const std::vector<at::Tensor> params = net_parameters(x, parameters, num_segments, shift_channels, reverse);
  const FrameGeometry geo =
      frame_geometry(x, num_segments, shift_channels, block_groups(parameters, reverse), "temporal_interlace");
  check_device(x, {&grad_out, &descriptor, &offset, &weight}, "temporal_interlace");
  TORCH_CHECK(grad_out.sizes() == x.sizes(), "temporal_interlace: grad_out must have the shape of x");
  const auto acc_type = accumulation_type(x);
  check_block_intermediates(descriptor, offset, weight, geo, acc_type);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool need_x = output_mask[0], need_parameters = output_mask[1];
  const at::Tensor grad = grad_out.contiguous(geo.memory_format());
  const auto acc_options = x.options().dtype(acc_type);
  at::Tensor grad_x = need_x ? at::empty_like(x, geo.memory_format()) : x.new_empty({0});
  std::vector<at::Tensor> parameter_grads;
  if (need_parameters) {
    for (const at::Tensor& parameter : params) {
      parameter_grads.push_back(geo.clips > 0 ? at::empty_like(parameter) : at::zeros_like(parameter));
    }
  }
  if (geo.clips == 0) return {grad_x, parameter_grads};
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_interlace_backward_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const InterlaceNets<acc_t> nets = interlace_nets<acc_t>(params, geo.shifted, geo.frames, reverse, offset_scale);
    const acc_t* offsets = offset.const_data_ptr<acc_t>();
    const acc_t* weights = weight.const_data_ptr<acc_t>();
    // 1. the offset and weight sums of every tile
    Plan plan{};
    const at::Tensor partials = launch_group_sums<scalar_t>(grad, x, offsets, weights, geo, plan, stream);
    // 2. the networks' backward, one block a clip
    const int64_t scratch_size = NetScratch<acc_t>::size(geo.frames, nets.predicted);
    at::Tensor scratch = at::empty({geo.clips, scratch_size}, acc_options);
    at::Tensor descriptor_grad = at::empty({need_x ? geo.clips : 0, geo.frames, geo.shifted}, acc_options);
    const size_t shared = checked_shared_bytes(
        sizeof(acc_t) * (scratch_size + geo.groups * (geo.frames + 1)), "the networks' backward");
    launch(nets_backward_kernel<acc_t>, geo.clips, shared, stream, partials.const_data_ptr<acc_t>(),
           descriptor.const_data_ptr<acc_t>(), nets, plan.group_tiles, acc_t(1) / static_cast<acc_t>(geo.positions),
           scratch.mutable_data_ptr<acc_t>(), need_x ? descriptor_grad.mutable_data_ptr<acc_t>() : nullptr, geo.clips);
    // 3. the parameters' gradients
    if (need_parameters) {
      ParameterGrads<acc_t> outputs{};
      for (int index = 0; index < kNetParameters; ++index) {
        outputs.data[index] = parameter_grads[index].mutable_data_ptr<acc_t>();
      }
      launch(parameter_grads_kernel<acc_t>, ceil_div(nets.parameter_elements(), kThreads), 0, stream,
             scratch.const_data_ptr<acc_t>(), descriptor.const_data_ptr<acc_t>(), nets, geo.clips, outputs);
    }
    // 4. grad_x, the descriptor's gradient included
    if (need_x) {
      launch_grad_x<scalar_t>(grad, offsets, weights, descriptor_grad.const_data_ptr<acc_t>(), grad_x, geo, stream);
    }
  });
  return {grad_x, parameter_grads};
}

namespace {

at::Tensor shift_cuda(const at::Tensor& x, int64_t num_segments, int64_t fold, int64_t step) {
  const FrameGeometry geo = shift_geometry(x, num_segments, fold);
  check_device(x, {}, "temporal_shift");
  const c10::cuda::CUDAGuard guard(x.device());
  at::Tensor out = at::empty_like(x, geo.memory_format());
  if (out.numel() == 0) return out;
  const cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, x.scalar_type(), "temporal_shift_cuda", [&] {
    // Vectors must not straddle a channel class: one group of `fold` channels decides it.
    FrameGeometry classes = geo;
    classes.shifted = fold;
    const Plan plan = make_plan<scalar_t>(classes, {x.const_data_ptr(), out.const_data_ptr()});
    const int64_t units = geo.clips * geo.frames * (geo.frame_size() / plan.vector);
    with_vector<scalar_t>(plan, [&](auto vector) {
      launch(shift_kernel<scalar_t, decltype(vector)::value>, ceil_div(units, kThreads), 0, stream,
             x.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), plan, fold, step);
    });
  });
  return out;
}

}  // namespace

at::Tensor temporal_shift_cuda(const at::Tensor& x, int64_t num_segments, int64_t shift_channels) {
  return shift_cuda(x, num_segments, shift_channels, 1);
}

at::Tensor temporal_shift_backward_cuda(const at::Tensor& grad_out, int64_t num_segments, int64_t shift_channels) {
  return shift_cuda(grad_out.contiguous(grad_out.suggest_memory_format()), num_segments, shift_channels, -1);
}

}  // namespace tin

#ifndef TIN_CUDA_EMULATION
TORCH_LIBRARY_IMPL(tin, CUDA, m) {
  m.impl("interlace", &tin::interlace_forward_cuda);
  m.impl("interlace_backward", &tin::interlace_backward_cuda);
  m.impl("temporal_interlace", &tin::temporal_interlace_cuda);
  m.impl("temporal_interlace_backward", &tin::temporal_interlace_backward_cuda);
  m.impl("temporal_shift", &tin::temporal_shift_cuda);
  m.impl("temporal_shift_backward", &tin::temporal_shift_backward_cuda);
}
#endif
