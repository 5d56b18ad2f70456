"""Command-line interface (`stylerelight --help`). Thin: parses, calls the stages, reports."""

from __future__ import annotations

import functools
import sys
import warnings
from pathlib import Path

import click

DEFAULT_CHECKPOINT = Path(__file__).resolve().parent.parent / "checkpoints" / "lightstage_stylegan2.pt"


def user_errors(fn):
    """Turn expected failures into one-line click errors (no traceback, exit code 1)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from .gan import CheckpointError

        try:
            return fn(*args, **kwargs)
        except click.ClickException:
            raise
        except (CheckpointError, FileExistsError, FileNotFoundError, ValueError) as e:
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
