"""Side-by-side check against the original implementations, on CPU, float32 (and float64 ops).

Point it at your own checkouts of NVlabs/stylegan2-ada-pytorch and rosinality/stylegan2-pytorch
(nothing is fetched or built: rosinality's CUDA op build at import is skipped, their CPU paths
are used; NVlabs' dnnlib needs `requests` importable):

    python benchmarks/compare_originals.py --nvlabs ~/src/stylegan2-ada-pytorch \\
        --rosinality ~/src/stylegan2-pytorch --psp ~/src/pixel2style2pixel --e4e ~/src/encoder4editing

Prints max |difference| of mapping, truncation, W+ synthesis and whole-G outputs for random
weights (non-zero noise strengths, biases and w_avg) at 64^2, 256^2 and 1024^2, loading their
networks through our loaders (NVlabs pickle, rosinality state dict), and of the ops against
NVlabs' reference functions.
"""

from __future__ import annotations

import argparse
import io
import itertools
import math
import os
import pickle
import sys
import tempfile
import types

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _perturb(G, noise_key, bias_scale=0.1, noise_scale=0.3):
    with torch.no_grad():
        for n, p in G.named_parameters():
            if noise_key in n:
                p.copy_(torch.randn_like(p) * noise_scale)
            elif n.endswith("bias"):
                p.add_(torch.randn_like(p) * bias_scale)


def compare_nvlabs(path, results, tmp):
    import stylerelight as sr

    sys.path.insert(0, path)
    from training import networks as nv  # noqa: E402  (their code, from the user's checkout)

    configs = [(64, 2048, 64, 64, None), (256, 4096, 128, 128, 256), (1024, 32768, 512, 512, None)]
    for res, base, cmax, zd, clamp in configs:
        Gn = nv.Generator(z_dim=zd, c_dim=0, w_dim=zd, img_resolution=res, img_channels=3,
                          mapping_kwargs=dict(num_layers=8),
                          synthesis_kwargs=dict(channel_base=base, channel_max=cmax, conv_clamp=clamp)).eval()
        _perturb(Gn, "noise_strength")
        with torch.no_grad():
            Gn.mapping.w_avg.copy_(torch.randn(zd))
        buf = io.BytesIO()
        pickle.dump(dict(G=Gn, D=None, G_ema=Gn, training_set_kwargs={}, augment_pipe=None), buf)
        pk = os.path.join(tmp, f"nv{res}.pkl")
        open(pk, "wb").write(buf.getvalue())
        G = sr.load_generator(pk)
        z, ws = torch.randn(2, zd), torch.randn(2, G.num_ws, zd) * 0.8
        with torch.no_grad():
            pairs = {
                "mapping": (Gn.mapping(z, None), G.mapping(z)),
                "truncation 0.7, cutoff 8": (Gn.mapping(z, None, truncation_psi=0.7, truncation_cutoff=8),
                                             G.mapping(z, truncation_psi=0.7, truncation_cutoff=8)),
                "synthesis W+ const noise": (Gn.synthesis(ws, noise_mode="const", force_fp32=True), G.synthesis(ws)),
                "G(z) truncation 0.5": (Gn(z, None, truncation_psi=0.5, noise_mode="const", force_fp32=True),
                                        G(z, truncation_psi=0.5)),
            }
        for name, (a, b) in pairs.items():
            results.append((f"NVlabs {res}^2 {name}", (a - b).abs().max().item()))
    # ops against NVlabs' reference functions, float64
    from torch_utils.ops import bias_act as nv_ba  # noqa: E402
    from torch_utils.ops import upfirdn2d as nv_up  # noqa: E402

    import stylegan2_ops as ops

    x = torch.randn(2, 3, 9, 11, dtype=torch.float64, requires_grad=True)
    worst = 0.0
    for fl in ([1], [1, 3, 3, 1], [1, 2, 1], [1, 3, 3, 1, 1, 3, 3, 1]):
        f = nv_up.setup_filter(fl)
        for up, down, pad, (flip, gain) in itertools.product([1, 2, 4], [1, 2, 4], [0, [1, 2], [1, 2, -1, 3]],
                                                             [(False, 1), (True, 1), (True, 4)]):
            for impl in ("ref", "compiled"):
                a = nv_up._upfirdn2d_ref(x, f, up=up, down=down, padding=pad, flip_filter=flip, gain=gain)
                b = ops.upfirdn2d(x, f, up, down, pad, flip, gain, impl=impl)
                (ga,) = torch.autograd.grad(a.square().sum(), x)
                (gb,) = torch.autograd.grad(b.square().sum(), x)
                worst = max(worst, (a - b).abs().max().item(), (ga - gb).abs().max().item())
    results.append(("ops upfirdn2d vs NVlabs _upfirdn2d_ref (fwd+bwd, float64)", worst))
    worst = 0.0
    b0 = torch.randn(3, dtype=torch.float64, requires_grad=True)
    for act in ops.activation_funcs:
        for kw in ({}, dict(clamp=1.2), dict(gain=0.7, alpha=0.1)):
            for impl in ("ref", "compiled"):
                a = nv_ba._bias_act_ref(x * 3, b0, act=act, **kw)
                b = ops.bias_act(x * 3, b0, act=act, impl=impl, **kw)
                ga = torch.autograd.grad(a.square().sum(), [x, b0])
                gb = torch.autograd.grad(b.square().sum(), [x, b0])
                grads = [(p - q).abs().max().item() for p, q in zip(ga, gb, strict=True)]
                worst = max(worst, (a - b).abs().max().item(), *grads)
    results.append(("ops bias_act vs NVlabs _bias_act_ref (fwd+bwd, float64)", worst))


