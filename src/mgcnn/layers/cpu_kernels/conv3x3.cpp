// Grouped 3x3 convolution kernels (stride 1, zero padding 1, no bias) for NHWC tensors with few channels per group.
//
// Why: oneDNN's grouped kernels pad each group to the vector width, so with 4 or 8 channels per group most lanes
// multiply zeros. Here a vector spans several whole groups ("packed": cg <= VL / 2) or one group spans one or more
// vectors ("broadcast": larger cg), so (almost) every lane does useful work.
//
// Maths (cross-correlation; output channel o is in group g = o / cg; input channel of local index i is g cg + i):
//   y[n, h, w, o]     = sum_{kh, kw, i} x[n, h + kh - 1, w + kw - 1, g cg + i] W[o, i, kh, kw]
//   dx                = the same convolution of dy with Wt[c, j, kh, kw] = W[g cg + j, c - g cg, 2 - kh, 2 - kw]
//   dW[o, i, kh, kw]  = sum_{n, h, w} dy[n, h, w, o] x[n, h + kh - 1, w + kw - 1, g cg + i]
//
// float32 (AVX-512, or AVX2 + FMA), per channel block (one vector of channels):
// - Input rows are copied, in memory order, into a small ring of zero-padded rows per block (one zero column on
//   either side: the inner loops have no bounds checks and use constant offsets). Packed: a row is [col][VL], the
//   block's channels at each pixel; broadcast: [i][col], the group's channel i along the row.
// - Forward: a tile of T output rows x RW output columns is accumulated in T * RW vector registers; the 9 weight
//   vectors of the current input channel i stay in registers. Packed: one permute of the pixel's vector gives every
//   lane channel i of its own group (index vector lane l -> (l / cg) cg + i) and serves up to 3 T FMAs; broadcast:
//   a broadcast load of channel i.
// - Weight gradient, packed: lanes are the block's input channels; per output pixel one permute of dy per output
//   channel j of the group serves the 9 taps, so acc[j][tap][(g, i)] = dW[g cg + j, i, tap]. Broadcast: lanes are
//   output channels, dy stays in a register and channel i of x is a broadcast load.
// - The weight gradient is reduced in an order fixed by the shape (not by the thread count): each chunk of output
//   pixels (whole images or a band of rows, ~2048 pixels) accumulates its partial sums in loop order, and the
//   partial sums are added chunk after chunk. Two runs are bitwise equal, with any number of threads.
// float64 (and float32 without those instruction sets): plain loops, same reduction order rule.

#include "conv3x3.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstring>
#include <utility>
#include <vector>

#if defined(__x86_64__) || defined(_M_X64)
#include <immintrin.h>
#endif

