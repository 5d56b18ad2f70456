"""A light stage: L light directions on the sphere, each owning its Voronoi cell.

Projecting an environment map onto the stage integrates the env radiance over each light's
cell, so that sum_l coeffs[l] * OLAT[l] approximates the image under the env map when each
OLAT image is lit by unit solid-angle-integrated radiance from its light (see olat.py).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .envmap import EnvMap, latlong_directions, latlong_solid_angles
from .hdr_io import EnvMapError


def fibonacci_sphere(n: int) -> np.ndarray:
    """n near-uniform unit vectors (golden-angle spiral), [n, 3]."""
    i = np.arange(n) + 0.5
    y = 1 - 2 * i / n
    r = np.sqrt(1 - y * y)
    phi = np.pi * (3 - np.sqrt(5)) * i
    return np.stack([r * np.cos(phi), y, r * np.sin(phi)], -1)


def voronoi_solid_angles(directions: np.ndarray) -> np.ndarray:
    """Area of each direction's spherical Voronoi cell (sums to 4 pi)."""
    from scipy.spatial import SphericalVoronoi

    sv = SphericalVoronoi(directions.astype(np.float64), radius=1.0, center=np.zeros(3))
    return sv.calculate_areas()


@dataclass
class LightStage:
    """`directions` [L, 3] unit vectors (world frame) and `solid_angles` [L] of their cells."""

    directions: np.ndarray
    solid_angles: np.ndarray = None
    colors: np.ndarray | None = None  # optional per-light RGB calibration [L, 3]
    name: str = "stage"
    _cell_cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __post_init__(self):
        d = np.asarray(self.directions, np.float64)
        if d.ndim != 2 or d.shape[1] != 3 or len(d) < 4:
            raise ValueError(f"light directions must be [L >= 4, 3], got {list(d.shape)}")
        self.directions = d / np.linalg.norm(d, axis=1, keepdims=True)
        if self.solid_angles is None:
            self.solid_angles = voronoi_solid_angles(self.directions)
        self.solid_angles = np.asarray(self.solid_angles, np.float64)
        if self.colors is not None:
            self.colors = np.asarray(self.colors, np.float64).reshape(len(d), 3)

    @property
    def num_lights(self) -> int:
        return len(self.directions)

    @classmethod
    def default(cls, num_lights: int = 150) -> LightStage:
        """`num_lights` near-uniform lights over the full sphere (150 by default)."""
        return cls(fibonacci_sphere(num_lights), name=f"fibonacci{num_lights}")

    def cell_of(self, dirs: np.ndarray) -> np.ndarray:
        """Index of the light whose Voronoi cell contains each direction (nearest light)."""
        flat = dirs.reshape(-1, 3)
        return np.argmax(flat @ self.directions.T, axis=1).reshape(dirs.shape[:-1])

    def project(self, env: EnvMap, supersample: int | None = None) -> np.ndarray:
        """[L, 3] light coefficients: the integral of env radiance over each light's cell.

        A constant radiance c gives c times each cell's solid angle (summing to 4 pi c); each
        env pixel is split into supersample^2 sub-pixels assigned to their nearest light.
        """
        h, w = env.height, env.width
        supersample = supersample or max(1, -(-256 // h))  # cells resolved on >= 256 rows
        key = (h, w, supersample)
        if key not in self._cell_cache:
            s = supersample
            cells = self.cell_of(latlong_directions(h * s, w * s))
            sa = latlong_solid_angles(h * s, w * s)
            # weight of each (pixel, light) pair: the sub-pixel solid angles that fall in the cell
            pix = (np.arange(h * s)[:, None] // s) * w + (np.arange(w * s)[None, :] // s)
            self._cell_cache[key] = (pix.ravel(), cells.ravel(), sa.ravel())
        pix, cells, sa = self._cell_cache[key]
        flat = env.data.reshape(-1, 3).astype(np.float64)
        coeffs = np.zeros((self.num_lights, 3))
        for c in range(3):
            coeffs[:, c] = np.bincount(cells, weights=flat[pix, c] * sa, minlength=self.num_lights)
        return coeffs

    # -- JSON layout of a real stage -----------------------------------------------------------

    def to_json(self) -> dict:
        d = {"name": self.name, "directions": self.directions.tolist(),
             "solid_angles": self.solid_angles.tolist()}
        if self.colors is not None:
            d["colors"] = self.colors.tolist()
        return d

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_json(), indent=1))

    @classmethod
    def from_json(cls, obj: dict) -> LightStage:
        try:
            return cls(np.asarray(obj["directions"], np.float64), obj.get("solid_angles"),
                       obj.get("colors"), obj.get("name", "stage"))
        except (KeyError, TypeError, ValueError) as e:
            raise EnvMapError(f"bad light stage layout ({e}); expected {{'directions': [[x,y,z],...]}}") from None

    @classmethod
    def load(cls, path: str | Path) -> LightStage:
        try:
            obj = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as e:
            raise EnvMapError(f"{path}: unreadable light stage JSON ({e})") from None
        return cls.from_json(obj)
