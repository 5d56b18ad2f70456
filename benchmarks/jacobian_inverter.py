"""Pilot: a per-photo linearised inverter for re-renders (the generator's Jacobian at the photo's re-render code).

Why: a guided relight pays the 8-step inversion of its target re-render (0.4-0.5 s); the encoder alone loses most
of what those steps add (relight_anchors.py, rerender_inverter.py). Every target re-render of one photo is near its
source re-render, whose code S.ws is inverted once. With J, the image's Jacobian at S.ws (once per photo), a
regularised Gauss-Newton step is one matrix-vector product, P = (J^T J + lam I)^-1 J^T; iterating it with the
Jacobian held (the chord method) costs one synthesis per iteration and no backward pass.

    python benchmarks/jacobian_inverter.py --subjects 4 --offset 4000000 --threads 1 --json a.json
    python benchmarks/jacobian_inverter.py --merge a.json,b.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_edit import (  # noqa: E402
    OLATBasis,
    encode,
    guided_light,
    metrics,
    pilot_arguments,
    pilot_photos,
    pilot_start,
    report_against,
)

from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.conditioning import normalise_light  # noqa: E402
from stylerelight.synth import render_portrait  # noqa: E402

LAMS = (0.1, 0.3, 1.0)
ITERS = (1, 2, 3)


def jacobian(G, ws: torch.Tensor, h: float = 1e-2, batch: int = 128) -> torch.Tensor:
    """[pixels, num_ws * w_dim] central differences of the generator's image at ws (constant noise)."""
    n = ws.numel()
    eye = torch.eye(n)
    cols = []
    with torch.no_grad():
        for i in range(0, n, batch):
            d = eye[i:i + batch].view(-1, *ws.shape[1:]) * h
            cols.append(((G.synthesis(ws + d, noise_mode="const") - G.synthesis(ws - d, noise_mode="const"))
                         .flatten(1) / (2 * h)).T)
    return torch.cat(cols, 1)


def solver(J: torch.Tensor, lam: float) -> torch.Tensor:
    """P = (J^T J + lam * mean eigenvalue * I)^-1 J^T  [n, pixels]."""
    H = (J.T @ J).double()
    H += lam * H.diagonal().mean() * torch.eye(H.shape[0], dtype=H.dtype)
    return torch.linalg.solve(H, J.T.double()).float()


def to_x(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img.astype(np.float32) / 127.5 - 1).permute(2, 0, 1).flatten()


def chord(G, ws: torch.Tensor, P: torch.Tensor, target: torch.Tensor, start: torch.Tensor, iters: int) -> list:
    """The changes after each of `iters` safeguarded chord Gauss-Newton iterations from ws + start toward
    `target`: a step that raises the residual is halved (one more synthesis each time, at most twice)."""
    syn = lambda d: target - G.synthesis(ws + d, noise_mode="const").flatten()  # noqa: E731
    d, out = start.clone(), []
    with torch.no_grad():
        r = syn(d)
        for _ in range(iters):
            step = (P @ r).view_as(d)
            for _ in range(3):
                r2 = syn(d + step)
                if r2.square().sum() < r.square().sum():
                    d, r = d + step, r2
                    break
                step = step / 2
            out.append(d.clone())
    return out


def report(rows: list) -> None:
    report_against(rows, "exact", ", guided read of each change")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pilot_arguments(ap, subjects=4)
    got = pilot_start(ap, report)
    if got is None:
        return
    args, ed = got
    gu = ed.twin("guided")
    G, rows = ed.G, []
    for seed, subj, cam, others, _src, lat, rr, S in pilot_photos(args, ed, gu):
        B = OLATBasis(S.rec, ed.stage, ed.resolution)
        t0 = time.perf_counter()
        cache = Path(args.json).with_name(f"J_{seed}.pt") if args.json else None  # for the pilot's reruns
        if cache is not None and cache.exists():
            J = torch.load(cache, weights_only=True)
        else:
            J = jacobian(G, S.ws)
            if cache is not None:
                torch.save(J, cache)
        Ps = {lam: solver(J, lam) for lam in LAMS}
        t_j = time.perf_counter() - t0
        e_s = encode(ed.encoder, B(normalise_light(rr.source_light(S.rec))))
        for i, env_t in enumerate(others):
            tgt = render_portrait(subj, env_t, cam, ed.resolution, spp=64, seed=seed + 1)
            rl = guided_light(gu, lat, env_t)
            img = B(normalise_light(rl))
            x = to_x(img)
            changes = {"exact": rr._invert(img, rr.steps)[0] - S.ws, "encoder only": encode(ed.encoder, img) - e_s}
            t1 = time.perf_counter()
            for lam, P in Ps.items():
                for k, d in enumerate(chord(G, S.ws, P, x, changes["encoder only"], max(ITERS)), 1):
                    changes[f"encoder + chord lam {lam} x{k}"] = d
            t_c = (time.perf_counter() - t1) / (len(Ps) * max(ITERS))
            row = {"seed": seed, "light": i, "default edit":
                   metrics(gan_to_uint8(ed.relight(lat, ed.stage.project(env_t)))[0], tgt)[0],
                   "re-render": metrics(S.rec.render(env_t, B.view, resolution=ed.resolution, spp=64), tgt)[0]}
            for name, change in changes.items():
                rr.hold(S, rl, 0.0, 0.0, change)
                row[name] = metrics(gan_to_uint8(gu.relight(lat, ed.stage.project(env_t)))[0], tgt)[0]
            rows.append(row)
            print(f"subject {seed} light {i} (Jacobian {t_j:.0f} s, {t_c * 1e3:.0f} ms per iteration): "
                  + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k not in ("seed", "light")), flush=True)
    report(rows)
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
