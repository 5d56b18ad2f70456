"""How much of the re-render change to mix into the mapper's edit (`Editor.method = "fused"`), chosen
on validation subjects (not the eval's). Per subject the eval's recipe (`eval_edit.subject_case`):
three relights, yaw +-15 / +-30 and pitch +-10 under the kept light, and relight + yaw 15, against
Mitsuba's render of the target; for each mix b the edited code is

    (1 - b) * mapper's default edit + b * (refined code + re-render change)

so b = 0 is the default edit and b = 1 the re-render change. Mean PSNR per group and mix, and of
the Editor's fused method (`FUSE_MIX`, applied as far as the edit changes the light or the view: the
identity edit under the source's true light, which the estimate misses, stays the mapper's).

    python benchmarks/fuse_sweep.py --subjects 8 --offset 4000000

`--pairs-json F` also writes every pair's PSNRs with what describes its lights (how concentrated the
target light is, how far it is from the source's, how far the light's centre moves), to see where
the mapper loses to the re-render change (`--mixes 0,1`; the printout ends with that split).
`--codes F.npz` also keeps every edit's two codes, its target and its kind (rewritten whole after each
subject): the pairs of `stylerelight train read` (the read's steps are --rr-steps', default 20).
A mapper file with a re-render read also gets the guided method's column (`--no-guided`: not).
`--rr-warm S` warm-starts the target re-renders' inversions (`RerenderChange(warm=True)`) from the
source re-render inverted with S steps (measured in session 32, the mapper's model card; not shipped).
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
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from eval_edit import metrics, subject_case  # noqa: E402

from stylerelight.edit import REFINE_STEPS, EditError, Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.networks import read_kind  # noqa: E402
from stylerelight.synth import Camera, render_portrait  # noqa: E402

CASES = [("same (true light)", 0, 0, -1), ("relight", 0, 0, 0), ("relight", 0, 0, 1), ("relight", 0, 0, 2),
         ("yaw +-15", 15, 0, None), ("yaw +-15", -15, 0, None), ("yaw +-30", 30, 0, None), ("yaw +-30", -30, 0, None),
         ("pitch +-10", 0, 10, None), ("pitch +-10", 0, -10, None), ("relight + yaw 15", 15, 0, 0)]


def _mix(b: str, num_ws: int) -> torch.Tensor:
    """[1, num_ws, 1] weights of the re-render change's code: one value, or coarse/middle/fine."""
    parts = [float(v) for v in b.split("/")]
    if len(parts) == 1:
        return torch.full((1, num_ws, 1), parts[0])
    groups = torch.tensor_split(torch.arange(num_ws), len(parts))
    w = torch.empty(num_ws)
    for g, v in zip(groups, parts, strict=True):
        w[g] = v
    return w[None, :, None]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first validation subject seed")
    ap.add_argument("--mapper", default=None, help="default: the bundled mapper")
    ap.add_argument("--mixes", default="0,0.25,0.4,0.5,0.6,0.75,1",
                    help="comma-separated mixes; a mix may be per-layer groups, coarse/middle/fine, e.g. 0.8/0.6/0.4 "
                    "(the ws split in three nearly equal runs)")
    ap.add_argument("--rr-steps", type=int, default=None, help="refinement steps of the re-renders' inversions "
                    "(default: RerenderChange's)")
    ap.add_argument("--rr-warm", type=int, default=None, metavar="S",
                    help="warm-started target inversions (RerenderChange warm=True) from a source re-render "
                    "inverted with S steps")
    ap.add_argument("--no-guided", action="store_true", help="leave out the mapper file's read (its column)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--pairs-json", default=None, help="write every pair's PSNRs and light descriptors here")
    ap.add_argument("--codes", default=None, help="write every edit's default-edit code m, re-render change's code r, "
                    "target t, group and seed here (.npz)")
    args = ap.parse_args()
    if args.rr_warm is not None and args.codes:
        sys.exit("--rr-warm measures the warm start's mixes; a read of warm-started re-renders is not supported "
                 "(drop --codes)")
    torch.set_num_threads(args.threads)
    mixes = args.mixes.split(",")
    ed = Editor.from_pretrained(mapper=args.mapper)
    rr = Editor(ed.G, ed.encoder, ed.mapper, method="rerender")
    fu = Editor(ed.G, ed.encoder, ed.mapper, method="fused")
    fu._rerender = rr._rerender_change()  # one re-render of each photo for both
    gu = Editor(ed.G, ed.encoder, ed.mapper, method="guided") if ed.mapper.read is not None and not args.no_guided \
        else None
    if gu is not None:
        gu._rerender = rr._rerender_change()  # the same re-renders (its own when its read has other steps)
    extra = ["fused"] + (["guided"] if gu else [])
    if args.rr_steps is not None:
        rr._rerender_change().steps = args.rr_steps
    if args.rr_warm is not None:
        rr._rerender_change().warm, rr._rerender_change().source_steps = True, args.rr_warm
    res: dict[str, dict] = {}
    pairs: list[dict] = []
    codes: dict[str, list] = {k: [] for k in ("m", "r", "t", "group", "seed", "kind")}
    t_start = time.time()
    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        lat = ed.invert(render_portrait(subj, env_s, cam, ed.resolution, spp=64, seed=seed), aligned=True,
                        steps=REFINE_STEPS)
        for group, dy, dp, k in CASES:
            env = env_s if k is None or k < 0 else others[k]
            light = None if k is None else ed.stage.project(env)
            try:
                ws_m = ed.map([lat], [ed.resolve_light(light, 0.0, lat)], [dy], [dp])
                ws_r = rr.map([lat], [rr.resolve_light(light, 0.0, lat)], [dy], [dp])
                ws_f = fu.map([lat], [fu.resolve_light(light, 0.0, lat)], [dy], [dp])
                if gu is not None:
                    ws_f = torch.cat([ws_f, gu.map([lat], [gu.resolve_light(light, 0.0, lat)], [dy], [dp])])
            except EditError:  # the estimated pose put the target outside the trained range
                continue
            tgt = render_portrait(subj, env, Camera(yaw=cam.yaw + dy, pitch=cam.pitch + dp), ed.resolution,
                                  spp=64, seed=seed + 1)
            with torch.no_grad():
                ws = torch.cat([ws_m + _mix(b, ws_m.shape[1]) * (ws_r - ws_m) for b in mixes] + [ws_f])
                imgs = gan_to_uint8(ed.G.synthesis(ws, noise_mode="const"))
            psnrs = {b: metrics(img, tgt)[0] for b, img in zip(mixes + extra, imgs, strict=True)}
            for b, v in psnrs.items():
                res.setdefault(group, {}).setdefault(b, []).append(v)
            pairs.append({"seed": seed, "group": group, "yaw": dy, "pitch": dp, "psnr": psnrs,
                          **light_descriptors(ed.stage, env_s, env, cam)})
            # READ_KINDS index; -1: the identity edit (left out of a read's pairs)
            kind = -1 if k == -1 else int(read_kind(torch.tensor(k is not None), torch.tensor(dy != 0 or dp != 0)))
            for key, v in zip(codes, (ws_m[0].numpy(), ws_r[0].numpy(), tgt, group, seed, kind), strict=True):
                codes[key].append(v)
        if args.codes:
            np.savez(args.codes + ".tmp.npz", **{k: np.array(v) for k, v in codes.items()},
                     rr_steps=np.array(rr._rerender_change().steps))
            os.replace(args.codes + ".tmp.npz", args.codes)
        print(f"subject {i + 1}/{args.subjects} done ({time.time() - t_start:.0f} s)", flush=True)
    print(f"\n{'group':18s} " + " ".join(f"{b:>7s}" for b in mixes + extra))
    for g, d in res.items():
        print(f"{g:18s} " + " ".join(f"{np.mean(d[b]):7.2f}" for b in mixes + extra) + f"  ({len(d[mixes[0]])})")
    if args.pairs_json:
        with open(args.pairs_json, "w") as f:
            json.dump(pairs, f, indent=1)
        if "0" in mixes and "1" in mixes:
            split_by_light(pairs)


