// Grouped 3x3 convolution, stride 1, zero padding 1, no bias, on NHWC tensors whose groups have as many output as
// input channels (cg of each). Raw-pointer kernels; the PyTorch bindings are in bindings.cpp.
#pragma once

#include <cstdint>

namespace mgcnn_kernels {

// The instruction set the float32 kernels were compiled for: "avx512", "avx2" or "scalar".
const char* isa();
// Lanes of the float32 vectors (16, 8 or 1).
int vector_lanes();

// y = add + conv(x, w) (add null: y = conv(x, w)): x, add and y (N, H, W, C) contiguous, w (C, cg, 3, 3)
// contiguous in this convolution's orientation.
void conv_f32(const float* x, const float* w, const float* add, float* y, int64_t N, int H, int W, int C, int cg);
void conv_f64(const double* x, const double* w, const double* add, double* y, int64_t N, int H, int W, int C,
              int cg);

// dw (C, cg, 3, 3) = sum over pixels of dy[n, h, w, o] x[n, h + kh - 1, w + kw - 1, group(o) cg + i], reduced in an
// order fixed by the shape (bitwise reproducible with any number of threads).
void wgrad_f32(const float* x, const float* dy, float* dw, int64_t N, int H, int W, int C, int cg);
void wgrad_f64(const double* x, const double* dy, double* dw, int64_t N, int H, int W, int C, int cg);

}  // namespace mgcnn_kernels
