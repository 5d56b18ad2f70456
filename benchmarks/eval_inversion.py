"""Inversion quality and speed on held-out renders: encoder only, encoder + K steps, optimisation.

One run, the same images for every method: PSNR, SSIM and dlib identity distance (quality runs
are batched), and seconds per image at batch 1 (median over --timing-images images).

    python benchmarks/eval_inversion.py --heldout data/heldout --heldout data/heldout_hard \\
        --json eval.json --examples grid.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stylerelight as sr  # noqa: E402
from stylerelight.bundled import ENCODER, GENERATOR, bundled  # noqa: E402
from stylerelight.gan.training import load_image_folder  # noqa: E402
from stylerelight.identity import identity_distance  # noqa: E402
from stylerelight.imageio import gan_to_uint8, make_grid, save_image  # noqa: E402
from stylerelight.invert import psnr, ssim  # noqa: E402

# (name, steps, extra sr.invert arguments): encoder + K uses the default refinement (L-BFGS); the
# Adam row is the earlier refinement, the L2 row the same L-BFGS on the pixel loss alone
METHODS = [("encoder", 0, {}), ("encoder+10", 10, {}), ("encoder+20", 20, {}),
           ("encoder+20 adam", 20, {"optimizer": "adam"}), ("encoder+20 l2", 20, {"loss": "l2"}),
           ("encoder+50", 50, {}), ("optimize 200", 200, {}), ("optimize 500", 500, {})]
KWARGS = {m: kw for m, _, kw in METHODS}


def run(G, E, name, steps, target):
    enc = E if name.startswith("encoder") else None
    ws, info = sr.invert(G, target, steps=steps, encoder=enc, return_info=True, progress=False, **KWARGS[name])
    return info["reconstruction"]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", default=None, help="generator (default: bundled)")
    ap.add_argument("--encoder", default=None, help="encoder (default: bundled)")
    ap.add_argument("--heldout", action="append", default=[], help="held-out dataset folder (repeatable)")
    ap.add_argument("--images", type=int, default=50, help="images per held-out folder")
    ap.add_argument("--chunk", type=int, default=25, help="batch size of the quality runs")
    ap.add_argument("--timing-images", type=int, default=3)
    ap.add_argument("--methods", default=",".join(m for m, _, _ in METHODS))
    ap.add_argument("--json")
    ap.add_argument("--examples", help="PNG: per row target | encoder | encoder+20 | optimize 200")
    args = ap.parse_args()
    G = sr.load_generator(args.checkpoint or bundled(GENERATOR))
    E = sr.load_encoder(args.encoder or bundled(ENCODER))
    methods = [(m, s) for m, s, _ in METHODS if m in args.methods.split(",")]
    results = {"generator": str(args.checkpoint or GENERATOR), "encoder": str(args.encoder or ENCODER),
               "threads": torch.get_num_threads(), "sets": {}, "seconds_per_image": {}}
    recs_all: dict[str, list] = {m: [] for m, _ in methods}
    targets_all = []
    for folder in args.heldout:
        target = load_image_folder(folder, G.img_resolution)[: args.images].float() / 127.5 - 1
        targets_all.append(target)
        rows = {}
        for m, steps in methods:
            t0 = time.time()
            rec = torch.cat([run(G, E, m, steps, c) for c in target.split(args.chunk)])
            recs_all[m].append(rec)
            p, s = psnr(rec, target), ssim(rec, target)
            idd = identity_distance(gan_to_uint8(target), gan_to_uint8(rec))
            rows[m] = {"psnr": float(p.mean()), "psnr_min": float(p.min()), "ssim": float(s.mean()),
                       "identity": float(idd.mean()), "batched_seconds": time.time() - t0}
            print(f"{folder} {m:15s} PSNR {rows[m]['psnr']:.2f} dB (min {rows[m]['psnr_min']:.2f})  "
                  f"SSIM {rows[m]['ssim']:.4f}  identity {rows[m]['identity']:.3f}", flush=True)
        results["sets"][folder] = {"images": len(target), "methods": rows}
    # seconds per image at batch 1
    one = targets_all[0][: args.timing_images]
    for m, steps in methods:
        times = []
        for i in range(len(one)):
            run(G, E, m, steps, one[i: i + 1])  # warm-up
            t0 = time.perf_counter()
            run(G, E, m, steps, one[i: i + 1])
            times.append(time.perf_counter() - t0)
        results["seconds_per_image"][m] = float(np.median(times))
        print(f"{m:15s} {results['seconds_per_image'][m] * 1000:9.1f} ms per image (batch 1)", flush=True)
    # the combined table
    print("\n| method | PSNR (dB) | SSIM | identity | s/image | speed-up vs optimize 200 |")
    print("| --- | --- | --- | --- | --- | --- |")
    base = results["seconds_per_image"].get("optimize 200")
    for m, _ in methods:
        cells = []
        for key, fmt in (("psnr", "{:.2f}"), ("ssim", "{:.3f}"), ("identity", "{:.3f}")):
            cells.append(" / ".join(fmt.format(results["sets"][f]["methods"][m][key]) for f in args.heldout))
        sec = results["seconds_per_image"][m]
        cells += [f"{sec:.3f}", f"{base / sec:.0f}x" if base else "-"]
        print(f"| {m} | " + " | ".join(cells) + " |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.examples:
        cols = [m for m in ("encoder", "encoder+20", "optimize 200") if m in recs_all]
        tgt = torch.cat(targets_all)
        recs = {m: torch.cat(recs_all[m]) for m in cols}
        pick = list(range(0, len(tgt), max(1, len(tgt) // 8)))[:8]
        tiles = torch.stack([torch.stack([tgt[i]] + [recs[m][i] for m in cols]) for i in pick]).flatten(0, 1)
        tiles = torch.nn.functional.interpolate(tiles, scale_factor=2, mode="nearest")
        save_image(make_grid(gan_to_uint8(tiles), cols=1 + len(cols)), args.examples, force=True)


if __name__ == "__main__":
    main()
