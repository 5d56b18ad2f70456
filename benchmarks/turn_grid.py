"""Guided turns read off re-render changes at grid views (`Editor.turn_grid`), between the grid's views.

Why: the guided edit (`Editor(method="guided")`) pays a ray-traced re-render and its 8-step inversion
per edit (0.6-0.9 s; `--method fused`: the fused edit, 20-step inversions, about 1.2 s). Under one
light a turn's re-render change varies smoothly with the view, so with `Editor.turn_grid` it is made
once per photo at grid views and interpolated between them: each turn
after the grid's views then costs the mapper's milliseconds. This measures what interpolation loses,
on turns under the kept light halfway between grid views (yaw +-7.5 and +-22.5 with a 15-degree yaw
step; `--axis pitch`: pitch +-5 with a 10-degree step), against the exact guided edit and the mapper's
default edit (`--relight`: the same turns under the eval's first other env map, a relight and a turn);
Mitsuba targets as in `eval_edit.py` (the same subjects and source views). Validation
subjects by default (seeds 4,000,000+), never the held-out ones' seeds.

    python benchmarks/turn_grid.py --subjects 8 --offset 4000000 --threads 1 --json a.json
    python benchmarks/turn_grid.py --merge a.json,b.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_edit import metrics, pilot_arguments, pilot_start, subject_case  # noqa: E402

from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

TURNS = {"yaw": (7.5, -7.5, 22.5, -22.5), "pitch": (5.0, -5.0)}  # halfway between grid points (default steps)
STEPS = {"yaw": 15.0, "pitch": 10.0}


def labels(method: str) -> tuple[tuple, tuple]:
    """The rows and paired comparisons for the edit method measured (guided or fused)."""
    exact, grid = f"{method} edit", f"{method}, grid"
    return ("no-op", "default edit", exact, grid), ((grid, "default edit"), (exact, grid), (exact, "default edit"))


def report(rows: list) -> None:
    """Means per turn size and the paired differences per subject (mean +- standard error, subjects ahead)."""
    seeds = sorted({r["seed"] for r in rows})
    METHODS, PAIRS = labels("fused" if "fused edit" in rows[0] else "guided")  # noqa: N806
    for band in sorted({(r.get("axis", "yaw"), abs(r["dy"])) for r in rows}):
        b = [r for r in rows if (r.get("axis", "yaw"), abs(r["dy"])) == band]
        print(f"{band[0]} +-{band[1]}: " + ", ".join(f"{m} {np.mean([r[m] for r in b]):.2f}" for m in METHODS)
              + f" dB ({len(b)} edits)")
        for a, c in PAIRS:
            d = np.array([np.mean([r[a] - r[c] for r in b if r["seed"] == s]) for s in seeds])
            print(f"  {a} minus {c}: {d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f} dB, "
                  f"ahead on {(d > 0).sum()}/{len(d)} subjects")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pilot_arguments(ap, subjects=8)
    ap.add_argument("--axis", choices=("yaw", "pitch"), default="yaw", help="the turn's axis (the other stays)")
    ap.add_argument("--grid", default="15,10", help="the turn grid, YAW,PITCH degrees")
    ap.add_argument("--relight", action="store_true", help="turn under another env map (the eval's first other "
                    "light: relight + turn) instead of the kept light")
    ap.add_argument("--method", choices=("guided", "fused"), default="guided", help="the edit read off the grid")
    ap.add_argument("--spp", type=int, default=64)
    started = pilot_start(ap, report)
    if started is None:
        return
    args, ed = started
    if args.method == "guided" and ed.mapper.read is None:
        sys.exit("the mapper file has no re-render read: the guided edit needs one")
    gu = ed.twin(args.method)
    METHODS, _ = labels(args.method)  # noqa: N806
    grid = tuple(float(v) for v in args.grid.split(","))
    turns = [d * grid[args.axis == "pitch"] / STEPS[args.axis] for d in TURNS[args.axis]]
    rows = []
    for seed in range(args.offset, args.offset + args.subjects):
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        src = render_portrait(subj, env_s, cam, ed.resolution, spp=args.spp, seed=seed)
        env_t = others[0] if args.relight else env_s  # the eval's "both" case's light, or the kept one
        light = ed.stage.project(env_t) if args.relight else None
        lat = gu.invert(src, aligned=True)
        for d in turns:
            dy, dp = (d, 0.0) if args.axis == "yaw" else (0.0, d)
            tgt = render_portrait(subj, env_t, Camera(yaw=cam.yaw + dy, pitch=cam.pitch + dp), ed.resolution,
                                  spp=args.spp, seed=seed + 1)
            out = {"no-op": src, "default edit": gan_to_uint8(ed.relight(lat, light, yaw=dy, pitch=dp))[0]}
            t0 = time.perf_counter()
            out[METHODS[2]] = gan_to_uint8(gu.relight(lat, light, yaw=dy, pitch=dp))[0]
            seconds = time.perf_counter() - t0
            gu.turn_grid = grid
            try:
                out[METHODS[3]] = gan_to_uint8(gu.relight(lat, light, yaw=dy, pitch=dp))[0]
            finally:
                gu.turn_grid = None
            row = {"seed": seed, "axis": args.axis + (" + relight" if args.relight else ""), "dy": d,
                   **{m: metrics(img, tgt)[0] for m, img in out.items()}}
            rows.append(row)
            print(f"subject {seed} {args.axis} {d:+.1f}: " + ", ".join(f"{m} {row[m]:.2f}" for m in METHODS)
                  + f" ({args.method} {seconds:.2f} s)", flush=True)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
