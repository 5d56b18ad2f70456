"""Command-line interface (`stylerelight --help`). Thin: parses, calls the stages, reports."""

from __future__ import annotations

import functools
import os
import sys
import warnings
from pathlib import Path

import click
import numpy as np

from .bundled import GENERATOR, bundled, checkpoint_dirs

DEFAULT_CHECKPOINT = bundled(GENERATOR) or checkpoint_dirs()[0] / GENERATOR


def user_errors(fn):
    """Turn expected failures into one-line click errors (no traceback, exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .gan import CheckpointError

        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as e:  # incl. AlignError
            raise click.ClickException(str(e).splitlines()[0]) from None

    return wrapper


def parse_seeds(text: str) -> list[int]:
    """'0-3,7' -> [0, 1, 2, 3, 7]."""
    seeds: list[int] = []
    try:
        for part in text.split(","):
            if "-" in part.strip()[1:]:
                a, b = part.split("-", 1)
                seeds.extend(range(int(a), int(b) + 1))
            elif part.strip():
                seeds.append(int(part))
    except ValueError:
        raise click.BadParameter(f"{text!r}: use numbers and ranges, e.g. 0-15 or 1,4,9-12") from None
    if not seeds:
        raise click.BadParameter("no seeds given")
    return seeds


def _checkpoint_option(f):
    return click.option("--checkpoint", "-c", type=click.Path(dir_okay=False),
                        default=None, help="Generator: own .pt, rosinality .pt or NVlabs .pkl "
                        "(default: the bundled checkpoints/lightstage_stylegan2.pt).")(f)


def _resolve_checkpoint(ck: str | None) -> str:
    if ck:
        return ck
    if not DEFAULT_CHECKPOINT.is_file():
        raise click.ClickException(
            f"no bundled generator at {DEFAULT_CHECKPOINT}; pass --checkpoint PATH "
            "(an FFHQ StyleGAN2 .pkl/.pt, or one trained with `stylerelight train gan`)")
    return str(DEFAULT_CHECKPOINT)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="stylerelight")
def cli():
    """Relight portraits and turn the head by editing StyleGAN2's W+ latent space.

    \b
    Examples:
      stylerelight generate --seeds 0-15 --trunc 0.7 -o grid.png
      stylerelight convert ffhq.pkl ffhq_stylerelight.pt
      stylerelight align photo.jpg -o aligned.png
      stylerelight invert photo.jpg -c ffhq.pkl -o latent.pt
      stylerelight lightstage render --subjects 2 --out captures/
      stylerelight demo
      stylerelight doctor
    """


@cli.command()
@_checkpoint_option
@click.option("--seeds", default="0-15", show_default=True, help="Seeds, e.g. 0-15 or 1,5,9-12.")
@click.option("--trunc", "truncation", type=float, default=1.0, show_default=True,
              help="Truncation psi (1 = none; 0.7 trades variety for quality).")
@click.option("--noise-mode", type=click.Choice(["const", "random", "none"]), default="const",
              show_default=True)
@click.option("--cols", type=int, default=None, help="Grid columns (default: about square).")
@click.option("--device", default="cpu", show_default=True)
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Output PNG.")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@user_errors
def generate(checkpoint, seeds, truncation, noise_mode, cols, device, out, force):
    """Generate images for seeds into one PNG grid.

    Seed s draws z with numpy's RandomState(s), as NVlabs' generate.py does, so a seed gives the
    same image here as there for the same checkpoint.

    \b
    Example:
      stylerelight generate -c ffhq.pkl --seeds 0-15 --trunc 0.7 -o grid.png
    """
    import numpy as np
    import torch
    from tqdm import tqdm

    from . import imageio, load_generator

    seed_list = parse_seeds(seeds)
    imageio.check_writable(out, force)
    G = load_generator(_resolve_checkpoint(checkpoint), device=device)
    images = []
    with torch.no_grad():
        for s in tqdm(seed_list, desc="generate", unit="img", disable=None):
            img = G(G.z_from_seed(s, device), truncation_psi=truncation, noise_mode=noise_mode)
            images.append(imageio.gan_to_uint8(img)[0])
    path = imageio.save_image(imageio.make_grid(np.stack(images), cols=cols), out, force=force)
    click.echo(f"wrote {len(images)} images ({G.img_resolution}x{G.img_resolution}) to {path}")


@cli.command()
@click.argument("src", type=click.Path(dir_okay=False))
@click.argument("dst", type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite DST if it exists.")
@user_errors
def convert(src, dst, force):
    """Convert a rosinality .pt or NVlabs .pkl generator into stylerelight's own format.

    The own format is a plain torch file (config + state dict) that loads with
    torch.load(weights_only=True).

    \b
    Example:
      stylerelight convert stylegan2-ffhq-config-f.pkl ffhq.pt
    """
    from . import imageio, load_generator, save_generator

    imageio.check_writable(dst, force)
    G = load_generator(src)
    save_generator(G, dst)
    click.echo(f"wrote {dst}: {G.img_resolution}x{G.img_resolution}, num_ws={G.num_ws}, "
               f"w_dim={G.w_dim}")


@cli.command()
@click.argument("photo", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Aligned PNG.")
@click.option("--size", type=click.IntRange(min=16), default=256, show_default=True)
@click.option("--face-index", type=int, default=None, help="Pick a face (left to right) instead of the largest.")
@click.option("--detector", type=click.Choice(["hog", "cnn"]), default="hog", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@user_errors
def align(photo, out, size, face_index, detector, force):
    """Crop a photo's face exactly as FFHQ was cropped (dlib 68 landmarks).

    \b
    Example:
      stylerelight align photo.jpg -o aligned.png --size 1024
    """
    from . import imageio
    from .align import align_face

    imageio.check_writable(out, force)
    a = align_face(photo, output_size=size, face_index=face_index, detector=detector)
    imageio.save_image(a.image, out, force=force)
    click.echo(f"wrote {out} ({size}x{size}); quad {a.quad.round(1).tolist()}")


@cli.command()
@click.argument("photo", type=click.Path(dir_okay=False))
@_checkpoint_option
@click.option("--encoder", "encoder_path", type=click.Path(dir_okay=False), default=None,
              help="Encoder for this generator: own .pt or an official pSp/e4e .pt (default: the bundled "
              "encoder when the generator is the bundled one).")
@click.option("--method", type=click.Choice(["encoder", "optimize", "hybrid"]), default=None,
              help="encoder: one forward pass; optimize: W+ optimisation from the average w; hybrid: encoder, then "
              "--steps of optimisation. Default: hybrid when an encoder is available, else optimize.")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False), help="Latent file (.pt).")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Optimisation steps (default: 500 for optimize, 20 for hybrid; encoder uses none).")
@click.option("--optimizer", type=click.Choice(["auto", "adam", "lbfgs"]), default="auto", show_default=True,
              help="auto: L-BFGS for hybrid (a start to refine; steps are its iterations), Adam for optimize.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--aligned", is_flag=True, help="PHOTO is already FFHQ-aligned (skip detection); an aligned image of "
              "another size is resized to the generator's resolution.")
@click.option("--loss", type=click.Choice(["auto", "lpips", "msssim", "l2"]), default="auto", show_default=True,
              help="Added to a weighted MSE (x50 when refining an encoder start, x10 for optimize). auto: LPIPS "
              "when its VGG weights are present, else msssim (MS-SSIM + L1); l2: the MSE alone (highest PSNR, "
              "a little lower SSIM).")
@click.option("--save-reconstruction", type=click.Path(dir_okay=False), default=None, help="Also write the "
              "generator's reconstruction as PNG.")
@click.option("--device", default="cpu", show_default=True)
@click.option("--force", is_flag=True, help="Overwrite outputs if they exist.")
@user_errors
def invert(photo, checkpoint, encoder_path, method, out, steps, optimizer, seed, aligned, loss, save_reconstruction,
           device, force):
    """Invert a photo into the generator's W+ space (align, then encode and/or optimise).

    Grey, RGBA and 16-bit images are converted as `align` does. Writes a latent file (ws, noise
    maps, the alignment, the generator's hash) that `edit` and the Python API read.

    \b
    Examples:
      stylerelight invert photo.jpg -o latent.pt                      # bundled models, hybrid, 20 steps
      stylerelight invert photo.jpg -o latent.pt --method encoder     # milliseconds
      stylerelight invert photo.jpg -c ffhq.pkl --encoder e4e_ffhq_encode.pt -o latent.pt --steps 50
      stylerelight invert photo.jpg -c ffhq.pkl -o latent.pt --method optimize --steps 500
    """
    import numpy as np
    from PIL import Image

    from . import imageio, load_generator
    from .align import align_face, load_image
    from .invert import encoder_hash, load_encoder, psnr
    from .invert import invert as run_invert
    from .invert.latent_file import Latent, alignment_dict, save_latent

    imageio.check_writable(out, force)
    if save_reconstruction:
        imageio.check_writable(save_reconstruction, force)
    ck = _resolve_checkpoint(checkpoint)
    if encoder_path is None and checkpoint is None and method != "optimize":
        encoder_path = _bundled_encoder()
    method = method or ("hybrid" if encoder_path else "optimize")
    if method != "optimize" and not encoder_path:
        raise click.ClickException(f"--method {method} needs an encoder for this generator; pass --encoder PATH "
                                   "(own, pSp or e4e .pt) or use --method optimize")
    steps = steps if steps is not None else {"optimize": 500, "hybrid": 20, "encoder": 0}[method]
    if method == "encoder":
        steps = 0
    elif steps == 0:
        raise click.BadParameter(f"--method {method} needs --steps >= 1 (or use --method encoder)")
    if method == "optimize" and optimizer == "lbfgs":
        raise click.BadParameter("--optimizer lbfgs refines a start: use --method hybrid")
    G = load_generator(ck, device=device)
    E = load_encoder(encoder_path, device=device) if method != "optimize" else None
    a = None
    if aligned:
        img = load_image(photo)
    else:
        a = align_face(photo, output_size=G.img_resolution)
        img = a.image
    if img.shape[0] != G.img_resolution or img.shape[1] != G.img_resolution:
        img = np.asarray(Image.fromarray(img).resize((G.img_resolution,) * 2, Image.LANCZOS))
    target = imageio.uint8_to_gan(img).to(device)
    ws, info = run_invert(G, target, steps=steps, seed=seed, loss=loss, return_info=True, encoder=E,
                          optimizer=optimizer)
    p = float(psnr(info["reconstruction"], target.cpu())[0])
    lat = Latent.for_generator(G, ws, noise=info["noise"], alignment=alignment_dict(a) if a is not None else None,
                               info={"psnr": p, "steps": steps, "method": method, "optimizer": optimizer,
                                     "loss_kind": info["loss_kind"], "source": str(photo),
                                     **({"encoder": encoder_hash(E)} if E is not None else {})})
    save_latent(lat, out, force=force)
    if save_reconstruction:
        imageio.save_image(imageio.gan_to_uint8(info["reconstruction"])[0], save_reconstruction, force=force)
    how = "encoder only" if method == "encoder" else f"{method}, {steps} steps, {info['loss_kind']} loss"
    click.echo(f"wrote {out}: ws {list(ws.shape)}, PSNR {p:.2f} dB ({how})")


def _generator_and_encoder(checkpoint, encoder_path, device):
    """The generator (-c, else bundled) and its encoder (--encoder, else the bundled one when the
    generator is the bundled one), checked to belong together."""
    from . import load_encoder, load_generator
    from .invert import check_encoder_for

    G = load_generator(_resolve_checkpoint(checkpoint), device=device)
    enc = encoder_path or (_bundled_encoder() if checkpoint is None else None)
    if enc is None:
        raise click.ClickException("a generator other than the bundled one needs its encoder: pass --encoder")
    E = load_encoder(enc, device=device)
    check_encoder_for(E, G)
    return G, E


def _bundled_encoder() -> str | None:
    from .bundled import ENCODER, bundled

    path = bundled(ENCODER)
    return str(path) if path else None


def _editor_options(f):
    """-c/--checkpoint, --encoder, --mapper, --device: the models an Editor is built from."""
    f = click.option("--device", default="cpu", show_default=True)(f)
    f = click.option("--mapper", "mapper_path", type=click.Path(dir_okay=False), default=None,
                     help="Latent mapper (default: the bundled one).")(f)
    f = click.option("--encoder", "encoder_path", type=click.Path(dir_okay=False), default=None,
                     help="Encoder (default: the bundled encoder whose codes the mapper learned, "
                     "lightstage_mapper_encoder.pt for the bundled mapper).")(f)
    return _checkpoint_option(f)


def _turn_grid(text: str | None, method: str) -> tuple[float, float] | None:
    """--turn-grid YAW,PITCH -> (yaw, pitch) degrees; one line for anything else."""
    if text is None:
        return None
    if method == "mapper":
        raise click.ClickException("--turn-grid reads re-render changes: use it with --method rerender, fused "
                                   "or guided")
    from .mapper.rerender import check_grid

    try:
        return check_grid([float(v) for v in text.split(",")])
    except ValueError:
        raise click.ClickException(f"--turn-grid {text!r}: give two positive steps in degrees, YAW,PITCH "
                                   "(e.g. 15,10)") from None


def _light_grid(value: float | None, method: str) -> float | None:
    """--light-grid DEG -> the step; one line for anything else."""
    if value is None:
        return None
    if method == "mapper":
        raise click.ClickException("--light-grid reads re-render changes: use it with --method rerender, fused "
                                   "or guided")
    from .mapper.rerender import check_light_grid

    try:
        return check_light_grid(value)
    except ValueError:
        raise click.ClickException(f"--light-grid {value:g}: give one step in degrees of the light's rotation, "
                                   "in (0, 180] (e.g. 15)") from None


def _sweep(text: str | None, name: str):
    """'a:b:s' -> values a, a+s, ..., b (inclusive); a plain number -> None (not a sweep)."""
    if text is None or ":" not in str(text):
        return None
    try:
        a, b, step = (float(v) for v in str(text).split(":"))
    except ValueError:
        raise click.ClickException(f"--{name} {text!r}: a sweep is START:STOP:STEP in degrees, e.g. 0:360:30") from None
    if step == 0 or (b - a) / step < 0 or abs((b - a) / step) > 360:
        raise click.ClickException(f"--{name} {text!r}: STEP must move from START to STOP in at most 360 steps")
    vals = [a + i * step for i in range(int(np.floor((b - a) / step + 1e-9)) + 1)]
    if name == "rotate-light" and len(vals) > 1 and abs(vals[-1] - vals[0]) >= 360 - 1e-9:
        vals = vals[:-1]  # 360 is 0 again
    return vals


def _angle(text: str | None, name: str) -> float:
    if text is None:
        return 0.0
    try:
        v = float(text)
    except ValueError:
        raise click.ClickException(f"--{name} {text!r} is not a number of degrees (or a sweep A:B:STEP)") from None
    if not np.isfinite(v):
        raise click.ClickException(f"--{name} {text!r} is not a finite number of degrees")
    return v


@cli.command()
@click.argument("input_path", metavar="INPUT", type=click.Path())
@click.option("--light", default=None, type=click.Path(dir_okay=False),
              help="Target light: env map (.hdr, .exr, lat-long .npy) or light-stage coefficients (.npy [L, 3]). "
                   "Default: the input's own light (as the reconstruction estimates it).")
@click.option("--yaw", default=None, help="Turn the head, degrees relative to the input's own view: positive shows "
              "more of the subject's LEFT cheek (the camera moves to the subject's left). Or a sweep -30:30:10.")
@click.option("--pitch", default=None, help="Degrees relative to the input's view; positive looks down on the face.")
@click.option("--rotate-light", default=None, help="Turn the env map about the vertical axis (degrees, "
              "or a sweep 0:360:30).")
@click.option("--steps", type=click.IntRange(min=0), default=20, show_default=True,
              help="L-BFGS refinement steps after the encoder (about 45 ms each at 64^2 on a CPU; 0: encoder "
              "only, about 10x faster, lower fidelity).")
@click.option("--aligned", is_flag=True, help="INPUT is an FFHQ-aligned crop (no detection, no paste-back).")
@click.option("--save-latent", type=click.Path(dir_okay=False), default=None,
              help="Also write the source's latent (ws, alignment, reconstruction) for later edits.")
@click.option("-o", "--out", required=True, type=click.Path(),
              help="Output image (.png/.jpg); a folder when INPUT is one; .gif/.mp4/.png for a sweep.")
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True)
@click.option("--method", type=click.Choice(["fused", "mapper", "rerender", "guided"]), default="fused",
              show_default=True,
              help="How the code moves. mapper: the latent mapper (milliseconds per edit: for long sweeps and "
              "big folders); rerender: the W+ change between the ray-traced reconstruction's re-renders under "
              "the target and under its own light; fused: the two codes mixed (docs/editing.md), the "
              "most faithful on the virtual light stage; guided: the two codes read by the mapper file's "
              "learnt re-render read (a file trained with `stylerelight train read`). rerender, fused and "
              "guided cost a few seconds per photo and about 0.8 s per edit on a CPU.")
@click.option("--turn-grid", default=None, metavar="YAW,PITCH",
              help="rerender, fused, guided: read turns between the views of this grid (degrees, e.g. 15,10) "
              "off the re-render changes at the grid views around them, each made once: a --yaw or --pitch "
              "sweep pays one re-render per grid view instead of one per frame, for 0.1-0.5 dB "
              "between grid views (docs/editing.md).")
@click.option("--light-grid", type=float, default=None, metavar="DEG",
              help="rerender, fused, guided: read a --rotate-light between the rotations of this grid (degrees, "
              "e.g. 15) off the re-render changes at the two grid rotations around it, each made once: a "
              "light sweep pays one re-render per grid rotation instead of one per frame (docs/editing.md).")
@_editor_options
@click.option("--force", is_flag=True, help="Overwrite outputs that exist (a folder run redoes finished files).")
@user_errors
def edit(input_path, light, yaw, pitch, rotate_light, steps, aligned, save_latent, out, batch_size, method,
         turn_grid, light_grid, checkpoint, encoder_path, mapper_path, device, force):
    """Relight a portrait and turn the head: align, invert, map in W+, synthesise, paste back.

    INPUT is a photo, a latent file (.pt from `invert` or --save-latent) or a folder of photos
    (then OUT is a folder: finished files are skipped, so a stopped run resumes).

    \b
    Examples:
      stylerelight edit photo.jpg --light studio.hdr --yaw 20 -o out.png
      stylerelight edit photo.jpg --light studio.hdr --rotate-light 0:360:30 -o sweep.gif
      stylerelight edit photo.jpg --light studio.hdr --rotate-light 0:355:5 --light-grid 15 -o sweep.mp4
      stylerelight edit photo.jpg --yaw -30:30:10 -o turn.png          # a grid of the sweep
      stylerelight edit photos/ --light sunset.exr -o edited/ --batch-size 32
      stylerelight edit photos/ --light sunset.exr -o edited/ --method mapper   # milliseconds per edit
    """
    from . import imageio

    grid, lgrid = _turn_grid(turn_grid, method), _light_grid(light_grid, method)
    sweeps = {k: v for k, v in (("yaw", _sweep(yaw, "yaw")), ("pitch", _sweep(pitch, "pitch")),
                                ("rotate_light", _sweep(rotate_light, "rotate-light"))) if v is not None}
    if len(sweeps) > 1:
        raise click.ClickException("sweep one of --yaw, --pitch, --rotate-light at a time")
    angles = {"yaw": 0.0 if "yaw" in sweeps else _angle(yaw, "yaw"),
              "pitch": 0.0 if "pitch" in sweeps else _angle(pitch, "pitch"),
              "rotate_light": 0.0 if "rotate_light" in sweeps else _angle(rotate_light, "rotate-light")}
    src = Path(input_path)
    if not src.exists():
        raise click.ClickException(f"{src}: no such file or folder")
    folder = src.is_dir()
    if folder and sweeps:
        raise click.ClickException("sweeps take one INPUT, not a folder")
    if folder and save_latent:
        raise click.ClickException("--save-latent takes one INPUT, not a folder")
    if not folder:
        imageio.check_writable(out, force)
        if sweeps and Path(out).suffix.lower() not in (".gif", ".mp4", ".png"):
            raise click.ClickException(f"-o {out}: a sweep is written as .gif, .mp4 or .png (grid)")
        if not sweeps and Path(out).suffix.lower() not in (".png", ".jpg", ".jpeg"):
            raise click.ClickException(f"-o {out}: write the edit as .png or .jpg")
    if save_latent:
        imageio.check_writable(save_latent, force)
    ed = _load_editor(checkpoint, encoder_path, mapper_path, device)
    ed.method, ed.turn_grid, ed.light_grid = method, grid, lgrid
    if light is not None:
        ed.resolve_light(light, 0.0)  # a bad light file fails before any work
    if folder:
        _edit_folder(ed, src, Path(out), light, angles, steps, aligned, batch_size, force)
        return
    item = _edit_input(ed, src)
    lat = item if not isinstance(item, Path) else ed.invert(src, aligned=aligned, steps=steps)
    if sweeps:
        from tqdm import tqdm

        (name, values), = sweeps.items()
        frames = []
        for v in tqdm(values, desc="sweep", unit="frame", disable=None):
            kw = {**angles, name: v}
            img = ed.relight(lat, light, kw["yaw"], kw["pitch"], kw["rotate_light"])
            frames.append(imageio.gan_to_uint8(img)[0])
        _write_sweep(frames, Path(out), force)
        click.echo(f"wrote {out}: {len(frames)} frames, {name.replace('_', '-')} {values[0]:g}..{values[-1]:g} "
                   f"({method} edit{_method_note(method)})")
    else:
        res = ed.edit_batch([lat], light, angles["yaw"], angles["pitch"], angles["rotate_light"])[0]
        image = res.crop if (aligned or lat.alignment is None or not isinstance(item, Path)) else \
            ed.paste(src, lat, res.crop)
        imageio.save_image(image, out, force=force)
        click.echo(f"wrote {out} ({image.shape[1]}x{image.shape[0]}, {method} edit{_method_note(method)})")
    if save_latent:
        from .invert.latent_file import save_latent as write_latent

        write_latent(lat, save_latent, force=force)
        click.echo(f"wrote {save_latent}")
    if lat.info.get("faces_found", 1) > 1:
        click.echo(f"note: found {lat.info['faces_found']} faces; edited the largest")


def _load_editor(checkpoint, encoder_path, mapper_path, device):
    """The Editor for the CLI's model options (bundled by default); a foreign generator needs its encoder."""
    from .edit import Editor

    if checkpoint is not None and encoder_path is None:
        raise click.ClickException("a generator other than the bundled one needs its encoder: pass --encoder "
                                   "(and --mapper)")
    return Editor.from_pretrained(device, checkpoint=_resolve_checkpoint(checkpoint), encoder=encoder_path,
                                  mapper=mapper_path)


def _edit_input(ed, src: Path):
    """A latent file -> Latent (checked against the generator); a photo -> its path."""
    if src.suffix.lower() == ".pt":
        from .invert.latent_file import load_latent

        return load_latent(src, ed.G)
    return src


def _write_sweep(frames: list, out: Path, force: bool) -> None:
    from PIL import Image

    from . import imageio

    scale = max(1, 256 // frames[0].shape[0])
    big = [np.repeat(np.repeat(f, scale, 0), scale, 1) for f in frames]
    suffix = out.suffix.lower()
    if suffix == ".png":
        imageio.save_image(imageio.make_grid(np.stack(big), cols=min(len(big), 6)), out, force=force)
    elif suffix == ".gif":
        tmp = out.with_name(f".{out.name}.tmp.gif")
        Image.fromarray(big[0]).save(tmp, save_all=True, append_images=[Image.fromarray(b) for b in big[1:]],
                                     duration=120, loop=0)
        os.replace(tmp, out)
    else:
        import cv2

        tmp = out.with_name(f".{out.name}.tmp.mp4")
        h, w = big[0].shape[:2]
        vw = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*"mp4v"), 8, (w, h))
        for b in big:
            vw.write(b[..., ::-1])
        vw.release()
        os.replace(tmp, out)


