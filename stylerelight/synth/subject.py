"""Random subjects of the head model: shape, expression, and per-vertex appearance."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .head_model import EXPR_PARAMS, HeadModel

# linear diffuse albedo of skin from very light to very dark (interpolated by `tone` in [0, 1])
_SKIN = np.array([[0.78, 0.58, 0.48], [0.62, 0.42, 0.32], [0.42, 0.26, 0.18], [0.22, 0.12, 0.08],
                  [0.10, 0.06, 0.04]])


@dataclass
class Subject:
    seed: int
    id_coeffs: np.ndarray
    expr_coeffs: np.ndarray
    tone: float
    albedo: np.ndarray  # [V, 3] linear diffuse albedo
    specular: np.ndarray  # [V] specular intensity in [0, 1] (blend weight of the glossy lobe)
    roughness: np.ndarray  # [V] GGX roughness
    model: HeadModel

    def vertices(self) -> np.ndarray:
        return self.model.vertices(self.id_coeffs, self.expr_coeffs)

    def landmarks3d(self) -> np.ndarray:
        return self.vertices()[self.model.landmarks]

    def to_json(self) -> dict:
        return {"seed": self.seed, "tone": self.tone, "id_coeffs": self.id_coeffs.tolist(),
                "expr_coeffs": dict(zip(EXPR_PARAMS, self.expr_coeffs.tolist(), strict=True))}


def skin_albedo(tone: float) -> np.ndarray:
    x = np.clip(tone, 0, 1) * (len(_SKIN) - 1)
    i = min(int(x), len(_SKIN) - 2)
    return _SKIN[i] + (x - i) * (_SKIN[i + 1] - _SKIN[i])


def sample_subject(seed: int, model: HeadModel | None = None, expression: bool = True) -> Subject:
    """A random subject: identity ~ N(0, 1) per basis, random expression, skin tone, maps."""
    model = model or HeadModel.default()
    rng = np.random.default_rng(seed)
    id_c = np.clip(rng.standard_normal(len(model.id_names)), -2.5, 2.5)
    expr = np.zeros(len(model.expr_names))
    if expression:
        blink = rng.random() < 0.15
        expr[:2] = 1.0 if blink else np.clip(rng.normal(0, 0.15, 2), 0, 0.6)
        expr[2] = max(0.0, rng.normal(0.0, 0.4)) if rng.random() < 0.4 else 0.0
        expr[3] = rng.uniform(-0.3, 1.0)
    tone = float(rng.random())
    R = model.regions
    V = model.num_vertices
    # smooth blotchiness: a few random Gaussian blobs on the mean mesh
    base = skin_albedo(tone)
    pos = model.mean / np.linalg.norm(model.mean, axis=1, keepdims=True)
    var = np.zeros(V)
    for _ in range(6):
        c = rng.standard_normal(3)
        c /= np.linalg.norm(c)
        var += rng.normal(0, 0.06) * np.exp((pos @ c - 1) / 0.05)
    albedo = base[None] * (1 + var[:, None]) * (1 + rng.normal(0, 0.04, 3))[None]
    lip_col = base * np.array([1.0, 0.62, 0.62]) * rng.uniform(0.7, 1.0)
    albedo = albedo * (1 - R["lips"][:, None]) + lip_col * R["lips"][:, None]
    hair = np.array([0.02, 0.015, 0.01]) * rng.uniform(0.5, 4.0) if rng.random() < 0.9 else base * 1.1
    brow = np.clip(R["brows"] * rng.uniform(0.6, 1.0), 0, 1)[:, None]
    albedo = albedo * (1 - brow) + hair * brow
    openness = 1 - expr[:2]
    iris_col = np.array([0.05, 0.03, 0.015]) * rng.uniform(0.5, 3)
    for side, k in (("right", 0), ("left", 1)):
        eye = np.clip(R[f"eye_{side}"] * 1.6, 0, 1) * openness[k]
        iris = np.clip(R[f"iris_{side}"] * 1.5, 0, 1) * openness[k]
        albedo = albedo * (1 - eye[:, None]) + np.array([0.6, 0.58, 0.55]) * eye[:, None]
        albedo = albedo * (1 - iris[:, None]) + iris_col * iris[:, None]
    dark = np.clip(R["nostrils"] + R["mouth"] * (0.3 + expr[2]), 0, 1)[:, None]
    albedo = albedo * (1 - 0.85 * dark)
    specular = np.clip(0.35 + 0.35 * R["tzone"] + 0.3 * R["lips"] + rng.normal(0, 0.05), 0, 1)
    eyes = np.clip(R["eye_right"] * openness[0] + R["eye_left"] * openness[1], 0, 1)
    specular = np.clip(specular + eyes, 0, 1)
    roughness = np.clip(rng.uniform(0.35, 0.55) - 0.15 * R["lips"] - 0.1 * R["tzone"] - 0.25 * eyes, 0.1, 1)
    return Subject(seed, id_c, expr, tone, np.clip(albedo, 0.005, 0.95).astype(np.float32),
                   specular.astype(np.float32), roughness.astype(np.float32), model)
