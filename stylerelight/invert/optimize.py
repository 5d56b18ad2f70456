"""W+ inversion by optimisation.

From scratch: the StyleGAN2 projector (Karras et al. 2020) adapted to W+: one w per layer, Adam
with a learning-rate ramp, w noise that fades out, per-layer noise maps optimised under the
projector's multi-scale autocorrelation penalty and renormalised. Its noise and ramp are for the
global search from w_avg.

From a start (an encoder's ws, or `init`): a local problem, so a quasi-Newton method wins. L-BFGS
on ws per image (strong-Wolfe line search, constant noise) reaches in 20 iterations what Adam
needs about 40 steps for, at the same cost per step; it steps in W preconditioned by the generator's
Gauss-Newton matrix (`precondition.py`) and weighs the pixel term more than the projector does
(docs/encoders.md has the measurements).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .losses import PerceptualLoss
from .precondition import cached_for_generator, refine_preconditioner


def _mapped_w(G, num: int, seed: int) -> torch.Tensor:
    def make():
        z = torch.from_numpy(np.random.RandomState(seed).randn(num, G.z_dim)).float()
        return G.mapping(z.to(next(G.parameters()).device))[:, 0]

    return cached_for_generator(G, ("w", num, seed), make)


@torch.no_grad()
def w_stats(G, num: int = 10000, seed: int = 123) -> tuple[torch.Tensor, float]:
    """(w_avg [w_dim], w_std scalar) from `num` mapped z, as the projector computes them."""
    w = _mapped_w(G, num, seed)
    return w.mean(0), float(((w - w.mean(0)).square().sum() / num) ** 0.5)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0) -> torch.Tensor:
    """PSNR in dB per image for tensors in [-1, 1] (range 2)."""
    mse = (a.float() - b.float()).square().mean(dim=[1, 2, 3]).clamp_min(1e-12)
    return 10 * torch.log10(data_range**2 / mse)


def _noise_regularizer(noise: dict) -> torch.Tensor:
    reg = 0.0
    for v in noise.values():
        while True:
            reg = reg + (v * torch.roll(v, 1, dims=3)).mean(dim=[1, 2, 3]).square()
            reg = reg + (v * torch.roll(v, 1, dims=2)).mean(dim=[1, 2, 3]).square()
            if v.shape[2] <= 8:
                break
            v = F.avg_pool2d(v, 2)
    return reg


# Adam refinement from a start: a smaller step and no w noise, so the start is not thrown away
REFINE_LR, REFINE_W_NOISE = 0.05, 0.0
# L-BFGS refinement: pixel weight (the projector's is 10), chosen on validation (docs/encoders.md: at
# 20 steps 50 raised PSNR and SSIM on both sets, identity the same)
REFINE_PIXEL_WEIGHT = 50.0
OPTIMIZERS = ("auto", "adam", "lbfgs")


def _refine_lbfgs(G, target: torch.Tensor, init: torch.Tensor, steps: int, dist_fn, pixel_weight: float,
                  progress: bool):
    """L-BFGS on each image's ws alone (its own curvature history and line search, so a result does
    not depend on what else is in the batch), stepping in preconditioned coordinates (ws = init +
    x_l @ P_l per layer, `refine_preconditioner`); noise stays at the generator's constants.
    Returns ws [N, num_ws, w_dim], the lowest loss reached by each iteration [steps, N], noise."""
    from tqdm import tqdm

    n = target.shape[0]
    P = refine_preconditioner(G).to(target.device)
    noise = {k: G.synthesis.get_submodule(k).noise_const.detach()[None, None] for k in G.synthesis.noise_shapes()}
    out, history = [], torch.full((steps, n), float("nan"))
    bar = tqdm(total=n * steps, desc="refine", unit="step", disable=not progress)
    for i in range(n):
        w0 = init[i: i + 1].detach()
        x = torch.zeros_like(w0, requires_grad=True)
        opt = torch.optim.LBFGS([x], lr=1.0, max_iter=steps, max_eval=steps * 5 // 4 + 1, history_size=steps,
                                line_search_fn="strong_wolfe", tolerance_grad=0.0, tolerance_change=0.0)
        best = [float("inf")] * steps
        done = [0]

        def closure(x=x, w0=w0, i=i, opt=opt, best=best, done=done):
            opt.zero_grad(set_to_none=True)
            synth = G.synthesis(w0 + torch.einsum("nld,lde->nle", x, P), noise=noise)
            t = target[i: i + 1]
            loss = (dist_fn(synth, t) + pixel_weight * (synth - t).square().mean(dim=[1, 2, 3])).sum()
            loss.backward()
            value = float(loss.detach())
            it = max(opt.state[x].get("n_iter", 1), 1) - 1  # the iteration this evaluation belongs to
            for k in range(it, steps):
                best[k] = min(best[k], value)
            bar.update(max(0, it - done[0]))
            done[0] = max(done[0], it)
            bar.set_postfix(loss=f"{value:.4f}")
            return loss

        opt.step(closure)
        bar.update(steps - done[0])
        history[:, i] = torch.tensor(best)
        out.append((w0 + torch.einsum("nld,lde->nle", x.detach(), P)).detach())
    bar.close()
    return torch.cat(out), history, {k: v.expand(n, 1, -1, -1) for k, v in noise.items()}


def invert(G, images: torch.Tensor, steps: int = 500, init: torch.Tensor | None = None, seed: int = 0,
           lr: float | None = None, loss: str = "auto", pixel_weight: float | None = None, noise_weight: float = 1e5,
           w_noise: float | None = None, optimize_noise: bool = True, return_info: bool = False,
           progress: bool = True, psnr_every: int = 0, encoder=None, optimizer: str = "auto"):
    """Invert images [N, 3, H, W] in [-1, 1] into ws [N, num_ws, w_dim].

    encoder: an `Encoder` for this generator; its ws are the start (`steps=0`: encoder only).
    Without encoder or init the optimisation starts at w_avg with lr 0.1 and w noise 0.05 (the
    projector's); from an encoder or init the defaults are REFINE_LR and REFINE_W_NOISE.
    optimizer: "auto" (L-BFGS from a start, Adam from w_avg), "adam", "lbfgs" (needs a start; steps
    are its iterations; lr, w noise, noise optimisation and psnr_every are Adam's alone).
    loss: "auto" (LPIPS if its weights are found offline, else MS-SSIM + L1), "lpips", "msssim",
    "l2" (the pixel term alone); each is added to pixel_weight * MSE (default: REFINE_PIXEL_WEIGHT for
    the L-BFGS refinement, the projector's 10 for Adam).
    Returns ws, or (ws, info) with info = {"loss": [steps, N], "psnr": [(step, [N])...],
    "reconstruction": [N, 3, H, W], "loss_kind": str} when return_info.
    """
    from tqdm import tqdm

    dev = next(G.parameters()).device
    target = images.detach().to(dev, torch.float32)
    if target.ndim != 4 or target.shape[1:] != (3, G.img_resolution, G.img_resolution):
        raise ValueError(f"images must be [N, 3, {G.img_resolution}, {G.img_resolution}], got {list(target.shape)}")
    n = target.shape[0]
    if encoder is not None:
        from .encoder_io import check_encoder_for

        check_encoder_for(encoder, G)
        with torch.no_grad():
            init = encoder.to(dev)(target)
    warm = init is not None
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {optimizer!r}")
    if optimizer == "lbfgs" and not warm:
        raise ValueError("optimizer='lbfgs' refines a start: give encoder= or init=")
    use_lbfgs = warm and steps > 0 and optimizer in ("auto", "lbfgs")
    if pixel_weight is None:
        pixel_weight = REFINE_PIXEL_WEIGHT if use_lbfgs else 10.0
    lr = lr if lr is not None else (REFINE_LR if warm else 0.1)
    w_noise = w_noise if w_noise is not None else (REFINE_W_NOISE if warm else 0.05)
    if steps == 0 and warm:
        ws = init.detach().to(dev)
        if not return_info:
            return ws
        noise = {k: G.synthesis.get_submodule(k).noise_const.detach().cpu()[None, None].expand(n, 1, -1, -1)
                 for k in G.synthesis.noise_shapes()}
        with torch.no_grad():
            rec = G.synthesis(ws, noise_mode="const")
        return ws, {"loss": torch.zeros(0, n), "psnr": [], "reconstruction": rec.cpu(), "noise": noise,
                    "loss_kind": "none"}
    if use_lbfgs:
        dist_fn = PerceptualLoss(loss).to(dev)
        ws, history, noise = _refine_lbfgs(G, target, init.detach().to(dev), steps, dist_fn, pixel_weight,
                                           progress)
        if not return_info:
            return ws
        with torch.no_grad():
            rec = G.synthesis(ws, noise=noise)
        return ws, {"loss": history, "psnr": [], "reconstruction": rec.cpu(),
                    "noise": {k: v.cpu() for k, v in noise.items()}, "loss_kind": dist_fn.kind}
    gen = torch.Generator(device="cpu").manual_seed(seed)
    w_avg, w_std = w_stats(G)
    ws = (init.detach().clone().to(dev) if init is not None else
          w_avg.to(dev).expand(n, G.num_ws, -1).clone()).requires_grad_(True)
    # noise maps start at the generator's constant noise (what noise_mode="const" uses)
    noise = {k: G.synthesis.get_submodule(k).noise_const.detach().to(dev).expand(n, 1, -1, -1).clone()
             .requires_grad_(optimize_noise) for k in G.synthesis.noise_shapes()}
    params = [ws] + (list(noise.values()) if optimize_noise else [])
    opt = torch.optim.Adam(params, betas=(0.9, 0.999), lr=lr)
    dist_fn = PerceptualLoss(loss).to(dev)
    history, psnrs = [], []
    bar = tqdm(range(steps), desc="invert", unit="step", disable=not progress)
    for step in bar:
        t = step / max(steps, 1)
        w_noise_scale = w_std * w_noise * max(0.0, 1.0 - t / 0.75) ** 2
        ramp = min(1.0, (1.0 - t) / 0.25)
        ramp = (0.5 - 0.5 * math.cos(ramp * math.pi)) * min(1.0, t / 0.05)
        for g in opt.param_groups:
            g["lr"] = lr * ramp
        w_in = ws + torch.randn(ws.shape, generator=gen).to(dev) * w_noise_scale
        synth = G.synthesis(w_in, noise=noise)
        dist = dist_fn(synth, target) + pixel_weight * (synth - target).square().mean(dim=[1, 2, 3])
        reg = _noise_regularizer(noise) if optimize_noise else torch.zeros(n, device=dev)
        total = (dist + noise_weight * reg).sum()
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        with torch.no_grad():
            for v in noise.values():  # renormalise each map to zero mean, unit variance
                v -= v.mean(dim=[1, 2, 3], keepdim=True)
                v *= v.square().mean(dim=[1, 2, 3], keepdim=True).rsqrt()
        history.append(dist.detach().cpu())
        if psnr_every and (step % psnr_every == 0 or step == steps - 1):
            with torch.no_grad():
                psnrs.append((step + 1, psnr(G.synthesis(ws, noise=noise), target).cpu()))
        bar.set_postfix(loss=f"{float(dist.detach().mean()):.4f}")
    ws = ws.detach()
    if not return_info:
        return ws
    with torch.no_grad():
        rec = G.synthesis(ws, noise=noise)
    return ws, {"loss": torch.stack(history) if history else torch.zeros(0, n), "psnr": psnrs,
                "reconstruction": rec.cpu(), "noise": {k: v.detach().cpu() for k, v in noise.items()},
                "loss_kind": dist_fn.kind}