def light_descriptors(stage, env_s, env_t, cam) -> dict:
    """What describes a pair's lights: the target light's concentration (share of the luminance in
    its 10 brightest stage lights), the luminance cosine distance of source and target lights, and
    the angle (degrees) between their luminance-weighted centres, all on the stage's lights."""
    from stylerelight.mapper.conditioning import LUMA, light_concentration, normalise_light

    coeffs = [stage.project(e)[None] for e in (env_s, env_t)]
    lum = [(normalise_light(c)[0].numpy() @ LUMA) for c in coeffs]
    centres = [(w[:, None] * stage.directions).sum(0) for w in lum]
    cos_c = float(np.dot(*centres) / max(np.linalg.norm(centres[0]) * np.linalg.norm(centres[1]), 1e-12))
    return {"concentration": float(light_concentration(coeffs[1])[0]),
            "light_distance": float(1 - np.dot(*lum) / (np.linalg.norm(lum[0]) * np.linalg.norm(lum[1]))),
            "centre_turn": float(np.degrees(np.arccos(np.clip(cos_c, -1, 1)))), "cam_yaw": cam.yaw}


def split_by_light(pairs: list[dict]) -> None:
    """Mapper (mix 0) minus re-render change (mix 1), PSNR dB, in halves of each descriptor (relights)."""
    rel = [p for p in pairs if p["group"] == "relight"]
    if len(rel) < 4:
        return
    d = np.array([p["psnr"]["0"] - p["psnr"]["1"] for p in rel])
    print(f"\nrelights ({len(rel)}): mapper - re-render change {d.mean():+.2f} dB; by halves of")
    for key in ("concentration", "light_distance", "centre_turn", "cam_yaw"):
        x = np.array([abs(p[key]) if key == "cam_yaw" else p[key] for p in rel])
        lo = x <= np.median(x)
        print(f"  {key:15s} low {d[lo].mean():+.2f}  high {d[~lo].mean():+.2f}   (corr {np.corrcoef(x, d)[0, 1]:+.2f})")


if __name__ == "__main__":
    main()
