"""Training the mapper's re-render read (`networks.RerenderRead`) on edits of training subjects.

A pair file (.npz, written by `benchmarks/fuse_sweep.py --codes F.npz`) holds per edit the mapper's
default edit m [N, num_ws, w_dim], the photo's code moved by the re-render change r (its re-renders
inverted by the encoder and "rr_steps" L-BFGS steps: the read must be used with as many),
the ray-traced target t (uint8 [N, S, S, 3], Mitsuba's render of the subject under the target light and
view), the kind of edit ("kind": READ_KINDS index; files without it name fuse_sweep's case in "group")
and the subject's seed. Identity edits are left out: the Editor keeps the mapper's edit for them.

The read learns by the generator's image loss (MSE against t) alone; the generator is frozen. Why not
train it inside `train mapper`: its input is a Mitsuba render of the full reconstruction per edit
(~0.2 s + the reconstruction's 6-9 s per photo), too slow to draw on the fly; a fixed set of edits
made once is enough (docs/mapper.md: 145 and 201 training subjects measured the same).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .networks import READ_KINDS, RerenderRead

# fuse_sweep.py's case names (pair files written before they carried "kind")
GROUP_KINDS = {"relight": 0, "yaw +-15": 1, "yaw +-30": 1, "pitch +-10": 1, "relight + yaw 15": 2}


@dataclass
class ReadPairs:
    m: torch.Tensor       # [N, num_ws, w_dim] the mapper's edit
    r: torch.Tensor       # [N, num_ws, w_dim] the encoded re-render change's code
    target: np.ndarray    # uint8 [N, S, S, 3]
    kind: torch.Tensor    # [N] long, READ_KINDS index
    group: np.ndarray     # [N] str: the case's name (for per-case scores)
    steps: int | None     # refinement steps of the re-renders' inversions (None: the files do not say)

    def __len__(self) -> int:
        return len(self.kind)


def load_read_pairs(paths: Sequence[str]) -> ReadPairs:
    """The edits of one or more pair files, identity edits left out; one-line ValueError when a file is not one."""
    parts, steps = [], set()
    for p in paths:
        try:
            d = np.load(p, allow_pickle=False)
            m, r, t = d["m"], d["r"], d["t"]
            steps.add(int(d["rr_steps"]) if "rr_steps" in d else None)
            group = d["group"].astype(str) if "group" in d else np.array([READ_KINDS[k] for k in d["kind"]])
            if "kind" in d:
                kind = np.asarray(d["kind"], np.int64)
            else:
                kind = np.array([GROUP_KINDS.get(g, -1) for g in group])
        except (OSError, KeyError, ValueError) as e:
            raise ValueError(f"{p}: not a read pair file ({e}); write one with benchmarks/fuse_sweep.py "
                             "--codes") from None
        if m.shape != r.shape or m.ndim != 3 or t.ndim != 4 or len(t) != len(m) or len(kind) != len(m):
            raise ValueError(f"{p}: read pair arrays do not fit together (m {m.shape}, r {r.shape}, t {t.shape})")
        keep = (kind >= 0) & (kind < len(READ_KINDS))
        parts.append((m[keep], r[keep], t[keep], kind[keep], group[keep]))
    cat = [np.concatenate([p[i] for p in parts]) for i in range(5)]
    if not len(cat[0]):
        raise ValueError("the pair files hold no edits that change the light or the view")
    steps.discard(None)  # files that do not say
    if len(steps) > 1:
        raise ValueError(f"the pair files' re-renders were inverted with different steps ({sorted(steps)}); "
                         "train on files made alike")
    return ReadPairs(torch.from_numpy(cat[0]).float(), torch.from_numpy(cat[1]).float(), cat[2],
                     torch.from_numpy(cat[3]).long(), cat[4], steps.pop() if steps else None)


def score_read(G, read: RerenderRead | None, pairs: ReadPairs, batch: int = 64) -> dict[str, float]:
    """Mean PSNR (dB, uint8 images as the eval scores them) per case of the read's codes against the
    targets; read None scores the mapper's edit m itself."""
    from ..imageio import gan_to_uint8
    from ..invert import psnr

    out: dict[str, list] = {}
    with torch.no_grad():
        for i in range(0, len(pairs), batch):
            s = slice(i, i + batch)
            ws = pairs.m[s] if read is None else read(pairs.m[s], pairs.r[s], pairs.kind[s])
            imgs = torch.from_numpy(gan_to_uint8(G.synthesis(ws, noise_mode="const")))
            p = psnr(imgs.double(), torch.from_numpy(pairs.target[s]).double(), data_range=255.0)
            for g, v in zip(pairs.group[s], p.tolist(), strict=True):
                out.setdefault(str(g), []).append(v)
    return {g: round(float(np.mean(v)), 2) for g, v in out.items()}


def fit_read(G, read: RerenderRead, pairs: ReadPairs, epochs: int = 8, batch: int = 32, lr: float = 3e-3,
             seed: int = 0, weight_decay: float = 1e-3,
             on_epoch: Callable[[int, float], None] | None = None) -> list[float]:
    """Adam on the read's image MSE over `epochs` passes (a local RNG: global torch state is left as it was);
    the generator is frozen. weight_decay: on the MLP's read-out (its mean square), which keeps the read near
    its linear mix where pairs are few. Returns the mean training loss per epoch."""
    needs = [p.requires_grad for p in G.parameters()]
    G.requires_grad_(False)
    read.train()
    opt = torch.optim.Adam(read.parameters(), lr=lr)
    rng = torch.Generator().manual_seed(seed)
    from ..imageio import uint8_to_gan

    target = uint8_to_gan(pairs.target)
    losses = []
    try:
        for ep in range(epochs):
            total = 0.0
            for j in torch.randperm(len(pairs), generator=rng).split(batch):
                img = G.synthesis(read(pairs.m[j], pairs.r[j], pairs.kind[j]), noise_mode="const")
                loss = ((img - target[j]) ** 2).mean()
                total += float(loss.detach()) * len(j)
                loss = loss + weight_decay * read.out.weight.square().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
            losses.append(total / len(pairs))
            if on_epoch is not None:
                on_epoch(ep, losses[-1])
    finally:
        for p, n in zip(G.parameters(), needs, strict=True):
            p.requires_grad_(n)
        read.eval()
    return losses
