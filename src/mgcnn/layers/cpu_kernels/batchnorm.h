// Training-mode BatchNorm + ReLU (+ a residual addition) on NHWC tensors, seen as (M, C) rows: M = N H W pixels of C
// contiguous channels. Raw-pointer kernels; the PyTorch bindings are in bindings.cpp.
#pragma once

#include <cstdint>

namespace mgcnn_kernels {

// Forward: the batch mean and biased variance of every channel of x (one read pass), then
//   y = relu(x a + b) (+ res),  a = weight invstd, b = bias - mean a      (one read/write pass)
// res may be null. Writes mean[C] and invstd[C] = 1 / sqrt(var + eps). Where running_mean/running_var are not null
// they are updated as torch.nn.BatchNorm2d does: r <- (1 - momentum) r + momentum s, with the unbiased variance
// var M / (M - 1) for running_var. Needs M > 1. Statistics are reduced in an order fixed by (M, C).
void bn_relu_fwd_f32(const float* x, const float* res, const float* weight, const float* bias, float* y, float* mean,
                     float* invstd, float* running_mean, float* running_var, int64_t M, int C, double momentum,
                     double eps);
void bn_relu_fwd_f64(const double* x, const double* res, const double* weight, const double* bias, double* y,
                     double* mean, double* invstd, double* running_mean, double* running_var, int64_t M, int C,
                     double momentum, double eps);

// Backward of the forward above for the output gradient g (M, C): with gz = g [x a + b > 0] (the ReLU mask),
//   dbias = sum gz,  dweight = invstd sum gz (x - mean)                       (one read pass of x and g)
//   dx = a gz - (a / M) (dbias + invstd (x - mean) dweight)                    (one read/write pass; dx may be null)
// The residual's gradient is g itself.
void bn_relu_bwd_f32(const float* x, const float* g, const float* weight, const float* bias, const float* mean,
                     const float* invstd, float* dx, float* dweight, float* dbias, int64_t M, int C);
void bn_relu_bwd_f64(const double* x, const double* g, const double* weight, const double* bias, const double* mean,
                     const double* invstd, double* dx, double* dweight, double* dbias, int64_t M, int C);

}  // namespace mgcnn_kernels
