"""Pilot: the quotient-image relight of the photo itself, I_src x R_target / R_source, as what a relight reads.

Why: a guided relight reads the change between inversions of two re-renders of the photo's reconstruction; the
re-render's albedo and detail are the head model's, not the photo's. The quotient image (Shashua and
Riklin-Raviv 2001; Peers et al. 2007 for faces) keeps every pixel of the photo and takes only the shading change
from the reconstruction: where the reconstruction's albedo is wrong the error cancels. And it is a photo-like
image, the encoder's own domain, so its encoder change (photo -> quotient) might be accurate without refinement.

    python benchmarks/ratio_relight.py --subjects 8 --offset 4000000 --threads 1 --json a.json
    python benchmarks/ratio_relight.py --merge a.json,b.json
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
from stylerelight.lighting.display import FACE_BACKGROUND, face_exposure, srgb_decode, srgb_encode  # noqa: E402
from stylerelight.mapper.conditioning import normalise_light  # noqa: E402
from stylerelight.synth import render_portrait  # noqa: E402


class Basis(OLATBasis):
    """OLATBasis with its coverage in the generator's crop and linear (un-exposed) re-renders."""

    def __init__(self, rec, stage, resolution):
        from stylerelight.align import align_from_landmarks

        super().__init__(rec, stage, resolution)
        m = (np.clip(self.cap.mask[0], 0, 1) * 255).round().astype(np.uint8)
        self.alpha = align_from_landmarks(np.repeat(m[..., None], 3, -1), self.lm,
                                          output_size=resolution).image[..., 0] / 255.0

    def linear(self, light) -> np.ndarray:
        """The re-render under `light` in the crop, linear, exposed as the display would expose it."""
        return srgb_decode(self(normalise_light(light)) / 255.0)


def quotient(src: np.ndarray, rs: np.ndarray, rt: np.ndarray, alpha: np.ndarray, eps: float = 1e-3,
             clip: float = 8.0, blur: float = 0.0) -> np.ndarray:
    """uint8 photo x (rt / rs) in linear light over the reconstruction's coverage, re-exposed as faces are."""
    import scipy.ndimage

    if blur > 0:
        rs, rt = (scipy.ndimage.gaussian_filter(x, (blur, blur, 0)) for x in (rs, rt))
    lin = srgb_decode(src / 255.0)
    q = np.clip((rt + eps) / (rs + eps), 0, clip)
    a = alpha[..., None]
    out = lin * (a * q + (1 - a))  # outside the head the photo's (grey) background
    head = out * a
    exp = face_exposure(head, alpha) if (alpha > 0.99).any() else 1.0
    rgb = srgb_encode(out * exp)
    bg = np.asarray(FACE_BACKGROUND)
    rgb = rgb * a + bg * (1 - a)  # the display's background where the head is not
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def report(rows: list) -> None:
    report_against(rows, "re-render")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    pilot_arguments(ap, subjects=4)
    ap.add_argument("--eps", type=float, default=1e-3, help="added to both re-renders (linear) before their ratio")
    got = pilot_start(ap, report)
    if got is None:
        return
    args, ed = got
    gu = ed.twin("guided")
    rows = []
    for seed, subj, cam, others, src, lat, rr, S in pilot_photos(args, ed, gu):
        B = Basis(S.rec, ed.stage, ed.resolution)
        rs = B.linear(rr.source_light(S.rec))
        e_src = encode(ed.encoder, src)
        for i, env_t in enumerate(others):
            tgt = render_portrait(subj, env_t, cam, ed.resolution, spp=64, seed=seed + 1)
            rl = guided_light(gu, lat, env_t)
            img = B(normalise_light(rl))
            rt = srgb_decode(img / 255.0)
            Rt = rr._invert(img, rr.steps)[0]
            qs = {b: quotient(src, rs, rt, B.alpha, eps=args.eps, blur=b) for b in (0.0, 1.0)}
            rt_m = srgb_decode(rr._render(S.rec, rl, 0.0, 0.0) / 255.0)  # the Mitsuba re-renders, not the basis
            qm = quotient(src, srgb_decode(S.image / 255.0), rt_m, B.alpha, eps=args.eps, blur=1.0)
            row = {"seed": seed, "light": i, "no-op": metrics(src, tgt)[0],
                   "re-render": metrics(S.rec.render(env_t, B.view, resolution=ed.resolution, spp=64), tgt)[0],
                   "basis re-render": metrics(img, tgt)[0],
                   "quotient image": metrics(qs[0.0], tgt)[0], "quotient image blur 1": metrics(qs[1.0], tgt)[0],
                   "quotient of renders blur 1": metrics(qm, tgt)[0],
                   "default edit": metrics(gan_to_uint8(ed.relight(lat, ed.stage.project(env_t)))[0], tgt)[0]}
            q = qs[1.0]
            t0 = time.perf_counter()
            eq = encode(ed.encoder, q)
            t_enc = time.perf_counter() - t0
            Q8 = rr._invert(q, rr.steps, lat.ws - e_src)[0]
            changes = {"guided (exact)": Rt - S.ws, "guided quotient: encoder": eq - e_src,
                       "guided quotient: 8 steps": Q8 - lat.ws}
            for name, change in changes.items():
                rr.hold(S, rl, 0.0, 0.0, change)
                row[name] = metrics(gan_to_uint8(gu.relight(lat, ed.stage.project(env_t)))[0], tgt)[0]
            Qm = rr._invert(qm, rr.steps, lat.ws - e_src)[0]
            with torch.no_grad():
                for name, change in (("code + quotient encoder change", eq - e_src),
                                     ("quotient 8-step code", Q8 - lat.ws),
                                     ("quotient of renders 8-step code", Qm - lat.ws)):
                    row[name] = metrics(gan_to_uint8(ed.G.synthesis(lat.ws + change, noise_mode="const"))[0], tgt)[0]
            rows.append(row)
            print(f"subject {seed} light {i}: " + ", ".join(f"{k} {v:.2f}" for k, v in row.items()
                                                          if k not in ("seed", "light"))
                  + f" (encoder {t_enc * 1e3:.0f} ms)", flush=True)
            if args.json:
                from PIL import Image
                Image.fromarray(np.concatenate([src, img, q, qs[1.0], tgt], 1)).save(
                    Path(args.json).with_suffix(f".{seed}_{i}.png"))
    report(rows)
    if args.json:
        import json
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
