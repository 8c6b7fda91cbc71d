// Depthwise 3x3 stride-2 convolution kernels (zero padding 1, no bias, channel multiplier M = 1 or 2) for NHWC
// tensors: the resolution transfers Pi and R of MgNet/MGiaD.
//
// Why: oneDNN runs these at a few GFLOP/s (a depthwise conv with a channel multiplier and stride 2 takes its
// generic path); they do little arithmetic (9 multiply-adds per output) on large tensors, so the aim is to read and
// write every tensor once, in memory order, with every vector lane busy.
//
// Maths (cross-correlation; output channel o = c M + j reads input channel c; Ho = ceil(H / 2), Wo = ceil(W / 2)):
//   y[n, oh, ow, c M + j] = sum_{kh, kw} x[n, 2 oh + kh - 1, 2 ow + kw - 1, c] W[c M + j, kh, kw]
//   dx[n, ih, iw, c]      = sum_{j, (oh, kh): 2 oh + kh - 1 = ih, (ow, kw): 2 ow + kw - 1 = iw} dy[..., c M + j] W[...]
//   dW[c M + j, kh, kw]   = sum_{n, oh, ow} dy[n, oh, ow, c M + j] x[n, 2 oh + kh - 1, 2 ow + kw - 1, c]
//
// float32 (AVX-512, or AVX2 + FMA): vector lanes are VL consecutive input channels (a "block"); output channel j of
// each input channel sits in its own vector: a pixel's C M outputs are de-interleaved into M vectors on load (dy) and
// interleaved on store (y) with two permutes. Per block the 9 M weight vectors stay in registers:
// - forward: per output row, block by block, pixel by pixel: 9 input vectors (3 rows x 3 columns) feed 9 M FMAs;
// - input gradient: per pair of input rows (2a, 2a + 1), which only dy rows a and a + 1 reach: per dy column b the
//   four input pixels (2a or 2a + 1, 2b or 2b + 1) are sums of 1, 2, 2 and 4 products of dy vectors with weights,
//   each dy vector loaded once (a sliding window over b); the gather form needs no atomics or scatter;
// - weight gradient: 9 M accumulators per block in registers over a band of output rows (M = 2 with AVX2: one j at
//   a time, the 16 registers do not hold 18). The output pixels are split into chunks fixed by the shape (bands of
//   rows or groups of images, ~2048 pixels); each chunk accumulates its partial sums in loop order and the partial
//   sums are added chunk after chunk, so two runs are bitwise equal with any number of threads.
// Border columns and rows take the same code with the taps outside the image left out (template flags).
// float64 (and float32 without those instruction sets): plain loops, each output computed in a fixed order.

#include "depthwise_s2.h"
#include "tensor_checks.h"

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstring>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mgcnn_kernels {
namespace {

inline int half_up(int64_t n) { return static_cast<int>((n + 1) / 2); }

// The grain of at::parallel_for for items of `work` multiply-adds each: small problems stay on the calling thread.
inline int64_t grain_for(double work) {
  constexpr double MIN_WORK = 1 << 16;
  return std::max<int64_t>(1, static_cast<int64_t>(MIN_WORK / std::max(work, 1.0)));
}

// ------------------------------------------------------------------------------------------- scalar loops
template <typename T>
void fwd_scalar(const T* x, const T* w, T* y, int64_t N, int H, int W, int C, int M) {
  const int Ho = half_up(H), Wo = half_up(W);
  const int64_t CM = static_cast<int64_t>(C) * M;
  at::parallel_for(0, N * Ho, grain_for(9.0 * Wo * CM), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho;
      const int oh = static_cast<int>(row % Ho);
      T* yr = y + row * Wo * CM;
      for (int ow = 0; ow < Wo; ++ow)
        for (int64_t o = 0; o < CM; ++o) {
          const int64_t c = o / M;
          T acc = 0;
          for (int kh = 0; kh < 3; ++kh) {
            const int ih = 2 * oh + kh - 1;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < 3; ++kw) {
              const int iw = 2 * ow + kw - 1;
              if (iw < 0 || iw >= W) continue;
              acc += x[((n * H + ih) * W + iw) * C + c] * w[o * 9 + kh * 3 + kw];
            }
          }
          yr[ow * CM + o] = acc;
        }
    }
  });
}

