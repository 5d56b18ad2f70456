"""Can an encoder trained on re-renders stand in for their 8-step inversion? (A pilot for guided relights.)

Why: a guided relight (`Editor(method="guided")`) reads the change between the 8-step inversions of two
re-renders of the photo's reconstruction. The re-render of any light is a weighted sum of the
reconstruction's OLAT images (once per photo; benchmarks/relight_anchors.py), so what a relight costs is
the inversion (0.4-0.5 s), and the encoder alone loses most of its gain (relight_anchors.py: 28.28 against
29.21 dB). Re-renders are a narrow family of images (the head model's), so an encoder fine-tuned on them,
with their 8-step codes as teacher codes, might come close at one encoder pass (about 0.1 s).

    # training data: re-renders of training subjects' reconstructions under procedural lights (from the
    # per-photo OLAT basis) and their 8-step codes; shards per subject, resumable, then an image folder
    python benchmarks/rerender_inverter.py make --out data/rr --offset 0 --subjects 30 --lights 20 --threads 1
    python benchmarks/rerender_inverter.py merge --out data/rr
    stylerelight train encoder --config train/configs/<fine-tune on data/rr>.yaml --run runs/rr_enc
    # validation: the guided read of the change from each inverter, the eval's relights (Mitsuba targets)
    python benchmarks/rerender_inverter.py eval --encoder runs/rr_enc/encoder.pt --offset 4000000 --json a.json
    python benchmarks/rerender_inverter.py eval --merge a.json,b.json
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
from eval_edit import OLATBasis, encode, guided_light, metrics, report_against, subject_case  # noqa: E402

from stylerelight.edit import Editor  # noqa: E402
from stylerelight.imageio import gan_to_uint8  # noqa: E402
from stylerelight.mapper.conditioning import normalise_light  # noqa: E402
from stylerelight.synth import render_portrait  # noqa: E402
from stylerelight.synth.envmaps import sample_envmap  # noqa: E402

TRAIN_LIGHT_SEEDS = 7_000_000  # the training lights' env maps: seeds of their own


class Photo:
    """One subject's source photo, its guided editor's reconstruction and its OLAT basis at the source view."""

    def __init__(self, ed: Editor, gu: Editor, seed: int, spp: int):
        self.subj, self.cam, self.env_s, self.others = subject_case(seed, ed.stage)
        self.src = render_portrait(self.subj, self.env_s, self.cam, ed.resolution, spp=spp, seed=seed)
        self.lat = gu.invert(self.src, aligned=True)
        self.gu, self.rr, self.S = gu, gu._rerender_change(), gu._rerender_source(self.lat)
        self.olat = OLATBasis(self.S.rec, ed.stage, ed.resolution)
        self.view = self.olat.view

    def light(self, env) -> torch.Tensor:
        """The re-render's light for a relight to `env`, as the guided edit makes it."""
        return guided_light(self.gu, self.lat, env)

    def basis(self, light) -> np.ndarray:
        """The re-render under `light` (any scale) from the OLAT basis (uint8, the generator's crop)."""
        return self.olat(normalise_light(light))


def make(args, ed: Editor) -> None:
    gu = ed.twin("guided")
    shards = Path(args.out) / "shards"
    shards.mkdir(parents=True, exist_ok=True)
    for seed in range(args.offset, args.offset + args.subjects):
        path = shards / f"{seed:07d}.npz"
        if path.exists():
            continue
        t0 = time.perf_counter()
        ph = Photo(ed, gu, seed, spp=16)
        lights = [ph.rr.source_light(ph.S.rec)] + [ph.light(sample_envmap(TRAIN_LIGHT_SEEDS + 1000 * seed + k))
                                                   for k in range(args.lights - 1)]
        imgs = np.stack([ph.basis(c) for c in lights])
        codes = torch.cat([ph.rr._invert(img, ph.rr.steps)[0] for img in imgs]).numpy()
        tmp = path.with_suffix(".tmp.npz")
        np.savez(tmp, images=imgs, codes=codes.astype(np.float32))
        tmp.replace(path)
        print(f"subject {seed}: {len(imgs)} re-renders, {time.perf_counter() - t0:.1f} s", flush=True)