def _method_note(method: str) -> str:
    return "" if method == "mapper" else "; --method mapper edits in milliseconds"


def _edit_folder(ed, src: Path, out: Path, light, angles: dict, steps: int, aligned: bool, batch_size: int,
                 force: bool) -> None:
    from tqdm import tqdm

    from . import imageio
    from .edit import IMAGE_SUFFIXES

    files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise click.ClickException(f"{src}: no images (.jpg, .png, ...) in the folder")
    if out.exists() and not out.is_dir():
        raise click.ClickException(f"{out} exists and is not a folder; a folder INPUT writes a folder")
    out.mkdir(parents=True, exist_ok=True)
    todo = [f for f in files if force or not (out / f"{f.stem}.png").exists()]
    if ed.method != "mapper":  # seconds per photo: one at a time, so the bar and resume move per photo
        batch_size = 1
    failed = []
    with tqdm(total=len(files), initial=len(files) - len(todo), unit="photo", desc="edit", disable=None) as bar:
        for i in range(0, len(todo), batch_size):
            chunk = todo[i:i + batch_size]
            try:
                results = ed.edit_batch(chunk, light, angles["yaw"], angles["pitch"], angles["rotate_light"],
                                        aligned=aligned, steps=steps, batch_size=batch_size)
            except ValueError:  # one bad photo: redo this chunk one by one to name it
                results = []
                for f in chunk:
                    try:
                        results.append(ed.edit(f, light, angles["yaw"], angles["pitch"], angles["rotate_light"],
                                               aligned=aligned, steps=steps))
                    except ValueError as e:
                        failed.append(f"{f.name}: {str(e).splitlines()[0]}")
                        results.append(None)
            for f, r in zip(chunk, results, strict=True):
                if r is not None:
                    imageio.save_image(r.image, out / f"{f.stem}.png", force=True)
                bar.update(1)
    for msg in failed:
        click.echo(f"skipped {msg}", err=True)
    click.echo(f"wrote {len(todo) - len(failed)} edits to {out}" + (f"; {len(failed)} failed" if failed else ""))
    if failed:
        raise SystemExit(1)


