"""A procedural morphable head: mean mesh + linear identity and expression bases.

The default model is built here from analytic parts (an ellipsoidal cranium, face features as
smooth displacements, ears, a neck), then linearised: each basis is the derivative of the
shape with respect to one parameter, so a subject is `mean + id_basis @ a + expr_basis @ e`
exactly as in a 3D morphable model. It is stored as a `.npz` with the same fields any other
model needs (for example a user's converted BFM), see docs/head_model.md:

    mean [V, 3], id_basis [K, V, 3], expr_basis [E, V, 3], triangles [T, 3] int32,
    uv [V, 2], landmarks [68] int32 (iBUG-68 order), regions: dict of [V] float masks,
    id_names [K], expr_names [E]
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np

N_THETA, N_PHI = 72, 120  # sphere grid: 2 * N_PHI * (N_THETA - 1) = 17,040 triangles

# identity parameters: name -> (mean, std); shape deltas are linear in these around the mean
ID_PARAMS = {
    "width": (0.80, 0.05), "height": (1.00, 0.05), "depth": (0.95, 0.05), "jaw_width": (0.80, 0.06),
    "chin": (0.07, 0.03), "nose_length": (0.22, 0.05), "nose_width": (0.09, 0.02),
    "nose_bridge": (0.08, 0.03), "eye_depth": (0.07, 0.02), "brow": (0.05, 0.02),
    "cheekbones": (0.05, 0.02), "lips": (0.05, 0.015), "ear_size": (0.22, 0.04),
    "forehead": (0.0, 0.05), "neck_width": (0.45, 0.04), "face_length": (0.0, 0.04),
}
EXPR_PARAMS = ["eye_close_right", "eye_close_left", "mouth_open", "smile"]

# iBUG-68 landmark positions in face coordinates (u = azimuth towards +x, v = elevation), rad
_EYE = [(-0.42, 0.12), (-0.35, 0.155), (-0.25, 0.155), (-0.18, 0.12), (-0.25, 0.085), (-0.35, 0.085)]


def _landmark_uv() -> np.ndarray:
    t = np.linspace(0, 1, 17)
    jaw = np.stack([-0.74 * np.cos(np.pi * t), -0.02 - 0.62 * np.sin(np.pi * t) ** 1.3], -1)
    rb = np.stack([np.linspace(-0.48, -0.12, 5), 0.24 + 0.03 * np.sin(np.linspace(0.3, 2.8, 5))], -1)
    lb = rb[::-1] * [-1, 1]
    bridge = np.stack([np.zeros(4), np.linspace(0.13, -0.1, 4)], -1)
    nostr = np.stack([np.linspace(-0.1, 0.1, 5), [-0.15, -0.165, -0.17, -0.165, -0.15]], -1)
    reye = np.array(_EYE)
    leye = np.array([(-u, v) for u, v in [_EYE[3], _EYE[2], _EYE[1], _EYE[0], _EYE[5], _EYE[4]]])
    a = np.linspace(0, np.pi, 7)
    outer_up = np.stack([-0.2 * np.cos(a), -0.36 + 0.035 * np.sin(a) + 0.01 * np.sin(3 * a)], -1)
    outer_lo = np.stack([0.2 * np.cos(a[1:-1]), -0.40 - 0.045 * np.sin(a[1:-1])], -1)
    b = np.linspace(0, np.pi, 5)
    inner_up = np.stack([-0.15 * np.cos(b), -0.375 + 0.012 * np.sin(b)], -1)
    inner_lo = np.stack([0.15 * np.cos(b[1:-1]), -0.385 - 0.012 * np.sin(b[1:-1])], -1)
    return np.concatenate([jaw, rb, lb, bridge, nostr, reye, leye, outer_up, outer_lo, inner_up, inner_lo])


def _sphere_grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(theta, phi) per vertex (poles included once) and triangles of a closed UV sphere."""
    th = np.pi * np.arange(1, N_THETA) / N_THETA
    ph = 2 * np.pi * np.arange(N_PHI) / N_PHI - np.pi
    T, P = np.meshgrid(th, ph, indexing="ij")
    theta = np.concatenate([[0.0], T.ravel(), [np.pi]])
    phi = np.concatenate([[0.0], P.ravel(), [0.0]])
    n_rows = N_THETA - 1
    idx = 1 + np.arange(n_rows * N_PHI).reshape(n_rows, N_PHI)
    tris = []
    for j in range(N_PHI):  # top and bottom caps
        tris.append([0, idx[0, (j + 1) % N_PHI], idx[0, j]])
        tris.append([len(theta) - 1, idx[-1, j], idx[-1, (j + 1) % N_PHI]])
    a, b = idx[:-1], np.roll(idx[:-1], -1, axis=1)
    c, d = idx[1:], np.roll(idx[1:], -1, axis=1)
    quads = np.stack([np.stack([a, b, c], -1), np.stack([b, d, c], -1)], -2).reshape(-1, 3)
    tris = np.concatenate([np.array(tris), quads])[:, ::-1].astype(np.int32)  # outward normals
    return theta, phi, tris


