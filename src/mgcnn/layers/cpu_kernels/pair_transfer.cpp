// MGiaD's in-channel transfers (1x1 convolutions over channel pairs) on NHWC tensors: see pair_transfer.h.
//
// Why: they are pure memory passes (2 multiply-adds per output), but the stock grouped 1x1 convolution pads every
// 2-channel group to a whole vector, and the elementwise formulation of mgcnn.layers.transfer needs several passes
// over strided views (products, a pair sum, and for the weight gradient a product tensor per tap reduced afterwards).
// Here every direction is one pass: forward reads the input once and writes the output once; backward reads the
// output gradient and the saved input once each, writes the input gradient, and accumulates the weight gradient in
// registers on the way.
//
// Vectorisation is left to the compiler (-O3 -march=native): the loops over the channels of a row are unit-stride in
// the pair index j with an interleaved (2j, 2j+1) access, which GCC turns into loads/stores plus permutes.
// The weight gradient: rows are cut into chunks whose size depends on C only, each chunk accumulates its partial
// sums in row order (in the input's precision, over at most CHUNK_ELEMS / C rows), and the chunks' partials are
// added in chunk order in float64: deterministic, and as accurate as a blocked GEMM reduction.

#include "pair_transfer.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <vector>

namespace mgcnn_kernels {
namespace {

constexpr int64_t CHUNK_ELEMS = 1 << 14;    // elements of the wide tensor per weight-gradient chunk
constexpr int64_t MIN_TASK_ELEMS = 1 << 16;  // below this many elements per task, one thread does the work

inline int64_t grain(int C) { return std::max<int64_t>(1, MIN_TASK_ELEMS / std::max(C, 1)); }

template <typename T>
inline void restrict_row(const T* __restrict x, const T* __restrict w0, const T* __restrict w1, T* __restrict y,
                         int C2) {
  for (int j = 0; j < C2; ++j) y[j] = w0[j] * x[2 * j] + w1[j] * x[2 * j + 1];
}

template <typename T>
inline void prolong_row(const T* __restrict u, const T* __restrict w0, const T* __restrict w1, T* __restrict y,
                        int C2) {
  for (int j = 0; j < C2; ++j) {
    y[2 * j] = w0[j] * u[j];
    y[2 * j + 1] = w1[j] * u[j];
  }
}

template <typename T>
inline void prolong_add_row(const T* __restrict u, const T* __restrict w0, const T* __restrict w1,
                            const T* __restrict add, T* __restrict y, int C2) {
  for (int j = 0; j < C2; ++j) {
    y[2 * j] = add[2 * j] + w0[j] * u[j];
    y[2 * j + 1] = add[2 * j + 1] + w1[j] * u[j];
  }
}

// a0[j] += n[j] wide[2j], a1[j] += n[j] wide[2j+1]: the weight gradient's terms of one row (n: the narrow tensor)
template <typename T>
inline void wgrad_row(const T* __restrict n, const T* __restrict wide, T* __restrict a0, T* __restrict a1, int C2) {
  for (int j = 0; j < C2; ++j) {
    a0[j] += n[j] * wide[2 * j];
    a1[j] += n[j] * wide[2 * j + 1];
  }
}

// The weights split by tap: w0[j] = w[2j], w1[j] = w[2j+1] (unit-stride operands for the row loops).
template <typename T>
struct Taps {
  std::vector<T> s;
  const T* w0;
  const T* w1;
  Taps(const T* w, int C2) : s(2 * static_cast<size_t>(C2)) {
    for (int j = 0; j < C2; ++j) {
      s[j] = w[2 * j];
      s[C2 + j] = w[2 * j + 1];
    }
    w0 = s.data();
    w1 = s.data() + C2;
  }
};

// For every chunk of rows: row(m, a0, a1) on its rows in order into zeroed partials; then gw from the chunks in order.
template <typename T, typename Row>
void reduce_chunks(int64_t M, int C, T* gw, Row&& row) {
  const int C2 = C / 2;
  const int64_t rows = std::max<int64_t>(1, CHUNK_ELEMS / C), count = (M + rows - 1) / rows;
  std::vector<T> part(static_cast<size_t>(count) * C, T(0));
  at::parallel_for(0, count, std::max<int64_t>(1, grain(C) / rows), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      T* a0 = part.data() + static_cast<size_t>(k) * C;
      for (int64_t m = k * rows, m1 = std::min(M, (k + 1) * rows); m < m1; ++m) row(m, a0, a0 + C2);
    }
  });
  for (int j = 0; j < C2; ++j) {
    double s0 = 0.0, s1 = 0.0;
    for (int64_t k = 0; k < count; ++k) {
      s0 += static_cast<double>(part[static_cast<size_t>(k) * C + j]);
      s1 += static_cast<double>(part[static_cast<size_t>(k) * C + C2 + j]);
    }
    gw[2 * j] = static_cast<T>(s0);
    gw[2 * j + 1] = static_cast<T>(s1);
  }
}