@cli.command()
@click.argument("portrait", type=click.Path(dir_okay=False))
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--aligned", is_flag=True, help="PORTRAIT is already an FFHQ-aligned crop (skip detection).")
@click.option("--fast-only", is_flag=True, help="Only the CNN estimate (milliseconds), no ray-traced fit.")
@click.option("--steps", type=click.IntRange(min=1), default=4, show_default=True,
              help="Light/albedo alternations of the ray-traced fit.")
@click.option("--network", type=click.Path(dir_okay=False), default=None,
              help="Fast-path network (default: the bundled checkpoints/lightstage_recon.pt).")
@click.option("--matte", default=None, metavar="PATH|none",
              help="Foreground mask of the aligned crop (white = head; needs --aligned): the fit aligns the "
                   "head's outline with it. Default: found by itself on a flat background (renders, "
                   "light-stage plates), none on photos; 'none' turns it off.")
@click.option("--force", is_flag=True, help="Write into OUT even if it is not empty.")
@user_errors
def reconstruct(portrait, out, aligned, fast_only, steps, network, matte, force):
    """Reconstruct a portrait: pose, shape, albedo, specular and the light as light-stage coefficients.

    Writes OUT/mesh.obj, albedo.png, specular.png, light.exr (lat-long), render.png (the
    reconstruction ray-traced under its own light) and params.json.

    \b
    Example:
      stylerelight reconstruct photo.jpg -o rec/
      stylerelight reconstruct aligned.png --aligned --fast-only -o rec_fast/
      stylerelight reconstruct plate.png --aligned --matte plate_mask.png -o rec_plate/
    """
    from .align import load_image
    from .recon import load_recon_cnn
    from .recon import reconstruct as run

    d = Path(out)
    if d.exists() and any(d.iterdir()) and not force:
        raise click.ClickException(f"{d} is not empty; pass --force to write into it")
    image = load_image(portrait)  # unreadable input fails here, before anything is written
    cnn = load_recon_cnn(network) if network else None
    mask = "auto"
    if matte is not None and matte.lower() == "none":
        mask = None
    elif matte is not None:
        if not aligned:
            raise click.ClickException("--matte is a mask of the aligned crop; pass --aligned with an aligned portrait")
        from PIL import Image

        mask = np.asarray(Image.fromarray(load_image(matte)).resize((64, 64), Image.NEAREST)).mean(-1) > 127
    with click.progressbar(length=1, label="reconstruct") as bar:
        rec = run(image, aligned=aligned, cnn=cnn, steps=steps, fast_only=fast_only, matte=mask)
        bar.update(1)
    rec.save(d, force=True)
    y, p, r = rec.pose
    click.echo(f"wrote {d}: yaw {y:.1f}, pitch {p:.1f}, roll {r:.1f} deg; {rec.info['seconds']:.1f} s")