def _g(u, v, u0, v0, su, sv):
    return np.exp(-0.5 * (((u - u0) / su) ** 2 + ((v - v0) / sv) ** 2))


def _shape(theta, phi, p: dict, e: dict) -> np.ndarray:
    """Vertex positions for parameters p (identity) and e (expression); smooth in both."""
    u, v = phi, np.pi / 2 - theta  # face coordinates: u towards +x (subject's left), v up
    front = np.clip(np.cos(u), 0, 1) ** 2
    r = np.ones_like(u)
    # face features as radial displacements (front of the head only)
    r += front * p["forehead"] * np.clip(v - 0.3, 0, None)
    r += p["brow"] * _g(np.abs(u), v, 0.28, 0.25, 0.2, 0.05) * front
    r -= p["eye_depth"] * (_g(u, v, -0.30, 0.12, 0.11, 0.07) + _g(u, v, 0.30, 0.12, 0.11, 0.07))
    lid = 0.035 * (1 + 0.5 * np.array([e["eye_close_right"], e["eye_close_left"]]))
    r += lid[0] * _g(u, v, -0.30, 0.12, 0.08, 0.04) + lid[1] * _g(u, v, 0.30, 0.12, 0.08, 0.04)
    nose_t = np.clip((0.16 - v) / 0.28, 0, 1)
    nose_su = 0.055 + 0.5 * p["nose_width"] * nose_t
    r += (p["nose_bridge"] + p["nose_length"] * nose_t**1.5) * _g(u, v, 0, -0.02, nose_su, 0.15)
    r += 0.5 * p["nose_width"] * (_g(u, v, -0.09, -0.13, 0.04, 0.035) + _g(u, v, 0.09, -0.13, 0.04, 0.035))
    r += p["cheekbones"] * (_g(u, v, -0.45, -0.02, 0.14, 0.1) + _g(u, v, 0.45, -0.02, 0.14, 0.1))
    smile = e["smile"]
    mouth_v = -0.38 - 0.02 * e["mouth_open"]
    r += p["lips"] * (_g(u, v, 0, -0.355, 0.17 + 0.04 * smile, 0.03) + _g(u, v, 0, -0.405, 0.16 + 0.04 * smile, 0.035))
    r -= 0.06 * e["mouth_open"] * _g(u, v, 0, mouth_v, 0.12, 0.025)  # the opening
    r += 0.03 * smile * (_g(u, v, -0.3, -0.25, 0.1, 0.08) + _g(u, v, 0.3, -0.25, 0.1, 0.08))
    r += p["chin"] * _g(u, v, 0, -0.62, 0.15, 0.1)
    # ears: thin outward lobes at the sides
    ear = _g(u, v, -np.pi / 2, 0.0, 0.07, 0.16) + _g(u, v, np.pi / 2, 0.0, 0.07, 0.16)
    r += p["ear_size"] * ear
    # ellipsoid with a narrower jaw and a face length
    jaw = np.clip(-v / 0.7, 0, 1) ** 1.5 * front ** 0.5
    sx = p["width"] * (1 - (1 - p["jaw_width"]) * jaw * 0.6)
    sy = p["height"] * (1 + p["face_length"] * np.clip(-v, 0, None))
    sz = p["depth"]
    d = np.stack([np.sin(theta) * np.sin(phi), np.cos(theta), np.sin(theta) * np.cos(phi)], -1)
    pos = d * r[:, None] * np.stack([sx, sy, np.full_like(sx, sz)], -1)
    # mouth open: drop the lower jaw region
    low = np.clip((mouth_v - v) / 0.1, 0, 1) * front * _g(u, 0, 0, 0, 0.6, 1)
    pos[:, 1] -= 0.08 * e["mouth_open"] * low
    # neck: below the jaw, pull the surface down into a cylinder
    s = np.clip((theta - 2.35) / (np.pi - 2.35), 0, 1)
    s = s * s * (3 - 2 * s)
    rn = np.hypot(pos[:, 0], pos[:, 2]) + 1e-9
    scale_xz = (1 - s) + s * np.minimum(1.0, p["neck_width"] / rn)
    pos[:, 0] *= scale_xz
    pos[:, 2] = (pos[:, 2] - 0.1 * s) * scale_xz
    pos[:, 1] -= 1.1 * s
    return pos