def compare_rosinality(path, results, tmp):
    import torch.utils.cpp_extension as ce

    import stylerelight as sr
    from stylerelight.gan.io import rosinality_state_dict

    ce.load = lambda *a, **k: types.SimpleNamespace()  # their op/ builds CUDA at import: use the CPU paths
    sys.path.insert(0, path)
    import model as rm  # noqa: E402  (their code, from the user's checkout)

    for size, style, cm in [(64, 64, 1), (256, 128, 2), (1024, 512, 2)]:
        g = rm.Generator(size, style, 8, channel_multiplier=cm).eval()
        _perturb(g, "noise.weight")
        latent_avg = torch.randn(style)
        ck = os.path.join(tmp, f"ros{size}.pt")
        torch.save({"g_ema": g.state_dict(), "latent_avg": latent_avg}, ck)
        G = sr.load_generator(ck)
        z, ws = torch.randn(2, style), torch.randn(2, G.num_ws, style)
        with torch.no_grad():
            img, lat = g([z], return_latents=True, randomize_noise=False)
            results.append((f"rosinality {size}^2 mapping", (lat - G.mapping(z)).abs().max().item()))
            results.append((f"rosinality {size}^2 G(z)", (img - G(z)).abs().max().item()))
            img, lat = g([z], return_latents=True, randomize_noise=False, truncation=0.7,
                         truncation_latent=latent_avg[None])
            d = (img - G(z, truncation_psi=0.7)).abs().max().item()
            results.append((f"rosinality {size}^2 G(z) truncation 0.7", d))
            img, _ = g([ws], input_is_latent=True, randomize_noise=False)
            results.append((f"rosinality {size}^2 synthesis W+", (img - G.synthesis(ws)).abs().max().item()))
            g2 = rm.Generator(size, style, 8, channel_multiplier=cm).eval()
            g2.load_state_dict(rosinality_state_dict(G)["g_ema"], strict=False)
            img2, _ = g2([ws], input_is_latent=True, randomize_noise=False)
            d = (img2 - G.synthesis(ws)).abs().max().item()
            results.append((f"rosinality {size}^2 our export in their code, W+", d))


