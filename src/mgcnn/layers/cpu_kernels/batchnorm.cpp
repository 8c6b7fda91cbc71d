// Training-mode BatchNorm + ReLU (+ residual) kernels for NHWC tensors: x is (M, C), M = N H W rows of C channels.
//
// Why: in a training step of MGiaD on one CPU thread the passes over memory around the convolutions (BatchNorm's
// statistics, normalisation and backward, the ReLU and its mask, the residual addition) take as long as the
// convolutions. Stock PyTorch runs them as separate kernels, each reading (and writing) whole activations; here the
// forward is one read pass for the statistics and one read/write pass for relu(bn(x)) (+ res), the backward one
// read pass of x and the gradient for the two reductions and one read/write pass for dx, with the ReLU mask
// recomputed from x on the fly (nothing but x is saved).
//
// Maths (per channel c; xm = x - mean, a = weight invstd, z = xm a + bias):
//   mean = sum x / M,  var = sum xm^2 / M (biased),  invstd = 1 / sqrt(var + eps)
//   y = max(z, 0) (+ res)
//   gz = g [z > 0],  dbias = sum gz,  dweight = invstd sum gz xm
//   dx = a gz - (a / M) dbias - (a invstd^2 / M) (sum gz xm) xm
// The statistics are accumulated in float64 from a per-channel shift (the first row), in one pass:
// var = E[(x - K)^2] - E[x - K]^2 loses nothing that matters in float64.
//
// Reductions are deterministic: rows are cut into chunks whose size depends on C only; each chunk's partial sums are
// accumulated in row order and the chunks are added in chunk order, so two runs (with any number of threads) are
// bitwise equal. The elementwise passes run over rows with at::parallel_for.
// float32 uses AVX-512 or AVX2 + FMA where compiled for (a channel vector of 16 or 8 lanes, the last one masked when
// VL does not divide C); float64 (and float32 without those instruction sets) runs plain loops.