template <typename T>
void dx_scalar(const T* dy, const T* w, T* dx, int64_t N, int H, int W, int C, int M) {
  const int Ho = half_up(H), Wo = half_up(W);
  const int64_t CM = static_cast<int64_t>(C) * M;
  at::parallel_for(0, N * H, grain_for(2.25 * W * CM), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H;
      const int ih = static_cast<int>(row % H);
      for (int iw = 0; iw < W; ++iw)
        for (int64_t c = 0; c < C; ++c) {
          T acc = 0;
          for (int kh = 0; kh < 3; ++kh) {
            const int t = ih + 1 - kh;  // = 2 oh
            if (t < 0 || (t & 1) || t / 2 >= Ho) continue;
            for (int kw = 0; kw < 3; ++kw) {
              const int u = iw + 1 - kw;  // = 2 ow
              if (u < 0 || (u & 1) || u / 2 >= Wo) continue;
              const T* d = dy + ((n * Ho + t / 2) * Wo + u / 2) * CM + c * M;
              for (int j = 0; j < M; ++j) acc += d[j] * w[(c * M + j) * 9 + kh * 3 + kw];
            }
          }
          dx[(row * W + iw) * C + c] = acc;
        }
    }
  });
}

template <typename T>
void wgrad_scalar(const T* x, const T* dy, T* dw, int64_t N, int H, int W, int C, int M) {
  const int Ho = half_up(H), Wo = half_up(W);
  const int64_t CM = static_cast<int64_t>(C) * M;
  at::parallel_for(0, CM, grain_for(9.0 * N * Ho * Wo), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t c = o / M;
      T acc[9] = {0, 0, 0, 0, 0, 0, 0, 0, 0};
      for (int64_t n = 0; n < N; ++n)
        for (int oh = 0; oh < Ho; ++oh)
          for (int ow = 0; ow < Wo; ++ow) {
            const T d = dy[((n * Ho + oh) * Wo + ow) * CM + o];
            for (int kh = 0; kh < 3; ++kh) {
              const int ih = 2 * oh + kh - 1;
              if (ih < 0 || ih >= H) continue;
              for (int kw = 0; kw < 3; ++kw) {
                const int iw = 2 * ow + kw - 1;
                if (iw < 0 || iw >= W) continue;
                acc[kh * 3 + kw] += d * x[((n * H + ih) * W + iw) * C + c];
              }
            }
          }
      for (int t = 0; t < 9; ++t) dw[o * 9 + t] = acc[t];
    }
  });
}

// ------------------------------------------------------------------------------------------- vector primitives
#if defined(__AVX512F__)
#define MGK_DW_SIMD 1
constexpr int VL = 16;
using vf = __m512;
using vmask = __mmask16;
inline vmask lanes_mask(int n) { return n <= 0 ? vmask(0) : n >= 16 ? vmask(0xFFFF) : vmask((1u << n) - 1u); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vload(const float* p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore(float* p, vf v, vmask m) { _mm512_mask_storeu_ps(p, m, v); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
// (a, b) -> lo = a0 b0 a1 b1 ... a7 b7, hi = a8 b8 ... a15 b15
inline void interleave(vf a, vf b, vf& lo, vf& hi) {
  const __m512i il = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ih = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  lo = _mm512_permutex2var_ps(a, il, b);
  hi = _mm512_permutex2var_ps(a, ih, b);
}
// the inverse: (v0, v1) = a0 b0 a1 b1 ... -> a, b
inline void deinterleave(vf v0, vf v1, vf& a, vf& b) {
  const __m512i ie = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i io = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  a = _mm512_permutex2var_ps(v0, ie, v1);
  b = _mm512_permutex2var_ps(v0, io, v1);
}
constexpr int WGRAD_JB = 2;  // output channels per input channel accumulated per pass: 18 accumulators fit
#elif defined(__AVX2__) && defined(__FMA__)
#define MGK_DW_SIMD 1
constexpr int VL = 8;
using vf = __m256;
using vmask = __m256i;
inline vmask lanes_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vload(const float* p, vmask m) { return _mm256_maskload_ps(p, m); }
inline void vstore(float* p, vf v, vmask m) { _mm256_maskstore_ps(p, m, v); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline void interleave(vf a, vf b, vf& lo, vf& hi) {
  const vf l = _mm256_unpacklo_ps(a, b), h = _mm256_unpackhi_ps(a, b);  // a0 b0 a1 b1 | a4 b4 a5 b5, a2 b2 ...
  lo = _mm256_permute2f128_ps(l, h, 0x20);
  hi = _mm256_permute2f128_ps(l, h, 0x31);
}
inline void deinterleave(vf v0, vf v1, vf& a, vf& b) {
  const vf e = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(2, 0, 2, 0));  // a0 a1 a4 a5 | a2 a3 a6 a7
  const vf o = _mm256_shuffle_ps(v0, v1, _MM_SHUFFLE(3, 1, 3, 1));
  a = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), _MM_SHUFFLE(3, 1, 2, 0)));
  b = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(o), _MM_SHUFFLE(3, 1, 2, 0)));
}
constexpr int WGRAD_JB = 1;
#else
#define MGK_DW_SIMD 0
#endif

