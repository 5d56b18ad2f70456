"""How the Editor's light blend (`LIGHT_BLEND`, `IMAGE_BLEND`, `KEEP_RAMP`) was chosen: on
validation subjects (not the eval's), the PSNR against Mitsuba of every edit between its two ends --
"the light stays" (the refined code turned by the mapper's view change) and the mapper's answer for
the encoder's code -- and what the blend reads (the mapper's moves of the encoder's code, and how
much worse its answer fits the photo than the encoder's code), then the mean PSNR per case for a few
candidate rules: the move's ramp (lo, hi), and the fit's ramp in dB (lo, hi) or none.

Cases per subject (the eval's recipe, benchmarks/eval_edit.py): the identity edit with the true
light, three relights, relight + yaw 15; for the first --sweep-subjects, six turns of another env
map and three of the source's own (what the page's rotation slider does).

    python benchmarks/light_blend_sweep.py --subjects 24 --sweep-subjects 8 --threads 2 --json sweep.json
    python benchmarks/light_blend_sweep.py --rows sweep.json --rule 0.5,0.7:3,5 --rule none:3.7,5.4

`--rows` scores the rows a run saved (`--json`) for other rules, without measuring again.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import metrics, subject_case  # noqa: E402

from stylerelight.edit import IMAGE_BLEND, KEEP_RAMP, LIGHT_BLEND, Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.conditioning import Edit, normalise_light  # noqa: E402
from stylerelight.mapper.model import check_blend  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

A = np.linspace(0, 1, 21)  # blend weights at which each edit is measured
# (move ramp, fit ramp or None): the shipped rule, its neighbours, session 13's (1.5, 3), session
# 11-12's move-only rule (0.12, 0.2), and (0, 1e-6): always the encoder code's answer
CANDIDATES = [(LIGHT_BLEND, IMAGE_BLEND), ((0.25, 0.35), IMAGE_BLEND), ((0.3, 0.4), (1.5, 3.0)),
              ((0.3, 0.4), (1.0, 2.0)), ((0.3, 0.4), (2.0, 3.0)), ((0.3, 0.4), (1.5, 5.0)), ((0.12, 0.2), None),
              ((0.15, 0.3), None), (None, IMAGE_BLEND), ((0.0, 1e-6), None)]


def edit_for(lat, light, dy, dp) -> Edit:
    r = lat.reconstruction
    return Edit(light=light[None], src_pose=torch.tensor([[r["yaw"], r["pitch"]]]),
                delta_pose=torch.tensor([[float(dy), float(dp)]]), same_view=torch.tensor([float(dy == 0 and dp == 0)]),
                src_light=torch.as_tensor(r["light"]).float()[None],
                identity=torch.as_tensor(r["identity"]).float()[None],
                expression=torch.as_tensor(r["expression"]).float()[None])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=24)
    ap.add_argument("--sweep-subjects", type=int, default=8)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first validation subject seed")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mapper", default=None, help="default: the bundled mapper")
    ap.add_argument("--encoder", default=None, help="default: the bundled encoder")
    ap.add_argument("--json", default=None)
    ap.add_argument("--rows", default=None, help="score the rows a run saved with --json (no measuring)")
    ap.add_argument("--rule", action="append", default=[], type=parse_rule,
                    help="another candidate: MOVE_LO,MOVE_HI:FIT_LO,FIT_HI, either side 'none' (repeatable)")
    args = ap.parse_args()
    candidates = CANDIDATES + args.rule
    if args.rows:
        with open(args.rows) as f:
            saved = json.load(f)
        score(saved["rows"], saved["refined"], candidates)
        return
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained(mapper=args.mapper, encoder=args.encoder)
    if (ed.light_blend, ed.image_blend) not in candidates:  # the mapper file's own ramps first
        candidates.insert(0, (ed.light_blend, ed.image_blend))
    M, std = ed.mapper, ed.mapper.net.w_std
    rms = lambda x: float((x / std).square().mean().sqrt())  # noqa: E731
    rows = []  # (case, psnr at each of A, move from no move, move from the keep answer)
    ref = []
    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, (env_t, env_b, env_c) = subject_case(seed, ed.stage)
        src = render_portrait(subj, env_s, cam, ed.resolution, spp=64, seed=seed)
        lat = ed.invert(src, aligned=True)
        w, w_enc, n = lat.ws, ed._encoder_ws(lat), ed._normals(lat)
        est = normalise_light(torch.as_tensor(lat.reconstruction["light"]).float())

        def syn(ws):
            return gan_to_uint8(ed.G.synthesis(ws, noise_mode="const"))[0]

        ref.append(metrics(syn(w), src)[0])
        cases = [("identity", env_s, 0), ("relight", env_t, 0), ("relight", env_b, 0), ("relight", env_c, 0),
                 ("relight + yaw 15", env_t, 15)]
        if i < args.sweep_subjects:
            cases += [("other env map turned", env_t.rotate(r), 0) for r in (0, 60, 120, 180, 240, 300)]
            cases += [("own env map turned", env_s.rotate(r), 0) for r in (30, 90, 180)]
        with torch.no_grad():
            keep = M(w_enc, edit_for(lat, est, 0, 0), n)
            fit_enc = metrics(syn(w_enc), src)[0]
            for name, env, dy in cases:
                try:
                    ed.check_angles(lat, dy, 0)
                except ValueError:
                    continue
                tgt = src if name == "identity" else render_portrait(
                    subj, env, Camera(yaw=cam.yaw + dy, pitch=cam.pitch), ed.resolution, spp=64, seed=seed + 1)
                t = normalise_light(torch.from_numpy(ed.stage.project(env)).float())
                lit = M(w_enc, edit_for(lat, t, 0, 0), n)
                e = edit_for(lat, t, dy, 0)
                direct = M(w_enc, e, n)
                stays = M.turned(w, w_enc, direct, lit, e, n)  # the Editor's "light stays" end (+ view carry)
                direct = M.carried(w_enc, direct, w, e, n)  # with the mapper's detail carry, if it has one
                ps = [metrics(syn(stays + a * (direct - stays)), tgt)[0] for a in A]
                rows.append((name, ps, rms(lit - w_enc), rms(lit - keep), fit_enc - metrics(syn(lit), src)[0]))
        print(f"subject {i + 1}/{args.subjects} done", flush=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "refined": ref, "rows": rows}, f)
    score(rows, ref, candidates)


def parse_rule(text: str):
    """'0.3,0.4:1.5,3.5' -> ((0.3, 0.4), (1.5, 3.5)); 'none' on either side: that ramp off."""
    try:
        move, fit = text.split(":")
        side = lambda t: None if t.strip().lower() == "none" else check_blend("rule", t.split(","))  # noqa: E731
        rule = side(move), side(fit)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give MOVE_LO,MOVE_HI:FIT_LO,FIT_HI (lo < hi, or none)") from None
    return rule


def score(rows, ref, candidates) -> None:
    """Mean PSNR per case for each rule, and the spread of what the rules read."""
    print(f"\nrefined code against its source (the identity edit's ceiling): {np.mean(ref):.2f} dB")
    names = list(dict.fromkeys(r[0] for r in rows))
    print(f"{'move, fit (dB)':28s}" + "".join(f"{nm:>22s}" for nm in names))

    def ramp(x, lohi):
        return float(np.clip((x - lohi[0]) / (lohi[1] - lohi[0]), 0, 1)) if lohi else 0.0

    for move, fit in candidates:
        means = []
        for nm in names:
            v = [np.interp(max(ramp(m, move), ramp(d, fit)) * min(1.0, mk / KEEP_RAMP), A, ps)
                 for c, ps, m, mk, d in rows if c == nm]
            means.append(f"{np.mean(v):.2f} ({len(v)})")
        print(f"{str((move, fit)):28s}" + "".join(f"{x:>22s}" for x in means))
    for nm in names:
        m = sorted(r[2] for r in rows if r[0] == nm)
        d = sorted(r[4] for r in rows if r[0] == nm)
        print(f"{nm}: the mapper's move {m[0]:.3f}-{m[-1]:.3f} (median {np.median(m):.3f}); its answer's fit "
              f"{d[0]:.2f}-{d[-1]:.2f} dB below the encoder's (median {np.median(d):.2f})")


if __name__ == "__main__":
    main()
