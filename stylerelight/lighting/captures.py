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


def stage_lights(stage: LightStage, rng: np.random.Generator, max_lights: int = 3) -> np.ndarray:
    """[L, 3] coefficients of a light stage's native lighting: one to `max_lights` of its lights,
    each white or a random (often saturated) colour at a random strength, over a dim uniform
    ambient (0.3-10% of their power).

    Why: procedural env maps are broad lobes and skies; a stage's single lights give the hard
    shadows and the coloured key/fill splits that such maps never make, and OLAT captures give
    them at no rendering cost."""
    k = int(rng.integers(1, max_lights + 1))
    coeffs = np.zeros((stage.num_lights, 3))
    for i in rng.choice(stage.num_lights, k, replace=False):
        col = np.ones(3) if rng.random() < 0.3 else rng.dirichlet([0.5, 0.5, 0.5]) * 3
        coeffs[i] = col * rng.uniform(0.2, 1.0)
    cell = stage.solid_angles
    coeffs += np.exp(rng.uniform(np.log(0.003), np.log(0.1))) * coeffs.sum(0).mean() * (cell / cell.sum())[:, None]
    return coeffs


class LightPool:
    """n light-stage coefficient vectors [n, L, 3] drawn from procedural env maps of the training kinds (or `kinds`)
    (each randomly rotated) and, when a folder is given, from its .hdr/.exr files at random
    rotations; with `stage_light_fraction` > 0, that share of them is the stage's own kind of
    lighting instead (`stage_lights`). Index i always gives the same light for the same (seed, n,
    folder, fraction)."""

    def __init__(self, stage: LightStage, n: int, seed: int = 0, hdr_dir: str | None = None,
                 kinds: tuple[str, ...] | None = None, stage_light_fraction: float = 0.0):
        from ..synth.envmaps import KINDS, sample_envmap

        kinds = kinds or KINDS
        files = sorted([*Path(hdr_dir).glob("*.hdr"), *Path(hdr_dir).glob("*.exr")]) if hdr_dir else []
        rng = np.random.default_rng([seed, 4242])
        # drawn from a stream of its own, so that a fraction of 0 leaves every earlier pool as it was
        srng = np.random.default_rng([seed, 4243])
        out = []
        for _ in range(n):
            if stage_light_fraction > 0 and srng.random() < stage_light_fraction:
                out.append(stage_lights(stage, srng))
                continue
            if files and rng.random() < 0.5:
                env = load_envmap(files[rng.integers(len(files))]).rotate(float(rng.uniform(0, 360)))
            else:
                env = sample_envmap(int(rng.integers(2**31)), height=32, kind=str(kinds[rng.integers(len(kinds))]))
            out.append(stage.project(env))
        self.coeffs = np.stack(out).astype(np.float32)

    def __len__(self) -> int:
        return len(self.coeffs)
