// medvid's CPU kernels for the Mamba-2 mixer as MedSora uses it, forward and backward:
//   1. depthwise causal convolution + SiLU over gathered rows;
//   2. gated RMSNorm summed over scans (below).
//
// MedSora's Mamba scans read the rows of the input projection in four spiral orders. In eager PyTorch
// the gather, the k taps of the convolution, the bias and the SiLU are each a pass over a
// (sequences x length x channels) tensor, and their backward about twice as many; on a CPU these passes
// are bound by memory bandwidth, not arithmetic. Here each is one pass: every output row is computed
// from its k source rows while they sit in cache. No library offers this: causal-conv1d is CUDA only,
// and torch's CPU depthwise conv1d wants channel-first copies and has no gather or activation.
//
// Layout: x is (rows, C) with row stride `rs` and unit channel stride; `index` (or none: row n is n)
// lists the rows of `nseq` sequences of `len` positions, sequence-major. w is (C, K), tap i looks
// K-1-i positions back within its own sequence; zeros before its start.

#include <torch/extension.h>
#include <ATen/Parallel.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

// exp written so that the compiler vectorises the loops calling it (std::exp is a scalar libm call, and
// on a CPU with AVX2 the SiLU's exp otherwise costs as much as the whole convolution): x = n ln2 + r,
// |r| <= ln2 / 2, exp(r) by its Taylor series to below the type's rounding (degree 7 for float: the
// remainder is < 6e-9; 13 for double: < 5e-18), times 2^n built in the exponent bits. NaN stays NaN;
// x is clamped to where 2^n is a normal number (exp underflows to ~1e-38 / 1e-308 instead of 0).
constexpr double kInvFactorial[14] = {1.0, 1.0, 1.0 / 2, 1.0 / 6, 1.0 / 24, 1.0 / 120, 1.0 / 720, 1.0 / 5040,
                                     1.0 / 40320, 1.0 / 362880, 1.0 / 3628800, 1.0 / 39916800, 1.0 / 479001600,
                                     1.0 / 6227020800.0};

template <typename T>
struct ExpConst;
template <>
struct ExpConst<float> {
  using I = int32_t;
  static constexpr int degree = 7, mantissa = 23, bias = 127;
  static constexpr float lo = -87.0f, hi = 88.0f, ln2_hi = 0.693145751953125f, ln2_lo = 1.42860682030941723212e-6f;
  static constexpr const double* inv_factorial = kInvFactorial;
};
template <>
struct ExpConst<double> {
  using I = int64_t;
  static constexpr int degree = 13, mantissa = 52, bias = 1023;
  static constexpr double lo = -708.0, hi = 709.0, ln2_hi = 6.93147180369123816490e-01,
                          ln2_lo = 1.90821492927058770002e-10;
  static constexpr const double* inv_factorial = kInvFactorial;
};

template <typename T>
inline T vexp(T x) {
  using E = ExpConst<T>;
  using I = typename E::I;
  x = x < E::lo ? E::lo : x;
  x = x > E::hi ? E::hi : x;
  const T n = std::floor(x * T(1.4426950408889634) + T(0.5));
  const T r = (x - n * E::ln2_hi) - n * E::ln2_lo;
  T p = T(E::inv_factorial[E::degree]);  // Horner: one fused multiply-add per degree
  for (int k = E::degree - 1; k >= 0; --k) p = p * r + T(E::inv_factorial[k]);
  // through int32 (n is within +-1100): a double -> int64 conversion does not vectorise on AVX2
  const I bits = (static_cast<I>(static_cast<int32_t>(n)) + E::bias) << E::mantissa;
  T scale;
  std::memcpy(&scale, &bits, sizeof(T));
  return p * scale;
}

template <typename T>
inline T silu_of(T v) { return v / (T(1) + vexp(-v)); }

// c = bias + sum_i w_i x_{t-(K-1-i)} for one output row (channels 0..C).
template <typename T>
inline void conv_row(const T* x, int64_t rs, const int64_t* index, int64_t n, int64_t t, int64_t C,
                     const T* wt, int64_t K, const T* bias, T* out) {
  const T* r = x + (index ? index[n] : n) * rs;
  const T* wl = wt + (K - 1) * C;
  if (bias) {
    for (int64_t c = 0; c < C; ++c) out[c] = bias[c] + wl[c] * r[c];
  } else {
    for (int64_t c = 0; c < C; ++c) out[c] = wl[c] * r[c];
  }
  for (int64_t i = K - 2; i >= 0; --i) {
    const int64_t s = K - 1 - i;
    if (s > t) break;
    const T* ri = x + (index ? index[n - s] : n - s) * rs;
    const T* wi = wt + i * C;
    for (int64_t c = 0; c < C; ++c) out[c] += wi[c] * ri[c];
  }
}

