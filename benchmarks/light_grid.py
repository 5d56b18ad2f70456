"""Refined relights read off re-render changes at grid rotations of the light (a pilot for a rotation grid).

Why: a refined relight (`Editor(method="fused")`, the live page's refinement; or "guided") pays a
ray-traced re-render and its inversion per edit (about 1 s). Across *arbitrary* lights that change does
not interpolate (benchmarks/relight_anchors.py), but the page's light slider turns one env map about the
vertical axis, and under a turn of the light the re-render change may vary as smoothly as it does across
views (where `Editor.turn_grid` reads turns off grid views at 80-90% of the refined gain). This measures
it: for the eval's three other env maps of each subject, rotations at base + 7.5 and base + 15 degrees
(base a multiple of 30, drawn per light), the refined edit exact, and with its change interpolated
linearly between the changes at grid rotations 15 and 30 degrees apart (at base + 15 the 15-degree grid
is exact, the 30-degree grid at its midpoint), against the default edit and the ray-traced re-render.
Mitsuba targets (the subject under the rotated env map, the source view). Validation subjects.

    python benchmarks/light_grid.py --subjects 8 --offset 4000000 --threads 1 --json a.json
    python benchmarks/light_grid.py --merge a.json,b.json
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
from stylerelight.mapper.rerender import rotation_corners  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

OFFSETS = (7.5, 15.0)  # rotations past a multiple of 30 degrees


def report(rows: list) -> None:
    seeds = sorted({r["seed"] for r in rows})
    exact = next(k for k in rows[0] if k.endswith(" edit") and k != "default edit")
    names = [k for k in rows[0] if k not in ("seed", "light", "rotate", "offset")]
    for off in sorted({r["offset"] for r in rows}):
        b = [r for r in rows if r["offset"] == off]
        print(f"rotation base + {off}: " + ", ".join(f"{k} {np.mean([r[k] for r in b]):.2f}" for k in names)
              + f" dB ({len(b)} relights)")
        for k in names:
            if k in (exact, "no-op"):
                continue
            d = np.array([np.mean([r[k] - r[exact] for r in b if r["seed"] == s]) for s in seeds])
            print(f"  {k} minus {exact}: {d.mean():+.2f} +- {d.std(ddof=1) / np.sqrt(len(d)):.2f} dB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pilot_arguments(ap, subjects=8)
    ap.add_argument("--method", choices=("guided", "fused"), default="fused", help="the refined edit")
    ap.add_argument("--spp", type=int, default=64)
    started = pilot_start(ap, report)
    if started is None:
        return
    args, ed = started
    gu = ed.twin(args.method)
    exact = f"{args.method} edit"
    rows = []
    for seed in range(args.offset, args.offset + args.subjects):
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        rng = np.random.default_rng([seed, 31])
        src = render_portrait(subj, env_s, cam, ed.resolution, spp=args.spp, seed=seed)
        lat = gu.invert(src, aligned=True)
        rr, S = gu._rerender_change(), gu._rerender_source(lat)
        y, p, _ = S.rec.pose
        view = Camera(yaw=y, pitch=p)

        def light(env, rot, lat=lat):
            return gu._rerender_light(lat, gu.resolve_light(env, rot, lat))

        for i, env in enumerate(others):
            base = 30.0 * int(rng.integers(12))
            t0 = time.perf_counter()
            grid = {d: rr.change(S, light(env, base + d), 0.0, 0.0) for d in (0.0, 15.0, 30.0)}
            for off in OFFSETS:
                rot = base + off
                tgt = render_portrait(subj, env.rotate(rot), cam, ed.resolution, spp=args.spp, seed=seed + 1)
                row = {"seed": seed, "light": i, "rotate": rot, "offset": off, "no-op": metrics(src, tgt)[0],
                       "default edit": metrics(gan_to_uint8(ed.relight(lat, env, rotate_light=rot))[0], tgt)[0],
                       "re-render": metrics(S.rec.render(env.rotate(rot), view, resolution=ed.resolution,
                                                         spp=args.spp), tgt)[0]}
                lt = light(env, rot)
                exact_change = rr.change(S, lt, 0.0, 0.0)  # cached unless a grid rotation
                row[exact] = metrics(gan_to_uint8(gu.relight(lat, env, rotate_light=rot))[0], tgt)[0]
                for step in (15.0, 30.0):  # the Editor's corners and weights (offsets stay within 0-30)
                    rr.hold(S, lt, 0.0, 0.0, sum(w * grid[r] for r, w in rotation_corners(off, step)))
                    row[f"grid {step:g}"] = metrics(gan_to_uint8(gu.relight(lat, env, rotate_light=rot))[0], tgt)[0]
                rr.hold(S, lt, 0.0, 0.0, exact_change)  # the exact change again (base + 15 is a grid rotation)
                rows.append(row)
                print(f"subject {seed} light {i} rotate {rot:.1f}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in row.items() if k not in ("seed", "light", "rotate",
                                                                                       "offset")), flush=True)
            print(f"  ({time.perf_counter() - t0:.1f} s)", flush=True)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