#if MGK_DW_SIMD
// ------------------------------------------------------------------------------------------- channel blocks
// Block k: input channels c0 = k VL .. c0 + nl - 1; its outputs are the C M-channel pixel's floats c0 M ..
// (c0 + nl) M - 1, loaded and stored as M vectors with masks m_out[0..M-1].
template <int M>
struct Block {
  int c0;
  vmask m_in, m_out[M];
  const float* w;  // packed weights [M][9][VL], lane l = W[(c0 + l) M + j, tap], zero past nl
};

template <int M>
std::vector<Block<M>> make_blocks(int C, const float* wp) {
  std::vector<Block<M>> out;
  for (int c0 = 0, k = 0; c0 < C; c0 += VL, ++k) {
    const int nl = std::min(VL, C - c0);
    Block<M> b;
    b.c0 = c0;
    b.m_in = lanes_mask(nl);
    for (int j = 0; j < M; ++j) b.m_out[j] = lanes_mask(M * nl - j * VL);
    b.w = wp + static_cast<size_t>(k) * M * 9 * VL;
    out.push_back(b);
  }
  return out;
}

std::vector<float> pack_weight(const float* w, int C, int M) {
  const int nb = (C + VL - 1) / VL;
  std::vector<float> out(static_cast<size_t>(nb) * M * 9 * VL, 0.0f);
  for (int c = 0; c < C; ++c)
    for (int j = 0; j < M; ++j)
      for (int t = 0; t < 9; ++t)
        out[((static_cast<size_t>(c / VL) * M + j) * 9 + t) * VL + c % VL] = w[(static_cast<size_t>(c) * M + j) * 9 + t];
  return out;
}

// M vectors of one output pixel of block b (p: the pixel's first float of the block), de-interleaved by j.
template <int M>
inline void load_out(const float* p, const Block<M>& b, vf (&v)[M]) {
  if constexpr (M == 1) {
    v[0] = vload(p, b.m_out[0]);
  } else {
    deinterleave(vload(p, b.m_out[0]), vload(p + VL, b.m_out[1]), v[0], v[1]);
  }
}

template <int M>
inline void store_out(float* p, const Block<M>& b, const vf (&v)[M]) {
  if constexpr (M == 1) {
    vstore(p, v[0], b.m_out[0]);
  } else {
    vf lo, hi;
    interleave(v[0], v[1], lo, hi);
    vstore(p, lo, b.m_out[0]);
    vstore(p + VL, hi, b.m_out[1]);
  }
}

// Calls f(std::bool_constant<L>, std::bool_constant<R>) for column flags known at run time: L, the tap column left
// of the centre (kw = 0) is inside the image; R, the one right of it (kw = 2).
template <typename F>
inline void with_columns(bool L, bool R, F&& f) {
  if (L && R)
    f(std::true_type{}, std::true_type{});
  else if (L)
    f(std::true_type{}, std::false_type{});
  else if (R)
    f(std::false_type{}, std::true_type{});
  else
    f(std::false_type{}, std::false_type{});
}

// Requests the cache lines of the next row's tensors a few at a time while this row computes (the tensors of the
// large shapes do not fit in the core's caches; the hardware prefetcher alone leaves the loads waiting).
struct Prefetch {
  const char* p[2] = {nullptr, nullptr};
  const char* end[2] = {nullptr, nullptr};
  int per_call[2] = {0, 0};
  bool write[2] = {false, false};
  // range r: `floats` floats from `from` (cut at `limit`), spread over `calls` calls of step(); written or read next
  void set(int r, const float* from, size_t floats, const float* limit, int calls, bool written) {
    write[r] = written;
    p[r] = reinterpret_cast<const char*>(from);
    end[r] = reinterpret_cast<const char*>(std::min(from + floats, limit));
    per_call[r] = p[r] < end[r] ? static_cast<int>((end[r] - p[r] + 64 * calls - 1) / (64 * calls)) : 0;
  }
  void step() {
    for (int r = 0; r < 2; ++r)
      for (int i = 0; i < per_call[r] && p[r] < end[r]; ++i, p[r] += 64) {
        if (write[r])
          __builtin_prefetch(p[r], 1, 3);
        else
          __builtin_prefetch(p[r], 0, 3);
      }
  }
};