def compare_psp_family(path, results, tmp, kind):
    """pSp (eladrich/pixel2style2pixel) or e4e (omertov/encoder4editing): their encoder with random
    weights and BN statistics, saved in their checkpoint layout, loaded with sr.load_encoder."""
    import torch.utils.cpp_extension as ce

    import stylerelight as sr
    from stylerelight.gan.io import rosinality_state_dict

    real_load = ce.load
    ce.load = lambda *a, **k: types.SimpleNamespace()  # their stylegan2/op builds CUDA at import
    for name in [m for m in sys.modules if m == "models" or m.startswith("models.")]:
        del sys.modules[name]  # pSp and e4e both call their package `models`
    sys.path.insert(0, path)
    try:
        from models.encoders import psp_encoders as pe  # noqa: E402  (their code, from the user's checkout)
    finally:
        sys.path.remove(path)
        ce.load = real_load  # our own ops build through it
    for size in (256, 1024):
        n_styles = int(math.log2(size)) * 2 - 2
        opts = types.SimpleNamespace(input_nc=3, n_styles=n_styles, stylegan_size=size)
        enc = (pe.GradualStyleEncoder(50, "ir_se", opts) if kind == "psp" else
               pe.Encoder4Editing(50, "ir_se", opts)).eval()
        with torch.no_grad():
            for m in enc.modules():
                if isinstance(m, torch.nn.BatchNorm2d):
                    m.running_mean.normal_(0, 0.1)
                    m.running_var.uniform_(0.5, 1.5)
                    m.weight.normal_(1, 0.1)
                    m.bias.normal_(0, 0.1)
                elif isinstance(m, torch.nn.PReLU):
                    m.weight.uniform_(0.0, 0.5)
        from tests.conftest import make_generator

        G = make_generator(res=16, z_dim=512, w_dim=512, channel_max=16)
        latent_avg = torch.randn(512).repeat(n_styles, 1)
        sd = {f"encoder.{k}": v for k, v in enc.state_dict().items()}
        sd.update({f"decoder.{k}": v for k, v in rosinality_state_dict(G)["g_ema"].items()})
        etype = "GradualStyleEncoder" if kind == "psp" else "Encoder4Editing"
        ck = os.path.join(tmp, f"{kind}{size}.pt")
        torch.save({"state_dict": sd, "latent_avg": latent_avg,
                    "opts": {"encoder_type": etype, "output_size": size, "stylegan_size": size,
                             "start_from_latent_avg": True, "input_nc": 3}}, ck)
        E = sr.load_encoder(ck)
        x = torch.rand(2, 3, 256, 256) * 2 - 1
        with torch.no_grad():
            theirs = enc(x) + latent_avg.repeat(2, 1, 1)
            d = (theirs - E(x)).abs().max().item()
        results.append((f"{kind} IR-SE-50 {n_styles} ws encoder output (+latent_avg)", d))
        G2 = sr.load_generator(ck)
        ws = torch.randn(1, G2.num_ws, 512)
        with torch.no_grad():
            d = (G2.synthesis(ws) - G.synthesis(ws)).abs().max().item()
        results.append((f"{kind} checkpoint's decoder through load_generator", d))


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nvlabs", help="path to a checkout of NVlabs/stylegan2-ada-pytorch")
    ap.add_argument("--rosinality", help="path to a checkout of rosinality/stylegan2-pytorch")
    ap.add_argument("--psp", help="path to a checkout of eladrich/pixel2style2pixel")
    ap.add_argument("--e4e", help="path to a checkout of omertov/encoder4editing")
    args = ap.parse_args()
    torch.manual_seed(0)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        if args.nvlabs:
            compare_nvlabs(args.nvlabs, results, tmp)
        if args.rosinality:
            compare_rosinality(args.rosinality, results, tmp)
        if args.psp:
            compare_psp_family(args.psp, results, tmp, "psp")
        if args.e4e:
            compare_psp_family(args.e4e, results, tmp, "e4e")
    for name, d in results:
        print(f"{name:60s} max|diff| {d:.2e}")
    if results:
        print(f"worst: {max(d for _, d in results):.2e}")


if __name__ == "__main__":
    main()
