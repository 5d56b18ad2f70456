"""Environment maps: lat-long, linear float32 RGB, with one orientation convention.

Convention (world frame: +y up, +z from the face towards the frontal camera, +x to the
subject's left): pixel row i, column j of an H x W map looks along

    theta = pi * (i + 0.5) / H                 (0 at the top = +y)
    phi   = 2 pi * ((j + 0.5) / W - 0.5)       (0 at the centre column)
    d     = (sin theta sin phi, cos theta, -sin theta cos phi)

so the centre column looks along -z (what the frontal camera sees behind the head) and the
column at 3/4 of the width looks along +x (it lights the subject's left cheek).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .hdr_io import EnvMapError, read_hdr, write_hdr


@dataclass
class EnvMap:
    """A lat-long environment map: `data` is float32 [H, W, 3] linear radiance, W = 2 H."""

    data: np.ndarray

    def __post_init__(self):
        self.data = validate_envmap(self.data)

    @property
    def height(self) -> int:
        return self.data.shape[0]

    @property
    def width(self) -> int:
        return self.data.shape[1]

    def directions(self) -> np.ndarray:
        """Unit direction of every pixel centre, [H, W, 3]."""
        return latlong_directions(self.height, self.width)

    def solid_angles(self) -> np.ndarray:
        """Exact solid angle of every pixel, [H, W]; sums to 4 pi."""
        return latlong_solid_angles(self.height, self.width)

    def rotate(self, yaw_degrees: float) -> EnvMap:
        """Rotate the environment about +y by `yaw_degrees` (positive: +x turns towards -z...)
        by resampling columns (exact for multiples of 360 / W, linear in between)."""
        shift = yaw_degrees / 360.0 * self.width
        j = np.arange(self.width) - shift
        j0 = np.floor(j).astype(int)
        t = (j - j0)[None, :, None].astype(np.float32)
        a, b = self.data[:, j0 % self.width], self.data[:, (j0 + 1) % self.width]
        return EnvMap((1 - t) * a + t * b)

    def resize(self, height: int) -> EnvMap:
        """Area-average (down) or bilinear (up) resampling to height x 2*height."""
        return EnvMap(resample_latlong(self.data, height))

    def mean_radiance(self) -> np.ndarray:
        w = self.solid_angles()[..., None]
        return (self.data * w).sum((0, 1)) / (4 * np.pi)


def disk_light(direction, angle_deg: float = 8.0, radiance: float = 30.0, fill: float = 0.02,
               height: int = 32) -> EnvMap:
    """A hard light: a disk of `radiance` within `angle_deg` of `direction` over a uniform `fill`.
    The shadow tests and the self-shadow benchmark use it (one small source casts crisp shadows)."""
    env = np.full((height, 2 * height, 3), fill, np.float32)
    d = np.asarray(direction, np.float64) / np.linalg.norm(direction)
    env[(latlong_directions(height, 2 * height) @ d) > np.cos(np.radians(angle_deg))] = radiance
    return EnvMap(env)


def latlong_directions(h: int, w: int) -> np.ndarray:
    theta = np.pi * (np.arange(h) + 0.5) / h
    phi = 2 * np.pi * ((np.arange(w) + 0.5) / w - 0.5)
    st, ct = np.sin(theta)[:, None], np.cos(theta)[:, None]
    d = np.stack(np.broadcast_arrays(st * np.sin(phi)[None], ct, -st * np.cos(phi)[None]), -1)
    return d.astype(np.float32)


def direction_to_pixel(d: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of latlong_directions: fractional (row, col) pixel coordinates of directions."""
    d = np.asarray(d, np.float64)
    d = d / np.linalg.norm(d, axis=-1, keepdims=True)
    theta = np.arccos(np.clip(d[..., 1], -1, 1))
    phi = np.arctan2(d[..., 0], -d[..., 2])
    return theta / np.pi * h - 0.5, (phi / (2 * np.pi) + 0.5) * w - 0.5


def latlong_solid_angles(h: int, w: int) -> np.ndarray:
    edges = np.pi * np.arange(h + 1) / h
    band = (np.cos(edges[:-1]) - np.cos(edges[1:])) * (2 * np.pi / w)
    return np.repeat(band[:, None], w, axis=1).astype(np.float64)