// ------------------------------------------------------------------------------------------- forward
// One output row oh of image xn (H, W, C) into yr (Wo, C M), block b.
template <int M>
void fwd_row_block(const float* xn, float* yr, int oh, int H, int W, int Wo, int C, const Block<M>& b, Prefetch& pf) {
  vf w[M][9];
  for (int j = 0; j < M; ++j)
    for (int t = 0; t < 9; ++t) w[j][t] = vload(b.w + (j * 9 + t) * VL, lanes_mask(VL));
  const size_t Cs = C, CM = static_cast<size_t>(C) * M;
  const float* rows[3];
  for (int kh = 0; kh < 3; ++kh) {
    const int ih = 2 * oh + kh - 1;
    rows[kh] = ih < 0 || ih >= H ? nullptr : xn + static_cast<size_t>(ih) * W * Cs + b.c0;
  }
  for (int ow = 0; ow < Wo; ++ow) {
    pf.step();
    with_columns(ow > 0, 2 * ow + 1 < W, [&](auto Lc, auto Rc) {
      constexpr bool L = decltype(Lc)::value, R = decltype(Rc)::value;
      vf p[3][M];  // partial sums per kernel row: short dependency chains
      for (int kh = 0; kh < 3; ++kh)
        for (int j = 0; j < M; ++j) p[kh][j] = vzero();
      const size_t col = static_cast<size_t>(2 * ow) * Cs;  // centre column 2 ow
      for (int kh = 0; kh < 3; ++kh) {
        if (rows[kh] == nullptr) continue;
        const float* r = rows[kh] + col;
        if constexpr (L) {
          const vf xv = vload(r - Cs, b.m_in);
          for (int j = 0; j < M; ++j) p[kh][j] = vfma(xv, w[j][kh * 3], p[kh][j]);
        }
        {
          const vf xv = vload(r, b.m_in);
          for (int j = 0; j < M; ++j) p[kh][j] = vfma(xv, w[j][kh * 3 + 1], p[kh][j]);
        }
        if constexpr (R) {
          const vf xv = vload(r + Cs, b.m_in);
          for (int j = 0; j < M; ++j) p[kh][j] = vfma(xv, w[j][kh * 3 + 2], p[kh][j]);
        }
      }
      vf acc[M];
      for (int j = 0; j < M; ++j) acc[j] = vadd(vadd(p[0][j], p[1][j]), p[2][j]);
      store_out<M>(yr + ow * CM + static_cast<size_t>(b.c0) * M, b, acc);
    });
  }
}

template <int M>
void fwd_simd(const float* x, const float* w, float* y, int64_t N, int H, int W, int C) {
  const int Ho = half_up(H), Wo = half_up(W);
  const std::vector<float> wp = pack_weight(w, C, M);
  const std::vector<Block<M>> blocks = make_blocks<M>(C, wp.data());
  const size_t img = static_cast<size_t>(H) * W * C, row_in = static_cast<size_t>(W) * C;
  const size_t row_out = static_cast<size_t>(Wo) * C * M;
  const int calls = static_cast<int>(blocks.size()) * Wo;
  at::parallel_for(0, N * Ho, grain_for(9.0 * Wo * C * M), [&](int64_t begin, int64_t end) {
    Prefetch pf;
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / Ho;
      const int oh = static_cast<int>(row % Ho);
      // the next output row's new input rows (2 oh + 2, 2 oh + 3, or the next image's first ones) and output row
      pf.set(0, x + n * img + std::min(2 * oh + 2, H) * row_in, 2 * row_in, x + N * img, calls, false);
      pf.set(1, y + (row + 1) * row_out, row_out, y + N * Ho * row_out, calls, true);
      for (const Block<M>& b : blocks) fwd_row_block<M>(x + n * img, y + row * row_out, oh, H, W, Wo, C, b, pf);
    }
  });
}

