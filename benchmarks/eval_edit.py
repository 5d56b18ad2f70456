"""Edits against ground truth on held-out subjects: the mapper, its ablation without geometry
conditioning, no-op (the input), the GAN ceiling (optimisation inversion of the target itself)
and the physically based re-render of the reconstruction, in one table.

Sources and targets are rendered by Mitsuba (`render_portrait`, the dataset path), never relit
from OLAT. Cases: same (the source's own light and view: the edit must give the input back, compared with
the encoder's and encoder + 20 steps' reconstructions), relight (three other env maps per subject,
same view; each differs from the source's light and from the others up to exposure, see
`other_light`), view (yaw +-15, +-30, pitch +-10 under the source light), both (the first other
env map and yaw +15).
"mapper" maps the encoder's own code; "default edit" is the Editor as shipped (`sr.Editor`,
`stylerelight edit`): the source refined by 20 L-BFGS steps and turned by the mapper's view change
of the encoder's code, sliding to the mapper's answer for the encoder's code as that answer
departs from the photo (`Editor.light_blend`, `Editor.image_blend`); the "bias cancelled" rows are
the mapper's change of the code itself alone.
A view-only edit keeps the light, as a user would: every method (mapper, re-render change, re-render)
gets its own estimate of the source's light, never the true env map. The identity edit ("same") is
given the true env map of the source, the stricter test (keeping the estimate gives the refined
code back exactly).
"re-render change" is `Editor.method = "rerender"` (`edit --method rerender`): the refined source
plus the W+ change between the full reconstruction's re-renders under the target and under its own
estimated light and view (no mapper). "fused edit" is `Editor.method = "fused"` (`edit --method fused`):
(1 - FUSE_MIX) x the default edit's code + FUSE_MIX x the re-render change's. "guided edit" is
`Editor.method = "guided"` (`edit --method guided`, when the mapper file has a re-render read): the
mapper's read of its default edit and the re-render change (docs/mapper.md).

    python benchmarks/eval_edit.py --subjects 8 --mapper checkpoints/lightstage_mapper.pt \
        --ablation runs/map64_nogeo/mapper.pt --json checkpoints/lightstage_mapper_eval.json

The printout ends with each method's PSNR minus the re-render's on the same edits, per subject (mean,
standard error over subjects, wins): the methods differ by tenths of a dB, the subjects by dB. The same
for the fused and guided edits (and the re-render change) against the default edit, and for the mapper
against its ablation when given. Runs over
subject ranges in parallel (`--offset`, `--json` each) join into one table with `--merge a.json,b.json`.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stylerelight as sr  # noqa: E402
from stylerelight.edit import Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.invert import ssim  # noqa: E402
from stylerelight.mapper.conditioning import normalise_light  # noqa: E402
from stylerelight.recon import light_to_envmap  # noqa: E402
from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject  # noqa: E402

CASES = [("relight", 0, 0, "t"), ("relight-b", 0, 0, "b"), ("relight-c", 0, 0, "c"), ("yaw+15", 15, 0, False),
         ("yaw-15", -15, 0, False), ("yaw+30", 30, 0, False), ("yaw-30", -30, 0, False),
         ("pitch+10", 0, 10, False), ("pitch-10", 0, -10, False), ("both", 15, 0, "t")]
DEFAULT = "default edit"
MIN_LIGHT_CHANGE = 0.1  # relative L2 change of the scale-free stage coefficients for a relight target
GROUPS = {"same": ["same"], "relight": ["relight", "relight-b", "relight-c"],
          "view15": ["yaw+15", "yaw-15"], "view30": ["yaw+30", "yaw-30"],
          "pitch10": ["pitch+10", "pitch-10"], "both": ["both"]}


# row -> (editor, source code, cancel_bias); "+K": the source refined by --refine steps. "default
# edit" is the Editor as shipped (`sr.Editor`, `stylerelight edit`); "bias cancelled" rows are the
# mapper's change alone (light_blend off), the other rows the mapper's plain answer.
EDITORS = {"mapper": ("ed", "enc", False), "mapper w/o geometry": ("ab", "ab", False),
           "mapper, source +K steps": ("ed", "ref", False), "mapper, bias cancelled": ("ed", "enc", True),
           "mapper, source +K, bias cancelled": ("ed", "ref", True), DEFAULT: ("ed", "ref", None),
           "re-render change": ("rr", "ref", None), "fused edit": ("fu", "ref", None),
           "guided edit": ("gu", "ref", None)}


ROW_KEYS = ("case", "method", "psnr", "ssim", "identity_distance", "seconds", "subject")
PAIRED_NOTE = "mean and its standard error over subjects of each subject's mean difference"
# (reference, table key, methods compared with it; None: all): the re-render (#13's baseline); the
# default edit, to which the fused and guided edits add the re-render's information about the
# reconstruction's geometry under the target light; the mapper trained without geometry conditioning
PAIRED_REFS = (("re-render", "vs_rerender", None),
               (DEFAULT, "vs_default_edit", ("re-render change", "fused edit", "guided edit")),
               ("mapper w/o geometry", "vs_ablation", ("mapper",)))


def paired_against(rows: list, ref: str) -> dict:
    """{group: {method: {mean, se, wins, subjects}}}: each method's PSNR minus `ref`'s on the same edits.

    Why: the methods are close (tenths of a dB) and the subjects vary by several dB, so whether one
    beats another is read from their paired differences; a subject's edits share its face, so the
    subject (not the edit) is the unit of the standard error."""
    psnr = {(row[0], row[1], row[6]): row[2] for row in rows}
    out: dict = {}
    for g, cases in GROUPS.items():
        methods = sorted({row[1] for row in rows if row[0] in cases} - {ref})
        for m in methods:
            per: dict = {}
            for (case, method, seed), p in psnr.items():
                if case in cases and method == m and (case, ref, seed) in psnr:
                    per.setdefault(seed, []).append(p - psnr[(case, ref, seed)])
            if len(per) < 2:
                continue
            d = np.array([np.mean(v) for v in per.values()])
            out.setdefault(g, {})[m] = {"mean": float(d.mean()), "se": float(d.std(ddof=1) / np.sqrt(len(d))),
                                        "wins": int((d > 0).sum()), "subjects": len(d)}
    return out


def other_light(rng: np.random.Generator, stage, avoid: list) -> tuple:
    """A procedural env map whose light differs from every one in `avoid` up to exposure.

    Why: the display is scale-free, so two env maps that differ only in intensity (every
    "overcast" map is the same sky times a level) give the same image; such a pair is the
    identity edit, not a relight, and its ~50 dB no-op would swamp the relight row's mean."""
    while True:
        env = sample_envmap(int(rng.integers(2**31)))
        c = normalise_light(stage.project(env))
        if all(float((c - a).norm() / a.norm()) > MIN_LIGHT_CHANGE for a in avoid):
            return env, c


