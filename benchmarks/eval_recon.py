"""Reconstruction accuracy against the renders' ground truth: fast path (CNN) and full fit.

Per image: yaw / pitch error (degrees), 68-landmark error (crop pixels), light error as the
relative RMSE of the shading the estimated vs the true light casts on the *true* geometry (white
diffuse head, ray-traced with shadows, in the crop frame) and the angle between the dominant
light directions (net light vector; also the 5 strongest lights' mean), per-vertex albedo error
on the camera-facing vertices, re-render PSNR against the input, and seconds. With --side-light N:
N unseen subjects under one hard light from the side, frontal view: the left/right imbalance of
the input's linear intensity vs the recovered albedo's (self-shadows explained, not baked into
albedo: the ratio should be >= 3). With --novel-view: the full fit re-rendered 30 degrees of yaw
away under the same env map, against Mitsuba's render of the true head.

    python benchmarks/eval_recon.py --heldout data/heldout --heldout data/heldout_hard --images 25 \
        --side-light 10 --novel-view
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from stylerelight.align import AlignedFace, ffhq_quad  # noqa: E402
from stylerelight.lighting import LightStage, disk_light  # noqa: E402
from stylerelight.recon import default_cnn, load_recon_cnn, reconstruct  # noqa: E402
from stylerelight.recon.cnn import crop_landmarks  # noqa: E402
from stylerelight.recon.photometric import olat_basis  # noqa: E402
from stylerelight.recon.pose_fit import PoseFit  # noqa: E402
from stylerelight.recon.reconstruction import _vertex_normals  # noqa: E402
from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject  # noqa: E402


def true_fit(p: dict, subj, crop: int) -> PoseFit:
    """The crop frame the dataset builder used: its camera, then the FFHQ quad's similarity."""
    lm = np.asarray(p["landmarks_raw"], np.float64)
    raw = 3 * crop
    quad, _ = ffhq_quad(lm)
    m = AlignedFace(np.zeros((crop, crop, 3), np.uint8), quad, lm, (raw, raw)).quad_to_output()
    return PoseFit(yaw=p["yaw"], pitch=p["pitch"], roll=math.degrees(math.atan2(m[1, 0], m[0, 0])),
                   scale=float(math.hypot(m[0, 0], m[1, 0])), shift=m[:2, 2], raw_resolution=raw,
                   identity=subj.id_coeffs, expression=subj.expr_coeffs, rmse=0.0)


def dominant(light: np.ndarray, stage: LightStage) -> np.ndarray:
    """The dominant light direction: the net light vector sum_l c_l d_l (first-order spherical
    harmonics, the standard definition); defined for skies and soft light too."""
    d = (stage.directions * light.sum(1)[:, None]).sum(0)
    return d / max(np.linalg.norm(d), 1e-12)


def dominant_top5(light: np.ndarray, stage: LightStage, k: int = 5) -> np.ndarray:
    """The weighted mean of the k strongest lights (the earlier definition; arbitrary when the
    brightest cells are near ties, as under skies)."""
    w = light.sum(1)
    idx = np.argsort(w)[-k:]
    d = (stage.directions[idx] * w[idx, None]).sum(0)
    return d / np.linalg.norm(d)


def angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(a @ b, -1, 1))))


def facing(subj, cam: Camera) -> np.ndarray:
    v = subj.vertices()
    n = _vertex_normals(v, subj.model.triangles)
    to_cam = cam.origin()[None] - v
    return (to_cam * n).sum(1) / np.linalg.norm(to_cam, axis=1) > 0.5


def psnr(a, b) -> float:
    return float(10 * np.log10(255**2 / max(((a.astype(np.float64) - b) ** 2).mean(), 1e-12)))


