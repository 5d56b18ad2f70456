"""Can a guided relight be made once per photo and then read off in milliseconds? (A pilot; no.)

Why: the guided edit (`Editor(method="guided")`) pays per relight a ray-traced re-render of the
reconstruction (0.17-0.19 s) and its 8-step inversion (0.4-0.5 s). Both have a per-photo shortcut in
principle: (1) the re-render is linear in the light before the display transform, so the
reconstruction's OLAT images at the source view (one `render_olat`, once per photo) give any relight's
re-render as a weighted sum; (2) the refinement's residual over the encoder's code (what the 8 L-BFGS
steps add) could be regressed, per photo, from its values at anchor lights (K re-renders inverted once)
on the encoder's change. This measures both against the exact guided relight, on the eval's relights
(Mitsuba targets) of validation subjects (seeds 4,000,000+), PSNR dB:

- "exact": the guided edit as shipped; "encoder only": the refinement residual held at the source's
  (the change is the encoder's; a read trained for 8-step inversions reads it);
- "krr": + kernel ridge regression of the residual on the encoder change (linear kernel; lambda as a
  share of the Gram's mean diagonal); "nw": + Nadaraya-Watson (Gaussian kernel, bandwidth as a share
  of the median squared distance);
- "... basis": the same with the re-render made from the per-photo OLAT basis (disc lights) instead
  of Mitsuba's envmap emitter; "basis vs render": that image against the envmap render.

    python benchmarks/relight_anchors.py --subjects 4 --offset 4000000 --anchors 16 --threads 1 --json a.json
    python benchmarks/relight_anchors.py --merge a.json,b.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_edit import OLATBasis, encode, guided_light, metrics, pilot_arguments, pilot_photos, pilot_start  # noqa: E402

from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.conditioning import normalise_light  # noqa: E402
from stylerelight.synth import render_portrait  # noqa: E402
from stylerelight.synth.envmaps import sample_envmap  # noqa: E402

ANCHOR_SEEDS = 9_000_000  # the anchors' env maps: seeds of their own, not the eval's lights


def krr(X: torch.Tensor, Y: torch.Tensor, x: torch.Tensor, lam: float) -> torch.Tensor:
    G = X @ X.T
    a = torch.linalg.solve(G + lam * G.trace() / len(G) * torch.eye(len(G), dtype=G.dtype), X @ x)
    return a @ Y


def krr_layers(X: torch.Tensor, Y: torch.Tensor, x: torch.Tensor, lam: float, num_ws: int) -> torch.Tensor:
    """krr per ws layer: each layer's residual from that layer's encoder change."""
    K = len(X)
    Xl, Yl, xl = X.view(K, num_ws, -1), Y.view(K, num_ws, -1), x.view(num_ws, -1)
    return torch.stack([krr(Xl[:, i], Yl[:, i], xl[i], lam) for i in range(num_ws)]).flatten()


def nw(X: torch.Tensor, Y: torch.Tensor, x: torch.Tensor, bw: float) -> torch.Tensor:
    d2 = ((X - x) ** 2).sum(1)
    return torch.softmax(-d2 / (bw * d2.median()), 0) @ Y


def report(rows: list) -> None:
    keys = [k for k in rows[0] if k not in ("seed", "light")]
    print(f"{len(rows)} relights of {len({r['seed'] for r in rows})} subjects, mean PSNR dB:")
    for k in keys:
        print(f"  {k:22s} {np.mean([r[k] for r in rows]):6.2f}")
    seeds = sorted({r["seed"] for r in rows})
    gain = np.mean([r["exact"] - r["encoder only"] for r in rows])
    print(f"against the encoder-only change (per subject mean +- s.e.; share of the exact change's {gain:+.2f} dB):")
    for k in ["re-render"] + keys[keys.index("exact"):]:
        d = np.array([np.mean([r[k] - r["encoder only"] for r in rows if r["seed"] == s]) for s in seeds])
        print(f"  {k:22s} {d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f} ({d.mean() / gain:.0%})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pilot_arguments(ap, subjects=4)
    ap.add_argument("--anchors", type=int, default=16, help="anchor lights per photo")
    started = pilot_start(ap, report)
    if started is None:
        return
    args, ed = started
    gu = ed.twin("guided")
    res, rows = ed.resolution, []

    for seed, subj, cam, others, src, lat, rr, S in pilot_photos(args, ed, gu):
        t0 = time.perf_counter()
        basis = OLATBasis(S.rec, ed.stage, res)
        view = basis.view
        t_basis = time.perf_counter() - t0

        def light_of(env):
            return guided_light(gu, lat, env)  # noqa: B023 - this photo's

        t0 = time.perf_counter()
        X, Xb, Y = [], [], []
        for k in range(args.anchors):
            light = light_of(sample_envmap(ANCHOR_SEEDS + 1000 * (seed - 4_000_000) + k))
            R, E = rr._invert(rr._render(S.rec, light, 0, 0), rr.steps)
            X.append((E - S.enc).flatten())
            Xb.append((encode(ed.encoder, basis(normalise_light(light))) - S.enc).flatten())
            Y.append(((R - E) - (S.ws - S.enc)).flatten())
        X, Xb, Y = (torch.stack(v).double() for v in (X, Xb, Y))
        print(f"subject {seed}: OLAT basis {t_basis:.1f} s, {args.anchors} anchors {time.perf_counter() - t0:.1f} s",
              flush=True)
        for i, env_t in enumerate(others):
            tgt = render_portrait(subj, env_t, cam, res, spp=64, seed=seed + 1)
            light_in = ed.stage.project(env_t)
            rl = light_of(env_t)
            img = rr._render(S.rec, rl, 0, 0)
            bimg = basis(normalise_light(rl))
            R, E = rr._invert(img, rr.steps)
            Eb = encode(ed.encoder, bimg)
            x, xb = (E - S.enc).flatten().double(), (Eb - S.enc).flatten().double()
            changes = {"exact": R - S.ws, "encoder only": E - S.enc, "encoder only basis": Eb - S.enc}
            for k in sorted({8, 16, args.anchors}):
                if k > args.anchors:
                    continue
                for lam in (0.3, 1, 3):
                    changes[f"krr{lam} K{k}"] = E - S.enc + krr(X[:k], Y[:k], x, lam).float().view_as(E)
                changes[f"krr1 K{k} basis"] = Eb - S.enc + krr(Xb[:k], Y[:k], xb, 1).float().view_as(E)
                changes[f"krr1 layers K{k}"] = E - S.enc + krr_layers(X[:k], Y[:k], x, 1, E.shape[1]).float().view_as(E)
                changes[f"nw1 K{k}"] = E - S.enc + nw(X[:k], Y[:k], x, 1).float().view_as(E)
            row = {"seed": seed, "light": i, "no-op": metrics(src, tgt)[0],
                   "default edit": metrics(gan_to_uint8(ed.relight(lat, light_in))[0], tgt)[0],
                   "basis vs render": metrics(bimg, img)[0],
                   "re-render": metrics(S.rec.render(env_t, view, resolution=res, spp=64), tgt)[0]}
            for name, change in changes.items():  # the guided edit reading this change (its cache's entry)
                rr.hold(S, rl, 0.0, 0.0, change)
                row[name] = metrics(gan_to_uint8(gu.relight(lat, light_in))[0], tgt)[0]
            rows.append(row)
            print(f"  light {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k not in ("seed", "light")),
                  flush=True)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
