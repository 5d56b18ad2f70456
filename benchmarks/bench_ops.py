"""Compiled vs reference stylegan2_ops on StyleGAN2 shapes, measured in one run.

Prints forward and forward+backward times, the speed-up of the compiled path, bias_act's
throughput next to a plain tensor copy (its memory-bound limit), and the whole generator's
forward with each implementation.

    python benchmarks/bench_ops.py [--quick] [--device cuda]

On CUDA every timed call ends with a synchronisation, so the times are the kernels' own.
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from _timing import timeit  # noqa: E402

import stylegan2_ops as ops  # noqa: E402

DEV = torch.device("cpu")


def _t(fn, **kw) -> float:
    """timeit with the device's work finished inside each call."""
    if DEV.type == "cuda":
        return timeit(lambda: (fn(), torch.cuda.synchronize()), **kw)
    return timeit(fn, **kw)


def _fb(fn, x):
    def run():
        x.grad = None
        fn(x).sum().backward()
    return run


def bench_bias_act(shapes):
    print("\n## bias_act (lrelu, clamp=256), float32")
    print(f"{'shape':>22} {'ref fwd ms':>11} {'cmp fwd ms':>11} {'x':>5} {'ref f+b ms':>11} "
          f"{'cmp f+b ms':>11} {'x':>5} {'cmp GB/s':>9} {'copy GB/s':>10}")
    for shape in shapes:
        x = torch.randn(shape, device=DEV)
        b = torch.randn(shape[1], device=DEV)
        tr = _t(lambda: ops.bias_act(x, b, act="lrelu", clamp=256, impl="ref"))
        tc = _t(lambda: ops.bias_act(x, b, act="lrelu", clamp=256, impl="compiled"))
        xg = x.clone().requires_grad_(True)
        tbr = _t(_fb(lambda t: ops.bias_act(t, b, act="lrelu", clamp=256, impl="ref"), xg))
        tbc = _t(_fb(lambda t: ops.bias_act(t, b, act="lrelu", clamp=256, impl="compiled"), xg))
        y = torch.empty_like(x)
        tcopy = _t(lambda: y.copy_(x))
        gbs = 2 * x.numel() * 4 / 1e9
        print(f"{str(list(shape)):>22} {tr*1e3:11.2f} {tc*1e3:11.2f} {tr/tc:5.2f} {tbr*1e3:11.2f} "
              f"{tbc*1e3:11.2f} {tbr/tbc:5.2f} {gbs/tc:9.2f} {gbs/tcopy:10.2f}")


def bench_upfirdn(cases):
    print("\n## upfirdn2d, filter [1,3,3,1], float32")
    print(f"{'case':>34} {'ref fwd ms':>11} {'cmp fwd ms':>11} {'x':>5} {'ref f+b ms':>11} "
          f"{'cmp f+b ms':>11} {'x':>5}")
    f = ops.setup_filter([1, 3, 3, 1], device=DEV)
    for name, shape, fn in cases:
        x = torch.randn(shape, device=DEV)
        tr = _t(lambda: fn(x, f, "ref"))
        tc = _t(lambda: fn(x, f, "compiled"))
        xg = x.clone().requires_grad_(True)
        tbr = _t(_fb(lambda t: fn(t, f, "ref"), xg))
        tbc = _t(_fb(lambda t: fn(t, f, "compiled"), xg))
        print(f"{name + ' ' + str(list(shape)):>34} {tr*1e3:11.2f} {tc*1e3:11.2f} {tr/tc:5.2f} "
              f"{tbr*1e3:11.2f} {tbc*1e3:11.2f} {tbr/tbc:5.2f}")


def bench_generator(configs):
    from stylerelight.gan import Generator

    print("\n## whole generator forward (batch 1, noise const), float32")
    print(f"{'config':>28} {'ref ms':>9} {'compiled ms':>12} {'speed-up':>9}")
    for name, kw in configs:
        torch.manual_seed(0)
        G = Generator(**kw).eval().to(DEV)
        z = torch.randn(1, G.z_dim, device=DEV)
        with torch.no_grad():
            times = {}
            for impl in ("ref", "compiled"):
                os.environ["STYLEGAN2_OPS"] = "ref" if impl == "ref" else ""
                times[impl] = _t(lambda: G(z), repeat=3, min_time=0.0)
            os.environ["STYLEGAN2_OPS"] = ""
        print(f"{name:>28} {times['ref']*1e3:9.1f} {times['compiled']*1e3:12.1f} "
              f"{times['ref']/times['compiled']:9.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller shapes (CI smoke run)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    args = ap.parse_args()
    global DEV
    DEV = torch.device(args.device)
    ops.status()  # build once before timing
    print(f"torch {torch.__version__}, device {DEV}, threads {torch.get_num_threads()}, ops {ops.status()}")
    if args.quick:
        bench_bias_act([(4, 64, 64, 64)])
        bench_upfirdn([("up2", (4, 64, 32, 32), lambda x, f, i: ops.upsample2d(x, f, impl=i))])
        bench_generator([("64^2 small", dict(img_resolution=64, z_dim=64, w_dim=64,
                                              channel_base=4096, channel_max=128))])
        return
    bench_bias_act([(4, 512, 64, 64), (4, 128, 256, 256), (1, 32, 1024, 1024), (4, 512)])
    bench_upfirdn([
        ("G up2 (ToRGB skip)", (4, 3, 128, 128), lambda x, f, i: ops.upsample2d(x, f, impl=i)),
        ("G conv up2 blur", (4, 128, 257, 257),
         lambda x, f, i: ops.upfirdn2d(x, f, padding=1, gain=4, impl=i)),
        ("up2 256->512", (4, 64, 256, 256), lambda x, f, i: ops.upsample2d(x, f, impl=i)),
        ("D down2 256->128", (4, 128, 256, 256), lambda x, f, i: ops.downsample2d(x, f, impl=i)),
        ("D down2 1024->512", (2, 32, 1024, 1024), lambda x, f, i: ops.downsample2d(x, f, impl=i)),
        ("up2+down2 (same size)", (4, 64, 128, 128),
         lambda x, f, i: ops.upfirdn2d(x, f, up=2, down=2, padding=[2, 1, 2, 1], impl=i)),
    ])
    bench_generator([
        ("64^2 small (base 4096)", dict(img_resolution=64, z_dim=128, w_dim=128,
                                        channel_base=4096, channel_max=128)),
        ("1024^2 FFHQ config-f", dict(img_resolution=1024)),
    ])


if __name__ == "__main__":
    main()