def side_light_rows(n: int, cnn) -> list[dict]:
    """Imbalance |log(left / right)| of the input's linear face intensity and of the recovered
    albedo on the camera-facing vertices (head x > 0 vs < 0; frontal view, so halves match)."""
    from stylerelight.lighting import srgb_decode
    from stylerelight.recon.silhouette import background_matte

    out = []
    for k in range(n):
        subj = sample_subject(3_000_000 + k)
        side = 1.0 if k % 2 == 0 else -1.0
        img = render_portrait(subj, disk_light([side, 0.2, 0.35]), Camera(yaw=0.0, pitch=0.0), 64, spp=16)
        t0 = time.perf_counter()
        rec = reconstruct(img, aligned=True, cnn=cnn)
        sec = time.perf_counter() - t0
        matte = background_matte(img)[0]
        lin = srgb_decode(img / 255.0).mean(-1)
        cols = np.arange(64)[None].repeat(64, 0)
        # the head's +x (its left) is the image's right at yaw 0
        img_ratio = abs(math.log(lin[matte & (cols >= 32)].mean() / lin[matte & (cols < 32)].mean()))
        head = rec.subject()
        v = head.vertices()
        vis = facing(head, rec.fit.camera())
        alb = rec.albedo.mean(1)
        alb_ratio = abs(math.log(alb[vis & (v[:, 0] > 0)].mean() / alb[vis & (v[:, 0] < 0)].mean()))
        out.append({"subject": 3_000_000 + k, "image_imbalance": img_ratio, "albedo_imbalance": alb_ratio,
                    "ratio": img_ratio / max(alb_ratio, 1e-6), "seconds": sec})
        print(f"side light {k}: image {img_ratio:.3f} albedo {alb_ratio:.3f} ratio {out[-1]['ratio']:.1f}", flush=True)
    return out


