"""Pilot for conditioning the mapper on the re-render (docs/mapper.md, "Next"): how much a *learned*
combination of the mapper's default edit and the encoded re-render change gains over a fixed mix.

The pairs come from `fuse_sweep.py --rr-steps 0 --codes F.npz`: per edit of the eval's recipe
(`eval_edit.subject_case`) the default edit's code m, the code r of the re-render change whose re-renders
are only encoded (no L-BFGS steps: milliseconds after the render), and Mitsuba's render of the target.
Training subjects (seeds 0-299, the captures' subjects; `--offset 0`) give the pairs to learn from,
validation subjects (4,000,000+) the score; the held-out ones stay untouched. The identity edit is left
out (it stays the mapper's: the fused edit's gate).

This script learns w' = m + a[kind, layer] (r - m) (+ a per-layer MLP of m and r - m with `--mode mlp`), kind
= relight, turn or both, by the generator's image MSE against the targets, and prints the validation PSNR
of the mapper (a = 0), of the fixed mix a = 0.4, and of the learned combination after each epoch.

    python benchmarks/fuse_sweep.py --rr-steps 0 --mixes 0 --subjects 16 --codes val.npz
    python benchmarks/fuse_sweep.py --rr-steps 0 --mixes 0 --subjects 100 --offset 0 --codes train.npz
    python benchmarks/rerender_fusion_pilot.py --train train.npz --val val.npz --mode mlp --epochs 8
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import metrics  # noqa: E402

from stylerelight.edit import Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.read_training import GROUP_KINDS  # noqa: E402

KINDS = GROUP_KINDS  # fuse_sweep's case names -> relight, turn, both
FIXED_MIX = 0.4  # the best single mix of the encoded change on validation (fuse_sweep.py --rr-steps 0)


def load(paths: list[str]) -> tuple:
    """(m, r, targets in the generator's range, uint8 targets, groups) of the dumps' edits but the identity."""
    ds = [np.load(p) for p in paths]
    keep = np.concatenate([np.isin(d["group"], list(KINDS)) for d in ds])
    cat = lambda k: np.concatenate([d[k] for d in ds])[keep]  # noqa: E731
    t = cat("t")
    return (torch.from_numpy(cat("m")).float(), torch.from_numpy(cat("r")).float(),
            torch.from_numpy(t).permute(0, 3, 1, 2).float() / 127.5 - 1, t, cat("group"))


class Fusion(torch.nn.Module):
    """w' = m + a[kind, layer] (r - m), plus (mode mlp) a per-layer MLP of (m, r - m, kind), last layer at zero."""

    def __init__(self, num_ws: int, w_dim: int, mode: str, hidden: int = 64):
        super().__init__()
        self.mode = mode
        self.a = torch.nn.Parameter(torch.full((3, num_ws, 1), FIXED_MIX))
        if mode == "mlp":
            self.w1 = torch.nn.Parameter(torch.randn(num_ws, 2 * w_dim + 3, hidden) / (2 * w_dim) ** 0.5)
            self.w2 = torch.nn.Parameter(torch.zeros(num_ws, hidden, w_dim))

    def forward(self, m, r, kind):
        d = r - m
        w = m + self.a[kind] * d
        if self.mode == "mlp":
            onehot = torch.nn.functional.one_hot(kind, 3).float()[:, None].expand(-1, m.shape[1], -1)
            h = torch.relu(torch.einsum("nli,lih->nlh", torch.cat([m / 2, d, onehot], 2), self.w1))
            w = w + torch.einsum("nlh,lhc->nlc", h, self.w2)
        return w


def score(G, fusion, data) -> dict:
    """Mean PSNR per group of the combined codes' images against the targets (eval_edit's metric)."""
    m, r, _, t, groups = data
    kind = torch.tensor([KINDS[g] for g in groups])
    out: dict[str, list] = {}
    with torch.no_grad():
        for i in range(0, len(m), 64):
            imgs = gan_to_uint8(G.synthesis(fusion(m[i:i + 64], r[i:i + 64], kind[i:i + 64]), noise_mode="const"))
            for g, img, tgt in zip(groups[i:i + 64], imgs, t[i:i + 64], strict=True):
                out.setdefault(str(g), []).append(metrics(img, tgt)[0])
    return {g: round(float(np.mean(v)), 2) for g, v in out.items()}


def fit(G, train: tuple, val: tuple, mode: str, epochs: int) -> None:
    for p in G.parameters():
        p.requires_grad_(False)
    fusion = Fusion(train[0].shape[1], train[0].shape[2], mode)
    for name, a in (("mapper (a = 0)", 0.0), (f"fixed mix a = {FIXED_MIX}", FIXED_MIX)):
        fixed = Fusion(train[0].shape[1], train[0].shape[2], "mix")
        fixed.a.data.fill_(a)
        print(f"{name:22s} val {score(G, fixed, val)}")
    opt = torch.optim.Adam(fusion.parameters(), lr=0.02 if mode == "mix" else 0.003)
    kind = torch.tensor([KINDS[g] for g in train[4]])
    t0 = time.time()
    for ep in range(epochs):
        for j in torch.randperm(len(kind)).split(32):
            img = G.synthesis(fusion(train[0][j], train[1][j], kind[j]), noise_mode="const")
            loss = ((img - train[2][j]) ** 2).mean()
            if mode == "mlp":
                loss = loss + 1e-3 * (fusion.w2 ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        print(f"epoch {ep + 1} ({time.time() - t0:.0f} s) val {score(G, fusion, val)}", flush=True)
    print("learned mix per kind (relight, turn, both) and layer:\n", fusion.a.detach()[..., 0].numpy().round(2))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--train", required=True,
                    help="comma-separated code files (fuse_sweep.py --codes) of training subjects")
    ap.add_argument("--val", required=True, help="comma-separated code files of validation subjects")
    ap.add_argument("--mode", choices=("mix", "mlp"), default="mlp")
    ap.add_argument("--epochs", type=int, default=8)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    G = Editor.from_pretrained().G
    fit(G, load(args.train.split(",")), load(args.val.split(",")), args.mode, args.epochs)


if __name__ == "__main__":
    main()