def subject_case(seed: int, stage) -> tuple:
    """A held-out (or validation) subject as every edit benchmark draws it: (subject, source camera,
    source env map, [three other env maps: a real relight each, see other_light])."""
    rng = np.random.default_rng([seed, 77])
    subj = sample_subject(seed)
    cam = Camera(yaw=float(rng.uniform(-12, 12)), pitch=float(rng.uniform(-8, 8)))
    env_s = sample_envmap(int(rng.integers(2**31)))
    seen, others = [normalise_light(stage.project(env_s))], []
    for _ in range(3):  # the first draw is the target of the earlier evals
        env, c = other_light(rng, stage, seen)
        seen.append(c)
        others.append(env)
    return subj, cam, env_s, others


def metrics(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.astype(np.float64), b.astype(np.float64)
    p = 10 * np.log10(255**2 / max(((a - b) ** 2).mean(), 1e-12))
    t = lambda x: torch.from_numpy(x / 127.5 - 1).permute(2, 0, 1)[None].float()  # noqa: E731
    return float(p), float(ssim(t(a), t(b)).mean())


class OLATBasis:
    """A reconstruction's OLAT images at its own view (one `render_olat`, 7.5-10 s), from which its re-render
    under any light is a weighted sum: the per-photo shortcut of the relight pilots (relight_anchors.py,
    rerender_inverter.py)."""

    def __init__(self, rec, stage, resolution: int):
        from stylerelight.synth.render import render_olat

        y, p, _ = rec.pose
        head, self.view = rec.subject(), Camera(yaw=y, pitch=p)
        self.cap = render_olat(head, stage, [self.view], 3 * resolution, spp=4, seed=0)
        self.lm = self.view.project(head.landmarks3d(), 3 * resolution)
        self.resolution = resolution

    def __call__(self, light) -> np.ndarray:
        """The re-render under `light` ([L, 3] scale-free: `normalise_light`'s) as uint8 in the generator's crop."""
        from stylerelight.align import align_from_landmarks
        from stylerelight.lighting.display import face_display

        img = np.einsum("lhwk,lk->hwk", self.cap.olat[0].astype(np.float64), np.asarray(light, np.float64))
        return align_from_landmarks(face_display(img, self.cap.mask[0])[0], self.lm,
                                    output_size=self.resolution).image


def encode(E, img: np.ndarray) -> torch.Tensor:
    """An encoder's code [1, num_ws, w_dim] of one uint8 crop (no refinement)."""
    with torch.no_grad():
        return E(torch.from_numpy(img.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None])


class PilotPhoto(NamedTuple):
    seed: int
    subject: object
    camera: object
    others: list  # the three other env maps (subject_case)
    src: np.ndarray  # the source photo (uint8, the generator's crop)
    lat: object  # its Latent (the guided twin's inversion)
    rr: object  # the twin's RerenderChange
    S: object  # the photo's SourceRender (reconstruction, re-render code)


def pilot_photos(args, ed: Editor, gu: Editor):
    """The relight pilots' photos: each subject from --offset drawn as subject_case draws it, rendered at 64 spp,
    inverted by the guided twin `gu`, with its reconstruction and re-rendered code (seconds each)."""
    for seed in range(args.offset, args.offset + args.subjects):
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        src = render_portrait(subj, env_s, cam, ed.resolution, spp=64, seed=seed)
        lat = gu.invert(src, aligned=True)
        yield PilotPhoto(seed, subj, cam, others, src, lat, gu._rerender_change(), gu._rerender_source(lat))


def guided_light(gu: Editor, lat, env) -> torch.Tensor:
    """The re-render's light of a guided relight of `lat` to env map `env` (its stage projection), as the Editor
    makes it."""
    return gu._rerender_light(lat, gu.resolve_light(gu.stage.project(env), 0.0, lat))


def report_against(rows: list, ref: str, what: str = "") -> None:
    """Print each column's mean PSNR over a relight pilot's rows and its mean difference per subject from
    column `ref` (mean +- standard error over subjects): the relight pilots' table."""
    seeds = sorted({r["seed"] for r in rows})
    keys = [k for k in rows[0] if k not in ("seed", "light")]
    print(f"{len(rows)} relights of {len(seeds)} subjects{what}, mean PSNR dB (per subject against \"{ref}\"):")
    for k in keys:
        d = np.array([np.mean([r[k] - r[ref] for r in rows if r["seed"] == s]) for s in seeds])
        se = d.std(ddof=1) / np.sqrt(len(d)) if len(d) > 1 else 0.0
        print(f"  {k:34s} {np.mean([r[k] for r in rows]):6.2f}  {d.mean():+.2f} +- {se:.2f}")


def pilot_arguments(ap: argparse.ArgumentParser, subjects: int) -> None:
    """The arguments every validation pilot takes (turn_grid.py, relight_anchors.py): subjects from
    --offset, torch threads, a JSON of its rows, or --merge: the rows of earlier runs' JSONs."""
    ap.add_argument("--subjects", type=int, default=subjects)
    ap.add_argument("--offset", type=int, default=4_000_000, help="first subject seed (validation: 4,000,000+)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", default=None, help="comma-separated JSON files of earlier runs: report them")


def pilot_start(ap: argparse.ArgumentParser, report) -> tuple | None:
    """Parse a pilot's arguments; with --merge report the earlier runs' rows joined and return None,
    else set torch's threads and return (args, the bundled Editor)."""
    args = ap.parse_args()
    if args.merge:
        report([r for p in args.merge.split(",") for r in json.loads(Path(p).read_text())["rows"]])
        return None
    torch.set_num_threads(args.threads)
    return args, Editor.from_pretrained()


def summarise(rows: list, methods: list[str]) -> dict:
    """Print the table (mean per group and method, in `methods`' order), the half-gap lines and the paired
    comparison with the re-render; return the table."""
    table = {}
    print(f"\n{'group':9s} {'method':20s} {'PSNR':>7s} {'SSIM':>6s} {'id dist':>8s} {'s/edit':>8s}  n")
    for g, cases in GROUPS.items():
        for m in methods:
            r = [row for row in rows if row[0] in cases and row[1] == m]
            if not r:
                continue
            a = np.array([row[2:6] for row in r], np.float64)
            mean = a.mean(0)
            table.setdefault(g, {})[m] = {"psnr": mean[0], "ssim": mean[1], "identity_distance": mean[2],
                                          "seconds": mean[3], "n": len(r)}
            print(f"{g:9s} {m:20s} {mean[0]:7.2f} {mean[1]:6.3f} {mean[2]:8.3f} {mean[3]:8.4f}  {len(r)}")
    for g, t in table.items():
        if "no-op" in t and "GAN ceiling" in t and DEFAULT in t:
            half = (t["no-op"]["psnr"] + t["GAN ceiling"]["psnr"]) / 2
            rr_s = f", re-render {t['re-render']['psnr']:.2f}" if "re-render" in t else ""
            print(f"{g}: default edit {t[DEFAULT]['psnr']:.2f} dB vs half-gap target {half:.2f} dB "
                  f"(no-op {t['no-op']['psnr']:.2f}, ceiling {t['GAN ceiling']['psnr']:.2f}{rr_s})")
    for ref, key, others in PAIRED_REFS:
        paired = paired_against(rows, ref)
        if not paired:
            continue
        print(f"\nPSNR minus the {ref}'s, same edits, per subject ({PAIRED_NOTE}):")
        for g, t in paired.items():
            for m, d in t.items():
                if others is not None and m not in others:
                    continue
                table[g][m][key] = d
                print(f"{g:9s} {m:34s} {d['mean']:+6.2f} +- {d['se']:.2f} dB  "
                      f"better on {d['wins']}/{d['subjects']} subjects")
    return table


def merge(paths: list[str], out: str | None) -> None:
    """One table of several runs' JSON rows (e.g. subject ranges run in parallel); each edit kept once."""
    rows, runs, seen = [], [], set()
    for p in paths:
        with open(p) as f:
            d = json.load(f)
        if "rows" not in d:
            sys.exit(f"{p}: no per-edit rows (written before session 32); run the evaluation again")
        runs.append({"json": p, "args": d["args"]})
        for r in d["rows"]:
            row = tuple(r[k] for k in ROW_KEYS)
            if (row[0], row[1], row[6]) not in seen:
                seen.add((row[0], row[1], row[6]))
                rows.append(row)
    order = ["no-op"] + list(dict.fromkeys(r[1] for r in rows if r[1] != "no-op"))
    table = summarise(rows, order)
    print(f"(subjects {len({r[6] for r in rows})}, from {len(paths)} runs)")
    if out:
        write_json(out, {"merged": runs}, table, rows)


def write_json(path: str, head: dict, table: dict, rows: list) -> None:
    """The run's (or merge's) description, its table and its per-edit rows (what --merge reads back)."""
    with open(path, "w") as f:
        json.dump({**head, "table": table, "rows": [dict(zip(ROW_KEYS, row, strict=True)) for row in rows]},
                  f, indent=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--subjects", type=int, default=8)
    ap.add_argument("--offset", type=int, default=1_000_000, help="first held-out subject seed")
    ap.add_argument("--mapper", default=None, help="default: the bundled mapper")
    ap.add_argument("--encoder", default=None, help="default: the bundled encoder")
    ap.add_argument("--ablation", default=None, help="a mapper trained without geometry conditioning")
    ap.add_argument("--ceiling-steps", type=int, default=200)
    ap.add_argument("--no-ceiling", action="store_true")
    ap.add_argument("--refine", type=int, default=20, help="also map a source inverted with this many extra "
                    "optimisation steps (0: skip)")
    ap.add_argument("--no-rerender", action="store_true", help="skip the re-render baseline and the re-render change")
    ap.add_argument("--spp", type=int, default=64)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--cases", default=None, help=f"comma-separated groups to run, of {','.join(GROUPS)} "
                    "(default: all; 'same' always runs)")
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", default=None, help="comma-separated JSON files of earlier runs: print (and with "
                    "--json write) their rows' one table instead of evaluating")
    args = ap.parse_args()
    if args.merge:
        return merge(args.merge.split(","), args.json)
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained(mapper=args.mapper, encoder=args.encoder)
    ab = Editor.from_pretrained(mapper=args.ablation, encoder=args.encoder) if args.ablation else None
    rr = fu = gu = None
    if not args.no_rerender and args.refine:
        rr = Editor(ed.G, ed.encoder, ed.mapper, method="rerender")
        fu = Editor(ed.G, ed.encoder, ed.mapper, method="fused")
        fu._rerender = rr._rerender_change()  # one re-render of each photo for both
        if ed.mapper.read is not None:  # the same re-renders (its own when its read has other steps)
            gu = Editor(ed.G, ed.encoder, ed.mapper, method="guided")
            gu._rerender = rr._rerender_change()
    res = ed.resolution
    rows = []  # (case, method, psnr, ssim, idist, seconds)
    from stylerelight.identity import identity_distance

    for i in range(args.subjects):
        seed = args.offset + i
        subj, cam, env_s, others = subject_case(seed, ed.stage)
        envs = dict(zip("tbc", others, strict=True))
        src = render_portrait(subj, env_s, cam, res, spp=args.spp, seed=seed)
        lat = ed.invert(src, aligned=True, steps=0)
        lat_r = ed.invert(src, aligned=True, steps=args.refine) if args.refine else None
        lat_ab = ab.invert(src, aligned=True, steps=0) if ab else None
        rec = None
        if not args.no_rerender:
            t0 = time.time()
            rec = sr.reconstruct(src, aligned=True)
            rec_s = time.time() - t0
        if rr is not None:
            t0 = time.time()
            rr._rerender_source(lat_r)  # once per photo: full reconstruction, re-render, inversion
            if gu is not None:
                gu._rerender_source(lat_r)  # the same reconstruction (its own source code if other steps)
            print(f"re-render change: {time.time() - t0:.1f} s to prepare the photo (not in s/edit)")
        lats = {"enc": lat, "ref": lat_r, "ab": lat_ab}
        editors = {"ed": ed, "ab": ab, "rr": rr, "fu": fu, "gu": gu}

        def run(label, light, dy=0.0, dp=0.0):
            """One row's edit: (image, seconds), or None when the row does not apply."""
            e_name, l_name, cancel = EDITORS[label.replace(f"+{args.refine}", "+K")]
            e, la = editors[e_name], lats[l_name]
            if e is None or la is None:
                return None
            default = e.light_blend  # the Editor's (the mapper file's own ramps where it carries them)
            e.cancel_bias, e.light_blend = cancel, (None if cancel else default)
            try:
                t0 = time.perf_counter()
                img = gan_to_uint8(e.relight(la, light, yaw=dy, pitch=dp))[0]
                return img, time.perf_counter() - t0
            except ValueError as err:  # the estimated pose put the target outside the trained range
                print(f"subject {seed} {label}: {err}")
                return None
            finally:
                e.cancel_bias, e.light_blend = None, default

        labels = [m.replace("+K", f"+{args.refine}") for m in EDITORS]
        # the identity edit: the source's own (true) light and view must give the input back
        coeffs_s = ed.stage.project(env_s)
        print(f"subject {seed}: the mapper's move of the encoder code for the source's true light "
              f"{ed.light_move(lat, coeffs_s):.3f} (the default edit's light blend: {ed.light_blend}), its answer's "
              f"fit of the photo {ed.light_deficit(lat, coeffs_s):.2f} dB below the encoder's ({ed.image_blend})")
        same = {}
        for label in labels:
            r = run(label, coeffs_s)
            if r is not None:
                same[label] = r[0]
        with torch.no_grad():
            same["encoder only"] = gan_to_uint8(ed.G.synthesis(lat.ws, noise_mode="const"))[0]
        x = torch.from_numpy(src.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
        ws20 = sr.invert(ed.G, x, encoder=ed.encoder, steps=20, progress=False)
        with torch.no_grad():
            same["encoder + 20 steps"] = gan_to_uint8(ed.G.synthesis(ws20, noise_mode="const"))[0]
        for method, img in same.items():
            p, s_ = metrics(img, src)
            rows.append(("same", method, p, s_, float(np.asarray(identity_distance(src, img)).ravel()[0]), 0.0, seed))
        for name, dy, dp, relight in CASES:
            if args.cases and not any(name in GROUPS[g] for g in args.cases.split(",")):
                continue
            env = envs[relight] if relight else env_s
            tcam = Camera(yaw=cam.yaw + dy, pitch=cam.pitch + dp)
            tgt = render_portrait(subj, env, tcam, res, spp=args.spp, seed=seed + 1)
            out = {"no-op": (src, 0.0)}
            # a view-only edit keeps the light: every method gets its own estimate of the source's
            # light (what a user has), never the true env map; a relight gets the target env map
            light = ed.stage.project(env) if relight else None
            for label in labels:
                r = run(label, light, dy, dp)
                if r is not None:
                    out[label] = r
            if rec is not None:
                t0 = time.time()
                y, p, _ = rec.pose
                renv = env if relight else light_to_envmap(np.asarray(rec.light, np.float64), ed.stage)
                img = rec.render(renv, Camera(yaw=y + dy, pitch=p + dp), resolution=res, spp=args.spp)
                out["re-render"] = (img, time.time() - t0 + rec_s)
            if not args.no_ceiling:
                t0 = time.time()
                x = torch.from_numpy(tgt.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
                ws = sr.invert(ed.G, x, steps=args.ceiling_steps, progress=False)
                with torch.no_grad():
                    out["GAN ceiling"] = (gan_to_uint8(ed.G.synthesis(ws, noise_mode="const"))[0], time.time() - t0)
            for method, (img, secs) in out.items():
                p, s = metrics(img, tgt)
                idist = float(np.asarray(identity_distance(tgt, img)).ravel()[0])
                rows.append((name, method, p, s, idist, secs, seed))
        print(f"subject {i + 1}/{args.subjects} done", flush=True)
    methods = ["no-op"] + labels + ["re-render", "GAN ceiling", "encoder only", "encoder + 20 steps"]
    table = summarise(rows, methods)
    if args.json:
        write_json(args.json, {"args": vars(args)}, table, rows)


if __name__ == "__main__":
    main()
