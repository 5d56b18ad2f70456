"""One-light-at-a-time captures of one subject, and relighting from them.

On-disk format (a directory), open so that a real light stage's data can be converted:

    capture.json   {"format": "stylerelight-olat", "version": 1, "subject": {...},
                    "cameras": [{"yaw": deg, "pitch": deg, "fov": deg, "distance": ...,
                                 "intrinsics": [[fx,0,cx],[0,fy,cy],[0,0,1]]}, ...],
                    "resolution": [H, W], "units": "..."}
    stage.json     the LightStage layout (directions, solid angles, optional colours)
    olat.npy       float16 [C, L, H, W, 3] linear RGB
    mask.npy       uint8 [C, H, W] (255 = subject)

Units: olat[c, l] is the image under light l emitting unit radiance integrated over its
solid angle (a light of radiance 1 / Omega_l for its small solid angle Omega_l). Then
relight(stage.project(env)) approximates the image under env. docs/olat_format.md explains
how to convert a real stage's captures into this.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .hdr_io import EnvMapError
from .stage import LightStage

FORMAT = "stylerelight-olat"


@dataclass
class OLATCapture:
    olat: np.ndarray  # [C, L, H, W, 3] linear
    mask: np.ndarray  # [C, H, W] float in [0, 1]
    cameras: list[dict]
    stage: LightStage
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        c, l, h, w, three = self.olat.shape
        if three != 3 or l != self.stage.num_lights or len(self.cameras) != c:
            raise ValueError(f"olat must be [C={len(self.cameras)}, L={self.stage.num_lights}, H, W, 3], "
                             f"got {list(self.olat.shape)}")
        if self.mask.shape != (c, h, w):
            raise ValueError(f"mask must be [{c}, {h}, {w}], got {list(self.mask.shape)}")

    @property
    def num_cameras(self) -> int:
        return self.olat.shape[0]

    @property
    def resolution(self) -> tuple[int, int]:
        return self.olat.shape[2], self.olat.shape[3]

    def relight(self, coeffs: np.ndarray, camera: int = 0) -> np.ndarray:
        """Linear [H, W, 3] = sum_l coeffs[l] * olat[camera, l] (coeffs [L, 3] or [L])."""
        coeffs = np.asarray(coeffs, np.float64)
        if coeffs.ndim == 1:
            coeffs = np.repeat(coeffs[:, None], 3, axis=1)
        if coeffs.shape != (self.stage.num_lights, 3):
            raise ValueError(f"coeffs must be [{self.stage.num_lights}, 3], got {list(coeffs.shape)}")
        if not 0 <= camera < self.num_cameras:
            raise ValueError(f"camera {camera} out of range (capture has {self.num_cameras})")
        if self.stage.colors is not None:
            coeffs = coeffs * self.stage.colors
        o = self.olat[camera].astype(np.float32)
        return np.einsum("lhwc,lc->hwc", o, coeffs.astype(np.float32))

    def save(self, directory: str | Path, force: bool = False) -> Path:
        d = Path(directory)
        if (d / "capture.json").exists() and not force:
            raise FileExistsError(f"{d} already holds a capture; pass --force to overwrite it")
        d.mkdir(parents=True, exist_ok=True)
        _atomic_npy(d / "olat.npy", self.olat.astype(np.float16))
        _atomic_npy(d / "mask.npy", np.round(np.clip(self.mask, 0, 1) * 255).astype(np.uint8))
        self.stage.save(d / "stage.json")
        meta = {"format": FORMAT, "version": 1, "cameras": self.cameras,
                "resolution": list(self.resolution), **self.meta}
        tmp = d / ".capture.json.tmp"
        tmp.write_text(json.dumps(meta, indent=1))
        os.replace(tmp, d / "capture.json")  # written last: marks the capture complete
        return d

    @classmethod
    def load(cls, directory: str | Path) -> OLATCapture:
        d = Path(directory)
        try:
            meta = json.loads((d / "capture.json").read_text())
        except FileNotFoundError:
            raise EnvMapError(f"{d}: not an OLAT capture (no capture.json)") from None
        except json.JSONDecodeError as e:
            raise EnvMapError(f"{d}/capture.json: corrupt ({e})") from None
        if meta.get("format") != FORMAT:
            raise EnvMapError(f"{d}: capture.json is not a {FORMAT} file")
        try:
            olat = np.load(d / "olat.npy", mmap_mode="r", allow_pickle=False)
            mask = np.load(d / "mask.npy", allow_pickle=False).astype(np.float32) / 255.0
        except (OSError, ValueError) as e:
            raise EnvMapError(f"{d}: unreadable OLAT arrays ({e})") from None
        stage = LightStage.load(d / "stage.json")
        cams = meta.pop("cameras")
        for k in ("format", "version", "resolution"):
            meta.pop(k, None)
        return cls(olat, mask, cams, stage, meta)


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    """np.save through a temp file (unique per process) and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