// ------------------------------------------------------------------------------------------- input gradient
// Input rows 2a and 2a + 1 (dx0, dx1: null where 2a + 1 = H) of block b from dy rows a and a + 1 (d0, d1: null
// where a + 1 = Ho), rows at their first pixel.
template <int M>
void dx_rows_block(const float* d0, const float* d1, float* dx0, float* dx1, int W, int Wo, int C,
                   const Block<M>& b, Prefetch& pf) {
  vf w[M][9];
  for (int j = 0; j < M; ++j)
    for (int t = 0; t < 9; ++t) w[j][t] = vload(b.w + (j * 9 + t) * VL, lanes_mask(VL));
  const size_t Cs = C, CM = static_cast<size_t>(C) * M, o0 = static_cast<size_t>(b.c0) * M;
  vf A[M], B[M], An[M], Bn[M];  // dy rows a (A) and a + 1 (B) at columns b (A, B) and b + 1 (An, Bn)
  for (int j = 0; j < M; ++j) B[j] = Bn[j] = vzero();
  load_out<M>(d0 + o0, b, A);
  if (d1 != nullptr) load_out<M>(d1 + o0, b, B);
  float* x0 = dx0 + b.c0;
  float* x1 = dx1 == nullptr ? nullptr : dx1 + b.c0;
  for (int c = 0; c < Wo; ++c) {
    pf.step();
    if (c + 1 < Wo) {
      load_out<M>(d0 + (c + 1) * CM + o0, b, An);
      if (d1 != nullptr) load_out<M>(d1 + (c + 1) * CM + o0, b, Bn);
    } else {
      for (int j = 0; j < M; ++j) An[j] = Bn[j] = vzero();
    }
    // dx(2a, 2c) = A W11; dx(2a, 2c+1) = A W12 + An W10;
    // dx(2a+1, 2c) = A W21 + B W01; dx(2a+1, 2c+1) = A W22 + An W20 + B W02 + Bn W00 (W[kh kw] = w[kh * 3 + kw])
    vf e00 = vzero(), e01 = vzero(), e10 = vzero(), e11 = vzero(), f10 = vzero(), f11 = vzero();
    for (int j = 0; j < M; ++j) {
      e00 = vfma(A[j], w[j][4], e00);
      e01 = vfma(An[j], w[j][3], vfma(A[j], w[j][5], e01));
      e10 = vfma(A[j], w[j][7], e10);
      f10 = vfma(B[j], w[j][1], f10);
      e11 = vfma(An[j], w[j][6], vfma(A[j], w[j][8], e11));
      f11 = vfma(Bn[j], w[j][0], vfma(B[j], w[j][2], f11));
    }
    const bool odd_col = 2 * c + 1 < W;
    vstore(x0 + static_cast<size_t>(2 * c) * Cs, e00, b.m_in);
    if (odd_col) vstore(x0 + static_cast<size_t>(2 * c + 1) * Cs, e01, b.m_in);
    if (x1 != nullptr) {
      vstore(x1 + static_cast<size_t>(2 * c) * Cs, vadd(e10, f10), b.m_in);
      if (odd_col) vstore(x1 + static_cast<size_t>(2 * c + 1) * Cs, vadd(e11, f11), b.m_in);
    }
    for (int j = 0; j < M; ++j) {
      A[j] = An[j];
      B[j] = Bn[j];
    }
  }
}

template <int M>
void dx_simd(const float* dy, const float* w, float* dx, int64_t N, int H, int W, int C) {
  const int Ho = half_up(H), Wo = half_up(W);
  const std::vector<float> wp = pack_weight(w, C, M);
  const std::vector<Block<M>> blocks = make_blocks<M>(C, wp.data());
  const size_t row_in = static_cast<size_t>(W) * C, row_out = static_cast<size_t>(Wo) * C * M;
  const int calls = static_cast<int>(blocks.size()) * Wo;
  at::parallel_for(0, N * Ho, grain_for(9.0 * Wo * C * M), [&](int64_t begin, int64_t end) {
    Prefetch pf;
    for (int64_t row = begin; row < end; ++row) {  // dy row a of image n: input rows 2a, 2a + 1
      const int64_t n = row / Ho;
      const int a = static_cast<int>(row % Ho);
      const float* d0 = dy + row * row_out;
      const float* d1 = a + 1 < Ho ? d0 + row_out : nullptr;
      float* x0 = dx + (n * H + 2 * a) * row_in;
      float* x1 = 2 * a + 1 < H ? x0 + row_in : nullptr;
      // the next pair's new dy row (a + 2, or the next image's first two) and its two dx rows
      pf.set(0, d0 + (a + 1 < Ho ? 2 : 1) * row_out, row_out, dy + N * Ho * row_out, calls, false);
      pf.set(1, x0 + (x1 != nullptr ? 2 : 1) * row_in, 2 * row_in, dx + N * H * row_in, calls, true);
      for (const Block<M>& b : blocks) dx_rows_block<M>(d0, d1, x0, x1, W, Wo, C, b, pf);
    }
  });
}

