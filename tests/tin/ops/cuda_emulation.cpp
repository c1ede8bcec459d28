// The CUDA kernels of csrc/temporal_cuda.cu, compiled as C++ against cuda_emulation.h and registered
// for CPU tensors as the operators tin_emulated::* (same schemas as tin::*, no autograd), for the
// tests that compare them with the CPU kernels on machines without a GPU.
#include "cuda_emulation.h"
// clang-format off: the emulation header must come first
#include "temporal_cuda.cu"
// clang-format on

TORCH_LIBRARY(tin_emulated, m) {
  for (const char* schema : tin::kSchemas) m.def(schema);
}

TORCH_LIBRARY_IMPL(tin_emulated, CPU, m) {
  m.impl("interlace", &tin::interlace_forward_cuda);
  m.impl("interlace_backward", &tin::interlace_backward_cuda);
  m.impl("temporal_interlace", &tin::temporal_interlace_cuda);
  m.impl("temporal_interlace_backward", &tin::temporal_interlace_backward_cuda);
  m.impl("temporal_shift", &tin::temporal_shift_cuda);
  m.impl("temporal_shift_backward", &tin::temporal_shift_backward_cuda);
}
