"""Procedural HDR environment maps spanning the kinds of real HDRIs: sun and sky, overcast,
studio softboxes, indoor windows, coloured lights; every one randomly rotated about +y."""

from __future__ import annotations

import numpy as np

from ..lighting import EnvMap, latlong_directions

KINDS = ("sun_sky", "overcast", "studio", "indoor", "colored")  # drawn when no kind is asked for
HELD_OUT_KINDS = ("hard",)  # never drawn by default: lighting unlike the training env maps


def _lobe(dirs, axis, sharpness):
    axis = np.asarray(axis, np.float64)
    axis = axis / np.linalg.norm(axis)
    return np.exp(sharpness * (dirs @ axis - 1))


def _rect(dirs, center, width_deg, height_deg):
    """A soft-edged rectangle around `center` (angular width x height)."""
    c = np.asarray(center, np.float64)
    c /= np.linalg.norm(c)
    up = np.array([0.0, 1.0, 0.0]) if abs(c[1]) < 0.95 else np.array([1.0, 0.0, 0.0])
    right = np.cross(up, c)
    right /= np.linalg.norm(right)
    up2 = np.cross(c, right)
    fwd = dirs @ c
    x = np.arctan2(dirs @ right, fwd)
    y = np.arctan2(dirs @ up2, fwd)
    hx, hy = np.radians(width_deg) / 2, np.radians(height_deg) / 2
    soft = np.radians(2.0)
    fx = np.clip((hx - np.abs(x)) / soft + 0.5, 0, 1)
    fy = np.clip((hy - np.abs(y)) / soft + 0.5, 0, 1)
    return fx * fy * (fwd > 0)


def _random_dir(rng, elev_range=(-20, 80)):
    el = np.radians(rng.uniform(*elev_range))
    az = rng.uniform(-np.pi, np.pi)
    return np.array([np.cos(el) * np.sin(az), np.sin(el), -np.cos(el) * np.cos(az)])


def sample_envmap(seed: int, height: int = 64, kind: str | None = None) -> EnvMap:
    """A random procedural HDR env map (linear, lat-long, height x 2*height)."""
    rng = np.random.default_rng(seed)
    kind = kind or KINDS[rng.integers(len(KINDS))]
    if kind not in KINDS + HELD_OUT_KINDS:
        raise ValueError(f"unknown env map kind {kind!r}; choose from {KINDS + HELD_OUT_KINDS}")
    d = latlong_directions(height, 2 * height).astype(np.float64)
    up = np.clip(d[..., 1], -1, 1)
    sky = up > 0
    if kind == "sun_sky":
        zen = np.array([0.25, 0.45, 1.0]) * rng.uniform(0.6, 1.2)
        hor = np.array([0.85, 0.9, 1.0]) * rng.uniform(0.8, 1.5)
        t = np.clip(up, 0, 1)[..., None] ** 0.5
        img = np.where(sky[..., None], hor * (1 - t) + zen * t, 0.0)
        ground = np.array([0.35, 0.3, 0.25]) * rng.uniform(0.2, 0.6)
        img = img + (~sky)[..., None] * ground
        sun = _random_dir(rng, (8, 75))
        sun_col = np.array([1.0, 0.92, 0.8]) * rng.uniform(150, 600)
        img = img + _lobe(d, sun, 3000.0)[..., None] * sun_col + _lobe(d, sun, 30)[..., None] * sun_col * 0.003
    elif kind == "overcast":
        lvl = rng.uniform(0.5, 2.0)
        img = (lvl * (0.4 + 0.6 * np.clip(up, 0, 1) ** 0.7))[..., None] * np.array([0.95, 0.97, 1.0])
        img = np.where(sky[..., None], img, lvl * 0.15 * np.array([0.5, 0.48, 0.45]))
    elif kind == "studio":
        img = np.full(d.shape, rng.uniform(0.01, 0.05))
        for _ in range(rng.integers(1, 4)):
            c = _random_dir(rng, (-10, 60))
            box = _rect(d, c, rng.uniform(15, 45), rng.uniform(15, 45))
            img = img + box[..., None] * rng.uniform(4, 20) * (1 + rng.normal(0, 0.05, 3))
    elif kind == "indoor":
        warm = np.array([1.0, 0.8, 0.6]) * rng.uniform(0.1, 0.4)
        img = warm * (0.6 + 0.4 * np.clip(up + 0.5, 0, 1))[..., None]
        for _ in range(rng.integers(1, 3)):
            c = _random_dir(rng, (-5, 30))
            win = _rect(d, c, rng.uniform(20, 60), rng.uniform(20, 50))
            img = img + win[..., None] * rng.uniform(5, 25) * np.array([0.9, 0.95, 1.0])
    elif kind == "hard":  # one or two tiny, very bright, saturated lights in the dark
        img = np.full(d.shape, 0.002)
        for _ in range(rng.integers(1, 3)):
            col = rng.dirichlet([0.3, 0.3, 0.3]) * 3
            img = img + _lobe(d, _random_dir(rng, (-60, 80)), 800.0)[..., None] * col * rng.uniform(100, 300)
    else:  # colored
        img = np.full(d.shape, rng.uniform(0.005, 0.03))
        for _ in range(rng.integers(2, 4)):
            col = rng.dirichlet([0.5, 0.5, 0.5]) * 3
            img = img + _lobe(d, _random_dir(rng, (-30, 70)), rng.uniform(8, 60))[..., None] * col * rng.uniform(2, 8)
    env = EnvMap(img.astype(np.float32))
    return env.rotate(rng.uniform(0, 360))
