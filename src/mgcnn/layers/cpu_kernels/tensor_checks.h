// The argument check every kernel binding makes of its NHWC tensors (one definition for all of them).
#pragma once

#include <ATen/ATen.h>

namespace mgcnn_kernels {

// t must be a contiguous (N, H, W, C) float32 or float64 CPU tensor whose sizes fit the kernels' int indices.
inline void check_nhwc(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.dim() == 4, name, " must be (N, H, W, C)");
  TORCH_CHECK(t.is_contiguous(), name, " must be contiguous NHWC (a channels-last tensor permuted to N, H, W, C)");
  TORCH_CHECK(t.scalar_type() == at::kFloat || t.scalar_type() == at::kDouble, name, " must be float32 or float64");
  TORCH_CHECK(t.size(1) < (1 << 30) && t.size(2) < (1 << 30) && t.size(3) < (1 << 30), name, " is too large");
}

}  // namespace mgcnn_kernels
