// Depthwise 3x3 convolution, stride 2, zero padding 1, no bias, channel multiplier M (C inputs, C M outputs; output
// channel c M + j reads input channel c), on NHWC tensors: MgNet's and MGiaD's resolution transfers Pi and R.
// The tensor-level entry points check their arguments; the PyTorch bindings are in bindings.cpp.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>

namespace mgcnn_kernels {

// y (N, ceil(H/2), ceil(W/2), C M) = conv(x, w): x (N, H, W, C) contiguous, w (C M, 1, 3, 3).
at::Tensor dws2_forward(const at::Tensor& x, const at::Tensor& w);
// dx (N, H, W, C) of an H x W input with C channels from the output gradient dy (N, ceil(H/2), ceil(W/2), C M) (contiguous) and w (C M, 1, 3, 3).
at::Tensor dws2_input_grad(const at::Tensor& dy, const at::Tensor& w, int64_t H, int64_t W, int64_t C);
// dw (C M, 1, 3, 3) from x (N, H, W, C) and dy (N, ceil(H/2), ceil(W/2), C M), both contiguous; reduced in an order
// fixed by the shape (bitwise reproducible with any number of threads).
at::Tensor dws2_weight_grad(const at::Tensor& x, const at::Tensor& dy);

}  // namespace mgcnn_kernels
