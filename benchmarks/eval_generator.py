"""Quality of a generator trained on the virtual light stage, measured on held-out renders.

1. Inversion: W+ inversion of N held-out portraits (subjects and env maps never in training,
   optionally lighting of a held-out kind), mean PSNR and SSIM of the reconstructions.
2. Distribution: sliced Wasserstein distance (SWD, per Laplacian level) between N generated
   images and N training images, next to the real-vs-real SWD of two disjoint training samples
   (the floor a perfect generator reaches).
3. Face-likeness: the fraction of N generated and N training images in which dlib's face
   detectors (HOG at threshold -0.5 on 256^2, CNN on 160^2) find a face. Real renders are missed
   too (small, bald, turned, harshly lit), so the fake rate is read against the real rate.

    stylerelight lightstage build-dataset --out data/heldout --images 50 --seed 777 --spp 8 \\
        --subject-offset 1000000
    stylerelight lightstage build-dataset --out data/heldout_hard --images 50 --seed 778 --spp 8 \\
        --subject-offset 2000000 --env-kinds hard
    python benchmarks/eval_generator.py -c checkpoints/lightstage_stylegan2.pt --train data/lightstage64 \\
        --heldout data/heldout --heldout data/heldout_hard --fixed-noise --steps 300 \\
        --json eval.json --examples examples.png
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stylerelight as sr  # noqa: E402
from stylerelight.align import face_found_rate  # noqa: E402
from stylerelight.gan.metrics import sliced_wasserstein  # noqa: E402
from stylerelight.gan.training import load_image_folder  # noqa: E402
from stylerelight.imageio import gan_to_uint8, make_grid, save_image  # noqa: E402
from stylerelight.invert import psnr, ssim  # noqa: E402


def to_gan(u8: torch.Tensor) -> torch.Tensor:
    return u8.float() / 127.5 - 1


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-c", "--checkpoint", required=True)
    ap.add_argument("--train", required=True, help="the training dataset folder")
    ap.add_argument("--heldout", action="append", default=[], help="held-out dataset folder (repeatable)")
    ap.add_argument("--images", type=int, default=50)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--swd-images", type=int, default=2000)
    ap.add_argument("--fixed-noise", action="store_true",
                    help="also invert with the noise maps fixed (noise can absorb image detail)")
    ap.add_argument("--detect-images", type=int, default=200, help="images for the face-likeness rates")
    ap.add_argument("--json", help="write all numbers to this JSON file")
    ap.add_argument("--examples", help="write a PNG of held-out targets above their reconstructions")
    args = ap.parse_args()
    G = sr.load_generator(args.checkpoint)
    results = {"checkpoint": args.checkpoint, "steps": args.steps, "inversion": [], "swd": {}}
    example_rows = []
    for folder in args.heldout:
        target = to_gan(load_image_folder(folder, G.img_resolution)[: args.images])
        for fixed in (False, True) if args.fixed_noise else (False,):
            t0 = time.time()
            ws, info = sr.invert(G, target, steps=args.steps, return_info=True, optimize_noise=not fixed)
            rec = info["reconstruction"]
            p, s = psnr(rec, target), ssim(rec, target)
            r = {"heldout": folder, "images": len(target), "noise": "fixed" if fixed else "optimised",
                 "loss": info["loss_kind"], "psnr_mean": float(p.mean()), "psnr_min": float(p.min()),
                 "psnr_median": float(p.median()), "ssim_mean": float(s.mean()), "seconds": time.time() - t0}
            results["inversion"].append(r)
            print(f"inversion {folder}: {len(target)} images, {args.steps} steps, {r['loss']} loss, noise "
                  f"{r['noise']}: PSNR mean {r['psnr_mean']:.2f} dB (min {r['psnr_min']:.2f}, median "
                  f"{r['psnr_median']:.2f}), SSIM {r['ssim_mean']:.4f}", flush=True)
            if fixed or not args.fixed_noise:
                example_rows += [target[:8], rec[:8]]
    real = to_gan(load_image_folder(args.train, G.img_resolution))
    n = min(args.swd_images, len(real) // 2)
    perm = torch.randperm(len(real), generator=torch.Generator().manual_seed(0))
    a, b = real[perm[:n]], real[perm[n: 2 * n]]
    with torch.no_grad():
        fake = torch.cat([G(torch.randn(64, G.z_dim, generator=torch.Generator().manual_seed(i)))
                          for i in range((n + 63) // 64)])[:n].clamp(-1, 1)
    rr, rf = sliced_wasserstein(a, b), sliced_wasserstein(a, fake)
    print("SWD x1e3 per level (fine..coarse):")
    print(f"  real vs real: {[round(v, 1) for v in rr]} mean {sum(rr) / len(rr):.1f}")
    print(f"  real vs fake: {[round(v, 1) for v in rf]} mean {sum(rf) / len(rf):.1f}")
    results["swd"] = {"images": n, "real_vs_real": rr, "real_vs_fake": rf}
    m = min(args.detect_images, n)
    results["faces_found"] = {"images": m}
    for det, size in (("hog", 256), ("cnn", 160)):
        fr, rl = face_found_rate(gan_to_uint8(fake[:m]), det, size), face_found_rate(gan_to_uint8(a[:m]), det, size)
        results["faces_found"][det] = {"fake": fr, "real": rl}
        print(f"dlib {det} finds a face in {fr:.1%} of {m} generated images ({rl:.1%} of real renders)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    if args.examples and example_rows:
        rows = torch.cat(example_rows)
        save_image(make_grid(gan_to_uint8(rows), cols=8), args.examples, force=True)


if __name__ == "__main__":
    main()