def merge(args, ed: Editor) -> None:
    """The shards as an image folder with teacher codes (`stylerelight train encoder`'s data)."""
    from PIL import Image

    from stylerelight.gan.io import generator_hash
    from stylerelight.invert import encoder_hash
    from stylerelight.invert.teacher_codes import CODES, INFO

    root = Path(args.out)
    (root / "images").mkdir(exist_ok=True)
    codes = []
    for shard in sorted((root / "shards").glob("*[0-9].npz")):
        d = np.load(shard)
        for k, img in enumerate(d["images"]):
            Image.fromarray(img).save(root / "images" / f"{shard.stem}_{k:03d}.png")
        codes.append(d["codes"])
    codes = np.concatenate(codes).astype(np.float16)
    np.save(root / CODES, codes)
    (root / INFO).write_text(json.dumps({"images": len(codes), "steps": ed.twin("guided")._rerender_change().steps,
                                         "generator": generator_hash(ed.G), "encoder": encoder_hash(ed.encoder)},
                                        indent=1) + "\n")
    print(f"{root}: {len(codes)} re-renders with their codes")


def report(rows: list) -> None:
    report_against(rows, "exact", ", guided read of each change")


def evaluate(args, ed: Editor) -> None:
    from stylerelight.invert import load_encoder

    gu = ed.twin("guided")
    E2 = load_encoder(args.encoder)
    rows = []
    for seed in range(args.offset, args.offset + args.subjects):
        ph = Photo(ed, gu, seed, spp=64)
        S = ph.S
        src_basis = ph.basis(ph.rr.source_light(S.rec))
        e2_src = encode(E2, src_basis)
        for i, env_t in enumerate(ph.others):
            tgt = render_portrait(ph.subj, env_t, ph.cam, ed.resolution, spp=64, seed=seed + 1)
            rl = ph.light(env_t)
            img = ph.basis(rl)
            R = ph.rr._invert(img, ph.rr.steps)[0]
            t0 = time.perf_counter()
            e2 = encode(E2, img)
            t_enc = time.perf_counter() - t0
            changes = {"exact": R - S.ws, "encoder only": encode(ed.encoder, img) - S.enc,
                       "rr-encoder - source 8-step": e2 - S.ws, "rr-encoder both": e2 - e2_src}
            row = {"seed": seed, "light": i, "no-op": metrics(ph.src, tgt)[0],
                   "default edit": metrics(gan_to_uint8(ed.relight(ph.lat, ed.stage.project(env_t)))[0], tgt)[0],
                   "re-render": metrics(S.rec.render(env_t, ph.view, resolution=ed.resolution, spp=64), tgt)[0]}
            for name, change in changes.items():  # the guided edit reading this change
                ph.rr.hold(S, rl, 0.0, 0.0, change)
                row[name] = metrics(gan_to_uint8(gu.relight(ph.lat, ed.stage.project(env_t)))[0], tgt)[0]
            rows.append(row)
            print(f"subject {seed} light {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                                                          if k not in ("seed", "light"))
                  + f" (rr-encoder {t_enc * 1e3:.0f} ms)", flush=True)
    report(rows)
    if args.json:
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("mode", choices=("make", "merge", "eval"))
    ap.add_argument("--out", default="data/rr", help="make, merge: the data folder")
    ap.add_argument("--subjects", type=int, default=4)
    ap.add_argument("--offset", type=int, default=0, help="first subject seed (training 0-299; validation 4,000,000+)")
    ap.add_argument("--lights", type=int, default=20, help="make: re-renders per subject (the first its own light)")
    ap.add_argument("--encoder", default=None, help="eval: the re-render encoder")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", default=None)
    ap.add_argument("--merge", default=None, help="eval: report the rows of earlier runs' JSONs")
    args = ap.parse_args()
    if args.merge:
        report([r for p in args.merge.split(",") for r in json.loads(Path(p).read_text())["rows"]])
        return
    torch.set_num_threads(args.threads)
    ed = Editor.from_pretrained()
    {"make": make, "merge": merge, "eval": evaluate}[args.mode](args, ed)


if __name__ == "__main__":
    main()