// Backward of either transfer in one pass: the weight gradient gw[2j+k] = sum_m narrow[m, j] wide[m, 2j+k] and, where
// out is not null, the input gradient: the expansion of `narrow` (EXPAND: the restriction, narrow = g, out = gx) or
// the pair sum of `wide` (the prolongation, wide = g, out = gu).
template <typename T, bool EXPAND>
void pair_bwd(const T* narrow, const T* wide, const T* w, T* out, T* gw, int64_t M, int C) {
  const int C2 = C / 2;
  const Taps<T> t(w, C2);
  reduce_chunks(M, C, gw, [&](int64_t m, T* a0, T* a1) {
    if (out) {
      if constexpr (EXPAND)
        prolong_row(narrow + m * C2, t.w0, t.w1, out + m * C, C2);
      else
        restrict_row(wide + m * C, t.w0, t.w1, out + m * C2, C2);
    }
    wgrad_row(narrow + m * C2, wide + m * C, a0, a1, C2);
  });
}

}  // namespace

template <typename T>
void pair_restrict(const T* x, const T* w, T* y, int64_t M, int C) {
  const int C2 = C / 2;
  const Taps<T> t(w, C2);
  at::parallel_for(0, M, grain(C), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) restrict_row(x + m * C, t.w0, t.w1, y + m * C2, C2);
  });
}

template <typename T>
void pair_prolong(const T* u, const T* w, const T* add, T* y, int64_t M, int C) {
  const int C2 = C / 2;
  const Taps<T> t(w, C2);
  at::parallel_for(0, M, grain(C), [&](int64_t b, int64_t e) {
    for (int64_t m = b; m < e; ++m) {
      if (add)
        prolong_add_row(u + m * C2, t.w0, t.w1, add + m * C, y + m * C, C2);
      else
        prolong_row(u + m * C2, t.w0, t.w1, y + m * C, C2);
    }
  });
}

template <typename T>
void pair_restrict_bwd(const T* g, const T* x, const T* w, T* gx, T* gw, int64_t M, int C) {
  pair_bwd<T, true>(g, x, w, gx, gw, M, C);
}

template <typename T>
void pair_prolong_bwd(const T* g, const T* u, const T* w, T* gu, T* gw, int64_t M, int C) {
  pair_bwd<T, false>(u, g, w, gu, gw, M, C);
}

#define MGK_PAIR_INSTANTIATE(T)                                                                  \
  template void pair_restrict<T>(const T*, const T*, T*, int64_t, int);                          \
  template void pair_prolong<T>(const T*, const T*, const T*, T*, int64_t, int);                 \
  template void pair_restrict_bwd<T>(const T*, const T*, const T*, T*, T*, int64_t, int);        \
  template void pair_prolong_bwd<T>(const T*, const T*, const T*, T*, T*, int64_t, int);
MGK_PAIR_INSTANTIATE(float)
MGK_PAIR_INSTANTIATE(double)
#undef MGK_PAIR_INSTANTIATE

}  // namespace mgcnn_kernels
