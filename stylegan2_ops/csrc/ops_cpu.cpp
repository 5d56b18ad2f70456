// CPU launchers (ATen parallel_for loops over the shared per-element math) and the Python bindings.
// With -DWITH_CUDA, CUDA tensors are sent to the kernels in ops_cuda.cu.
#include <torch/extension.h>

#include <ATen/Parallel.h>

#include <algorithm>
#include <numeric>
#include <vector>

#include "ops_math.h"

#ifdef WITH_CUDA
torch::Tensor bias_act_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor dy, torch::Tensor yref,
                            int64_t mode, int64_t dim, int64_t act, double alpha, double gain,
                            double clamp);
torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor f, const sg2::UpFirDnParams& p);
#endif

namespace {

template <int MODE, int ACT, typename T>
void bias_act_loop(const T* x, const T* b, const T* dy, const T* yref, T* y, int64_t outer,
                   int64_t size, int64_t inner, T alpha, T gain, T clamp) {
  // [outer, size, inner] view of a dense tensor whose bias axis has stride `inner`.
  const int64_t grain = std::max<int64_t>(1, 32768 / std::max<int64_t>(inner, 1));
  at::parallel_for(0, outer * size, grain, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int64_t c = r % size, base = r * inner;
      const T bc = b ? b[c] : T(0);
      const T* xs = x + base;
      T* ys = y + base;
      if (MODE == 0) {
        for (int64_t j = 0; j < inner; ++j)
          ys[j] = sg2::bias_act_elem<0, ACT, T>(xs[j], bc, T(0), T(0), alpha, gain, clamp);
      } else {
        const T* ds = dy + base;
        const T* rs = yref ? yref + base : nullptr;
        for (int64_t j = 0; j < inner; ++j)
          ys[j] = sg2::bias_act_elem<MODE, ACT, T>(xs[j], bc, ds[j], rs ? rs[j] : T(0), alpha,
                                                   gain, rs ? clamp : T(-1));
      }
    }
  });
}

// Output columns ox = r + P*m of one phase class r all use the same taps (first tap k0), and
// read inputs ib0 + Q*m + t. The CPU path runs these as vectorisable row passes over the
// interior, where no window is clipped; edge pixels use the shared per-pixel function.
struct PhaseClass {
  int r, k0, taps, ib0, m_lo, m_hi;
};

// y[m] += c * x[Q m] for m in [m_lo, m_hi]; Q fixed at compile time for the common cases.
template <int Q, typename T>
inline void axpy_strided(T* y, const T* x, T c, int m_lo, int m_hi, int q_rt) {
  const int Q_ = Q ? Q : q_rt;
  for (int m = m_lo; m <= m_hi; ++m) y[m] += c * x[Q_ * m];
}

// No resampling (up = down = 1): the plane is one long signal. Each filter tap is a single
// unit-stride pass over the whole plane; interior outputs are then read off with their row
// stride, and the few border outputs (where the window leaves the input) use the shared
// per-pixel function.
template <typename T>
bool same_rate_flat(const T* x, const T* f, T* y, const sg2::UpFirDnParams& p, int64_t planes) {
  if (p.upx != 1 || p.upy != 1 || p.downx != 1 || p.downy != 1) return false;
  const int Hi = p.in_h, Wi = p.in_w, Ho = p.out_h, Wo = p.out_w;
  const int64_t span = (int64_t)(p.fh - 1) * Wi + (p.fw - 1);
  const int64_t n = (int64_t)Hi * Wi - span;  // bases whose whole window lies in the plane
  const int oy_lo = std::max(0, p.py0), oy_hi = std::min(Ho - 1, Hi - p.fh + p.py0);
  const int ox_lo = std::max(0, p.px0), ox_hi = std::min(Wo - 1, Wi - p.fw + p.px0);
  std::vector<sg2::Window> wxs(Wo);
  for (int ox = 0; ox < Wo; ++ox) wxs[ox] = sg2::make_window(ox, 1, p.px0, 1, p.fw, Wi);
  at::parallel_for(0, planes, 1, [&](int64_t pl0, int64_t pl1) {
    std::vector<T> tmp(std::max<int64_t>(n, 0));
    for (int64_t pl = pl0; pl < pl1; ++pl) {
      const T* xp = x + pl * Hi * Wi;
      T* yp = y + pl * Ho * Wo;
      if (n > 0) {
        std::fill(tmp.begin(), tmp.end(), T(0));
        for (int ky = 0; ky < p.fh; ++ky) {
          for (int kx = 0; kx < p.fw; ++kx) {
            const T c = f[sg2::filter_index(ky, p.fh, p.flip) * p.fw + sg2::filter_index(kx, p.fw, p.flip)];
            const T* xs = xp + (int64_t)ky * Wi + kx;
            T* t = tmp.data();
            for (int64_t j = 0; j < n; ++j) t[j] += c * xs[j];
          }
        }
      }
      for (int oy = 0; oy < Ho; ++oy) {
        T* yrow = yp + (int64_t)oy * Wo;
        const bool row_inside = oy >= oy_lo && oy <= oy_hi && n > 0;
        if (row_inside && ox_lo <= ox_hi)
          std::copy(tmp.data() + (int64_t)(oy - p.py0) * Wi + (ox_lo - p.px0),
                    tmp.data() + (int64_t)(oy - p.py0) * Wi + (ox_hi - p.px0) + 1, yrow + ox_lo);
        const sg2::Window wy = sg2::make_window(oy, 1, p.py0, 1, p.fh, Hi);
        for (int ox = 0; ox < Wo; ++ox) {
          if (row_inside && ox >= ox_lo && ox <= ox_hi) continue;
          yrow[ox] = sg2::upfirdn2d_pixel<T, T>(xp, f, p, wy, wxs[ox]);
        }
      }
    }
  });
  return true;
}