// ------------------------------------------------------------------------------------------- weight gradient
// Adds output rows oh0 .. oh0 + nrows - 1 of image (xn, dyn) into acc[JB][9][VL] for output channels j0 .. j0 + JB - 1
// of every input channel of block b.
template <int M, int JB>
void wgrad_rows_block(const float* xn, const float* dyn, int oh0, int nrows, int H, int W, int Wo, int C, int j0,
                      const Block<M>& b, float* accbuf, Prefetch& pf) {
  vf acc[JB][9];
  for (int j = 0; j < JB; ++j)
    for (int t = 0; t < 9; ++t) acc[j][t] = vload(accbuf + (j * 9 + t) * VL, lanes_mask(VL));
  const size_t Cs = C, CM = static_cast<size_t>(C) * M, o0 = static_cast<size_t>(b.c0) * M;
  for (int oh = oh0; oh < oh0 + nrows; ++oh) {
    const float* rows[3];
    for (int kh = 0; kh < 3; ++kh) {
      const int ih = 2 * oh + kh - 1;
      rows[kh] = ih < 0 || ih >= H ? nullptr : xn + static_cast<size_t>(ih) * W * Cs + b.c0;
    }
    const float* dyr = dyn + static_cast<size_t>(oh) * Wo * CM + o0;
    for (int ow = 0; ow < Wo; ++ow) {
      pf.step();
      with_columns(ow > 0, 2 * ow + 1 < W, [&](auto Lc, auto Rc) {
        constexpr bool L = decltype(Lc)::value, R = decltype(Rc)::value;
        vf d[M];
        load_out<M>(dyr + ow * CM, b, d);
        const size_t col = static_cast<size_t>(2 * ow) * Cs;
        for (int kh = 0; kh < 3; ++kh) {
          if (rows[kh] == nullptr) continue;
          const float* r = rows[kh] + col;
          if constexpr (L) {
            const vf xv = vload(r - Cs, b.m_in);
            for (int j = 0; j < JB; ++j) acc[j][kh * 3] = vfma(d[j0 + j], xv, acc[j][kh * 3]);
          }
          {
            const vf xv = vload(r, b.m_in);
            for (int j = 0; j < JB; ++j) acc[j][kh * 3 + 1] = vfma(d[j0 + j], xv, acc[j][kh * 3 + 1]);
          }
          if constexpr (R) {
            const vf xv = vload(r + Cs, b.m_in);
            for (int j = 0; j < JB; ++j) acc[j][kh * 3 + 2] = vfma(d[j0 + j], xv, acc[j][kh * 3 + 2]);
          }
        }
      });
    }
  }
  for (int j = 0; j < JB; ++j)
    for (int t = 0; t < 9; ++t) vstore(accbuf + (j * 9 + t) * VL, acc[j][t], lanes_mask(VL));
}

constexpr int64_t CHUNK_PIXELS = 2048, MIN_CHUNKS = 16;

