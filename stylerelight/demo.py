"""What `stylerelight demo` shows, offline, on the bundled data and model.

1. The virtual light stage: one subject's OLAT capture relit with two env maps at two views,
   beside Mitsuba's ground-truth renders (the relit images should match them).
2. The bundled generator: a grid of random heads, and the W+ inversion of a portrait it never
   saw (a held-out subject under a held-out kind of lighting) with its PSNR.
3. Editing (the bundled encoder, reconstruction and mapper): a held-out subject relit by a sweep
   of env-map rotations and turned by a yaw sweep, each edit above Mitsuba's ground truth (PSNR of
   the mapper's edits, shown, and of the fused ones, `stylerelight edit`'s default), and a fused
   edit of a real photo (scikit-image's astronaut) pasted back.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from . import imageio

HELDOUT_SUBJECT = 2_000_007  # subject seeds >= 1,000,000 are never drawn by training sets


def lightstage_sheet(out: Path, resolution: int = 64, echo: Callable[[str], None] = print) -> Path:
    """Contact sheet of (OLAT relit | Mitsuba ground truth | env map) triples."""
    from .lighting import LightStage, face_display, face_exposure
    from .synth import Camera, render_envmap, render_olat, sample_envmap, sample_subject

    stage, subj = LightStage.default(), sample_subject(7)
    cams = [Camera(yaw=-25.0), Camera(yaw=30.0, pitch=10.0)]
    cap = render_olat(subj, stage, cams, resolution, spp=4)
    envs = [sample_envmap(11, kind="sun_sky", height=64), sample_envmap(4, kind="colored", height=64)]
    tiles = []
    for ei, env in enumerate(envs):
        coeffs = stage.project(env)
        for ci, cam in enumerate(cams):
            relit = cap.relight(coeffs, camera=ci)
            gt, alpha = render_envmap(subj, env, cam, resolution, spp=128, return_mask=True)
            m = alpha > 0.99
            exp = face_exposure(gt, alpha)
            rmse = float(np.sqrt(((relit - gt)[m] ** 2).mean() / (gt[m] ** 2).mean()))
            echo(f"env {ei} camera {ci}: relative RMSE relit vs ground truth {rmse:.3f}")
            tiles += [face_display(relit, cap.mask[ci], exp)[0], face_display(gt, alpha, exp)[0],
                      env_tile(env, resolution)]
    return imageio.save_image(imageio.make_grid(np.stack(tiles), cols=6), out / "lightstage_contact_sheet.png",
                              force=True)


def generator_demo(G, out: Path, steps: int = 200, echo: Callable[[str], None] = print) -> tuple[Path, Path]:
    """Random samples of G, and G's W+ inversion of a held-out render (target | reconstruction)."""
    from .invert import invert, psnr
    from .synth import Camera, render_portrait, sample_envmap, sample_subject

    with torch.no_grad():
        z = torch.stack([G.z_from_seed(s)[0] for s in range(16)])
        samples = imageio.gan_to_uint8(G(z, noise_mode="const"))
    grid = imageio.save_image(imageio.make_grid(samples, cols=8), out / "generator_samples.png", force=True)
    echo(f"wrote {grid} (16 random heads, seeds 0-15)")
    target_u8 = render_portrait(sample_subject(HELDOUT_SUBJECT), sample_envmap(5, kind="hard"),
                                Camera(yaw=20.0, pitch=-5.0), G.img_resolution, spp=32)
    target = imageio.uint8_to_gan(target_u8)
    ws, info = invert(G, target, steps=steps, return_info=True, progress=False)
    rec = info["reconstruction"]
    echo(f"W+ inversion of a held-out subject under held-out 'hard' lighting ({steps} steps, "
         f"{info['loss_kind']} loss): PSNR {float(psnr(rec, target)[0]):.1f} dB")
    pair = imageio.make_grid(np.stack([target_u8, imageio.gan_to_uint8(rec)[0]]), cols=2)
    inv = imageio.save_image(pair, out / "inversion.png", force=True)
    echo(f"wrote {inv} (held-out render | its reconstruction)")
    return grid, inv