namespace mgcnn_kernels {
namespace {

// ------------------------------------------------------------------------------------------- vector primitives
#if defined(__AVX512F__)
#define MGK_SIMD 1
constexpr int VL = 16;
using vf = __m512;
using vi = __m512i;
using vmask = __mmask16;
inline vmask lanes_mask(int n) { return n >= 16 ? vmask(0xFFFF) : vmask((1u << n) - 1u); }
inline vf vzero() { return _mm512_setzero_ps(); }
inline vf vload(const float* p) { return _mm512_loadu_ps(p); }
inline vf vload(const float* p, vmask m) { return _mm512_maskz_loadu_ps(m, p); }
inline void vstore(float* p, vf v) { _mm512_storeu_ps(p, v); }
inline void vstore(float* p, vf v, vmask m) { _mm512_mask_storeu_ps(p, m, v); }
inline vf vadd(vf a, vf b) { return _mm512_add_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm512_fmadd_ps(a, b, c); }
inline vf vbcast(const float* p) { return _mm512_set1_ps(*p); }
inline vi viload(const int32_t* p) { return _mm512_loadu_si512(reinterpret_cast<const void*>(p)); }
inline vf vperm(vi idx, vf x) { return _mm512_permutexvar_ps(idx, x); }
constexpr const char* ISA = "avx512";
#elif defined(__AVX2__) && defined(__FMA__)
#define MGK_SIMD 1
constexpr int VL = 8;
using vf = __m256;
using vi = __m256i;
using vmask = __m256i;
inline vmask lanes_mask(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
inline vf vzero() { return _mm256_setzero_ps(); }
inline vf vload(const float* p) { return _mm256_loadu_ps(p); }
inline vf vload(const float* p, vmask m) { return _mm256_maskload_ps(p, m); }
inline void vstore(float* p, vf v) { _mm256_storeu_ps(p, v); }
inline void vstore(float* p, vf v, vmask m) { _mm256_maskstore_ps(p, m, v); }
inline vf vadd(vf a, vf b) { return _mm256_add_ps(a, b); }
inline vf vfma(vf a, vf b, vf c) { return _mm256_fmadd_ps(a, b, c); }
inline vf vbcast(const float* p) { return _mm256_broadcast_ss(p); }
inline vi viload(const int32_t* p) { return _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)); }
inline vf vperm(vi idx, vf x) { return _mm256_permutevar8x32_ps(x, idx); }
constexpr const char* ISA = "avx2";
#else
#define MGK_SIMD 0
constexpr int VL = 1;
constexpr const char* ISA = "scalar";
#endif

// ------------------------------------------------------------------------------------------- scalar loops
// The grain of at::parallel_for for tasks of `work` multiply-adds each: small convolutions run on the calling
// thread (waking the other threads would cost more than the work).
inline int64_t grain_for(double work) {
  constexpr double MIN_WORK = 1 << 17;
  return std::max<int64_t>(1, static_cast<int64_t>(MIN_WORK / std::max(work, 1.0)));
}

template <typename T>
void conv_scalar(const T* x, const T* w, const T* add, T* y, int64_t N, int H, int W, int C, int cg) {
  at::parallel_for(0, N * H, grain_for(9.0 * W * C * cg), [&](int64_t begin, int64_t end) {
    for (int64_t row = begin; row < end; ++row) {
      const int64_t n = row / H;
      const int oh = static_cast<int>(row % H);
      for (int ow = 0; ow < W; ++ow)
        for (int o = 0; o < C; ++o) {
          const int g0 = (o / cg) * cg;
          T acc = add ? add[((n * H + oh) * W + ow) * C + o] : T(0);
          for (int kh = 0; kh < 3; ++kh) {
            const int ih = oh + kh - 1;
            if (ih < 0 || ih >= H) continue;
            for (int kw = 0; kw < 3; ++kw) {
              const int iw = ow + kw - 1;
              if (iw < 0 || iw >= W) continue;
              const T* xp = x + ((n * H + ih) * W + iw) * C + g0;
              const T* wp = w + static_cast<int64_t>(o) * cg * 9 + kh * 3 + kw;
              for (int i = 0; i < cg; ++i) acc += xp[i] * wp[i * 9];
            }
          }
          y[((n * H + oh) * W + ow) * C + o] = acc;
        }
    }
  });
}

template <typename T>
void wgrad_scalar(const T* x, const T* dy, T* dw, int64_t N, int H, int W, int C, int cg) {
  at::parallel_for(0, C, grain_for(9.0 * N * H * W * cg), [&](int64_t begin, int64_t end) {
    for (int64_t o = begin; o < end; ++o) {
      const int64_t g0 = (o / cg) * cg;
      for (int i = 0; i < cg; ++i)
        for (int kh = 0; kh < 3; ++kh)
          for (int kw = 0; kw < 3; ++kw) {
            T acc = 0;
            for (int64_t n = 0; n < N; ++n)
              for (int oh = std::max(0, 1 - kh); oh < std::min(H, H + 1 - kh); ++oh)
                for (int ow = std::max(0, 1 - kw); ow < std::min(W, W + 1 - kw); ++ow)
                  acc += dy[((n * H + oh) * W + ow) * C + o] *
                         x[((n * H + oh + kh - 1) * W + ow + kw - 1) * C + g0 + i];
            dw[(o * cg + i) * 9 + kh * 3 + kw] = acc;
          }
    }
  });
}

#if MGK_SIMD
// ------------------------------------------------------------------------------------------- channel blocks
// A block is one vector of channels: c0 .. c0 + nl - 1, inside the groups it covers (the output channels of the
// forward; in the packed weight gradient also the input channels, which are the same).
struct Blocks {
  int C = 0, cg = 0;
  bool packed = false;
  std::vector<int> c0, nl, in0;  // first channel, lanes used, first input channel of its (first) group
  std::vector<int32_t> idx;      // packed: [cg][VL] permute indices, lane l -> (l / cg) cg + i
  int count() const { return static_cast<int>(c0.size()); }
};

Blocks make_blocks(int C, int cg) {
  Blocks b;
  b.C = C;
  b.cg = cg;
  b.packed = 2 * cg <= VL;
  if (b.packed) {
    const int L = (VL / cg) * cg;
    for (int c = 0; c < C; c += L) {
      b.c0.push_back(c);
      b.nl.push_back(std::min(L, C - c));
      b.in0.push_back(c);
    }
    b.idx.assign(static_cast<size_t>(cg) * VL, 0);
    for (int i = 0; i < cg; ++i)
      for (int l = 0; l < L; ++l) b.idx[static_cast<size_t>(i) * VL + l] = (l / cg) * cg + i;
  } else {
    for (int g = 0; g < C / cg; ++g)
      for (int v = 0; v < cg; v += VL) {
        b.c0.push_back(g * cg + v);
        b.nl.push_back(std::min(VL, cg - v));
        b.in0.push_back(g * cg);
      }
  }
  return b;
}

// Weights (C, cg, 3, 3) -> [block][i][tap][VL], lane l holding W[c0 + l, i, tap]; lanes past the block's end zero.
std::vector<float> pack_weight(const float* w, const Blocks& b) {
  const int cg = b.cg;
  std::vector<float> out(static_cast<size_t>(b.count()) * cg * 9 * VL, 0.0f);
  for (int k = 0; k < b.count(); ++k)
    for (int l = 0; l < b.nl[k]; ++l) {
      const int o = b.c0[k] + l;
      for (int i = 0; i < cg; ++i)
        for (int t = 0; t < 9; ++t)
          out[((static_cast<size_t>(k) * cg + i) * 9 + t) * VL + l] = w[(static_cast<size_t>(o) * cg + i) * 9 + t];
    }
  return out;
}

// ------------------------------------------------------------------------------------------- row rings
// One ring of `slots` padded rows per block; input row ih of block k is at slot(k, ih). A packed row is [col][VL]
// (col = iw + 1; columns 0 and W + 1 zero), a broadcast row [i][col] with is = W + 2 floats between channels.
struct Rings {
  float* base;
  int W, C, slots;
  size_t row, ring, is;
  float* slot(int k, int ih) const { return base + k * ring + static_cast<size_t>((ih + 1) % slots) * row; }
};

Rings make_rings(float* base, const Blocks& b, int W, int slots) {
  const size_t row = b.packed ? static_cast<size_t>(W + 2) * VL : static_cast<size_t>(b.cg) * (W + 2);
  const size_t row_padded = (row + VL - 1) / VL * VL;  // whole vectors: every row starts on a cache line
  return Rings{base, W, b.C, slots, row_padded, row_padded * slots, static_cast<size_t>(W + 2)};
}

size_t rings_floats(const Blocks& b, int W, int slots) {
  return make_rings(nullptr, b, W, slots).ring * b.count();
}

// Copies input row ih (inside the image; W pixels of C channels at x_row, read in memory order so the hardware
// prefetcher sees one stream) into every block's ring.
void fill_rows(const Rings& r, const Blocks& b, const float* x_row, int ih) {
  const int W = r.W, nb = b.count(), cg = b.cg;
  const size_t C = r.C;
  if (b.packed) {
    for (int k = 0; k < nb; ++k) {
      float* P = r.slot(k, ih);
      vstore(P, vzero());
      vstore(P + static_cast<size_t>(W + 1) * VL, vzero());
    }
    for (int iw = 0; iw < W; ++iw) {
      const float* xp = x_row + iw * C;
      const size_t col = static_cast<size_t>(iw + 1) * VL;
      for (int k = 0; k < nb; ++k) vstore(r.slot(k, ih) + col, vload(xp + b.c0[k], lanes_mask(b.nl[k])));
    }
  } else {
    for (int k = 0; k < nb; ++k) {
      float* P = r.slot(k, ih);
      for (int i = 0; i < cg; ++i) P[i * r.is] = P[i * r.is + W + 1] = 0.0f;
    }
    for (int iw = 0; iw < W; ++iw) {
      const float* xp = x_row + iw * C;
      for (int k = 0; k < nb; ++k) {
        if (k > 0 && b.in0[k] == b.in0[k - 1]) continue;  // another vector of the same group: same row
        float* P = r.slot(k, ih) + iw + 1;
        const float* xk = xp + b.in0[k];
        for (int i = 0; i < cg; ++i) P[i * r.is] = xk[i];
      }
    }
    for (int k = 1; k < nb; ++k)  // the group's other vectors share its rows
      if (b.in0[k] == b.in0[k - 1]) std::memcpy(r.slot(k, ih), r.slot(k - 1, ih), r.row * sizeof(float));
  }
}

// This thread's scratch memory of at least n floats, aligned to 64 bytes (a misaligned row would split every vector
// load and store across two cache lines).
float* scratch(size_t n) {
  thread_local std::vector<float> buf;
  if (buf.size() < n + 16) buf.resize(n + 16);
  const uintptr_t p = reinterpret_cast<uintptr_t>(buf.data());
  return reinterpret_cast<float*>((p + 63) & ~uintptr_t(63));
}

// Requests the cache lines of [p, end) a few at a time between the tiles of a band, so that the next band's input
// and output lines arrive while this band computes.
struct Prefetch {
  const char* p = nullptr;
  const char* end = nullptr;
  int per_call = 0;
  void start(const float* from, size_t floats, const float* limit, int calls) {
    p = reinterpret_cast<const char*>(from);
    end = reinterpret_cast<const char*>(std::min(from + floats, limit));
    per_call = p < end ? static_cast<int>((end - p + 64 * calls - 1) / (64 * calls)) : 0;
  }
  template <bool WRITE>
  void step() {
    for (int i = 0; i < per_call && p < end; ++i, p += 64) __builtin_prefetch(p, WRITE ? 1 : 0, 3);
  }
};

// ------------------------------------------------------------------------------------------- forward
struct FwdArgs {
  const float* rows[6];  // ring rows of input rows h0 - 1 .. h0 + T (null outside the image)
  size_t is;             // broadcast: floats between channels in a row
  float* y;              // image base (H, W, C)
  const float* add;      // image base (H, W, C) of the tensor added to the result, or null
  int W, C, cg, c0;
  vmask m;
  const float* w;      // this block's packed weights [cg][9][VL]
  const int32_t* idx;  // packed: [cg][VL]
};

// Output rows h0 .. h0 + T - 1, columns w0 .. w0 + RW - 1 of one channel block.
template <int T, int RW, bool PK>
void fwd_tile(const FwdArgs& a, int h0, int w0) {
  vf acc[T][RW];
  const size_t C = a.C;
  // y = add + conv: the accumulators start from the added tensor, which saves the separate pass of an addition
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int p = 0; p < RW; ++p)
      acc[t][p] = a.add ? vload(a.add + (static_cast<size_t>(h0 + t) * a.W + w0 + p) * C + a.c0, a.m) : vzero();
  for (int i = 0; i < a.cg; ++i) {
    const float* wi = a.w + static_cast<size_t>(i) * 9 * VL;
    vf w[9];
#pragma GCC unroll 9
    for (int k = 0; k < 9; ++k) w[k] = vload(wi + k * VL);
    vi id{};
    if constexpr (PK) id = viload(a.idx + static_cast<size_t>(i) * VL);
#pragma GCC unroll 6
    for (int r = 0; r < T + 2; ++r) {
      if (a.rows[r] == nullptr) continue;  // outside the image: zero padding
      // ring column w0 + k holds input column w0 - 1 + k
      const float* pr = PK ? a.rows[r] + static_cast<size_t>(w0) * VL : a.rows[r] + i * a.is + w0;
#pragma GCC unroll 10
      for (int k = 0; k < RW + 2; ++k) {
        const vf s = PK ? vperm(id, vload(pr + k * VL)) : vbcast(pr + k);
#pragma GCC unroll 4
        for (int t = 0; t < T; ++t) {
          const int kh = r - t;
          if (kh < 0 || kh > 2) continue;
#pragma GCC unroll 3
          for (int kw = 0; kw < 3; ++kw) {
            const int p = k - kw;
            if (p < 0 || p >= RW) continue;
            acc[t][p] = vfma(s, w[kh * 3 + kw], acc[t][p]);
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int t = 0; t < T; ++t)
#pragma GCC unroll 8
    for (int p = 0; p < RW; ++p) vstore(a.y + (static_cast<size_t>(h0 + t) * a.W + w0 + p) * C + a.c0, acc[t][p], a.m);
}

using FwdTile = void (*)(const FwdArgs&, int, int);
constexpr int MAX_T = 4, MAX_RW = 8;

template <bool PK, int T, int... RW>
constexpr std::array<FwdTile, MAX_RW> fwd_row(std::integer_sequence<int, RW...>) {
  return {fwd_tile<T, RW + 1, PK>...};
}

template <bool PK>
FwdTile fwd_tile_for(int T, int RW) {
  using S = std::make_integer_sequence<int, MAX_RW>;
  static constexpr std::array<std::array<FwdTile, MAX_RW>, MAX_T> table = {
      fwd_row<PK, 1>(S{}), fwd_row<PK, 2>(S{}), fwd_row<PK, 3>(S{}), fwd_row<PK, 4>(S{})};
  return table[T - 1][RW - 1];
}

// Each task walks its rows once and, row by row, all channel blocks, so that the input is read and the output
// written in memory order.
void conv_simd(const float* x, const float* w, const float* add, float* y, int64_t N, int H, int W, int C, int cg) {
  const Blocks b = make_blocks(C, cg);
  const std::vector<float> wp = pack_weight(w, b);
  const int RW = std::min(W, MAX_RW);
  const int T = std::min(H, RW <= 4 ? 4 : 2);  // T * RW near 16 accumulators
  const int nb = b.count();
  const size_t img = static_cast<size_t>(H) * W * C;
  const float *x_end = x + N * img, *y_end = y + N * img;
  // tasks: whole images, or bands of rows when there are too few images to share among the threads
  const int64_t bands = (H + T - 1) / T, want = 4 * static_cast<int64_t>(at::get_num_threads());
  const int64_t split = N >= want ? 1 : std::min<int64_t>(bands, (want + N - 1) / N);
  const int64_t per_task = (bands + split - 1) / split, tasks_per_image = (bands + per_task - 1) / per_task;
  const double task_work = 9.0 * per_task * T * W * C * cg;
  at::parallel_for(0, N * tasks_per_image, grain_for(task_work), [&](int64_t begin, int64_t end) {
    const Rings rings = make_rings(scratch(rings_floats(b, W, T + 2)), b, W, T + 2);
    std::vector<FwdArgs> args(nb);
    Prefetch pf_x, pf_y, pf_a;
    for (int64_t task = begin; task < end; ++task) {
      const int64_t n = task / tasks_per_image;
      const int h_begin = static_cast<int>((task % tasks_per_image) * per_task * T);
      const int h_end = static_cast<int>(std::min<int64_t>(H, h_begin + per_task * T));
      const float* xn = x + n * img;
      for (int k = 0; k < nb; ++k)
        args[k] = FwdArgs{{}, rings.is, y + n * img, add ? add + n * img : nullptr, W, C, cg, b.c0[k],
                          lanes_mask(b.nl[k]),
                          wp.data() + static_cast<size_t>(k) * cg * 9 * VL, b.idx.data()};
      int next = std::max(0, h_begin - 1);  // the first input row not in the rings yet
      for (int h0 = h_begin; h0 < h_end; h0 += T) {
        const int t = std::min(T, H - h0), last_row = std::min(h0 + t, H - 1);
        for (; next <= last_row; ++next) fill_rows(rings, b, xn + static_cast<size_t>(next) * W * C, next);
        for (int k = 0; k < nb; ++k)
          for (int r = 0; r < t + 2; ++r) {
            const int ih = h0 - 1 + r;
            args[k].rows[r] = ih < 0 || ih >= H ? nullptr : rings.slot(k, ih);
          }
        // the next band's new input rows and its output rows (contiguous, also across images)
        const int calls = nb * ((W + RW - 1) / RW);
        pf_x.start(xn + static_cast<size_t>(next) * W * C, static_cast<size_t>(T) * W * C, x_end, calls);
        pf_y.start(y + n * img + static_cast<size_t>(h0 + t) * W * C, static_cast<size_t>(T) * W * C, y_end, calls);
        if (add)  // the added tensor's next rows, read by the next band's accumulators
          pf_a.start(add + n * img + static_cast<size_t>(h0 + t) * W * C, static_cast<size_t>(T) * W * C,
                     add + N * img, calls);
        // column strips outside, blocks inside: the output is written in memory order too
        for (int w0 = 0; w0 < W; w0 += RW) {
          const int rw = std::min(RW, W - w0);
          const FwdTile tile = b.packed ? fwd_tile_for<true>(t, rw) : fwd_tile_for<false>(t, rw);
          for (int k = 0; k < nb; ++k) {
            pf_x.step<false>();
            pf_y.step<true>();
            if (add) pf_a.step<false>();
            tile(args[k], h0, w0);
          }
        }
      }
    }
  });
}

// ------------------------------------------------------------------------------------------- weight gradient
constexpr int WGRAD_MAX_ROWS = 8;  // output rows per call: the accumulators stay in registers across them

struct WgradArgs {
  const float* rows[WGRAD_MAX_ROWS + 2];  // ring rows of input rows oh0 - 1 .. oh0 + nrows (null outside the image)
  size_t is;                              // broadcast: floats between channels in a row
  const float* dy;                        // output row oh0 of dy, at the block's first channel
  int W, C, j0, nrows;                    // j0: first output (packed) or input (broadcast) channel of this unit
  vmask m;
  const int32_t* idx;  // packed: [cg][VL]
};

// Adds output rows oh0 .. oh0 + nrows - 1 of the block into acc[JB][9][VL]: packed, acc[j][tap] lanes (g, i) for
// output channels j0 .. j0 + JB - 1 of every group; broadcast, acc[j][tap] lanes o for input channels j0 .. j0 + JB - 1.
template <int JB, bool PK>
void wgrad_rows(const WgradArgs& a, float* accbuf) {
  vf acc[JB][9];
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j)
#pragma GCC unroll 9
    for (int t = 0; t < 9; ++t) acc[j][t] = vload(accbuf + (j * 9 + t) * VL);
  vi id[JB];
  if constexpr (PK) {
#pragma GCC unroll 4
    for (int j = 0; j < JB; ++j) id[j] = viload(a.idx + static_cast<size_t>(a.j0 + j) * VL);
  }
  const size_t C = a.C;
  for (int r = 0; r < a.nrows; ++r) {
    const float* const* rows = a.rows + r;
    const float* dy = a.dy + static_cast<size_t>(r) * a.W * C;
    const int kh_first = rows[0] == nullptr ? 1 : 0, kh_last = rows[2] == nullptr ? 1 : 2;
    for (int p = 0; p < a.W; ++p) {
      const vf d = vload(dy + p * C, a.m);
      vf s[JB];
      if constexpr (PK) {
#pragma GCC unroll 4
        for (int j = 0; j < JB; ++j) s[j] = vperm(id[j], d);
      }
#pragma GCC unroll 3
      for (int kh = 0; kh < 3; ++kh) {
        if (kh < kh_first || kh > kh_last) continue;
#pragma GCC unroll 3
        for (int kw = 0; kw < 3; ++kw) {
          if constexpr (PK) {
            const vf xv = vload(rows[kh] + static_cast<size_t>(p + kw) * VL);  // ring column p + kw: input p - 1 + kw
#pragma GCC unroll 4
            for (int j = 0; j < JB; ++j) acc[j][kh * 3 + kw] = vfma(s[j], xv, acc[j][kh * 3 + kw]);
          } else {
#pragma GCC unroll 4
            for (int j = 0; j < JB; ++j)
              acc[j][kh * 3 + kw] = vfma(d, vbcast(rows[kh] + (a.j0 + j) * a.is + p + kw), acc[j][kh * 3 + kw]);
          }
        }
      }
    }
  }
#pragma GCC unroll 4
  for (int j = 0; j < JB; ++j)
#pragma GCC unroll 9
    for (int t = 0; t < 9; ++t) vstore(accbuf + (j * 9 + t) * VL, acc[j][t]);
}

using WgradRows = void (*)(const WgradArgs&, float*);
constexpr int WGRAD_JB = 3;  // packed: 2 (two permuted dy vectors live), broadcast: 3

WgradRows wgrad_rows_for(bool packed, int jb) {
  static constexpr WgradRows pk[] = {wgrad_rows<1, true>, wgrad_rows<2, true>};
  static constexpr WgradRows bc[] = {wgrad_rows<1, false>, wgrad_rows<2, false>, wgrad_rows<3, false>};
  return packed ? pk[jb - 1] : bc[jb - 1];
}

constexpr int64_t CHUNK_PIXELS = 2048, MIN_CHUNKS = 16;

// Tasks are chunks of output pixels; each walks its rows once and, row by row, all channel blocks, accumulating
// into its own partial sums.
void wgrad_simd(const float* x, const float* dy, float* dw, int64_t N, int H, int W, int C, int cg) {
  const Blocks b = make_blocks(C, cg);
  const int64_t hw = static_cast<int64_t>(H) * W;
  // chunks of output pixels: a function of the shape only, so the summation order is too
  int64_t n_chunks, per_image = 1, images = 1, rows = H;
  if (hw >= CHUNK_PIXELS) {
    rows = std::max<int64_t>(1, CHUNK_PIXELS / W);
    per_image = (H + rows - 1) / rows;
    n_chunks = N * per_image;
  } else {
    images = std::max<int64_t>(1, std::min(CHUNK_PIXELS / hw, (N + MIN_CHUNKS - 1) / MIN_CHUNKS));
    n_chunks = (N + images - 1) / images;
  }
  const int nb = b.count(), jb = b.packed ? 2 : WGRAD_JB, n_units = (cg + jb - 1) / jb;
  const size_t part_block = static_cast<size_t>(cg) * 9 * VL, img = static_cast<size_t>(H) * W * C;
  const float* x_end = x + N * img;
  // output rows per call: several for narrow images (fewer loads and stores of the accumulators), else one
  const int band = W >= 16 ? 1 : std::max(1, std::min({H, WGRAD_MAX_ROWS, 64 / W}));
  std::vector<float> part(static_cast<size_t>(n_chunks) * nb * part_block);
  const double chunk_work = 9.0 * static_cast<double>(N) * hw * C * cg / n_chunks;
  at::parallel_for(0, n_chunks, grain_for(chunk_work), [&](int64_t begin, int64_t end) {
    const Rings rings = make_rings(scratch(rings_floats(b, W, band + 2)), b, W, band + 2);
    Prefetch pf_x, pf_dy;
    for (int64_t c = begin; c < end; ++c) {
      int64_t n0, n1;
      int h0, h1;
      if (hw >= CHUNK_PIXELS) {
        n0 = c / per_image;
        n1 = n0 + 1;
        h0 = static_cast<int>((c % per_image) * rows);
        h1 = static_cast<int>(std::min<int64_t>(H, h0 + rows));
      } else {
        n0 = c * images;
        n1 = std::min<int64_t>(N, n0 + images);
        h0 = 0;
        h1 = H;
      }
      float* acc_c = part.data() + static_cast<size_t>(c) * nb * part_block;
      std::fill(acc_c, acc_c + nb * part_block, 0.0f);
      for (int64_t n = n0; n < n1; ++n) {
        const float* xn = x + n * img;
        int next = std::max(0, h0 - 1);  // the first input row not in the rings yet
        for (int oh0 = h0; oh0 < h1; oh0 += band) {
          const int nrows = std::min(band, h1 - oh0), last_row = std::min(oh0 + nrows, H - 1);
          for (; next <= last_row; ++next) fill_rows(rings, b, xn + static_cast<size_t>(next) * W * C, next);
          const float* dy_rows = dy + n * img + static_cast<size_t>(oh0) * W * C;
          const int calls = nb * n_units;
          const size_t ahead = static_cast<size_t>(band) * W * C;  // the next band's input and dy rows
          pf_x.start(xn + static_cast<size_t>(next) * W * C, ahead, x_end, calls);
          pf_dy.start(dy_rows + static_cast<size_t>(nrows) * W * C, ahead, dy + N * img, calls);
          for (int k = 0; k < nb; ++k) {
            WgradArgs a{{}, rings.is, dy_rows + b.c0[k], W, C, 0, nrows, lanes_mask(b.nl[k]), b.idx.data()};
            for (int r = 0; r < nrows + 2; ++r) {
              const int ih = oh0 - 1 + r;
              a.rows[r] = ih < 0 || ih >= H ? nullptr : rings.slot(k, ih);
            }
            for (int u = 0; u < n_units; ++u) {
              a.j0 = u * jb;
              const int nj = std::min(jb, cg - a.j0);
              pf_x.step<false>();
              pf_dy.step<false>();
              wgrad_rows_for(b.packed, nj)(a, acc_c + k * part_block + static_cast<size_t>(a.j0) * 9 * VL);
            }
          }
        }
      }
    }
  });
  // sum the chunks in order, then scatter the lanes into dw (C, cg, 3, 3)
  const double reduce_work = static_cast<double>(n_chunks) * nb * part_block;  // additions: memory-bound, cheap
  at::parallel_for(0, nb, reduce_work < (1 << 22) ? nb : 1, [&](int64_t begin, int64_t end) {
    std::vector<float> red(part_block);
    for (int64_t k = begin; k < end; ++k) {
      for (size_t v = 0; v < part_block; v += VL) {
        vf s = vzero();
        for (int64_t c = 0; c < n_chunks; ++c) s = vadd(s, vload(part.data() + (c * nb + k) * part_block + v));
        vstore(red.data() + v, s);
      }
      for (int l = 0; l < b.nl[k]; ++l)
        for (int j = 0; j < cg; ++j)
          for (int t = 0; t < 9; ++t) {
            const float v = red[(static_cast<size_t>(j) * 9 + t) * VL + l];
            if (b.packed)  // lane l = (g, i) of output channel j: dW[c0 + g cg + j, i]
              dw[((static_cast<size_t>(b.c0[k]) + (l / cg) * cg + j) * cg + l % cg) * 9 + t] = v;
            else  // lane l = output channel c0 + l, j = input channel
              dw[((static_cast<size_t>(b.c0[k]) + l) * cg + j) * 9 + t] = v;
          }
    }
  });
}
#endif  // MGK_SIMD

}  // namespace

const char* isa() { return ISA; }
int vector_lanes() { return VL; }

void conv_f32(const float* x, const float* w, const float* add, float* y, int64_t N, int H, int W, int C, int cg) {
#if MGK_SIMD
  conv_simd(x, w, add, y, N, H, W, C, cg);
#else
  conv_scalar<float>(x, w, add, y, N, H, W, C, cg);
#endif
}

void conv_f64(const double* x, const double* w, const double* add, double* y, int64_t N, int H, int W, int C,
              int cg) {
  conv_scalar<double>(x, w, add, y, N, H, W, C, cg);
}

void wgrad_f32(const float* x, const float* dy, float* dw, int64_t N, int H, int W, int C, int cg) {
#if MGK_SIMD
  wgrad_simd(x, dy, dw, N, H, W, C, cg);
#else
  wgrad_scalar<float>(x, dy, dw, N, H, W, C, cg);
#endif
}

void wgrad_f64(const double* x, const double* dy, double* dw, int64_t N, int H, int W, int C, int cg) {
  wgrad_scalar<double>(x, dy, dw, N, H, W, C, cg);
}

}  // namespace mgcnn_kernels
