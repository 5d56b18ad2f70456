"""Where the bundled models are: the source tree's `checkpoints/` (a checkout or an editable
install), else `<prefix>/share/stylerelight/checkpoints` where a wheel install puts them."""

from __future__ import annotations

import sys
from pathlib import Path

GENERATOR = "lightstage_stylegan2.pt"
ENCODER = "lightstage_encoder.pt"  # the best encoder for the bundled generator: `invert` uses it
# the encoder whose codes the bundled mapper learned (its bank's); the Editor pairs them (session 20)
MAPPER_ENCODER = "lightstage_mapper_encoder.pt"
MAPPER = "lightstage_mapper.pt"
RECON = "lightstage_recon.pt"


def checkpoint_dirs() -> list[Path]:
    here = Path(__file__).resolve().parent
    share = Path("share", "stylerelight", "checkpoints")
    # <prefix>/lib/pythonX.Y/site-packages/stylerelight -> <prefix>/share/... (venvs, --prefix, --user)
    dirs = [here.parent / "checkpoints"]
    if len(here.parents) > 3:
        dirs.append(here.parents[3] / share)
    return dirs + [Path(sys.prefix) / share]


def bundled(name: str) -> Path | None:
    """The path of a bundled file, or None when this install lacks it."""
    for d in checkpoint_dirs():
        if (d / name).is_file():
            return d / name
    return None