template <typename T>
void forward_impl(const T* x, int64_t rs, const int64_t* index, int64_t nseq, int64_t len, int64_t C,
                  const T* wt, int64_t K, const T* bias, T* out, bool activation) {
  at::parallel_for(0, nseq, 1, [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      for (int64_t t = 0; t < len; ++t) {
        const int64_t n = q * len + t;
        T* o = out + n * C;
        conv_row(x, rs, index, n, t, C, wt, K, bias, o);
        if (activation) {
          for (int64_t c = 0; c < C; ++c) o[c] = silu_of(o[c]);
        }
      }
    }
  });
}

template <typename T>
void backward_impl(const T* g, const T* x, int64_t rs, const int64_t* index, int64_t nseq, int64_t len, int64_t C,
                   const T* wt, int64_t K, const T* bias, bool activation, T* gx, double* partial,
                   int64_t nparts) {
  // partial: (nparts, K + 1, C) accumulators for the weights' (taps, then bias) gradients
  at::parallel_for(0, nseq, 1, [&](int64_t q0, int64_t q1) {
    double* acc = partial + (at::get_thread_num() % nparts) * (K + 1) * C;
    std::vector<T> gc(len * C);
    for (int64_t q = q0; q < q1; ++q) {
      // the gradient at the convolution's output, the SiLU's backward with c recomputed
      for (int64_t t = 0; t < len; ++t) {
        const int64_t n = q * len + t;
        T* gct = gc.data() + t * C;
        const T* gn = g + n * C;
        if (activation) {
          conv_row(x, rs, index, n, t, C, wt, K, bias, gct);
          for (int64_t c = 0; c < C; ++c) {
            const T v = gct[c];
            const T sg = T(1) / (T(1) + vexp(-v));
            gct[c] = gn[c] * sg * (T(1) + v * (T(1) - sg));
          }
        } else {
          for (int64_t c = 0; c < C; ++c) gct[c] = gn[c];
        }
      }
      for (int64_t t = 0; t < len; ++t) {
        const int64_t n = q * len + t;
        const T* gct = gc.data() + t * C;
        const T* r = x + (index ? index[n] : n) * rs;
        T* o = gx + n * C;
        // input gradient: tap i carries position t to t + K-1-i
        const T* wl = wt + (K - 1) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = wl[c] * gct[c];
        for (int64_t i = K - 2; i >= 0; --i) {
          const int64_t s = K - 1 - i;
          if (t + s >= len) continue;
          const T* gs = gct + s * C;
          const T* wi = wt + i * C;
          for (int64_t c = 0; c < C; ++c) o[c] += wi[c] * gs[c];
        }
        // weight gradient: tap i pairs the output at t with the input at t - (K-1-i)
        double* al = acc + (K - 1) * C;
        for (int64_t c = 0; c < C; ++c) al[c] += double(gct[c]) * double(r[c]);
        for (int64_t i = K - 2; i >= 0; --i) {
          const int64_t s = K - 1 - i;
          if (s > t) break;
          const T* ri = x + (index ? index[n - s] : n - s) * rs;
          double* ai = acc + i * C;
          for (int64_t c = 0; c < C; ++c) ai[c] += double(gct[c]) * double(ri[c]);
        }
        double* ab = acc + K * C;
        for (int64_t c = 0; c < C; ++c) ab[c] += double(gct[c]);
      }
    }
  });
}

void check(const torch::Tensor& x, const torch::Tensor& w, const c10::optional<torch::Tensor>& index,
           int64_t nseq, int64_t len) {
  TORCH_CHECK(x.device().is_cpu() && x.dim() == 2 && x.stride(1) == 1, "x: CPU (rows, C) with unit channel stride");
  TORCH_CHECK(w.dim() == 2 && w.size(0) == x.size(1) && w.scalar_type() == x.scalar_type(), "w: (C, K) of x's dtype");
  if (index) {
    TORCH_CHECK(index->scalar_type() == torch::kLong && index->is_contiguous() && index->numel() == nseq * len,
                "index: contiguous int64 of nseq * len rows");
  } else {
    TORCH_CHECK(x.size(0) == nseq * len, "without an index x has nseq * len rows");
  }
}

}  // namespace