@cli.group()
def lightstage():
    """The virtual light stage: render OLAT captures, relight them, build datasets.

    \b
    Examples:
      stylerelight lightstage render --subjects 2 --out captures/
      stylerelight lightstage relight captures/subject_0000 --light studio.hdr --camera 3 -o relit.png
      stylerelight lightstage build-dataset --out data/ --images 1000 --resolution 64 --seed 0
    """


@lightstage.command("render")
@click.option("--subjects", type=click.IntRange(min=1), default=1, show_default=True)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output folder (one capture each).")
@click.option("--seed", type=int, default=0, show_default=True, help="Subject i uses seed + i.")
@click.option("--resolution", type=click.IntRange(min=8), default=64, show_default=True)
@click.option("--spp", type=click.IntRange(min=1), default=None,
              help="Samples per pixel (default 4; 1 with --aligned).")
@click.option("--stage", "stage_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Light stage layout JSON (default: 150 near-uniform lights).")
@click.option("--aligned", is_flag=True,
              help="Captures for a generator: 8 cameras drawn per subject (yaw +-45, pitch +-20), every image "
                   "in the FFHQ crop at --resolution (rendered larger, filtered down). --spp defaults to 1.")
@click.option("--force", is_flag=True, help="Re-render captures that already exist.")
@user_errors
def lightstage_render(subjects, out, seed, resolution, spp, stage_path, aligned, force):
    """Render OLAT captures: every light of the stage x 8 cameras.

    Without --aligned the cameras are the fixed rig (yaw -45..45, pitch 0 and 15) and the images
    are full frames; with --aligned they are a generator's training data (see docs/mapper.md).
    Resumable: captures already complete in OUT are skipped unless --force (aligned captures made
    before frame.npy existed get it added: the whole frames' pixels that set the exposure).

    \b
    Examples:
      stylerelight lightstage render --subjects 2 --out captures/
      stylerelight lightstage render --aligned --subjects 300 --resolution 64 --out data/olat64
    """
    from tqdm import tqdm

    from .lighting import LightStage, OLATCapture
    from .synth import Camera, default_rig, render_olat, sample_subject
    from .synth.olat_aligned import render_frame_pixels, render_olat_aligned, sample_cameras

    stage = LightStage.load(stage_path) if stage_path else LightStage.default()
    for i in range(subjects):
        d = Path(out) / f"subject_{seed + i:04d}"
        if (d / "capture.json").exists() and not force:
            if aligned and not (d / "frame.npy").exists():  # captures made before frame.npy: add it
                cap = OLATCapture.load(d)
                cams = [Camera(**{k: c[k] for k in ("yaw", "pitch", "distance", "fov")}) for c in cap.cameras]
                subject = sample_subject(int(cap.meta["subject"]["seed"]))
                cap.add_frame(d, *render_frame_pixels(subject, cap.stage, cams, seed=seed + i))
                click.echo(f"added the whole frames' exposure pixels to {d}")
                continue
            click.echo(f"skip {d} (complete)")
            continue
        rig = sample_cameras(seed + i) if aligned else default_rig()
        with tqdm(total=stage.num_lights * len(rig), desc=d.name, unit="light", disable=None) as bar:
            if aligned:
                cap = render_olat_aligned(sample_subject(seed + i), stage, rig, resolution, spp=spp or 1,
                                          seed=seed + i, progress=bar)
            else:
                cap = render_olat(sample_subject(seed + i), stage, rig, resolution, spp=spp or 4, seed=seed + i,
                                  progress=bar)
        cap.save(d, force=True)
        click.echo(f"wrote {d} ({len(rig)} cameras x {stage.num_lights} lights, {resolution}^2)")


