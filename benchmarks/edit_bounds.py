"""What the latent bank lets a mapper reach: oracle edits built from the codes of the target
itself, against Mitsuba ground truth, beside the bundled mapper.

A mapper learns to move a source code to its bank's code of the target. So the best a perfect
mapper can do is bounded by the kind of code the bank holds. For a source refined as the Editor
does (encoder + 20 L-BFGS steps) this prints, per case (relight: another env map; yaw15: the
camera turned 15 deg, keeping the light), PSNR against the target of:
  no-op; the encoder's code of the target; the refined source moved by the encoder codes'
  difference E(target) - E(source) (a perfect mapper trained on encoder codes); the refined
  target code (a perfect mapper trained on refined codes); the refined source moved by the
  difference of two 200-step optimisations; the 200-step optimisation of the target (the GAN
  ceiling); the bundled mapper (the Editor's default path).

    python benchmarks/edit_bounds.py --subjects 4     # validation subjects (seeds 4,000,000+)

Two encoders side by side on the held-out pairs eval_edit.py averages (its three relights and yaw
+-15 per subject), without the costly 200-step rows:

    python benchmarks/edit_bounds.py --subjects 12 --offset 1000000 --all-pairs --no-optimise \
        --encoder checkpoints/lightstage_mapper_encoder.pt --encoder checkpoints/lightstage_encoder.pt
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import subject_case  # noqa: E402

import stylerelight as sr  # noqa: E402
from stylerelight.edit import Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8, uint8_to_gan  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402


def psnr_u8(a: np.ndarray, b: np.ndarray) -> float:
    mse = ((a.astype(np.float64) - b.astype(np.float64)) ** 2).mean()
    return float(10 * np.log10(255**2 / max(mse, 1e-12)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first subject seed (default: validation)")
    ap.add_argument("--encoder", action="append", default=None,
                    help="an encoder whose codes to bound (repeatable; default: the bundled mapper's)")
    ap.add_argument("--all-pairs", action="store_true", help="every relight (3) and yaw +-15 pair of eval_edit.py "
                    "per subject, as its table averages them (default: its first relight and yaw +15)")
    ap.add_argument("--no-optimise", action="store_true", help="skip the 200-step rows and the bundled mapper")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained()
    G = ed.G
    encs = {"": ed.encoder} if not args.encoder else \
        {f"{Path(p).stem}: ": sr.load_encoder(p).eval() for p in args.encoder}

    def image(ws):
        with torch.no_grad():
            return gan_to_uint8(G.synthesis(ws, noise_mode="const"))[0]

    rows: dict[str, dict[str, list[float]]] = {}
    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        src = render_portrait(subj, env_s, cam, ed.resolution, spp=64, seed=seed)
        x_s = uint8_to_gan(src)
        codes = {}  # encoder -> (its code of the source, the source refined from it as the Editor does)
        for name, E in encs.items():
            with torch.no_grad():
                enc_s = E(x_s)
            codes[name] = (enc_s, sr.invert(G, x_s, init=enc_s, steps=20, progress=False))
        if not args.no_optimise:
            opt_s = sr.invert(G, x_s, steps=200, progress=False)
            lat = ed.invert(src, aligned=True)
        pairs = [("relight", env, 0.0) for env in (others if args.all_pairs else others[:1])]
        pairs += [("yaw15", env_s, dy) for dy in ((15.0, -15.0) if args.all_pairs else (15.0,))]
        for case, env, dy in pairs:
            tgt = render_portrait(subj, env, Camera(yaw=cam.yaw + dy, pitch=cam.pitch), ed.resolution, spp=64,
                                  seed=seed + 1)
            x_t = uint8_to_gan(tgt)
            out = {"no-op": src}
            for name, E in encs.items():
                enc_s, ref_s = codes[name]
                with torch.no_grad():
                    enc_t = E(x_t)
                out[f"{name}the encoder's code of the target"] = image(enc_t)
                out[f"{name}refined source + E(t) - E(s)"] = image(ref_s + enc_t - enc_s)
                out[f"{name}refined target code"] = image(sr.invert(G, x_t, init=enc_t, steps=20, progress=False))
            if not args.no_optimise:
                opt_t = sr.invert(G, x_t, steps=200, progress=False)
                ref_s = codes[next(iter(encs))][1]
                out["refined source + opt(t) - opt(s)"] = image(ref_s + opt_t - opt_s)
                out["GAN ceiling (200 steps on target)"] = image(opt_t)
                out["bundled mapper (default path)"] = \
                    gan_to_uint8(ed.relight(lat, ed.stage.project(env) if dy == 0 else None, yaw=dy))[0]
            for k, v in out.items():
                rows.setdefault(case, {}).setdefault(k, []).append(psnr_u8(v, tgt))
        print(f"subject {i + 1}/{args.subjects} done", flush=True)
    print("\n| edit | " + " | ".join(f"{c} PSNR (dB, {len(r['no-op'])})" for c, r in rows.items()) + " |")
    print("| --- |" + " --- |" * len(rows))
    for k in next(iter(rows.values())):
        print(f"| {k} | " + " | ".join(f"{np.mean(rows[c][k]):.2f}" for c in rows) + " |")


if __name__ == "__main__":
    main()