// silu(conv(x[index])) (or the convolution alone): (nseq * len, C), contiguous.
torch::Tensor forward(torch::Tensor x, c10::optional<torch::Tensor> index, int64_t nseq, int64_t len,
                      torch::Tensor w, c10::optional<torch::Tensor> bias, bool activation) {
  check(x, w, index, nseq, len);
  const int64_t C = x.size(1), K = w.size(1);
  auto out = torch::empty({nseq * len, C}, x.options());
  auto wt = w.t().contiguous();
  auto b = bias ? bias->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv_silu_forward", [&] {
    forward_impl<scalar_t>(x.data_ptr<scalar_t>(), x.stride(0), index ? index->data_ptr<int64_t>() : nullptr, nseq,
                           len, C, wt.data_ptr<scalar_t>(), K, bias ? b.data_ptr<scalar_t>() : nullptr,
                           out.data_ptr<scalar_t>(), activation);
  });
  return out;
}

// Given g, the gradient at the output (of the SiLU when `activation`): the gradient of the gathered rows
// (nseq * len, C), of w (C, K) and of the bias (C,).
std::vector<torch::Tensor> backward(torch::Tensor g, torch::Tensor x, c10::optional<torch::Tensor> index,
                                    int64_t nseq, int64_t len, torch::Tensor w, c10::optional<torch::Tensor> bias,
                                    bool activation) {
  check(x, w, index, nseq, len);
  g = g.contiguous();
  const int64_t C = x.size(1), K = w.size(1);
  TORCH_CHECK(g.scalar_type() == x.scalar_type() && g.numel() == nseq * len * C, "g: (nseq * len, C) of x's dtype");
  auto gx = torch::empty({nseq * len, C}, x.options());
  const int64_t nparts = at::get_num_threads();
  auto partial = torch::zeros({nparts, K + 1, C}, x.options().dtype(torch::kDouble));
  auto wt = w.t().contiguous();
  auto b = bias ? bias->contiguous() : torch::Tensor();
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "causal_conv_silu_backward", [&] {
    backward_impl<scalar_t>(g.data_ptr<scalar_t>(), x.data_ptr<scalar_t>(), x.stride(0),
                            index ? index->data_ptr<int64_t>() : nullptr, nseq, len, C, wt.data_ptr<scalar_t>(), K,
                            bias ? b.data_ptr<scalar_t>() : nullptr, activation, gx.data_ptr<scalar_t>(),
                            partial.data_ptr<double>(), nparts);
  });
  auto sums = partial.sum(0).to(x.scalar_type());  // (K + 1, C)
  return {gx, sums.narrow(0, 0, K).t().contiguous(), sums[K].contiguous()};
}

// out[b, m] = sum over k < fold of g[b, back[k * M + m]]: the gradient of a gather that listed every
// row `fold` times, sent back through the inverse permutation `back` (fold * M,). g: (B, fold * M, C).
torch::Tensor fold_rows(torch::Tensor g, torch::Tensor back, int64_t fold) {
  g = g.contiguous();
  TORCH_CHECK(g.dim() == 3 && back.scalar_type() == torch::kLong && back.is_contiguous() &&
                  back.numel() == g.size(1) && g.size(1) % fold == 0,
              "fold_rows: g (B, fold * M, C), back (fold * M,) int64");
  const int64_t B = g.size(0), FM = g.size(1), C = g.size(2), M = FM / fold;
  auto out = torch::empty({B, M, C}, g.options());
  const int64_t* bk = back.data_ptr<int64_t>();
  AT_DISPATCH_FLOATING_TYPES(g.scalar_type(), "fold_rows", [&] {
    const scalar_t* gp = g.data_ptr<scalar_t>();
    scalar_t* op = out.data_ptr<scalar_t>();
    at::parallel_for(0, B * M, 16, [&](int64_t r0, int64_t r1) {
      for (int64_t r = r0; r < r1; ++r) {
        const int64_t b = r / M, m = r % M;
        scalar_t* o = op + r * C;
        const scalar_t* s0 = gp + (b * FM + bk[m]) * C;
        for (int64_t c = 0; c < C; ++c) o[c] = s0[c];
        for (int64_t k = 1; k < fold; ++k) {
          const scalar_t* sk = gp + (b * FM + bk[k * M + m]) * C;
          for (int64_t c = 0; c < C; ++c) o[c] += sk[c];
        }
      }
    });
  });
  return out;
}