def main():
    from PIL import Image

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--heldout", action="append", default=[])
    ap.add_argument("--images", type=int, default=25, help="images per folder")
    ap.add_argument("--start", type=int, default=0, help="first image index (tuning on training images)")
    ap.add_argument("--network", default=None, help="fast-path network (default: bundled)")
    ap.add_argument("--novel-view", action="store_true",
                    help="also re-render the full fit 30 degrees of yaw away, against Mitsuba's render")
    ap.add_argument("--side-light", type=int, default=0, help="also measure N side-lit renders (self-shadows)")
    ap.add_argument("--json")
    args = ap.parse_args()
    stage = LightStage.default()
    cnn = load_recon_cnn(args.network) if args.network else default_cnn()
    rows = []
    for folder in args.heldout:
        for i in range(args.start, args.start + args.images):
            p = json.load(open(os.path.join(folder, "params", f"{i:07d}.json")))
            crop = np.asarray(Image.open(os.path.join(folder, "images", f"{i:07d}.png")).convert("RGB"))
            S = crop.shape[0]
            subj = sample_subject(p["subject_seed"])
            truth = stage.project(sample_envmap(p["env_seed"], kind=p.get("env_kind"))) * p["exposure"]
            tf = true_fit(p, subj, S)
            B, cov = olat_basis(tf, S, stage, spp=4)
            mask = cov > 0.99
            s_true = np.einsum("lhwk,lk->hwk", B, truth)[mask]
            vis = facing(subj, tf.camera())
            lm_true = crop_landmarks(p, S)
            for mode in ("fast", "full"):
                t0 = time.perf_counter()
                rec = reconstruct(crop, aligned=True, cnn=cnn, fast_only=mode == "fast")
                sec = time.perf_counter() - t0
                if mode == "fast":
                    yaw, pitch = rec.info["cnn"]["yaw"], rec.info["cnn"]["pitch"]
                else:
                    yaw, pitch = rec.pose[0], rec.pose[1]
                s_est = np.einsum("lhwk,lk->hwk", B, rec.light)[mask]
                rows.append({
                    "set": folder, "image": i, "mode": mode, "seconds": sec, "cnn_seconds": rec.info["cnn_seconds"],
                    "yaw_err": abs(yaw - p["yaw"]), "pitch_err": abs(pitch - p["pitch"]),
                    "landmark_err": float(np.linalg.norm(rec.landmarks - lm_true, axis=1).mean()),
                    "light_rel_rmse": float(np.sqrt(((s_est - s_true) ** 2).mean() / (s_true**2).mean())),
                    "light_dir_err": angle(dominant(rec.light, stage), dominant(truth, stage)),
                    "light_dir_top5_err": angle(dominant_top5(rec.light, stage), dominant_top5(truth, stage)),
                    "albedo_err": float(np.abs(rec.albedo[vis] - subj.albedo[vis]).mean()),
                    "rerender_psnr": psnr(rec.render(spp=4), crop)})
                if args.novel_view and mode == "full":
                    # the same env map from 30 degrees further towards frontal: ground truth by Mitsuba
                    env = sample_envmap(p["env_seed"], kind=p.get("env_kind"))
                    cam = Camera(yaw=p["yaw"] - 30 if p["yaw"] > 0 else p["yaw"] + 30, pitch=p["pitch"])
                    truth_img = render_portrait(subj, env, cam, S, spp=16)
                    rows[-1]["novel_view_psnr"] = psnr(rec.render(env=env, camera=cam, spp=16), truth_img)
            r = rows[-1]
            print(f"{folder} {i}: full yaw {r['yaw_err']:.1f} pitch {r['pitch_err']:.1f} light dir "
                  f"{r['light_dir_err']:.1f} rel {r['light_rel_rmse']:.2f} PSNR {r['rerender_psnr']:.2f} "
                  f"{r['seconds']:.1f} s", flush=True)
    print("\n| set | path | yaw err (median) | pitch err (median) | landmarks px | light rel. RMSE (median) "
          "| light dir. err (median) | top-5 dir. err (median) | albedo err | re-render PSNR (mean) | s/image "
          "| CNN ms/image |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    summary = {}
    for folder in args.heldout + ["all"]:
        for mode in ("fast", "full"):
            sel = [r for r in rows if r["mode"] == mode and (folder == "all" or r["set"] == folder)]
            if not sel:
                continue

            def med(key, sel=sel):
                return float(np.median([r[key] for r in sel]))

            def mean(key, sel=sel):
                return float(np.mean([r[key] for r in sel]))

            s = {"yaw": med("yaw_err"), "pitch": med("pitch_err"), "landmarks": mean("landmark_err"),
                 "light_rel": med("light_rel_rmse"), "light_dir": med("light_dir_err"),
                 "light_dir_top5": med("light_dir_top5_err"), "albedo": mean("albedo_err"),
                 "psnr": mean("rerender_psnr"), "seconds": med("seconds"), "cnn_ms": 1000 * med("cnn_seconds"),
                 "images": len(sel)}
            summary[f"{folder}/{mode}"] = s
            print(f"| {folder} | {mode} | {s['yaw']:.2f} | {s['pitch']:.2f} | {s['landmarks']:.2f} | "
                  f"{s['light_rel']:.3f} | {s['light_dir']:.1f} | {s['light_dir_top5']:.1f} | {s['albedo']:.3f} | "
                  f"{s['psnr']:.2f} | "
                  f"{s['seconds']:.3f} | {s['cnn_ms']:.1f} |")
    nv = [r["novel_view_psnr"] for r in rows if "novel_view_psnr" in r]
    if nv:
        summary["novel_view_psnr"] = float(np.mean(nv))
        print(f"\nfull fit re-rendered 30 deg of yaw away under the same env map: {np.mean(nv):.2f} dB "
              f"(mean of {len(nv)}, against Mitsuba)")
    side = side_light_rows(args.side_light, cnn) if args.side_light else []
    if side:
        ratios = [r["ratio"] for r in side]
        summary["side_light"] = {"images": len(side), "median_ratio": float(np.median(ratios)),
                                 "min_ratio": float(np.min(ratios)),
                                 "image_imbalance": float(np.mean([r["image_imbalance"] for r in side])),
                                 "albedo_imbalance": float(np.mean([r["albedo_imbalance"] for r in side]))}
        print(f"\nside light ({len(side)} renders): input imbalance {summary['side_light']['image_imbalance']:.3f}, "
              f"albedo {summary['side_light']['albedo_imbalance']:.3f}; ratio median "
              f"{summary['side_light']['median_ratio']:.1f}, min {summary['side_light']['min_ratio']:.1f} (goal >= 3)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"summary": summary, "rows": rows, "side_light": side}, f, indent=1)


if __name__ == "__main__":
    main()
