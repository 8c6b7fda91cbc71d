// MGiaD's in-channel transfers on NHWC tensors seen as (M, C) rows (M = N H W pixels): 1x1 convolutions with two
// channels per group, which mix the channel pairs (2j, 2j+1). w holds the C weights in the conv's order: w[2j + k].
// Raw-pointer kernels; the PyTorch bindings are in bindings.cpp.
#pragma once

#include <cstdint>

namespace mgcnn_kernels {

// Restriction R^ / Pi^ (C -> C/2):  y[m, j] = w[2j] x[m, 2j] + w[2j+1] x[m, 2j+1]      x (M, C), y (M, C/2)
// Prolongation P^ (C/2 -> C):       y[m, 2j+k] = w[2j+k] u[m, j] (+ add[m, 2j+k])      u (M, C/2), y (M, C)
// C is even. add may be null.
template <typename T> void pair_restrict(const T* x, const T* w, T* y, int64_t M, int C);
template <typename T> void pair_prolong(const T* u, const T* w, const T* add, T* y, int64_t M, int C);

// Backward of the restriction for its output gradient g (M, C/2) and input x (M, C), in one pass:
//   gx[m, 2j+k] = w[2j+k] g[m, j]   (gx may be null),   gw[2j+k] = sum_m g[m, j] x[m, 2j+k]
// Backward of the prolongation for its output gradient g (M, C) and input u (M, C/2), in one pass:
//   gu[m, j] = w[2j] g[m, 2j] + w[2j+1] g[m, 2j+1]   (gu may be null),   gw[2j+k] = sum_m u[m, j] g[m, 2j+k]
// gw is reduced in an order fixed by (M, C): bitwise reproducible with any number of threads.
template <typename T> void pair_restrict_bwd(const T* g, const T* x, const T* w, T* gx, T* gw, int64_t M, int C);
template <typename T> void pair_prolong_bwd(const T* g, const T* u, const T* w, T* gu, T* gw, int64_t M, int C);

}  // namespace mgcnn_kernels