def resample_latlong(data: np.ndarray, height: int) -> np.ndarray:
    h, w, _ = data.shape
    if height == h:
        return data.copy()
    if h % height == 0:  # integer box downsampling preserves energy exactly per block
        k = h // height
        sa = latlong_solid_angles(h, w)[..., None]
        num = (data * sa).reshape(height, k, 2 * height, k, 3).sum((1, 3))
        den = sa.reshape(height, k, 2 * height, k, 1).sum((1, 3))
        return (num / den).astype(np.float32)
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(data)).permute(2, 0, 1)[None]
    t = F.pad(t, [1, 1, 0, 0], mode="circular")  # wrap in azimuth
    scale = (2 * height) / w
    out = F.interpolate(t, size=(height, int(round((w + 2) * scale))), mode="bilinear",
                        align_corners=False, antialias=height < h)
    pad = (out.shape[-1] - 2 * height) // 2
    return out[0, :, :, pad: pad + 2 * height].permute(1, 2, 0).numpy().astype(np.float32)


def validate_envmap(data, repair: bool = True) -> np.ndarray:
    """Check shape, aspect and values. Non-finite or negative pixels are repaired (set to 0)
    with one warning when `repair`, else rejected."""
    a = np.asarray(data)
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    if a.ndim != 3 or a.shape[2] not in (3, 4):
        raise EnvMapError(f"env map must be [H, W, 3] RGB, got shape {list(a.shape)}")
    a = a[..., :3].astype(np.float32)
    h, w = a.shape[:2]
    if h < 2 or w != 2 * h:
        raise EnvMapError(f"env map must be lat-long with width = 2 x height, got {w}x{h}; "
                          "convert cube maps or angular maps to lat-long first")
    bad = ~np.isfinite(a) | (a < 0)
    if bad.any():
        if not repair:
            raise EnvMapError(f"env map has {int(bad.sum())} non-finite or negative values")
        warnings.warn(f"env map: {int(bad.sum())} non-finite or negative values set to 0", stacklevel=3)
        a = np.where(bad, 0.0, a).astype(np.float32)
    return np.ascontiguousarray(a)


def load_envmap(path: str | Path) -> EnvMap:
    """Load .hdr (Radiance, RLE or flat), .exr (any OpenEXR compression) or .npy."""
    path = Path(path)
    if not path.is_file():
        raise EnvMapError(f"{path}: no such file; expected an env map (.hdr, .exr or .npy)")
    suffix = path.suffix.lower()
    try:
        if suffix == ".hdr" or path.read_bytes()[:2] == b"#?":
            data = read_hdr(path)
        elif suffix == ".exr":
            data = _read_exr(path)
        elif suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            raise EnvMapError(f"{path}: unknown env map format {suffix!r}; use .hdr, .exr or .npy")
    except EnvMapError:
        raise
    except Exception as e:  # noqa: BLE001 - any reader failure is a bad file for the user
        raise EnvMapError(f"{path}: unreadable env map ({type(e).__name__}: {e})") from None
    try:
        return EnvMap(data)
    except EnvMapError as e:
        raise EnvMapError(f"{path}: {e}") from None


def save_envmap(env: EnvMap | np.ndarray, path: str | Path, compression: str = "zip") -> None:
    """Write .hdr (RLE), .exr (compression: none, zip, piz, dwaa, dwab, ...) or .npy."""
    data = env.data if isinstance(env, EnvMap) else validate_envmap(env)
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".hdr":
        write_hdr(path, data)
    elif suffix == ".exr":
        _write_exr(path, data, compression)
    elif suffix == ".npy":
        np.save(path, data)
    else:
        raise EnvMapError(f"{path}: unknown env map format {suffix!r}; use .hdr, .exr or .npy")


def _read_exr(path: Path) -> np.ndarray:
    import OpenEXR

    with OpenEXR.File(str(path), separate_channels=True) as f:
        ch = f.channels()
        names = {k.split(".")[-1]: k for k in ch}
        if all(c in names for c in "RGB"):
            return np.stack([ch[names[c]].pixels.astype(np.float32) for c in "RGB"], -1)
        if "Y" in names:
            return np.repeat(ch[names["Y"]].pixels.astype(np.float32)[..., None], 3, -1)
    raise EnvMapError(f"{path}: .exr has no R, G, B (or Y) channels")


def _write_exr(path: Path, data: np.ndarray, compression: str) -> None:
    import OpenEXR

    name = "NO" if compression.lower() == "none" else compression.upper()
    comp = getattr(OpenEXR, f"{name}_COMPRESSION", None)
    if comp is None:
        raise EnvMapError(f"unknown EXR compression {compression!r}")
    header = {"compression": comp, "type": OpenEXR.scanlineimage}
    channels = {c: np.ascontiguousarray(data[..., i], np.float32) for i, c in enumerate("RGB")}
    with OpenEXR.File(header, channels) as f:
        f.write(str(path))
