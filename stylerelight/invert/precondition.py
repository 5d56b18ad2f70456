"""The refinement's preconditioner: the generator's average Gauss-Newton matrix, per W+ layer.

L-BFGS starts from an identity guess of the inverse Hessian and learns at most `steps` directions of
curvature, so at 20 iterations its first guess decides much. In the refinement's coordinates x
(ws = start + x @ P_l per layer l) that guess is P_l^2 = (H_l + shift)^-1 in W: H_l = E[J_l^T J_l],
the image's Gauss-Newton matrix with respect to layer l's w (J_l: Jacobian of the image), averaged
over generator samples. It is estimated without forming a Jacobian: for v ~ N(0, I) in image space
the vector-Jacobian product g = J^T v has E[g g^T] = J^T J (64 samples x 8 probes: 512 backward
passes, about 5 s for the bundled 64^2 generator on two CPU threads). Per-layer blocks keep it small for
FFHQ generators (18 x 512^2) and measured the same as the full W+ matrix on validation.

The blocks are kept per generator in memory and on disk (`cache_dir()`, keyed by the generator's
weight hash), so a command pays for them once per machine. docs/encoders.md has the measurements.
"""

from __future__ import annotations

import os
import weakref
from pathlib import Path

import torch

# chosen on validation renders (docs/encoders.md): shift as a fraction of each block's mean
# eigenvalue, and the estimate's size (generator samples at truncation psi, probes per sample)
PRECONDITION_SHIFT = 0.1
GN_SAMPLES, GN_PROBES, GN_PSI, GN_SEED = 64, 8, 0.8, 0
CACHE_FORMAT = "stylerelight-gauss-newton"

_STATS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # generator -> (weights key, {name: value})


def cached_for_generator(G, name, make):
    """make() once per generator and name, again after its weights change in place (tensor version
    counters) or move to another device."""
    try:
        key = (str(next(G.parameters()).device), tuple(p._version for p in G.parameters()))
    except RuntimeError:  # inference-mode tensors keep no version counter: no caching
        return make()
    entry = _STATS.get(G)
    if entry is None or entry[0] != key:
        entry = _STATS[G] = (key, {})
    if name not in entry[1]:
        entry[1][name] = make()
    return entry[1][name]


def cache_dir() -> Path:
    """Where derived per-generator data is kept: $STYLERELIGHT_CACHE, else ~/.cache/stylerelight."""
    return Path(os.environ.get("STYLERELIGHT_CACHE") or Path.home() / ".cache" / "stylerelight")


@torch.enable_grad()  # also when called under no_grad (a first refinement inside an edit's no_grad block)
def gauss_newton_blocks(G, samples: int = GN_SAMPLES, probes: int = GN_PROBES, psi: float = GN_PSI,
                        seed: int = GN_SEED, batch: int = 8, progress: bool = False) -> torch.Tensor:
    """[num_ws, w_dim, w_dim] float64: E[J_l^T J_l] over `samples` generator samples (truncation
    psi), each from `probes` random vector-Jacobian products of its image (constant noise)."""
    from tqdm import tqdm

    dev = next(G.parameters()).device
    bar = tqdm(total=samples * probes, desc="preconditioner", unit="pass", disable=not progress, leave=False)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(samples, G.z_dim, generator=gen)
    H = torch.zeros(G.num_ws, G.w_dim, G.w_dim, dtype=torch.float64)  # on the CPU: not every device has float64
    for chunk in z.split(batch):
        with torch.no_grad():
            ws = G.mapping(chunk.to(dev), truncation_psi=psi)
        ws.requires_grad_(True)
        img = G.synthesis(ws, noise_mode="const")
        for k in range(probes):
            v = torch.randn(img.shape, generator=gen).to(dev)
            (g,) = torch.autograd.grad(img, ws, v, retain_graph=k < probes - 1)
            g = g.cpu().double()
            H += torch.einsum("nld,nle->lde", g, g)
            bar.update(len(chunk))
    bar.close()
    return H / (samples * probes)


def _stored_blocks(G) -> torch.Tensor:
    """The default estimate, read from the disk cache when there (checked), else computed and
    written there atomically (an unwritable cache is skipped)."""
    from ..gan.io import generator_hash
    from ..runs import atomic_torch_save

    shape = (G.num_ws, G.w_dim, G.w_dim)
    meta = {"samples": GN_SAMPLES, "probes": GN_PROBES, "psi": GN_PSI, "seed": GN_SEED}
    path = cache_dir() / f"gauss_newton_{generator_hash(G)}.pt"
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
        if obj.get("format") == CACHE_FORMAT and obj.get("meta") == meta and tuple(obj["blocks"].shape) == shape \
                and torch.isfinite(obj["blocks"]).all():
            return obj["blocks"].double()
    except Exception:  # missing, unreadable or foreign: recompute
        pass
    from .losses import _say_once

    _say_once(f"computing the refinement's preconditioner for this generator once ({GN_SAMPLES * GN_PROBES} "
              f"backward passes); kept in {path}")
    H = gauss_newton_blocks(G, progress=True)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_torch_save({"format": CACHE_FORMAT, "version": 1, "meta": meta, "blocks": H}, path)
    except OSError:
        pass
    return H


@torch.no_grad()
def preconditioner_from_blocks(H: torch.Tensor, shift: float = PRECONDITION_SHIFT) -> torch.Tensor:
    """[num_ws, w_dim, w_dim] float32 symmetric P_l = (H_l + shift * mean eig(H_l) I)^(-1/2), all
    scaled by one factor so that their eigenvalues average 1."""
    e, V = torch.linalg.eigh(H.double())
    d = (e.clamp_min(0) + shift * e.mean(dim=1, keepdim=True)).rsqrt()
    d = d / d.mean()
    return ((V * d[:, None, :]) @ V.transpose(1, 2)).float()


def refine_preconditioner(G, shift: float | None = None) -> torch.Tensor:
    """The refinement's P [num_ws, w_dim, w_dim] for generator G (on its device)."""
    shift = PRECONDITION_SHIFT if shift is None else shift
    H = cached_for_generator(G, "gauss_newton", lambda: _stored_blocks(G))
    dev = next(G.parameters()).device
    return cached_for_generator(G, ("P", shift), lambda: preconditioner_from_blocks(H, shift).to(dev))