// ---- Gated RMSNorm summed over scans: out[b, g, n] = weight * sum_k rmsnorm(y[b, g, k, n] * silu(z[b, n])) ----
// (mamba_ssm's norm_before_gate=False, per group of `gs` channels). MedSora's spatial branch sums the two
// directions (k) of each grouping (g); in eager PyTorch the gate, the norm, the scale and the sum are each a
// pass over y and the backward about ten. Here one pass each way, silu(z) computed once per token for all
// g and k. y: (B, G, K, N, D) contiguous; z: (B, N, D) with strides (zb, zn, 1).

namespace {

template <typename T>
void norm_forward_impl(const T* y, const T* z, int64_t zb, int64_t zn, const T* weight, int64_t B, int64_t G,
                       int64_t K, int64_t N, int64_t D, int64_t gs, double eps, T* out, T* rstd) {
  const int64_t ng = D / gs;
  at::parallel_for(0, B * N, 1, [&](int64_t i0, int64_t i1) {
    std::vector<T> sz(D), v(D);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / N, n = i % N;
      const T* zr = z + b * zb + n * zn;
      for (int64_t c = 0; c < D; ++c) sz[c] = silu_of(zr[c]);
      for (int64_t g = 0; g < G; ++g) {
        T* o = out + ((b * G + g) * N + n) * D;
        for (int64_t c = 0; c < D; ++c) o[c] = T(0);
        for (int64_t k = 0; k < K; ++k) {
          const T* yr = y + (((b * G + g) * K + k) * N + n) * D;
          T* rs = rstd + (((b * G + g) * K + k) * N + n) * ng;
          for (int64_t c = 0; c < D; ++c) v[c] = yr[c] * sz[c];
          for (int64_t q = 0; q < ng; ++q) {
            double ss = 0;
            for (int64_t c = q * gs; c < (q + 1) * gs; ++c) ss += double(v[c]) * double(v[c]);
            const T r = T(1.0 / std::sqrt(ss / double(gs) + eps));
            rs[q] = r;
            for (int64_t c = q * gs; c < (q + 1) * gs; ++c) o[c] += v[c] * r;
          }
        }
        for (int64_t c = 0; c < D; ++c) o[c] *= weight[c];
      }
    }
  });
}

template <typename T>
void norm_backward_impl(const T* go, const T* y, const T* z, int64_t zb, int64_t zn, const T* weight,
                        const T* rstd, int64_t B, int64_t G, int64_t K, int64_t N, int64_t D, int64_t gs, T* gy,
                        T* gz, T* normed, double* partial, int64_t nparts) {
  const int64_t ng = D / gs;
  at::parallel_for(0, B * N, 1, [&](int64_t i0, int64_t i1) {
    double* gw = partial + (at::get_thread_num() % nparts) * D;
    std::vector<T> sz(D), dsz(D), gn(D), nk(D), gza(D);
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t b = i / N, n = i % N;
      const T* zr = z + b * zb + n * zn;
      for (int64_t c = 0; c < D; ++c) {
        const T sg = T(1) / (T(1) + vexp(-zr[c]));
        sz[c] = zr[c] * sg;
        dsz[c] = sg * (T(1) + zr[c] * (T(1) - sg));
        gza[c] = T(0);
      }
      for (int64_t g = 0; g < G; ++g) {
        const T* gor = go + ((b * G + g) * N + n) * D;
        T* nr = normed ? normed + ((b * G + g) * N + n) * D : nullptr;
        for (int64_t c = 0; c < D; ++c) gn[c] = gor[c] * weight[c];
        if (nr) for (int64_t c = 0; c < D; ++c) nr[c] = T(0);
        for (int64_t k = 0; k < K; ++k) {
          const int64_t row = ((b * G + g) * K + k) * N + n;
          const T* yr = y + row * D;
          const T* rs = rstd + row * ng;
          T* gyr = gy + row * D;
          for (int64_t q = 0; q < ng; ++q) {
            const T r = rs[q];
            double dot = 0;
            for (int64_t c = q * gs; c < (q + 1) * gs; ++c) {
              nk[c] = yr[c] * sz[c] * r;
              dot += double(gn[c]) * double(nk[c]);
            }
            const T m = T(dot / double(gs));
            for (int64_t c = q * gs; c < (q + 1) * gs; ++c) {
              const T gv = r * (gn[c] - nk[c] * m);
              gyr[c] = gv * sz[c];
              gza[c] += gv * yr[c];
            }
          }
          for (int64_t c = 0; c < D; ++c) gw[c] += double(gor[c]) * double(nk[c]);
          if (nr) for (int64_t c = 0; c < D; ++c) nr[c] += nk[c];
        }
        if (nr) for (int64_t c = 0; c < D; ++c) nr[c] *= weight[c];
      }
      T* gzr = gz + i * D;
      for (int64_t c = 0; c < D; ++c) gzr[c] = gza[c] * dsz[c];
    }
  });
}