#include "batchnorm.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <cmath>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mgcnn_kernels {
namespace {

// ------------------------------------------------------------------------------------------- vector primitives
#if defined(__AVX512F__) && defined(__AVX512DQ__)
#define MGK_BN_SIMD 1
constexpr int VL = 16;
constexpr int JB_MAX = 4;  // channel vectors accumulated in registers at a time (4 float64 accumulators each)
using vf = __m512;
using vd = __m512d;  // VL / 2 float64 lanes
using vmask = __mmask16;
inline vmask lanes_mask(int n) { return n >= 16 ? vmask(0xFFFF) : vmask((1u << n) - 1u); }
inline vf vload(const float* p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore(float* p, vf v, vmask m) { _mm512_mask_storeu_ps(p, m, v); }
inline vf vloadu(const float* p) { return _mm512_loadu_ps(p); }
inline vf vsub(vf a, vf b) { return _mm512_sub_ps(a, b); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm512_mul_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vrelu(vf a) { return _mm512_max_ps(a, _mm512_setzero_ps()); }
inline vf vwhere_pos(vf z, vf g) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(z, _mm512_setzero_ps(), _CMP_GT_OQ), g); }
inline vd dzero() { return _mm512_setzero_pd(); }
inline vd dlo(vf v) { return _mm512_cvtps_pd(_mm512_castps512_ps256(v)); }
inline vd dhi(vf v) { return _mm512_cvtps_pd(_mm512_extractf32x8_ps(v, 1)); }
inline vd dadd(vd a, vd b) { return _mm512_add_pd(a, b); }
inline vd dfma(vd a, vd b, vd c) { return _mm512_fmadd_pd(a, b, c); }
inline void dstore(double* p, vd v) { _mm512_storeu_pd(p, v); }
#elif defined(__AVX2__) && defined(__FMA__)
#define MGK_BN_SIMD 1
constexpr int VL = 8;
constexpr int JB_MAX = 2;  // 16 registers: 2 channel vectors of 4 float64 accumulators
using vf = __m256;
using vd = __m256d;
using vmask = __m256i;
inline vmask lanes_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vload(const float* p, vmask m) { return _mm256_maskload_ps(p, m); }
inline void vstore(float* p, vf v, vmask m) { _mm256_maskstore_ps(p, m, v); }
inline vf vloadu(const float* p) { return _mm256_loadu_ps(p); }
inline vf vsub(vf a, vf b) { return _mm256_sub_ps(a, b); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vmul(vf a, vf b) { return _mm256_mul_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vrelu(vf a) { return _mm256_max_ps(a, _mm256_setzero_ps()); }
inline vf vwhere_pos(vf z, vf g) { return _mm256_and_ps(_mm256_cmp_ps(z, _mm256_setzero_ps(), _CMP_GT_OQ), g); }
inline vd dzero() { return _mm256_setzero_pd(); }
inline vd dlo(vf v) { return _mm256_cvtps_pd(_mm256_castps256_ps128(v)); }
inline vd dhi(vf v) { return _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)); }
inline vd dadd(vd a, vd b) { return _mm256_add_pd(a, b); }
inline vd dfma(vd a, vd b, vd c) { return _mm256_fmadd_pd(a, b, c); }
inline void dstore(double* p, vd v) { _mm256_storeu_pd(p, v); }
#else
#define MGK_BN_SIMD 0
constexpr int VL = 1;
#endif

// ------------------------------------------------------------------------------------------- chunks and grains
constexpr int64_t CHUNK_FLOATS = 1 << 14;  // elements per reduction chunk (64 KB of float32): rows = this / C
constexpr double MIN_TASK_FLOATS = 1 << 16;  // below this many elements per task, one thread does the work

inline int64_t grain_for(double floats_per_item) {
  return std::max<int64_t>(1, static_cast<int64_t>(MIN_TASK_FLOATS / std::max(floats_per_item, 1.0)));
}

// Channels padded to whole vectors: the per-channel arrays below have this many entries (zeros past C).
inline int padded(int C) { return (C + VL - 1) / VL * VL; }

// Runs chunk(r0, r1, s0, s1) on every chunk of rows (s0, s1: that chunk's `width` zeroed float64 partial sums) and
// adds the chunks in order into out0, out1 (width entries each).
template <typename F>
void reduce_rows(int64_t M, int C, int width, F&& chunk, double* out0, double* out1) {
  const int64_t rows = std::max<int64_t>(1, CHUNK_FLOATS / C), count = (M + rows - 1) / rows;
  std::vector<double> part(static_cast<size_t>(count) * 2 * width, 0.0);
  at::parallel_for(0, count, grain_for(static_cast<double>(rows) * C), [&](int64_t begin, int64_t end) {
    for (int64_t k = begin; k < end; ++k) {
      double* p = part.data() + static_cast<size_t>(k) * 2 * width;
      chunk(k * rows, std::min(M, (k + 1) * rows), p, p + width);
    }
  });
  for (int c = 0; c < width; ++c) {
    double a = 0.0, b = 0.0;
    for (int64_t k = 0; k < count; ++k) {
      a += part[static_cast<size_t>(k) * 2 * width + c];
      b += part[static_cast<size_t>(k) * 2 * width + width + c];
    }
    out0[c] = a;
    out1[c] = b;
  }
}

// Runs rows(r0, r1) over all M rows in parallel (elementwise passes).
template <typename F>
void for_rows(int64_t M, int C, F&& rows) {
  at::parallel_for(0, M, grain_for(C), [&](int64_t begin, int64_t end) { rows(begin, end); });
}

// ------------------------------------------------------------------------------------------- scalar loops
template <typename T>
void stats_chunk_scalar(const T* x, int64_t r0, int64_t r1, int C, const double* K, double* s0, double* s1) {
  for (int64_t r = r0; r < r1; ++r) {
    const T* xr = x + r * C;
    for (int c = 0; c < C; ++c) {
      const double d = static_cast<double>(xr[c]) - K[c];
      s0[c] += d;
      s1[c] += d * d;
    }
  }
}

template <typename T>
void fwd_rows_scalar(const T* x, const T* res, const T* mean, const T* a, const T* bias, T* y, int64_t r0, int64_t r1,
                     int C) {
  for (int64_t r = r0; r < r1; ++r)
    for (int c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const T z = std::fma(x[i] - mean[c], a[c], bias[c]);
      const T v = z > T(0) ? z : T(0);
      y[i] = res ? res[i] + v : v;
    }
}

template <typename T>
void bwd_chunk_scalar(const T* x, const T* g, const T* mean, const T* a, const T* bias, int64_t r0, int64_t r1, int C,
                      double* s0, double* s1) {
  for (int64_t r = r0; r < r1; ++r)
    for (int c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const T xm = x[i] - mean[c];
      const T gz = std::fma(xm, a[c], bias[c]) > T(0) ? g[i] : T(0);
      s0[c] += static_cast<double>(gz);
      s1[c] += static_cast<double>(gz) * static_cast<double>(xm);
    }
}

template <typename T>
void dx_rows_scalar(const T* x, const T* g, const T* mean, const T* a, const T* bias, const T* c1, const T* c0, T* dx,
                    int64_t r0, int64_t r1, int C) {
  for (int64_t r = r0; r < r1; ++r)
    for (int c = 0; c < C; ++c) {
      const int64_t i = r * C + c;
      const T xm = x[i] - mean[c];
      const T gz = std::fma(xm, a[c], bias[c]) > T(0) ? g[i] : T(0);
      dx[i] = std::fma(a[c], gz, std::fma(c1[c], xm, c0[c]));
    }
}

#if MGK_BN_SIMD
// ------------------------------------------------------------------------------------------- vector loops
// The per-channel arrays (K, mean, a, bias, c1, c0) hold padded(C) floats, zero past C; m[v] is the lane mask of
// channel vector v (all lanes but in the last vector when VL does not divide C). Masked lanes load zeros.

// Statistics of channel vectors v0 .. v0 + JB - 1 over rows r0 .. r1 - 1: s0 += x - K, s1 += (x - K)^2.
template <int JB>
void stats_chunk_simd(const float* x, int64_t r0, int64_t r1, int C, int v0, const float* K, const vmask* m,
                      double* s0, double* s1) {
  vd a0[JB][2], a1[JB][2];
  vf k[JB];
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j) {
    a0[j][0] = a0[j][1] = a1[j][0] = a1[j][1] = dzero();
    k[j] = vloadu(K + (v0 + j) * VL);
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C + v0 * VL;
#pragma GCC unroll 4
    for (int j = 0; j < JB; ++j) {
      const vf d = vsub(vload(xr + j * VL, m[v0 + j]), k[j]);  // masked lanes: 0 - 0
      const vd lo = dlo(d), hi = dhi(d);
      a0[j][0] = dadd(a0[j][0], lo);
      a0[j][1] = dadd(a0[j][1], hi);
      a1[j][0] = dfma(lo, lo, a1[j][0]);
      a1[j][1] = dfma(hi, hi, a1[j][1]);
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j) {
    const int c = (v0 + j) * VL;
    dstore(s0 + c, a0[j][0]);
    dstore(s0 + c + VL / 2, a0[j][1]);
    dstore(s1 + c, a1[j][0]);
    dstore(s1 + c + VL / 2, a1[j][1]);
  }
}

// Backward sums of channel vectors v0 .. v0 + JB - 1: s0 += gz, s1 += gz (x - mean).
template <int JB>
void bwd_chunk_simd(const float* x, const float* g, int64_t r0, int64_t r1, int C, int v0, const float* mean,
                    const float* a, const float* bias, const vmask* m, double* s0, double* s1) {
  vd a0[JB][2], a1[JB][2];
  vf mu[JB], al[JB], be[JB];
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j) {
    a0[j][0] = a0[j][1] = a1[j][0] = a1[j][1] = dzero();
    mu[j] = vloadu(mean + (v0 + j) * VL);
    al[j] = vloadu(a + (v0 + j) * VL);
    be[j] = vloadu(bias + (v0 + j) * VL);
  }
  for (int64_t r = r0; r < r1; ++r) {
    const float* xr = x + r * C + v0 * VL;
    const float* gr = g + r * C + v0 * VL;
#pragma GCC unroll 4
    for (int j = 0; j < JB; ++j) {
      const vf xm = vsub(vload(xr + j * VL, m[v0 + j]), mu[j]);
      const vf gz = vwhere_pos(vfma(xm, al[j], be[j]), vload(gr + j * VL, m[v0 + j]));  // masked lanes: g = 0
      const vf p = vmul(gz, xm);
      a0[j][0] = dadd(a0[j][0], dlo(gz));
      a0[j][1] = dadd(a0[j][1], dhi(gz));
      a1[j][0] = dadd(a1[j][0], dlo(p));
      a1[j][1] = dadd(a1[j][1], dhi(p));
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j) {
    const int c = (v0 + j) * VL;
    dstore(s0 + c, a0[j][0]);
    dstore(s0 + c + VL / 2, a0[j][1]);
    dstore(s1 + c, a1[j][0]);
    dstore(s1 + c + VL / 2, a1[j][1]);
  }
}

template <typename Chunk>
void over_vector_blocks(int C, Chunk&& chunk) {
  const int nvec = (C + VL - 1) / VL;
  for (int v0 = 0; v0 < nvec; v0 += JB_MAX) chunk(v0, std::min(JB_MAX, nvec - v0));
}

std::vector<vmask> channel_masks(int C) {
  const int nvec = (C + VL - 1) / VL;
  std::vector<vmask> m(nvec);
  for (int v = 0; v < nvec; ++v) m[v] = lanes_mask(std::min(VL, C - v * VL));
  return m;
}

void fwd_rows_simd(const float* x, const float* res, const float* mean, const float* a, const float* bias, float* y,
                   int64_t r0, int64_t r1, int C, const vmask* m) {
  const int nvec = (C + VL - 1) / VL;
  for (int64_t r = r0; r < r1; ++r) {
    const size_t o = static_cast<size_t>(r) * C;
    for (int v = 0; v < nvec; ++v) {
      const int c = v * VL;
      const vf xm = vsub(vload(x + o + c, m[v]), vloadu(mean + c));
      vf out = vrelu(vfma(xm, vloadu(a + c), vloadu(bias + c)));
      if (res) out = vadd(vload(res + o + c, m[v]), out);
      vstore(y + o + c, out, m[v]);
    }
  }
}

void dx_rows_simd(const float* x, const float* g, const float* mean, const float* a, const float* bias,
                  const float* c1, const float* c0, float* dx, int64_t r0, int64_t r1, int C, const vmask* m) {
  const int nvec = (C + VL - 1) / VL;
  for (int64_t r = r0; r < r1; ++r) {
    const size_t o = static_cast<size_t>(r) * C;
    for (int v = 0; v < nvec; ++v) {
      const int c = v * VL;
      const vf al = vloadu(a + c);
      const vf xm = vsub(vload(x + o + c, m[v]), vloadu(mean + c));
      const vf gz = vwhere_pos(vfma(xm, al, vloadu(bias + c)), vload(g + o + c, m[v]));
      vstore(dx + o + c, vfma(al, gz, vfma(vloadu(c1 + c), xm, vloadu(c0 + c))), m[v]);
    }
  }
}
#endif  // MGK_BN_SIMD

// a = weight invstd, padded to whole vectors with zeros (as are the copies of mean and bias).
template <typename T>
void coefficients(const T* weight, const T* bias, const T* mean, const T* invstd, int C, std::vector<T>& mean_p,
                  std::vector<T>& a, std::vector<T>& bias_p) {
  const int P = padded(C);
  mean_p.assign(P, T(0));
  a.assign(P, T(0));
  bias_p.assign(P, T(0));
  for (int c = 0; c < C; ++c) {
    mean_p[c] = mean[c];
    a[c] = static_cast<T>(static_cast<double>(weight[c]) * static_cast<double>(invstd[c]));
    bias_p[c] = bias[c];
  }
}

template <typename T, bool SIMD>
void fwd_impl(const T* x, const T* res, const T* weight, const T* bias, T* y, T* mean, T* invstd, T* running_mean,
              T* running_var, int64_t M, int C, double momentum, double eps) {
  const int P = padded(C);
  std::vector<double> K(P, 0.0), s0(P), s1(P);
  for (int c = 0; c < C; ++c) K[c] = static_cast<double>(x[c]);  // the shift: the first row
#if MGK_BN_SIMD
  const std::vector<vmask> m = SIMD ? channel_masks(C) : std::vector<vmask>();
  std::vector<float> Kf(P, 0.0f);
  for (int c = 0; c < C; ++c) Kf[c] = static_cast<float>(x[c]);
#endif
  reduce_rows(M, C, P, [&](int64_t r0, int64_t r1, double* p0, double* p1) {
#if MGK_BN_SIMD
    if constexpr (SIMD) {
      over_vector_blocks(C, [&](int v0, int jb) {
        using Fn = void (*)(const float*, int64_t, int64_t, int, int, const float*, const vmask*, double*, double*);
        static constexpr Fn fns[] = {stats_chunk_simd<1>, stats_chunk_simd<2>, stats_chunk_simd<3>,
                                     stats_chunk_simd<4>};
        fns[jb - 1](x, r0, r1, C, v0, Kf.data(), m.data(), p0, p1);
      });
      return;
    }
#endif
    stats_chunk_scalar<T>(x, r0, r1, C, K.data(), p0, p1);
  }, s0.data(), s1.data());
  for (int c = 0; c < C; ++c) {
    const double d = s0[c] / M, var = std::max(0.0, s1[c] / M - d * d);
    mean[c] = static_cast<T>(K[c] + d);
    invstd[c] = static_cast<T>(1.0 / std::sqrt(var + eps));
    if (running_mean)
      running_mean[c] = static_cast<T>(momentum * (K[c] + d) + (1.0 - momentum) * running_mean[c]);
    if (running_var)
      running_var[c] = static_cast<T>(momentum * var * M / (M - 1) + (1.0 - momentum) * running_var[c]);
  }
  std::vector<T> mp, a, bp;
  coefficients(weight, bias, mean, invstd, C, mp, a, bp);
  for_rows(M, C, [&](int64_t r0, int64_t r1) {
#if MGK_BN_SIMD
    if constexpr (SIMD) {
      fwd_rows_simd(x, res, mp.data(), a.data(), bp.data(), y, r0, r1, C, m.data());
      return;
    }
#endif
    fwd_rows_scalar<T>(x, res, mp.data(), a.data(), bp.data(), y, r0, r1, C);
  });
}

template <typename T, bool SIMD>
void bwd_impl(const T* x, const T* g, const T* weight, const T* bias, const T* mean, const T* invstd, T* dx,
              T* dweight, T* dbias, int64_t M, int C) {
  const int P = padded(C);
  std::vector<T> mp, a, bp;
  coefficients(weight, bias, mean, invstd, C, mp, a, bp);
  std::vector<double> s0(P), s1(P);
#if MGK_BN_SIMD
  const std::vector<vmask> m = SIMD ? channel_masks(C) : std::vector<vmask>();
#endif
  reduce_rows(M, C, P, [&](int64_t r0, int64_t r1, double* p0, double* p1) {
#if MGK_BN_SIMD
    if constexpr (SIMD) {
      over_vector_blocks(C, [&](int v0, int jb) {
        using Fn = void (*)(const float*, const float*, int64_t, int64_t, int, int, const float*, const float*,
                            const float*, const vmask*, double*, double*);
        static constexpr Fn fns[] = {bwd_chunk_simd<1>, bwd_chunk_simd<2>, bwd_chunk_simd<3>, bwd_chunk_simd<4>};
        fns[jb - 1](x, g, r0, r1, C, v0, mp.data(), a.data(), bp.data(), m.data(), p0, p1);
      });
      return;
    }
#endif
    bwd_chunk_scalar<T>(x, g, mp.data(), a.data(), bp.data(), r0, r1, C, p0, p1);
  }, s0.data(), s1.data());
  std::vector<T> c1(P, T(0)), c0(P, T(0));
  for (int c = 0; c < C; ++c) {
    const double is = invstd[c], ad = a[c];
    dbias[c] = static_cast<T>(s0[c]);
    dweight[c] = static_cast<T>(is * s1[c]);
    c1[c] = static_cast<T>(-ad * is * is * s1[c] / M);
    c0[c] = static_cast<T>(-ad * s0[c] / M);
  }
  if (!dx) return;
  for_rows(M, C, [&](int64_t r0, int64_t r1) {
#if MGK_BN_SIMD
    if constexpr (SIMD) {
      dx_rows_simd(x, g, mp.data(), a.data(), bp.data(), c1.data(), c0.data(), dx, r0, r1, C, m.data());
      return;
    }
#endif
    dx_rows_scalar<T>(x, g, mp.data(), a.data(), bp.data(), c1.data(), c0.data(), dx, r0, r1, C);
  });
}

}  // namespace

