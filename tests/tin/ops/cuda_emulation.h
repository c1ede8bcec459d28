// Runs the CUDA kernels of csrc/temporal_cuda.cu on CPU threads, so that machines without a GPU can
// test them: compiled as C++ with TIN_CUDA_EMULATION defined, that file takes its CUDA vocabulary
// from here.
//
// A launch runs its blocks one after another on blockDim OS threads, one per CUDA thread, which
// meet at a barrier for __syncthreads and per warp for shuffles; shared memory is one buffer per
// launch. Threads really run concurrently, so a missing __syncthreads shows up as a race, and a
// barrier that not every thread of the block (or warp) reaches -- divergent __syncthreads or
// shuffles -- fails the launch with an error after a timeout instead of hanging. The grid is capped
// at a few blocks, so the kernels' grid-stride loops walk the rest as they do for huge grids.
#pragma once

#include <c10/core/Device.h>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstring>
#include <exception>
#include <functional>
#include <memory>
#include <mutex>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};

inline thread_local dim3 threadIdx, blockIdx, blockDim, gridDim;

using cudaStream_t = void*;

namespace c10::cuda {
struct CUDAGuard {
  explicit CUDAGuard(c10::Device) {}
};
inline cudaStream_t getCurrentCUDAStream() { return nullptr; }
}  // namespace c10::cuda

#define C10_CUDA_KERNEL_LAUNCH_CHECK() ((void)0)

namespace tin_emulation {

constexpr unsigned kMaxGrid = 3;  // blocks a launch runs at most; the kernels' grid-stride loops do the rest
constexpr std::chrono::seconds kBarrierTimeout{60};

// A reusable barrier that fails every waiter, instead of hanging, once one wait times out.
class Barrier {
 public:
  explicit Barrier(int count) : count_(count) {}

  void wait() {
    std::unique_lock<std::mutex> lock(mutex_);
    if (broken_) throw std::runtime_error(kBroken);
    const uint64_t generation = generation_;
    if (++waiting_ == count_) {
      waiting_ = 0;
      ++generation_;
      changed_.notify_all();
      return;
    }
    if (!changed_.wait_for(lock, kBarrierTimeout, [&] { return generation_ != generation || broken_; })) {
      broken_ = true;
      changed_.notify_all();
      throw std::runtime_error(kBroken);
    }
    if (broken_) throw std::runtime_error(kBroken);
  }

  void breakdown() {
    std::lock_guard<std::mutex> lock(mutex_);
    broken_ = true;
    changed_.notify_all();
  }

 private:
  static constexpr const char* kBroken =
      "emulated CUDA: a barrier timed out: not every thread of the block (or warp) reached the same "
      "__syncthreads (or shuffle)";
  std::mutex mutex_;
  std::condition_variable changed_;
  const int count_;
  int waiting_ = 0;
  uint64_t generation_ = 0;
  bool broken_ = false;
};

struct Warp {
  Warp() : barrier(32) {}
  Barrier barrier;
  uint64_t slots[32] = {};
};

struct Launch {
  Launch(unsigned threads, size_t shared_bytes)
      : block(static_cast<int>(threads)), shared(shared_bytes / 16 + 1), warps(threads / 32) {
    for (auto& warp : warps) warp = std::make_unique<Warp>();
  }
  Barrier block;
  std::vector<__int128> shared;  // 16-byte aligned
  std::vector<std::unique_ptr<Warp>> warps;
};

inline thread_local Launch* current = nullptr;

inline void syncthreads() { current->block.wait(); }

inline unsigned char* dynamic_shared() { return reinterpret_cast<unsigned char*>(current->shared.data()); }

template <typename T>
T shfl_xor(unsigned mask, T value, int lane_mask) {
  static_assert(sizeof(T) <= sizeof(uint64_t), "shuffles of up to 8 bytes");
  if (mask != 0xffffffffu) throw std::runtime_error("emulated CUDA: only full-warp shuffles are emulated");
  Warp& warp = *current->warps[threadIdx.x / 32];
  const unsigned lane = threadIdx.x % 32;
  std::memcpy(&warp.slots[lane], &value, sizeof(T));
  warp.barrier.wait();
  T other;
  std::memcpy(&other, &warp.slots[lane ^ static_cast<unsigned>(lane_mask)], sizeof(T));
  warp.barrier.wait();  // every lane has read before the slots are written again
  return other;
}

// Runs body() as every thread of every block of a grid of `blocks` blocks (capped at kMaxGrid).
inline void run(unsigned blocks, unsigned threads, size_t shared_bytes, const std::function<void()>& body) {
  if (threads % 32 != 0) throw std::runtime_error("emulated CUDA: blocks of whole warps only");
  const unsigned grid = std::min(blocks, kMaxGrid);
  Launch launch(threads, shared_bytes);
  Barrier block_end(static_cast<int>(threads));
  std::mutex error_mutex;
  std::exception_ptr error;
  std::vector<std::thread> workers;
  for (unsigned t = 0; t < threads; ++t) {
    workers.emplace_back([&, t] {
      threadIdx = {t, 0, 0};
      blockDim = {threads, 1, 1};
      gridDim = {grid, 1, 1};
      current = &launch;
      try {
        for (unsigned b = 0; b < grid; ++b) {
          blockIdx = {b, 0, 0};
          body();
          block_end.wait();  // the block's threads are done before the shared memory is reused
        }
      } catch (...) {
        std::lock_guard<std::mutex> lock(error_mutex);
        if (!error) error = std::current_exception();
        launch.block.breakdown();
        block_end.breakdown();
        for (auto& warp : launch.warps) warp->barrier.breakdown();
      }
    });
  }
  for (auto& worker : workers) worker.join();
  if (error) std::rethrow_exception(error);
}

template <typename... Params>
struct Launcher {
  void (*kernel)(Params...);
  unsigned blocks, threads;
  size_t shared_bytes;

  template <typename... Args>
  void operator()(Args... args) const {
    run(blocks, threads, shared_bytes, [&] { kernel(args...); });
  }
};

template <typename... Params>
Launcher<Params...> launcher(void (*kernel)(Params...), unsigned blocks, unsigned threads, size_t shared_bytes) {
  return {kernel, blocks, threads, shared_bytes};
}

}  // namespace tin_emulation

#define __syncthreads() tin_emulation::syncthreads()
#define __shfl_xor_sync(mask, value, lane_mask) tin_emulation::shfl_xor(mask, value, lane_mask)
#define TIN_LAUNCH(kernel, blocks, threads, shared_bytes, stream) \
  tin_emulation::launcher(kernel, blocks, threads, shared_bytes)
#define TIN_DYNAMIC_SHARED(name) unsigned char* name = tin_emulation::dynamic_shared()