template <int M>
void wgrad_simd(const float* x, const float* dy, float* dw, int64_t N, int H, int W, int C) {
  constexpr int JB = M < WGRAD_JB ? M : WGRAD_JB;
  const int Ho = half_up(H), Wo = half_up(W);
  const std::vector<float> zeros(static_cast<size_t>((C + VL - 1) / VL) * M * 9 * VL, 0.0f);
  const std::vector<Block<M>> blocks = make_blocks<M>(C, zeros.data());
  const int nb = static_cast<int>(blocks.size());
  const int64_t hw = static_cast<int64_t>(Ho) * Wo;
  // chunks of output pixels: a function of the shape only, so the summation order is too
  int64_t n_chunks, per_image = 1, images = 1, rows = Ho;
  if (hw >= CHUNK_PIXELS) {
    rows = std::max<int64_t>(1, CHUNK_PIXELS / Wo);
    per_image = (Ho + rows - 1) / rows;
    n_chunks = N * per_image;
  } else {
    images = std::max<int64_t>(1, std::min(CHUNK_PIXELS / hw, (N + MIN_CHUNKS - 1) / MIN_CHUNKS));
    n_chunks = (N + images - 1) / images;
  }
  // output rows per call: several for narrow images (fewer loads and stores of the accumulators)
  const int band = std::max(1, std::min(Ho, 32 / Wo));
  const size_t part_block = static_cast<size_t>(M) * 9 * VL;
  const size_t img_in = static_cast<size_t>(H) * W * C, img_out = static_cast<size_t>(hw) * C * M;
  std::vector<float> part(static_cast<size_t>(n_chunks) * nb * part_block);
  const double chunk_work = 9.0 * static_cast<double>(N) * hw * C * M / n_chunks;
  const size_t row_in = static_cast<size_t>(W) * C, row_out = static_cast<size_t>(Wo) * C * M;
  at::parallel_for(0, n_chunks, grain_for(chunk_work), [&](int64_t begin, int64_t end) {
    Prefetch pf;
    for (int64_t ch = begin; ch < end; ++ch) {
      int64_t n0, n1;
      int h0, h1;
      if (hw >= CHUNK_PIXELS) {
        n0 = ch / per_image;
        n1 = n0 + 1;
        h0 = static_cast<int>((ch % per_image) * rows);
        h1 = static_cast<int>(std::min<int64_t>(Ho, h0 + rows));
      } else {
        n0 = ch * images;
        n1 = std::min<int64_t>(N, n0 + images);
        h0 = 0;
        h1 = Ho;
      }
      float* acc = part.data() + static_cast<size_t>(ch) * nb * part_block;
      std::fill(acc, acc + nb * part_block, 0.0f);
      for (int64_t n = n0; n < n1; ++n)
        for (int oh0 = h0; oh0 < h1; oh0 += band) {
          const int nrows = std::min(band, h1 - oh0);
          // the next band's new input rows and dy rows (in memory order, also into the next image)
          const int calls = nb * (M / JB) * nrows * Wo;
          pf.set(0, x + n * img_in + std::min(2 * (oh0 + nrows), H) * row_in, 2 * band * row_in, x + N * img_in,
                 calls, false);
          pf.set(1, dy + n * img_out + (oh0 + nrows) * row_out, band * row_out, dy + N * img_out, calls, false);
          for (int k = 0; k < nb; ++k)
            for (int j0 = 0; j0 < M; j0 += JB)
              wgrad_rows_block<M, JB>(x + n * img_in, dy + n * img_out, oh0, nrows, H, W, Wo, C, j0, blocks[k],
                                      acc + k * part_block + static_cast<size_t>(j0) * 9 * VL, pf);
        }
    }
  });
  // sum the chunks in order, then scatter the lanes into dw (C M, 9)
  for (int k = 0; k < nb; ++k)
    for (size_t v = 0; v < part_block; v += VL) {
      vf s = vzero();
      for (int64_t c = 0; c < n_chunks; ++c) s = vadd(s, vload(part.data() + (c * nb + k) * part_block + v,
                                                               lanes_mask(VL)));
      alignas(64) float lanes[VL];
      vstore(lanes, s, lanes_mask(VL));
      const int j = static_cast<int>(v / VL) / 9, t = static_cast<int>(v / VL) % 9;
      for (int l = 0; l < VL && blocks[k].c0 + l < C; ++l)
        dw[((static_cast<size_t>(blocks[k].c0) + l) * M + j) * 9 + t] = lanes[l];
    }
}
#endif  // MGK_DW_SIMD

// ------------------------------------------------------------------------------------------- dispatch
void fwd_f32(const float* x, const float* w, float* y, int64_t N, int H, int W, int C, int M) {
#if MGK_DW_SIMD
  if (M == 1) return fwd_simd<1>(x, w, y, N, H, W, C);
  if (M == 2) return fwd_simd<2>(x, w, y, N, H, W, C);
#endif
  fwd_scalar<float>(x, w, y, N, H, W, C, M);
}

void dx_f32(const float* dy, const float* w, float* dx, int64_t N, int H, int W, int C, int M) {
#if MGK_DW_SIMD
  if (M == 1) return dx_simd<1>(dy, w, dx, N, H, W, C);
  if (M == 2) return dx_simd<2>(dy, w, dx, N, H, W, C);
#endif
  dx_scalar<float>(dy, w, dx, N, H, W, C, M);
}