@dataclass
class HeadModel:
    mean: np.ndarray
    id_basis: np.ndarray
    expr_basis: np.ndarray
    triangles: np.ndarray
    uv: np.ndarray
    landmarks: np.ndarray
    regions: dict = field(default_factory=dict)
    id_names: list = field(default_factory=list)
    expr_names: list = field(default_factory=list)

    @property
    def num_vertices(self) -> int:
        return len(self.mean)

    def vertices(self, id_coeffs=None, expr_coeffs=None) -> np.ndarray:
        v = self.mean.astype(np.float64).copy()
        if id_coeffs is not None:
            v += np.tensordot(np.asarray(id_coeffs, np.float64), self.id_basis, 1)
        if expr_coeffs is not None:
            v += np.tensordot(np.asarray(expr_coeffs, np.float64), self.expr_basis, 1)
        return v

    def save(self, path: str | Path) -> None:
        np.savez_compressed(path, mean=self.mean, id_basis=self.id_basis, expr_basis=self.expr_basis,
                            triangles=self.triangles, uv=self.uv, landmarks=self.landmarks,
                            id_names=np.array(self.id_names), expr_names=np.array(self.expr_names),
                            **{f"region_{k}": m for k, m in self.regions.items()})

    @classmethod
    def load(cls, path: str | Path) -> HeadModel:
        z = np.load(path, allow_pickle=False)
        regions = {k[len("region_"):]: z[k] for k in z.files if k.startswith("region_")}
        return cls(z["mean"], z["id_basis"], z["expr_basis"], z["triangles"], z["uv"], z["landmarks"],
                   regions, list(z["id_names"]), list(z["expr_names"]))

    @classmethod
    def default(cls) -> HeadModel:
        return _default_model()


@lru_cache(maxsize=1)
def _default_model() -> HeadModel:
    theta, phi, tris = _sphere_grid()
    p0 = {k: m for k, (m, _) in ID_PARAMS.items()}
    e0 = dict.fromkeys(EXPR_PARAMS, 0.0)
    mean = _shape(theta, phi, p0, e0)

    def derivative(params, key, step, is_id):
        hi, lo = dict(params), dict(params)
        hi[key] += step
        lo[key] -= step
        f = (lambda q: _shape(theta, phi, q, e0)) if is_id else (lambda q: _shape(theta, phi, p0, q))
        return (f(hi) - f(lo)) / (2 * step)

    id_basis = np.stack([derivative(p0, k, 1e-3, True) * ID_PARAMS[k][1] for k in ID_PARAMS])
    expr_basis = np.stack([derivative(e0, k, 1e-3, False) for k in EXPR_PARAMS])
    u, v = phi, np.pi / 2 - theta
    lm_uv = _landmark_uv()
    lm, taken = [], np.zeros(len(u), bool)
    for lu, lv in lm_uv:  # nearest free vertex, so that the 68 landmarks are distinct
        i = int(np.argmin((u - lu) ** 2 + (v - lv) ** 2 + 1e9 * ((np.cos(u) < 0) | taken)))
        taken[i] = True
        lm.append(i)
    lm = np.array(lm)
    regions = _regions(u, v)
    uvs = np.stack([(phi + np.pi) / (2 * np.pi), 1 - theta / np.pi], -1)
    return HeadModel(mean.astype(np.float32), id_basis.astype(np.float32), expr_basis.astype(np.float32),
                     tris, uvs.astype(np.float32), lm.astype(np.int32), regions, list(ID_PARAMS), EXPR_PARAMS)


def _regions(u, v) -> dict:
    """Soft [V] masks for albedo and specular maps."""
    eye_r, eye_l = _g(u, v, -0.30, 0.12, 0.075, 0.028), _g(u, v, 0.30, 0.12, 0.075, 0.028)
    iris_r, iris_l = _g(u, v, -0.30, 0.12, 0.03, 0.025), _g(u, v, 0.30, 0.12, 0.03, 0.025)
    lips = np.clip(_g(u, v, 0, -0.355, 0.16, 0.022) + _g(u, v, 0, -0.405, 0.15, 0.028), 0, 1)
    mouth = _g(u, v, 0, -0.38, 0.12, 0.012)
    brows = _g(np.abs(u), v, 0.29, 0.245, 0.13, 0.018)
    nostrils = _g(u, v, -0.06, -0.16, 0.02, 0.012) + _g(u, v, 0.06, -0.16, 0.02, 0.012)
    tzone = np.clip(_g(u, v, 0, 0.35, 0.3, 0.12) + _g(u, v, 0, -0.05, 0.07, 0.2), 0, 1)
    return {"eye_right": eye_r, "eye_left": eye_l, "iris_right": iris_r, "iris_left": iris_l,
            "lips": lips, "mouth": mouth, "brows": brows, "nostrils": nostrils, "tzone": tzone}
