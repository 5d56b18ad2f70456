// CUDA kernels: one thread per output element, calling the math shared with the CPU loops.
#include <ATen/AccumulateType.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/extension.h>

#include "ops_math.h"

namespace {

template <int MODE, int ACT, typename T>
__global__ void bias_act_kernel(const T* x, const T* b, const T* dy, const T* yref, T* y,
                                int64_t n, int64_t size, int64_t inner, double alpha, double gain,
                                double clamp) {
  using A = at::acc_type<T, true>;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)blockDim.x * gridDim.x) {
    const A bc = b ? A(b[(i / inner) % size]) : A(0);
    y[i] = T(sg2::bias_act_elem<MODE, ACT, A>(A(x[i]), bc, MODE ? A(dy[i]) : A(0),
                                              yref ? A(yref[i]) : A(0), A(alpha), A(gain),
                                              yref || MODE == 0 ? A(clamp) : A(-1)));
  }
}

template <typename T, typename A>
__global__ void upfirdn2d_kernel(const T* x, const A* f, T* y, sg2::UpFirDnParams p,
                                 int64_t planes) {
  const int64_t n = planes * p.out_h * p.out_w;
  for (int64_t i = blockIdx.x * (int64_t)blockDim.x + threadIdx.x; i < n;
       i += (int64_t)blockDim.x * gridDim.x) {
    const int ox = (int)(i % p.out_w);
    const int oy = (int)((i / p.out_w) % p.out_h);
    const int64_t pl = i / ((int64_t)p.out_w * p.out_h);
    const sg2::Window wy = sg2::make_window(oy, p.downy, p.py0, p.upy, p.fh, p.in_h);
    const sg2::Window wx = sg2::make_window(ox, p.downx, p.px0, p.upx, p.fw, p.in_w);
    y[i] = T(sg2::upfirdn2d_pixel<T, A>(x + pl * p.in_h * p.in_w, f, p, wy, wx));
  }
}

int blocks_for(int64_t n) { return (int)std::min<int64_t>((n + 255) / 256, 65535); }

}  // namespace

torch::Tensor bias_act_cuda(torch::Tensor x, torch::Tensor b, torch::Tensor dy, torch::Tensor yref,
                            int64_t mode, int64_t dim, int64_t act, double alpha, double gain,
                            double clamp) {
  const at::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty_like(x);
  const int64_t n = x.numel();
  if (n == 0) return y;
  const int64_t size = x.size(dim), inner = x.stride(dim);
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "bias_act_cuda", [&] {
    const scalar_t* bp = b.numel() ? b.data_ptr<scalar_t>() : nullptr;
    const scalar_t* dyp = dy.numel() ? dy.data_ptr<scalar_t>() : nullptr;
    const scalar_t* yp = yref.numel() ? yref.data_ptr<scalar_t>() : nullptr;
    sg2::dispatch_mode((int)mode, [&](auto m) {
      sg2::dispatch_act((int)act, [&](auto a) {
        bias_act_kernel<decltype(m)::value, decltype(a)::value, scalar_t>
            <<<blocks_for(n), 256, 0, stream>>>(x.data_ptr<scalar_t>(), bp, dyp, yp,
                                                y.data_ptr<scalar_t>(), n, size, inner,
                                                alpha, gain, clamp);
      });
    });
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}

torch::Tensor upfirdn2d_cuda(torch::Tensor x, torch::Tensor f, const sg2::UpFirDnParams& p) {
  const at::cuda::CUDAGuard guard(x.device());
  auto y = torch::empty({x.size(0), x.size(1), p.out_h, p.out_w}, x.options());
  const int64_t planes = x.size(0) * x.size(1);
  const int64_t n = y.numel();
  auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND_HALF(x.scalar_type(), "upfirdn2d_cuda", [&] {
    using A = at::acc_type<scalar_t, true>;
    TORCH_CHECK(f.scalar_type() == c10::CppTypeToScalarType<A>::value,
                "f must be float64 for float64 x, else float32");
    upfirdn2d_kernel<scalar_t, A><<<blocks_for(n), 256, 0, stream>>>(
        x.data_ptr<scalar_t>(), f.data_ptr<A>(), y.data_ptr<scalar_t>(), p, planes);
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();
  return y;
}