@lightstage.command("relight")
@click.argument("capture", type=click.Path(file_okay=False))
@click.option("--light", required=True, type=click.Path(dir_okay=False), help="Env map (.hdr, .exr, .npy).")
@click.option("--camera", type=int, default=0, show_default=True, help="Camera index in the capture.")
@click.option("--rotate", type=float, default=0.0, show_default=True, help="Rotate the env map about +y (deg).")
@click.option("--exposure", type=float, default=None, help="Fixed exposure (default: automatic on the face).")
@click.option("-o", "--out", required=True, type=click.Path(dir_okay=False))
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@user_errors
def lightstage_relight(capture, light, camera, rotate, exposure, out, force):
    """Relight an OLAT capture with an environment map: sum_l coeff_l * OLAT_l."""
    from . import imageio
    from .lighting import OLATCapture, face_display, load_envmap

    imageio.check_writable(out, force)
    cap = OLATCapture.load(capture)
    env = load_envmap(light).rotate(rotate)
    coeffs = cap.stage.project(env)
    img = cap.display(coeffs, camera) if exposure is None else \
        face_display(cap.relight(coeffs, camera=camera), cap.mask[camera], exposure)[0]
    path = imageio.save_image(img, out, force=force)
    click.echo(f"wrote {path}")


@lightstage.command("export-relit")
@click.option("--olat", "olat_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="OLAT captures aligned for the generator (`lightstage render --aligned`).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Folder to write (OUT/images/*.png).")
@click.option("--count", type=click.IntRange(min=1), default=2000, show_default=True, help="Images to write.")
@click.option("--stage-lights", type=click.FloatRange(0, 1), default=0.0, show_default=True,
              help="Share of the light pool that is the stage's own lighting (1-3 of its lights; else env maps).")
@click.option("--lights", type=click.IntRange(min=1), default=4000, show_default=True, help="Size of the light pool.")
@click.option("--seed", type=int, default=0, show_default=True, help="Draws of subject, camera and light.")
@click.option("--force", is_flag=True, help="Write into OUT even if it holds images.")
@user_errors
def lightstage_export_relit(olat_dir, out, count, stage_lights, lights, seed, force):
    """Write relit captures as a folder of portraits, exactly as `train encoder` relits them on the fly.

    Why: images written once can be given teacher codes (`train teacher-codes`) and a latent loss,
    which on-the-fly relighting cannot have.

    \b
    Example:
      stylerelight lightstage export-relit --olat data/olat64 --out data/enc_stage --count 2000 --stage-lights 0.75
    """
    import torch
    from tqdm import tqdm

    from . import imageio
    from .invert.encoder_training import RelitCaptures

    folder = Path(out) / "images"
    if folder.is_dir() and any(folder.iterdir()) and not force:
        raise click.ClickException(f"{folder} holds images; pass --force to write over them")
    folder.mkdir(parents=True, exist_ok=True)
    try:
        relit = RelitCaptures(olat_dir, lights, seed, stage_lights=stage_lights)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    gen = torch.Generator().manual_seed(seed)
    for i in tqdm(range(count), desc="export relit", unit="img"):
        u8 = imageio.gan_to_uint8(relit.sample(1, gen, mirror=False))[0]  # back to the display's exact bytes
        imageio.save_image(u8, folder / f"{i:07d}.png", force=True)
    click.echo(f"wrote {count} images to {folder}")


@lightstage.command("build-dataset")
@click.option("--out", required=True, type=click.Path(file_okay=False))
@click.option("--images", type=click.IntRange(min=1), required=True)
@click.option("--resolution", type=click.IntRange(min=16), default=64, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--subjects", "num_subjects", type=click.IntRange(min=1), default=None,
              help="Draw subjects from this many identities (default: a new one per image).")
@click.option("--subject-offset", type=click.IntRange(min=0), default=0, show_default=True,
              help="First subject seed; held-out sets use one no training set reaches (e.g. 1000000).")
@click.option("--env-kinds", default=None, help="Comma-separated env map kinds (default: the five training kinds; "
              "'hard' is held out).")
@click.option("--spp", type=click.IntRange(min=1), default=32, show_default=True)
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True)
@user_errors
def lightstage_build_dataset(out, images, resolution, seed, num_subjects, subject_offset, env_kinds, spp, workers):
    """Render FFHQ-aligned portraits of random subjects, env maps and views (yaw +-45, pitch +-20).

    Resumable and deterministic: image i depends only on (seed, i). Writes OUT/images/*.png,
    OUT/params/*.json and OUT/manifest.jsonl.
    """
    from .synth.dataset import build_dataset
    from .synth.envmaps import HELD_OUT_KINDS, KINDS

    kinds = tuple(k.strip() for k in env_kinds.split(",")) if env_kinds else None
    bad = [k for k in kinds or () if k not in KINDS + HELD_OUT_KINDS]
    if bad:
        raise click.BadParameter(f"unknown env map kinds {bad}; choose from {', '.join(KINDS + HELD_OUT_KINDS)}")
    build_dataset(out, images, resolution, seed, spp, workers, num_subjects, subject_offset=subject_offset,
                  env_kinds=kinds)
    click.echo(f"wrote {images} images to {out}")


@cli.group()
def train():
    """Train the package's models (recipes and configs live in train/)."""


@train.command("gan")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Dataset folder (images/*.png).")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="YAML config, e.g. train/configs/lightstage64.yaml.")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: snapshots, G_ema.pt, tensorboard logs. An existing run resumes.")
@click.option("--kimg", type=float, default=None, help="Stop at this many thousand images (default: config).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: config, else torch's). Use fewer when other jobs share the CPU: "
              "OpenMP threads that wait for a busy core slow every step down.")
@click.option("--init-generator", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Start a new run's G and G_ema from this generator checkpoint (same architecture; D and "
              "optimisers start fresh). Ignored when RUN already holds a snapshot.")
@user_errors
def train_gan(data, config_path, run_dir, kimg, threads, init_generator):
    """Train StyleGAN2 on a folder of aligned images; resumes from RUN/snapshot.pt if present.

    \b
    Example:
      stylerelight train gan --data data/lightstage64 --config train/configs/lightstage64.yaml --run runs/ls64
      # lost the run folder? continue from the shipped generator:
      stylerelight train gan --data data/lightstage64 --config train/configs/lightstage64.yaml \\
          --run runs/ls64b --init-generator checkpoints/lightstage_stylegan2.pt
    """
    from .gan.training import TrainConfig, Trainer, load_image_folder

    cfg = TrainConfig.from_yaml(config_path)
    if threads:
        cfg.threads = threads
    trainer = Trainer(cfg, load_image_folder(data, cfg.resolution), run_dir, init_generator=init_generator)
    if trainer.nimg:
        click.echo(f"resuming {run_dir} at {trainer.nimg / 1000:.3f} kimg"
                   + (" (--init-generator ignored)" if init_generator else ""))
    elif init_generator:
        click.echo(f"new run {run_dir}: G and G_ema start from {init_generator}")
    trainer.train(kimg)
    click.echo(f"done at {trainer.nimg / 1000:.3f} kimg; generator: {Path(run_dir) / 'G_ema.pt'}")


@train.command("encoder")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="YAML config, e.g. train/configs/lightstage_encoder.yaml.")
@click.option("--run", "--run-dir", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: snapshots, encoder.pt, tensorboard logs. An existing run resumes. "
                   "(Under torchrun spell it --run-dir: torchrun takes --run as its own --run-path.)")
@_checkpoint_option
@click.option("--data", default=None, type=click.Path(file_okay=False),
              help="Real aligned images (images/*.png) for the image losses; several folders joined by commas "
                   "(default: the config's).")
@click.option("--olat", "olat_dir", default=None, type=click.Path(file_okay=False, exists=True),
              help="OLAT captures aligned for the generator, relit on the fly as real images (default: the "
                   "config's).")
@click.option("--kimg", type=float, default=None, help="Stop at this many thousand images (default: config).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: config, else torch's).")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto: this process's GPU when there is one (under torchrun the "
              "LOCAL_RANK-th), else the CPU. Networks and batches go there; random draws stay on the CPU.")
@user_errors
def train_encoder(config_path, run_dir, checkpoint, data, olat_dir, kimg, threads, device):
    """Train a compact W+ encoder for a generator; resumes from RUN/snapshot.pt if present.

    Batches mix generator samples (known ws: latent loss) and real images (image losses): renders
    (--data) and/or OLAT captures relit on the fly under new env maps every batch (--olat).
    The product is RUN/encoder.pt (own format, records the generator's hash).
    Data-parallel: start it with torchrun (gloo on CPU; nccl when every process has a GPU of its own,
    else gloo).

    \b
    Examples:
      stylerelight train encoder --config train/configs/lightstage_encoder.yaml --run runs/enc64
      torchrun --nproc_per_node 2 -m stylerelight train encoder \\
          --config train/configs/lightstage_encoder_relit.yaml --run-dir runs/enc64_relit
      tensorboard --logdir runs/enc64/tb
    """
    from . import load_generator
    from .invert.encoder_training import EncoderTrainConfig, EncoderTrainer, RelitCaptures, load_image_folders

    cfg = EncoderTrainConfig.from_yaml(config_path)
    if checkpoint:
        cfg.generator = checkpoint
    if data:
        cfg.data = data
    if olat_dir:
        cfg.olat = olat_dir
    if threads:
        cfg.threads = threads
    dev = _train_device(device)
    _init_distributed(dev)
    G = load_generator(_resolve_checkpoint(cfg.generator or None))
    images = load_image_folders(cfg.data, G.img_resolution)
    try:
        relit = (RelitCaptures(cfg.olat, cfg.olat_lights, cfg.seed, cfg.hdr_dir or None, cfg.olat_stage_lights)
                 if cfg.olat else None)
    except FileNotFoundError as e:
        raise click.ClickException(str(e)) from None
    _train(EncoderTrainer(cfg, G, images, run_dir, olat=relit, device=dev), run_dir, kimg, "encoder", "encoder.pt")
    _close_distributed()


@train.command("teacher-codes")
@click.option("--data", required=True, type=click.Path(file_okay=False, exists=True),
              help="Real aligned images (images/*.png) that `train encoder` will read.")
@_checkpoint_option
@click.option("--encoder", "encoder_path", type=click.Path(dir_okay=False, exists=True), default=None,
              help="Encoder giving each refinement's start (default: the bundled one, with the bundled generator).")
@click.option("--steps", type=click.IntRange(min=1), default=20, show_default=True,
              help="Refinement steps per image (`stylerelight invert`'s default).")
@click.option("--chunk", type=click.IntRange(min=1), default=50, show_default=True,
              help="Images per resumable chunk (a resumed job must keep it).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--device", default="auto", show_default=True, help="cpu, cuda, cuda:N or auto (as `train encoder`).")
@user_errors
def train_teacher_codes(data, checkpoint, encoder_path, steps, chunk, threads, device):
    """Refine every image of DATA from the encoder's start: the teacher codes that `train encoder`
    learns from with `teacher_weight` > 0 (DATA/teacher_codes.npy; docs/encoders.md).

    About 0.7 s per image on one CPU thread at 64^2. Resumable (chunks in DATA/teacher_codes/);
    under torchrun the processes share the chunks and rank 0 writes the file.

    \b
    Examples:
      stylerelight train teacher-codes --data data/enc_teacher
      torchrun --nproc_per_node 2 -m stylerelight train teacher-codes --data data/enc_teacher --threads 1
    """
    import torch

    from .invert.teacher_codes import compute_teacher_codes
    from .runs import dist_info

    if threads:
        torch.set_num_threads(threads)
    dev = _train_device(device)
    _init_distributed(dev)
    rank, world = dist_info()
    G, E = _generator_and_encoder(checkpoint, encoder_path, dev)
    done = compute_teacher_codes(G, E.attach(G), data, steps, chunk, rank=rank, world=world, progress=rank == 0)
    if world > 1:
        torch.distributed.barrier()
        if rank == 0 and done is None:  # every chunk exists now: merge them
            compute_teacher_codes(G, E, data, steps, chunk, progress=False)
    _close_distributed()
    if rank == 0:
        click.echo(f"wrote {Path(data) / 'teacher_codes.npy'} ({steps} refinement steps per image)")


@train.command("recon")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="YAML config, e.g. train/configs/lightstage_recon.yaml.")
@click.option("--run", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: snapshots, recon.pt, tensorboard logs. An existing run resumes.")
@click.option("--data", default=None, type=click.Path(file_okay=False),
              help="A `lightstage build-dataset` folder (images and params; default: the config's).")
@click.option("--kimg", type=float, default=None, help="Stop at this many thousand images (default: config).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads (default: config, else torch's).")
@user_errors
def train_recon(config_path, run_dir, data, kimg, threads):
    """Train the reconstruction's fast path (pose, landmarks, shape, tone, light from a portrait).

    Targets come from the dataset's params (cached in DATA/recon_targets.npz on first use).

    \b
    Example:
      stylerelight train recon --config train/configs/lightstage_recon.yaml --run runs/recon64
    """
    from .gan.training import load_image_folder
    from .recon.cnn import ReconTrainConfig, ReconTrainer, dataset_targets

    cfg = ReconTrainConfig.from_yaml(config_path)
    if data:
        cfg.data = data
    if threads:
        cfg.threads = threads
    images = load_image_folder(cfg.data, _dataset_resolution(cfg.data))
    _train(ReconTrainer(cfg, images, dataset_targets(cfg.data), run_dir), run_dir, kimg, "network", "recon.pt")


@train.command("mapper")
@click.option("--olat", "olat_dir", required=True, type=click.Path(file_okay=False, exists=True),
              help="OLAT captures aligned for the generator (`lightstage render --aligned`).")
@click.option("--config", "config_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="YAML config, e.g. train/configs/lightstage_mapper.yaml.")
@click.option("--run", "--run-dir", "run_dir", required=True, type=click.Path(file_okay=False),
              help="Run folder: latent bank, snapshots, mapper.pt, tensorboard logs. An existing run resumes. "
                   "(Under torchrun spell it --run-dir: torchrun takes --run as its own --run-path.)")
@_checkpoint_option
@click.option("--encoder", "encoder_path", default=None, type=click.Path(dir_okay=False),
              help="Encoder for the generator (default: the bundled one with the bundled generator).")
@click.option("--kimg", type=float, default=None, help="Stop at this many thousand pairs (default: config).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="CPU threads per process (default: config, else torch's).")
@click.option("--device", default="auto", show_default=True,
              help="cpu, cuda, cuda:N, or auto: this process's GPU when there is one (under torchrun the "
              "LOCAL_RANK-th), else the CPU. Networks and batches go there; the bank stays in CPU memory.")
@user_errors
def train_mapper(olat_dir, config_path, run_dir, checkpoint, encoder_path, kimg, threads, device):
    """Train the latent mapper on OLAT captures; resumes from RUN/snapshot.pt if present.

    First every capture is relit under a few bank lights per subject, encoded and reconstructed
    once (RUN/bank, resumable); then pairs are drawn from the bank with fresh target lights.
    A config with carry_lights (and init_mapper) refines that many bank lights per subject
    (RUN/bank/refined, resumable; more lights than it holds refines only the missing ones) and
    trains only that mapper's detail carry, or with carry_kind: view its view carry
    (docs/mapper.md). The product is RUN/mapper.pt (records the generator's hash, the light
    stage, the pose range); asked again, a finished run writes it anew (e.g. after a change of
    view_carry_gain).
    Data-parallel: start it with torchrun (gloo on CPU; nccl when every process has a GPU of its own,
    else gloo).

    \b
    Examples:
      stylerelight train mapper --olat data/olat64 --config train/configs/lightstage_mapper.yaml --run runs/map64
      torchrun --nproc_per_node 2 -m stylerelight train mapper --olat data/olat64 \\
          --config train/configs/lightstage_mapper.yaml --run-dir runs/map64
    """

    import torch

    from .mapper.pairs import Bank, BankSpec, build_bank, refine_sources
    from .mapper.training import MapperTrainConfig, MapperTrainer
    from .recon import default_cnn
    from .runs import dist_info

    cfg = MapperTrainConfig.from_yaml(config_path)
    if threads:
        cfg.threads = threads
    dev = _train_device(device)
    _init_distributed(dev)
    rank, world = dist_info()
    G, E = _generator_and_encoder(checkpoint, encoder_path, dev)
    bank_dir = Path(run_dir) / "bank"
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    # every process builds its share of the bank (one shard per subject, resumable)
    build_bank(olat_dir, bank_dir, E, default_cnn(),
               BankSpec(cfg.lights_per_subject, cfg.light_pool, cfg.seed, cfg.bank_refine_steps),
               hdr_dir=cfg.hdr_dir or None, G=G, part=(rank, world), progress=rank == 0,
               limit=cfg.bank_subjects or None)
    if cfg.carry_lights:  # the detail carry's sources, refined as the Editor refines
        refine_sources(bank_dir, G, E, cfg.carry_lights, cfg.carry_steps, progress=rank == 0,
                       limit=cfg.bank_subjects or None, part=(rank, world))
    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    trainer = MapperTrainer(cfg, G, Bank(bank_dir, olat_dir, limit=cfg.bank_subjects or None), run_dir, log=True,
                            device=dev)
    _train(trainer, run_dir, kimg, "mapper", "mapper.pt")
    _close_distributed()


@train.command("read")
@click.option("--pairs", required=True, help="Comma-separated pair files of training subjects "
              "(`python benchmarks/fuse_sweep.py --rr-steps 8 --mixes 0 --offset 0 --codes F.npz`).")
@click.option("--mapper", "mapper_path", required=True, type=click.Path(dir_okay=False, exists=True),
              help="The mapper whose edits the pairs hold (its file gets the read).")
@click.option("--out", "-o", required=True, type=click.Path(dir_okay=False), help="The mapper file with the read.")
@click.option("--val", default=None, help="Comma-separated pair files of validation subjects: scored after each epoch.")
@_checkpoint_option
@click.option("--epochs", type=click.IntRange(min=1), default=8, show_default=True)
@click.option("--hidden", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--mix", type=click.FloatRange(0, 1), default=0.6, show_default=True,
              help="The read's starting mix of the re-render's code (0.6: the fused edit's, best for 20-step "
              "re-render inversions on validation; 0.4 was best for encoder-only ones).")
@click.option("--steps", type=click.IntRange(min=0), default=None,
              help="Refinement steps of the pairs' re-render inversions (default: what the pair files record).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (default: torch's).")
@click.option("--force", is_flag=True, help="Overwrite OUT if it exists.")
@user_errors
def train_read(pairs, mapper_path, out, val, checkpoint, epochs, hidden, mix, steps, seed, threads, force):
    """Train the mapper's re-render read (the Editor's "guided" method) on edits of training subjects.

    The read takes the mapper's edit and the photo's code moved by the change between two ray-traced
    re-renders of its reconstruction (each inverted by the encoder and the pairs' refinement steps), and
    learns per layer and kind of edit how to combine
    them, by the generator's image loss against Mitsuba's targets (docs/mapper.md). Minutes on a CPU.

    \b
    Example:
      python benchmarks/fuse_sweep.py --rr-steps 8 --mixes 0 --offset 0 --subjects 80 --codes train.npz
      stylerelight train read --pairs train.npz --mapper checkpoints/lightstage_mapper.pt -o mapper_read.pt \\
          --mix 0.6 --epochs 5      # steps and epochs as the bundled read's (train/lightstage_mapper.sh, 4c)
    """
    import time

    import torch

    from . import load_generator
    from .mapper import load_mapper, save_mapper
    from .mapper.read_training import fit_read, load_read_pairs, score_read

    if Path(out).exists() and not force:
        raise click.ClickException(f"{out} exists; pass --force to overwrite it")
    G = load_generator(_resolve_checkpoint(checkpoint))
    M = load_mapper(mapper_path)
    M.check_for(G)
    train_pairs = load_read_pairs(pairs.split(","))
    val_pairs = load_read_pairs(val.split(",")) if val else None
    steps = train_pairs.steps if steps is None else steps
    for name, p in (("training", train_pairs), ("validation", val_pairs)):
        if p is not None and p.steps not in (None, steps):
            raise click.ClickException(f"the {name} pairs' re-renders were inverted with {p.steps} steps, "
                                       f"not {steps}")
        if p is not None and tuple(p.m.shape[1:]) != (G.num_ws, G.w_dim):
            raise click.ClickException(f"the {name} pairs hold {tuple(p.m.shape[1:])} codes, the generator "
                                       f"takes {(G.num_ws, G.w_dim)}: make them with this generator's mapper")
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        if steps is None:
            raise click.ClickException("the pair files do not record their re-renders' refinement steps; pass --steps")
        read = M.add_read(hidden, mix, steps)
        if val_pairs:
            click.echo(f"validation PSNR of the mapper's edit {score_read(G, None, val_pairs)}, "
                       f"of the read's starting mix {mix} {score_read(G, read, val_pairs)}")
        click.echo(f"{len(train_pairs)} training edits, re-renders inverted with {steps} steps")
        t0 = time.time()

        def report(ep, loss):
            v = f"; validation PSNR {score_read(G, read, val_pairs)}" if val_pairs else ""
            click.echo(f"epoch {ep + 1}/{epochs} ({time.time() - t0:.0f} s): training MSE {loss:.5f}{v}")

        fit_read(G, read, train_pairs, epochs=epochs, seed=seed, on_epoch=report)
    finally:
        torch.set_num_threads(before)
    M.info = {**M.info, "read": {"pairs": [Path(p).name for p in pairs.split(",")], "edits": len(train_pairs),
                                 "epochs": epochs, "hidden": hidden, "mix": mix, "steps": steps, "seed": seed}}
    save_mapper(M, out)
    click.echo(f"wrote {out} (edit with it: stylerelight edit ... --mapper {out} --method guided)")


def _train_device(name: str):
    """--device of a trainer: "auto" is this process's GPU (the LOCAL_RANK-th under torchrun, shared
    round-robin when there are fewer GPUs than processes) when there is one, else the CPU."""
    import os

    import torch

    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise click.ClickException(f"--device {name}: not a device; use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise click.ClickException(f"--device {name}: no CUDA GPU here; use --device cpu")
    if dev.type == "cuda" and dev.index is None:
        dev = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")) % torch.cuda.device_count())
    return dev


def _init_distributed(device=None) -> None:
    """Under torchrun (WORLD_SIZE > 1): join the process group: nccl when every process has a GPU of
    its own (NCCL refuses two ranks on one GPU), else gloo (CPU tensors, or CUDA tensors on a shared GPU)."""
    import os

    import torch

    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not torch.distributed.is_initialized():
        cuda = device is not None and torch.device(device).type == "cuda"
        own_gpu = cuda and int(os.environ.get("LOCAL_WORLD_SIZE", "1")) <= torch.cuda.device_count()
        if cuda:
            torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl" if own_gpu else "gloo")


def _close_distributed() -> None:
    import torch

    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _train(trainer, run_dir, kimg, product: str, filename: str) -> None:
    quiet = getattr(trainer, "rank", 0) != 0  # under torchrun, rank 0 speaks
    if trainer.nimg and not quiet:
        click.echo(f"resuming {run_dir} at {trainer.nimg / 1000:.3f} kimg")
    trainer.train(kimg, progress=not quiet)
    if not quiet:
        click.echo(f"done at {trainer.nimg / 1000:.3f} kimg; {product}: {Path(run_dir) / filename}")


def _dataset_resolution(data) -> int:
    import json

    meta = Path(data) / "dataset.json"
    if not meta.is_file():
        raise click.ClickException(f"{data}: no dataset.json; build it with `stylerelight lightstage build-dataset`")
    return int(json.loads(meta.read_text())["resolution"])


@cli.command()
@click.option("--out", default="demo_out", show_default=True, type=click.Path(file_okay=False))
@click.option("--resolution", type=click.IntRange(min=16), default=64, show_default=True,
              help="Light-stage render size.")
@_checkpoint_option
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True,
              help="Inversion steps for the generator part.")
@user_errors
def demo(out, resolution, checkpoint, steps):
    """Offline demo on the bundled data and model. Writes to OUT:

    \b
      lightstage_contact_sheet.png  one subject's OLAT capture relit with two env maps at two
                                    views (relit | Mitsuba ground truth | env map)
      generator_samples.png         16 random heads from the bundled generator
      inversion.png                 a held-out render and its W+ inversion
    """
    from .demo import run

    ck = checkpoint or (str(DEFAULT_CHECKPOINT) if DEFAULT_CHECKPOINT.is_file() else None)
    run(Path(out), resolution, ck, steps, echo=click.echo)


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Interface to listen on (127.0.0.1: this machine only; 0.0.0.0 exposes the page to the network).")
@click.option("--port", type=click.IntRange(1, 65535), default=8000, show_default=True)
@_editor_options
@user_errors
def serve(host, port, checkpoint, encoder_path, mapper_path, device):
    """The live editing page: drop a portrait, drag the light and the head.

    Every move is answered by the mapper's edit (milliseconds); tick "refine when the sliders
    rest" and the resting position is also redone by the fused edit (the ray-traced re-render's
    change mixed in: more faithful, about a second per new light, 10-20 s the first time for a
    photo). Uploads are limited to 10 MB and validated before anything runs; each browser tab
    keeps its own photo in a temporary folder that is removed when the tab closes.

    \b
    Example:
      stylerelight serve            # then open http://127.0.0.1:8000
    """
    import uvicorn

    from .web import create_app

    ed = _load_editor(checkpoint, encoder_path, mapper_path, device)  # fails here, in one line, before serving
    click.echo(f"stylerelight: open http://{host}:{port} (Ctrl+C stops)")
    uvicorn.run(create_app(lambda: ed), host=host, port=port, log_level="warning")


@cli.command()
def doctor():
    """Report torch/CUDA, compiled ops, Mitsuba/LLVM, dlib landmarks and LPIPS weights."""
    from .doctor import run_checks

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        results = run_checks()
    for name, ok, msg in results:
        click.echo(f"[{'ok' if ok else '--'}] {name:15s} {msg}")


def main(argv=None):
    """Console-script entry point."""
    try:
        cli.main(args=argv, prog_name="stylerelight", standalone_mode=True)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)


if __name__ == "__main__":
    main()
