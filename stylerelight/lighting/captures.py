"""Finding OLAT captures on disk and drawing light-stage lights for them.

Shared by everything that relights captures on the fly: the mapper's latent bank and pairs, and
the encoder's training on relit captures.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .envmap import load_envmap
from .stage import LightStage


def capture_dirs(olat_dir) -> list[Path]:
    """The complete captures (capture.json present) under `olat_dir`, sorted."""
    d = Path(olat_dir)
    if (d / "capture.json").exists():
        return [d]
    dirs = sorted(p.parent for p in d.glob("*/capture.json"))
    if not dirs:
        raise FileNotFoundError(f"{d}: no OLAT captures (folders with capture.json); render some with "
                                "`stylerelight lightstage render --aligned`")
    return dirs


class LightPool:
    """n light-stage coefficient vectors [n, L, 3] drawn from procedural env maps of the training kinds (or `kinds`)
    (each randomly rotated) and, when a folder is given, from its .hdr/.exr files at random
    rotations. Index i always gives the same light for the same (seed, n, folder)."""

    def __init__(self, stage: LightStage, n: int, seed: int = 0, hdr_dir: str | None = None,
                 kinds: tuple[str, ...] | None = None):
        from ..synth.envmaps import KINDS, sample_envmap

        kinds = kinds or KINDS
        files = sorted([*Path(hdr_dir).glob("*.hdr"), *Path(hdr_dir).glob("*.exr")]) if hdr_dir else []
        rng = np.random.default_rng([seed, 4242])
        out = []
        for _ in range(n):
            if files and rng.random() < 0.5:
                env = load_envmap(files[rng.integers(len(files))]).rotate(float(rng.uniform(0, 360)))
            else:
                env = sample_envmap(int(rng.integers(2**31)), height=32, kind=str(kinds[rng.integers(len(kinds))]))
            out.append(stage.project(env))
        self.coeffs = np.stack(out).astype(np.float32)

    def __len__(self) -> int:
        return len(self.coeffs)
