"""Two mapper files side by side on validation subjects (not the eval's): each maps every edit
with its own Editor (the encoder whose codes it learned, its refinement, the default edit), and
the mean of the two edited codes is measured too (are the two mappers' errors independent?).
Per subject the eval's recipe (`eval_edit.subject_case`): the identity edit with the true light,
three relights, relight + yaw 15, and turns under the kept light (yaw +-15, +-30, pitch +-10),
against Mitsuba's renders; mean PSNR per case.

    python benchmarks/compare_mappers.py runs/map64_carry2/mapper.pt runs/map64_enc8_vcarry/mapper.pt

A mapper file without carries (a network run) can be measured with another file's carries:
`--carries-from checkpoints/lightstage_mapper.pt` (`mapper.model.attach_carries`). `--cases` keeps
some kinds of edit (identity, relight, both, turns), e.g. `--cases turns` after a view-carry run.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import metrics, subject_case  # noqa: E402
from view_validation import TURNS  # noqa: E402

from stylerelight.edit import EditError, Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper import load_mapper  # noqa: E402
from stylerelight.mapper.model import attach_carries  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

KINDS = ("identity", "relight", "both", "turns")


def _kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(f"unknown kind {', '.join(bad) or '(none)'}: pick from {', '.join(KINDS)}")
    return kinds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mapper_a")
    ap.add_argument("mapper_b")
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first validation subject seed")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--carries-from", default=None, help="a mapper file whose carries a mapper without carries gets")
    ap.add_argument("--cases", default=",".join(KINDS), type=_kinds,
                    help=f"comma-separated kinds of edit to measure, of {', '.join(KINDS)} (default: all)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    eds = [Editor.from_pretrained(mapper=m) for m in (args.mapper_a, args.mapper_b)]
    if args.carries_from:
        carries = load_mapper(args.carries_from)
        for ed in eds:
            if ed.mapper.carry is None and ed.mapper.view_carry is None:
                attach_carries(ed.mapper, carries)
    G, res = eds[0].G, {}
    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, (env_t, env_b, env_c) = subject_case(seed, eds[0].stage)
        src = render_portrait(subj, env_s, cam, G.img_resolution, spp=64, seed=seed)
        lats = [ed.invert(src, aligned=True) for ed in eds]
        cases = [("identity", env_s, 0, 0)] * ("identity" in args.cases)
        cases += [("relight", e, 0, 0) for e in (env_t, env_b, env_c)] * ("relight" in args.cases)
        cases += [("relight + yaw 15", env_t, 15, 0)] * ("both" in args.cases)
        turns = [(f"yaw +-{abs(dy)}" if dy else "pitch +-10", None, dy, dp) for dy, dp in TURNS]
        cases += turns * ("turns" in args.cases)
        for name, env, dy, dp in cases:
            try:
                ws = [ed.map([lat], [ed.resolve_light(env, 0.0, lat)], [dy], [dp])
                      for ed, lat in zip(eds, lats, strict=True)]
            except EditError:  # the estimated pose put the target outside the trained range
                continue
            tgt = src if name == "identity" else render_portrait(
                subj, env or env_s, Camera(yaw=cam.yaw + dy, pitch=cam.pitch + dp), G.img_resolution, spp=64,
                seed=seed + 1)
            with torch.no_grad():
                imgs = [gan_to_uint8(G.synthesis(w, noise_mode="const"))[0] for w in (*ws, (ws[0] + ws[1]) / 2)]
            res.setdefault(name, []).append([metrics(im, tgt)[0] for im in imgs])
        print(f"subject {i + 1}/{args.subjects} done", flush=True)
    print(f"\n{'case':18s}{'A':>8s}{'B':>8s}{'mean ws':>9s}   (A = {args.mapper_a}, B = {args.mapper_b})")
    for name, v in res.items():
        m = np.mean(v, axis=0)
        print(f"{name:18s}{m[0]:8.2f}{m[1]:8.2f}{m[2]:9.2f}   ({len(v)})")


if __name__ == "__main__":
    main()