void wgrad_f32(const float* x, const float* dy, float* dw, int64_t N, int H, int W, int C, int M) {
#if MGK_DW_SIMD
  if (M == 1) return wgrad_simd<1>(x, dy, dw, N, H, W, C);
  if (M == 2) return wgrad_simd<2>(x, dy, dw, N, H, W, C);
#endif
  wgrad_scalar<float>(x, dy, dw, N, H, W, C, M);
}

// ------------------------------------------------------------------------------------------- tensor checks

// The channel multiplier of weight w (C M, 1, 3, 3) for C input channels.
int check_weight(const at::Tensor& w, const at::Tensor& t, int64_t C) {
  TORCH_CHECK(w.device().is_cpu() && w.scalar_type() == t.scalar_type(), "weight must be a CPU tensor of ",
              t.scalar_type());
  TORCH_CHECK(w.dim() == 4 && w.size(1) == 1 && w.size(2) == 3 && w.size(3) == 3 && C > 0 && w.size(0) % C == 0,
              "weight must be (C M, 1, 3, 3) for ", C, " input channels");
  const int64_t M = w.size(0) / C;
  TORCH_CHECK(M >= 1 && M <= 64, "channel multiplier ", M, " is out of range");
  return static_cast<int>(M);
}

}  // namespace

at::Tensor dws2_forward(const at::Tensor& x, const at::Tensor& w) {
  check_nhwc(x, "x");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  const int M = check_weight(w, x, C);
  auto wc = w.contiguous();
  auto y = at::empty({N, half_up(H), half_up(W), C * M}, x.options());
  if (y.numel() == 0) return y;
  if (x.scalar_type() == at::kFloat)
    fwd_f32(x.data_ptr<float>(), wc.data_ptr<float>(), y.data_ptr<float>(), N, H, W, C, M);
  else
    fwd_scalar<double>(x.data_ptr<double>(), wc.data_ptr<double>(), y.data_ptr<double>(), N, H, W, C, M);
  return y;
}

at::Tensor dws2_input_grad(const at::Tensor& dy, const at::Tensor& w, int64_t H, int64_t W, int64_t C) {
  check_nhwc(dy, "grad_output");
  TORCH_CHECK(H >= 1 && W >= 1 && C >= 1 && H < (1 << 30) && W < (1 << 30), "bad input size");
  TORCH_CHECK(half_up(H) == dy.size(1) && half_up(W) == dy.size(2), "grad_output (", dy.size(1), ", ", dy.size(2),
              ") is not the output size of a ", H, "x", W, " input");
  const int M = check_weight(w, dy, C);
  TORCH_CHECK(dy.size(3) == C * M, "grad_output has ", dy.size(3), " channels, the weight ", C * M);
  const int64_t N = dy.size(0);
  auto wc = w.contiguous();
  auto dx = at::empty({N, H, W, C}, dy.options());
  if (dx.numel() == 0) return dx;
  if (dy.scalar_type() == at::kFloat)
    dx_f32(dy.data_ptr<float>(), wc.data_ptr<float>(), dx.data_ptr<float>(), N, H, W, C, M);
  else
    dx_scalar<double>(dy.data_ptr<double>(), wc.data_ptr<double>(), dx.data_ptr<double>(), N, H, W, C, M);
  return dx;
}

at::Tensor dws2_weight_grad(const at::Tensor& x, const at::Tensor& dy) {
  check_nhwc(x, "x");
  check_nhwc(dy, "grad_output");
  TORCH_CHECK(x.scalar_type() == dy.scalar_type(), "x and grad_output must have the same dtype");
  const int64_t N = x.size(0), H = x.size(1), W = x.size(2), C = x.size(3);
  TORCH_CHECK(dy.size(0) == N && dy.size(1) == half_up(H) && dy.size(2) == half_up(W) && C > 0 && dy.size(3) % C == 0,
              "grad_output does not fit x");
  const int64_t M = dy.size(3) / C;
  TORCH_CHECK(M >= 1 && M <= 64, "channel multiplier ", M, " is out of range");
  auto dw = at::zeros({C * M, 1, 3, 3}, x.options());
  if (x.numel() == 0) return dw;
  if (x.scalar_type() == at::kFloat)
    wgrad_f32(x.data_ptr<float>(), dy.data_ptr<float>(), dw.data_ptr<float>(), N, H, W, C, M);
  else
    wgrad_scalar<double>(x.data_ptr<double>(), dy.data_ptr<double>(), dw.data_ptr<double>(), N, H, W, C, M);
  return dw;
}

}  // namespace mgcnn_kernels