def _big(img: np.ndarray, size: int = 192) -> np.ndarray:
    k = max(1, size // img.shape[0])
    return np.repeat(np.repeat(img, k, 0), k, 1)


def editing_demo(out: Path, echo: Callable[[str], None] = print) -> list[Path]:
    """Sweeps of light rotation and yaw on a held-out render (edit over ground truth), and the
    astronaut edited and pasted back."""
    from .edit import Editor
    from .synth import Camera, render_portrait, sample_envmap, sample_subject

    ed = Editor.from_pretrained()
    res = ed.resolution
    subj, cam = sample_subject(HELDOUT_SUBJECT + 1), Camera(yaw=-5.0, pitch=3.0)
    src_env, env = sample_envmap(21, kind="overcast"), sample_envmap(8, kind="sun_sky")
    src = render_portrait(subj, src_env, cam, res, spp=32)
    lat = ed.invert(src, aligned=True)
    def psnr(xs, ys):  # pooled over the sweep (one frame of it may be the input itself)
        mse = np.mean([((x.astype(float) - y) ** 2).mean() for x, y in zip(xs, ys, strict=True)])
        return 10 * np.log10(255**2 / max(mse, 1e-9))

    written = []
    for name, values, edit, truth in [
            ("rotate_light", [0, 60, 120, 180, 240, 300],
             lambda v: ed.relight(lat, env, rotate_light=v),
             lambda v: render_portrait(subj, env.rotate(v), cam, res, spp=32)),
            ("yaw", [-30, -15, 0, 15, 30],
             lambda v: ed.relight(lat, None, yaw=v),
             lambda v: render_portrait(subj, src_env, Camera(yaw=cam.yaw + v, pitch=cam.pitch), res, spp=32))]:
        edits = [imageio.gan_to_uint8(edit(v))[0] for v in values]
        truths = [truth(v) for v in values]
        with ed.using("fused"):  # the same edits as `stylerelight edit` makes them by default (seconds each)
            fused = [imageio.gan_to_uint8(edit(v))[0] for v in values]
        echo(f"{name} sweep {values}: edit PSNR vs Mitsuba {psnr(edits, truths):.1f} dB (the unedited input: "
             f"{psnr([src] * len(truths), truths):.1f} dB; the fused edit, `stylerelight edit`'s default: "
             f"{psnr(fused, truths):.1f} dB)")
        tiles = [_big(x) for x in [src] + edits + [src] + truths]
        path = imageio.save_image(imageio.make_grid(np.stack(tiles), cols=len(values) + 1),
                                  out / f"edit_{name}_sweep.png", force=True)
        echo(f"wrote {path} (top: input, then edits; bottom: input, then Mitsuba ground truth)")
        written.append(path)
    import skimage.data

    t0 = time.time()
    photo = skimage.data.astronaut()
    with ed.using("fused"):  # as `stylerelight edit photo.jpg` does
        r = ed.edit(photo, light=sample_envmap(3, kind="studio"), yaw=15.0)
    echo(f"astronaut photo: relit (studio env map) and turned 15 deg in {time.time() - t0:.1f} s, fused edit "
         f"(face at yaw {r.latent.reconstruction['yaw']:+.0f} deg as estimated)")
    side = np.concatenate([photo, r.image], 1)
    written.append(imageio.save_image(side, out / "edit_astronaut.png", force=True))
    echo(f"wrote {written[-1]} (photo | edited photo)")
    return written


def env_tile(env, size: int) -> np.ndarray:
    """The env map as a lat-long strip in the middle of a white size x size tile."""
    from .lighting import envmap_preview

    tile = np.full((size, size, 3), 255, np.uint8)
    tile[size // 4: size // 4 + size // 2] = envmap_preview(env, size)
    return tile


def run(out: Path, resolution: int = 64, checkpoint: str | None = None, steps: int = 200,
        echo: Callable[[str], None] = print) -> list[Path]:
    """Both parts; the generator part is skipped (said once) when no checkpoint is given."""
    from . import load_generator

    t0 = time.time()
    out = Path(out)
    written = [lightstage_sheet(out, resolution, echo)]
    echo(f"wrote {written[0]} (each triple: OLAT relit | Mitsuba ground truth | env map)")
    if checkpoint is None:
        echo("no generator checkpoint: skipped the generator part")
    else:
        written += generator_demo(load_generator(checkpoint), out, steps, echo)
        from .bundled import GENERATOR, MAPPER, bundled

        if bundled(MAPPER) is None or Path(checkpoint).resolve() != bundled(GENERATOR).resolve():
            echo("editing part skipped: it needs the bundled generator and mapper")
        else:
            written += editing_demo(out, echo)
    echo(f"demo done in {time.time() - t0:.0f} s")
    return written