template <typename T>
void upfirdn2d_loop(const T* x, const T* f, T* y, const sg2::UpFirDnParams p, int64_t planes) {
  if (same_rate_flat(x, f, y, p, planes)) return;
  const int g = std::gcd(p.upx, p.downx), P = p.upx / g, Q = p.downx / g;
  std::vector<PhaseClass> classes;
  std::vector<char> interior(p.out_w, 0);
  for (int r = 0; r < std::min(P, p.out_w); ++r) {
    const int s = r * p.downx - p.px0;
    const int k0 = ((-s) % p.upx + p.upx) % p.upx;
    const int taps = k0 < p.fw ? (p.fw - 1 - k0) / p.upx + 1 : 0;
    const int ib0 = sg2::floor_div(s + k0, p.upx);
    const int m_lo = std::max(0, sg2::ceil_div(-ib0, Q));
    const int m_hi = std::min((p.out_w - 1 - r) / P, sg2::floor_div(p.in_w - taps - ib0, Q));
    classes.push_back({r, k0, taps, ib0, m_lo, m_hi});
    for (int m = m_lo; m <= m_hi; ++m) interior[r + P * m] = 1;
  }
  std::vector<std::pair<int, sg2::Window>> edges;  // columns whose window is clipped
  for (int ox = 0; ox < p.out_w; ++ox)
    if (!interior[ox]) edges.emplace_back(ox, sg2::make_window(ox, p.downx, p.px0, p.upx, p.fw, p.in_w));
  // Each class accumulates into its own contiguous buffer (unit-stride stores vectorise),
  // interleaved into the output row afterwards.
  auto pass = [&](T* acc, const T* xrow, T c, const PhaseClass& pc, int t) {
    const T* xb = xrow + pc.ib0 + t;
    if (Q == 1) axpy_strided<1>(acc, xb, c, pc.m_lo, pc.m_hi, 1);
    else if (Q == 2) axpy_strided<2>(acc, xb, c, pc.m_lo, pc.m_hi, 2);
    else axpy_strided<0>(acc, xb, c, pc.m_lo, pc.m_hi, Q);
  };
  const int class_len = (p.out_w + P - 1) / P;
  const int64_t grain = std::max<int64_t>(1, 16384 / std::max(p.out_w, 1));
  at::parallel_for(0, planes * p.out_h, grain, [&](int64_t r0, int64_t r1) {
    std::vector<T> acc;
    for (int64_t row = r0; row < r1; ++row) {
      const int64_t pl = row / p.out_h;
      const int oy = (int)(row % p.out_h);
      const sg2::Window wy = sg2::make_window(oy, p.downy, p.py0, p.upy, p.fh, p.in_h);
      const T* xplane = x + pl * p.in_h * p.in_w;
      T* yrow = y + row * p.out_w;
      // One class (P == 1): accumulate straight into the output row.
      T* const direct = P == 1 ? yrow : nullptr;
      if (direct) std::fill(yrow, yrow + p.out_w, T(0));
      else acc.assign((size_t)classes.size() * class_len, T(0));
      for (int iy = wy.i0, ky = wy.k0; iy <= wy.i1; ++iy, ky += p.upy) {
        const T* xrow = xplane + (int64_t)iy * p.in_w;
        const T* frow = f + (int64_t)sg2::filter_index(ky, p.fh, p.flip) * p.fw;
        for (size_t ci = 0; ci < classes.size(); ++ci) {
          const PhaseClass& pc = classes[ci];
          T* dst = direct ? direct : acc.data() + ci * class_len;
          for (int t = 0; t < pc.taps; ++t)
            pass(dst, xrow, frow[sg2::filter_index(pc.k0 + t * p.upx, p.fw, p.flip)], pc, t);
        }
      }
      for (size_t ci = 0; !direct && ci < classes.size(); ++ci) {
        const PhaseClass& pc = classes[ci];
        const T* a = acc.data() + ci * class_len;
        for (int m = pc.m_lo; m <= pc.m_hi; ++m) yrow[pc.r + P * m] = a[m];
      }
      for (const auto& [ox, wx] : edges) yrow[ox] = sg2::upfirdn2d_pixel<T, T>(xplane, f, p, wy, wx);
    }
  });
}