void norm_check(const torch::Tensor& y, const torch::Tensor& z, const torch::Tensor& w, int64_t gs) {
  TORCH_CHECK(y.device().is_cpu() && y.dim() == 5 && y.is_contiguous(), "y: contiguous CPU (B, G, K, N, D)");
  TORCH_CHECK(z.dim() == 3 && z.size(0) == y.size(0) && z.size(1) == y.size(3) && z.size(2) == y.size(4) &&
                  z.stride(2) == 1 && z.scalar_type() == y.scalar_type(),
              "z: (B, N, D) of y's dtype with unit channel stride");
  TORCH_CHECK(w.dim() == 1 && w.size(0) == y.size(4) && w.scalar_type() == y.scalar_type(), "weight: (D,) of y's dtype");
  TORCH_CHECK(gs > 0 && y.size(4) % gs == 0, "group size must divide D");
}

}  // namespace

// (out (B, G, N, D), rstd (B, G, K, N, D / gs))
std::vector<torch::Tensor> norm_forward(torch::Tensor y, torch::Tensor z, torch::Tensor weight, int64_t gs,
                                        double eps) {
  norm_check(y, z, weight, gs);
  const int64_t B = y.size(0), G = y.size(1), K = y.size(2), N = y.size(3), D = y.size(4);
  auto out = torch::empty({B, G, N, D}, y.options());
  auto rstd = torch::empty({B, G, K, N, D / gs}, y.options());
  auto w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "gated_norm_forward", [&] {
    norm_forward_impl<scalar_t>(y.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(), z.stride(0), z.stride(1),
                                w.data_ptr<scalar_t>(), B, G, K, N, D, gs, eps, out.data_ptr<scalar_t>(),
                                rstd.data_ptr<scalar_t>());
  });
  return {out, rstd};
}

// Given go, the gradient at out: (gy (B, G, K, N, D), gz (B, N, D), gweight (D,), and when `want_normed`
// out recomputed (B, G, N, D), else an empty tensor).
std::vector<torch::Tensor> norm_backward(torch::Tensor go, torch::Tensor y, torch::Tensor z, torch::Tensor weight,
                                         torch::Tensor rstd, int64_t gs, bool want_normed) {
  norm_check(y, z, weight, gs);
  go = go.contiguous();
  rstd = rstd.contiguous();
  const int64_t B = y.size(0), G = y.size(1), K = y.size(2), N = y.size(3), D = y.size(4);
  TORCH_CHECK(go.scalar_type() == y.scalar_type() && go.numel() == B * G * N * D, "go: (B, G, N, D) of y's dtype");
  TORCH_CHECK(rstd.numel() == B * G * K * N * (D / gs), "rstd: (B, G, K, N, D / gs)");
  auto gy = torch::empty_like(y);
  auto gz = torch::empty({B, N, D}, y.options());
  auto normed = want_normed ? torch::empty({B, G, N, D}, y.options()) : torch::Tensor();
  const int64_t nparts = at::get_num_threads();
  auto partial = torch::zeros({nparts, D}, y.options().dtype(torch::kDouble));
  auto w = weight.contiguous();
  AT_DISPATCH_FLOATING_TYPES(y.scalar_type(), "gated_norm_backward", [&] {
    norm_backward_impl<scalar_t>(go.data_ptr<scalar_t>(), y.data_ptr<scalar_t>(), z.data_ptr<scalar_t>(),
                                 z.stride(0), z.stride(1), w.data_ptr<scalar_t>(), rstd.data_ptr<scalar_t>(), B, G,
                                 K, N, D, gs, gy.data_ptr<scalar_t>(), gz.data_ptr<scalar_t>(),
                                 want_normed ? normed.data_ptr<scalar_t>() : nullptr, partial.data_ptr<double>(),
                                 nparts);
  });
  return {gy, gz, partial.sum(0).to(y.scalar_type()), want_normed ? normed : torch::empty({0}, y.options())};
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("norm_forward", &norm_forward, "gated RMSNorm summed over scans");
  m.def("norm_backward", &norm_backward, "its backward");
  m.def("forward", &forward, "silu(causal depthwise conv of gathered rows)");
  m.def("backward", &backward, "its backward: input, weight and bias gradients");
  m.def("fold_rows", &fold_rows, "sum of the fold copies of a gathered gradient, by the inverse permutation");
}
