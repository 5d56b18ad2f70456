// Per-element math of the fused ops, written once and called both by the CPU loops
// (ops_cpu.cpp) and by the CUDA kernels (ops_cuda.cu). The readable twins are
// stylegan2_ops/bias_act.py::_bias_act_ref and upfirdn2d.py::_upfirdn2d_ref.
#pragma once
#include <cmath>
#include <cstdint>
#include <type_traits>

#if defined(__CUDACC__)
#define SG2_HD __host__ __device__ __forceinline__
#else
#define SG2_HD inline
#endif

namespace sg2 {

// Activation ids, shared with bias_act.py (ActSpec.cuda_idx).
enum Act { LINEAR = 1, RELU, LRELU, TANH, SIGMOID, ELU, SELU, SOFTPLUS, SWISH };

// f(v), f'(v) and f''(v) of activation `act` at v; matches torch's functions and their
// autograd conventions at the kinks (relu'(0) = 0, lrelu'(0) = alpha).
template <int ACT, typename A>
SG2_HD void act_eval(A v, A alpha, A& f, A& d1, A& d2) {
  using std::exp;
  using std::expm1;
  using std::log1p;
  using std::tanh;
  const A one = A(1), zero = A(0);
  if constexpr (ACT == RELU) {
    f = v > zero ? v : zero; d1 = v > zero ? one : zero; d2 = zero;
  } else if constexpr (ACT == LRELU) {
    f = v > zero ? v : v * alpha; d1 = v > zero ? one : alpha; d2 = zero;
  } else if constexpr (ACT == TANH) {
    const A t = tanh(v); f = t; d1 = one - t * t; d2 = A(-2) * t * d1;
  } else if constexpr (ACT == SIGMOID) {
    const A s = one / (one + exp(-v)); f = s; d1 = s * (one - s); d2 = d1 * (one - A(2) * s);
  } else if constexpr (ACT == ELU) {
    const A e = exp(v < zero ? v : zero);
    f = v > zero ? v : expm1(v); d1 = v > zero ? one : e; d2 = v > zero ? zero : e;
  } else if constexpr (ACT == SELU) {
    const A scale = A(1.0507009873554804934193349852946), a = A(1.6732632423543772848170429916717);
    const A e = exp(v < zero ? v : zero);
    f = v > zero ? scale * v : scale * a * expm1(v);
    d1 = v > zero ? scale : scale * a * e; d2 = v > zero ? zero : scale * a * e;
  } else if constexpr (ACT == SOFTPLUS) {
    const A s = one / (one + exp(-v));
    const bool big = v > A(20);
    f = big ? v : log1p(exp(big ? zero : v)); d1 = big ? one : s; d2 = big ? zero : s * (one - s);
  } else if constexpr (ACT == SWISH) {
    const A s = one / (one + exp(-v));
    f = v * s; d1 = s + v * s * (one - s); d2 = s * (one - s) * (A(2) + v * (one - A(2) * s));
  } else {  // LINEAR
    f = v; d1 = one; d2 = zero;
  }
}

// Calls fn(std::integral_constant<int, ACT>) for a run-time activation id, so that every loop
// is compiled once per activation with the activation's math inlined.
template <typename Fn>
inline void dispatch_act(int act, Fn&& fn) {
  switch (act) {
    case RELU: fn(std::integral_constant<int, RELU>{}); break;
    case LRELU: fn(std::integral_constant<int, LRELU>{}); break;
    case TANH: fn(std::integral_constant<int, TANH>{}); break;
    case SIGMOID: fn(std::integral_constant<int, SIGMOID>{}); break;
    case ELU: fn(std::integral_constant<int, ELU>{}); break;
    case SELU: fn(std::integral_constant<int, SELU>{}); break;
    case SOFTPLUS: fn(std::integral_constant<int, SOFTPLUS>{}); break;
    case SWISH: fn(std::integral_constant<int, SWISH>{}); break;
    default: fn(std::integral_constant<int, LINEAR>{}); break;
  }
}

template <typename Fn>
inline void dispatch_mode(int mode, Fn&& fn) {
  if (mode == 0) fn(std::integral_constant<int, 0>{});
  else if (mode == 1) fn(std::integral_constant<int, 1>{});
  else fn(std::integral_constant<int, 2>{});
}

// MODE 0: y = clamp(f(x + b) * gain). MODE 1: dx = dy * f'(x + b) * gain where y was not
// clamped. MODE 2: d(dx)/dx = dy * f''(x + b) * gain where y was not clamped (dy here is the
// incoming gradient times the original dy).
template <int MODE, int ACT, typename A>
SG2_HD A bias_act_elem(A x, A b, A dy, A yref, A alpha, A gain, A clamp) {
  A f, d1, d2;
  act_eval<ACT, A>(x + b, alpha, f, d1, d2);
  // Branch-free selects, so that the CPU loops vectorise.
  const A hi = clamp >= A(0) ? clamp : A(INFINITY);
  if (MODE == 0) {
    const A y = f * gain;
    return y > hi ? hi : (y < -hi ? -hi : y);
  }
  const bool pass = (yref > -hi) & (yref < hi);
  return pass ? dy * (MODE == 1 ? d1 : d2) * gain : A(0);
}

SG2_HD int floor_div(int a, int b) { int q = a / b; return (q * b > a) ? q - 1 : q; }
SG2_HD int ceil_div(int a, int b) { return -floor_div(-a, b); }

struct UpFirDnParams {
  int in_h, in_w, out_h, out_w, fh, fw;
  int upx, upy, downx, downy, px0, py0;
  bool flip;  // true: correlate with f; false: convolve (the default, as in NVlabs)
};

// The input samples that one output coordinate reads along one axis. Polyphase: tap k of
// the window starting at upsampled position s reads a real (not zero-inserted) sample iff
// (s + k) is a multiple of up, so only inputs i0..i1 are visited, with first tap k0.
struct Window {
  int i0, i1, k0;
};

SG2_HD Window make_window(int o, int down, int pad0, int up, int fsize, int in_size) {
  const int s = o * down - pad0;
  Window w;
  w.i0 = ceil_div(s, up);
  w.i1 = floor_div(s + fsize - 1, up);
  w.i0 = w.i0 < 0 ? 0 : w.i0;
  w.i1 = w.i1 > in_size - 1 ? in_size - 1 : w.i1;
  w.k0 = w.i0 * up - s;
  return w;
}

// Filter element for tap k: the filter is applied as a convolution (flipped) unless `flip`.
SG2_HD int filter_index(int k, int fsize, bool flip) { return flip ? k : fsize - 1 - k; }

// One output pixel of upfirdn2d for one channel plane `x` [in_h, in_w], given its row and
// column windows. Only outputs that survive downsampling are ever computed.
template <typename T, typename A>
SG2_HD A upfirdn2d_pixel(const T* x, const A* f, const UpFirDnParams& p, const Window& wy,
                         const Window& wx) {
  A acc = A(0);
  for (int iy = wy.i0, ky = wy.k0; iy <= wy.i1; ++iy, ky += p.upy) {
    const T* xrow = x + (int64_t)iy * p.in_w;
    const A* frow = f + (int64_t)filter_index(ky, p.fh, p.flip) * p.fw;
    for (int ix = wx.i0, kx = wx.k0; ix <= wx.i1; ++ix, kx += p.upx)
      acc += A(xrow[ix]) * frow[filter_index(kx, p.fw, p.flip)];
  }
  return acc;
}

}  // namespace sg2