void check_same_layout(const torch::Tensor& x, const torch::Tensor& t, const char* name) {
  TORCH_CHECK(t.numel() == 0 || (t.sizes() == x.sizes() && t.strides() == x.strides()),
              name, " must have the shape and memory layout of x");
  TORCH_CHECK(t.numel() == 0 || t.device() == x.device(), name, " must be on x's device");
}

}  // namespace

torch::Tensor bias_act(torch::Tensor x, torch::Tensor b, torch::Tensor dy, torch::Tensor yref,
                       int64_t mode, int64_t dim, int64_t act, double alpha, double gain,
                       double clamp) {
  TORCH_CHECK(x.is_non_overlapping_and_dense(), "x must be dense (contiguous in some order)");
  TORCH_CHECK(mode >= 0 && mode <= 2, "mode must be 0, 1 or 2");
  TORCH_CHECK(dim >= 0 && dim < x.dim(), "dim out of range");
  TORCH_CHECK(b.numel() == 0 || (b.dim() == 1 && b.size(0) == x.size(dim) && b.is_contiguous()),
              "b must be a contiguous [x.shape[dim]] vector");
  TORCH_CHECK(mode == 0 || dy.numel() == x.numel(), "dy is required for gradient modes");
  check_same_layout(x, dy, "dy");
  check_same_layout(x, yref, "yref");
  TORCH_CHECK(b.numel() == 0 || b.scalar_type() == x.scalar_type(), "b must have x's dtype");
#ifdef WITH_CUDA
  if (x.is_cuda()) return bias_act_cuda(x, b, dy, yref, mode, dim, act, alpha, gain, clamp);
#endif
  TORCH_CHECK(x.device().is_cpu(), "this build has no CUDA kernels");
  auto y = torch::empty_like(x);
  if (x.numel() == 0) return y;
  const int64_t size = x.size(dim), inner = x.stride(dim), outer = x.numel() / (size * inner);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "bias_act_cpu", [&] {
    const scalar_t* bp = b.numel() ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dyp = dy.numel() ? dy.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yp = yref.numel() ? yref.data_ptr<scalar_t>() : nullptr;
    sg2::dispatch_mode((int)mode, [&](auto m) {
      sg2::dispatch_act((int)act, [&](auto a) {
        bias_act_loop<decltype(m)::value, decltype(a)::value, scalar_t>(
            x.data_ptr<scalar_t>(), bp, dyp, yp, y.data_ptr<scalar_t>(), outer, size, inner,
            (scalar_t)alpha, (scalar_t)gain, (scalar_t)clamp);
      });
    });
  });
  return y;
}

torch::Tensor upfirdn2d(torch::Tensor x, torch::Tensor f, int64_t upx, int64_t upy, int64_t downx,
                        int64_t downy, int64_t px0, int64_t px1, int64_t py0, int64_t py1,
                        bool flip) {
  TORCH_CHECK(x.dim() == 4, "x must be [N, C, H, W]");
  TORCH_CHECK(f.dim() == 2, "f must be a 2-D filter");
  TORCH_CHECK(upx >= 1 && upy >= 1 && downx >= 1 && downy >= 1, "up/down must be >= 1");
  TORCH_CHECK(f.device() == x.device(), "f must be on x's device");
  x = x.contiguous();
  f = f.contiguous();
  sg2::UpFirDnParams p;
  p.in_h = (int)x.size(2); p.in_w = (int)x.size(3);
  p.fh = (int)f.size(0); p.fw = (int)f.size(1);
  p.upx = (int)upx; p.upy = (int)upy; p.downx = (int)downx; p.downy = (int)downy;
  p.px0 = (int)px0; p.py0 = (int)py0; p.flip = flip;
  p.out_h = (int)((p.in_h * upy + py0 + py1 - p.fh + downy) / downy);
  p.out_w = (int)((p.in_w * upx + px0 + px1 - p.fw + downx) / downx);
  TORCH_CHECK(p.out_h >= 1 && p.out_w >= 1, "upfirdn2d: padding and filter leave no output");
#ifdef WITH_CUDA
  if (x.is_cuda()) return upfirdn2d_cuda(x, f, p);
#endif
  TORCH_CHECK(x.device().is_cpu(), "this build has no CUDA kernels");
  TORCH_CHECK(f.scalar_type() == (x.scalar_type() == at::kDouble ? at::kDouble : at::kFloat),
              "f must be float64 for float64 x, else float32");
  auto y = torch::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
  const int64_t planes = x.size(0) * x.size(1);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "upfirdn2d_cpu", [&] {
    upfirdn2d_loop<scalar_t>(x.data_ptr<scalar_t>(), f.data_ptr<scalar_t>(),
                             y.data_ptr<scalar_t>(), p, planes);
  });
  return y;
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bias_act", &bias_act, "fused bias + activation + gain + clamp (and its gradients)");
  m.def("upfirdn2d", &upfirdn2d, "polyphase upsample, FIR filter, downsample");
}