void bn_relu_fwd_f32(const float* x, const float* res, const float* weight, const float* bias, float* y, float* mean,
                     float* invstd, float* running_mean, float* running_var, int64_t M, int C, double momentum,
                     double eps) {
  fwd_impl<float, MGK_BN_SIMD != 0>(x, res, weight, bias, y, mean, invstd, running_mean, running_var, M, C, momentum,
                                    eps);
}

void bn_relu_fwd_f64(const double* x, const double* res, const double* weight, const double* bias, double* y,
                     double* mean, double* invstd, double* running_mean, double* running_var, int64_t M, int C,
                     double momentum, double eps) {
  fwd_impl<double, false>(x, res, weight, bias, y, mean, invstd, running_mean, running_var, M, C, momentum, eps);
}

void bn_relu_bwd_f32(const float* x, const float* g, const float* weight, const float* bias, const float* mean,
                     const float* invstd, float* dx, float* dweight, float* dbias, int64_t M, int C) {
  bwd_impl<float, MGK_BN_SIMD != 0>(x, g, weight, bias, mean, invstd, dx, dweight, dbias, M, C);
}

void bn_relu_bwd_f64(const double* x, const double* g, const double* weight, const double* bias, const double* mean,
                     const double* invstd, double* dx, double* dweight, double* dbias, int64_t M, int C) {
  bwd_impl<double, false>(x, g, weight, bias, mean, invstd, dx, dweight, dbias, M, C);
}

}  // namespace mgcnn_kernels
