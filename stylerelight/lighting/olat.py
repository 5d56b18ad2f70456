"""One-light-at-a-time captures of one subject, and relighting from them.

On-disk format (a directory), open so that a real light stage's data can be converted:

    capture.json   {"format": "stylerelight-olat", "version": 1, "subject": {...},
                    "cameras": [{"yaw": deg, "pitch": deg, "fov": deg, "distance": ...,
                                 "intrinsics": [[fx,0,cx],[0,fy,cy],[0,0,1]]}, ...],
                    "resolution": [H, W], "units": "..."}
    stage.json     the LightStage layout (directions, solid angles, optional colours)
    olat.npy       float16 [C, L, H, W, 3] linear RGB
    mask.npy       uint8 [C, H, W] (255 = subject)
    frame.npy      optional float16 [C, L, P, 3]: per camera, the fully covered pixels of the
                   camera's whole frame (before any crop; zero-padded to P, counts in
                   capture.json "frame_pixels"), so that a relit crop gets the exposure the
                   whole frame would give it (`exposure`)

Units: olat[c, l] is the image under light l emitting unit radiance integrated over its
solid angle (a light of radiance 1 / Omega_l for its small solid angle Omega_l). Then
relight(stage.project(env)) approximates the image under env. docs/olat_format.md explains
how to convert a real stage's captures into this.

Why frame.npy: a portrait's exposure is set on the face as the whole rendered frame shows it
(`synth.render_portrait`, the dataset builder). A capture cropped to the generator's FFHQ square
sees another part of the head, and under a one-sided light its own median is off by up to 1.8x
(0.12 in log exposure on average; relit crops 34.1 dB from the dataset's portrait, 38.4 dB with
the frame's exposure: docs/mapper.md).
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
    frame: np.ndarray | None = None  # [C, L, P, 3] linear: the whole frame's covered pixels (see above)

    def __post_init__(self):
        c, l, h, w, three = self.olat.shape
        if three != 3 or l != self.stage.num_lights or len(self.cameras) != c:
            raise ValueError(f"olat must be [C={len(self.cameras)}, L={self.stage.num_lights}, H, W, 3], "
                             f"got {list(self.olat.shape)}")
        if self.mask.shape != (c, h, w):
            raise ValueError(f"mask must be [{c}, {h}, {w}], got {list(self.mask.shape)}")
        if self.frame is not None:
            if self.frame.ndim != 4 or self.frame.shape[:2] != (c, l) or self.frame.shape[3] != 3:
                raise ValueError(f"frame must be [{c}, {l}, P, 3], got {list(self.frame.shape)}")
            counts = self.meta.get("frame_pixels")
            if counts is None or len(counts) != c or max(counts) > self.frame.shape[2]:
                raise ValueError("a frame needs meta['frame_pixels']: the covered pixel count of each camera")

    @property
    def num_cameras(self) -> int:
        return self.olat.shape[0]

    @property
    def resolution(self) -> tuple[int, int]:
        return self.olat.shape[2], self.olat.shape[3]

    def relight(self, coeffs: np.ndarray, camera: int = 0) -> np.ndarray:
        """Linear [H, W, 3] = sum_l coeffs[l] * olat[camera, l] (coeffs [L, 3] or [L])."""
        coeffs = self._coeffs(coeffs)
        if not 0 <= camera < self.num_cameras:
            raise ValueError(f"camera {camera} out of range (capture has {self.num_cameras})")
        o = self.olat[camera].astype(np.float32)
        return np.einsum("lhwc,lc->hwc", o, coeffs.astype(np.float32))

    def exposure(self, coeffs: np.ndarray, camera: int = 0) -> float:
        """The display exposure of the relit image: `face_exposure` of the camera's whole frame when
        the capture holds it (frame.npy), else of the crop itself (a real stage's captures)."""
        from .display import face_exposure, face_exposure_of_pixels

        if self.frame is None:
            return face_exposure(self.relight(coeffs, camera), self.mask[camera])
        n = int(self.meta["frame_pixels"][camera])
        coeffs = self._coeffs(coeffs)
        px = np.einsum("lpc,lc->pc", self.frame[camera, :, :n].astype(np.float32), coeffs.astype(np.float32))
        return face_exposure_of_pixels(px)

    def display(self, coeffs: np.ndarray, camera: int = 0) -> np.ndarray:
        """uint8 [H, W, 3]: the relit image as every portrait is shown (`face_display` at `exposure`)."""
        from .display import face_display

        linear = self.relight(coeffs, camera)
        exposure = self.exposure(coeffs, camera) if self.frame is not None else None  # None: the crop's
        return face_display(linear, self.mask[camera], exposure)[0]

    def _coeffs(self, coeffs: np.ndarray) -> np.ndarray:
        coeffs = np.asarray(coeffs, np.float64)
        if coeffs.ndim == 1:
            coeffs = np.repeat(coeffs[:, None], 3, axis=1)
        if coeffs.shape != (self.stage.num_lights, 3):
            raise ValueError(f"coeffs must be [{self.stage.num_lights}, 3], got {list(coeffs.shape)}")
        return coeffs * self.stage.colors if self.stage.colors is not None else coeffs

    def save(self, directory: str | Path, force: bool = False) -> Path:
        d = Path(directory)
        if (d / "capture.json").exists() and not force:
            raise FileExistsError(f"{d} already holds a capture; pass --force to overwrite it")
        d.mkdir(parents=True, exist_ok=True)
        _atomic_npy(d / "olat.npy", self.olat.astype(np.float16))
        _atomic_npy(d / "mask.npy", np.round(np.clip(self.mask, 0, 1) * 255).astype(np.uint8))
        if self.frame is not None:
            _atomic_npy(d / "frame.npy", self.frame.astype(np.float16))
        self.stage.save(d / "stage.json")
        _write_meta(d, {"format": FORMAT, "version": 1, "cameras": self.cameras,
                        "resolution": list(self.resolution), **self.meta})  # written last: marks the capture complete
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
        frame = None
        if (d / "frame.npy").exists() and "frame_pixels" in meta:
            try:
                frame = np.load(d / "frame.npy", mmap_mode="r", allow_pickle=False)
            except (OSError, ValueError) as e:
                raise EnvMapError(f"{d}: unreadable frame.npy ({e}); delete it to use the crop's exposure") from None
        stage = LightStage.load(d / "stage.json")
        cams = meta.pop("cameras")
        for k in ("format", "version", "resolution"):
            meta.pop(k, None)
        return cls(olat, mask, cams, stage, meta, frame)

    def add_frame(self, directory: str | Path, frame: np.ndarray, counts: list[int]) -> None:
        """Attach the whole-frame pixels to this capture, saved in `directory` (frame.npy first,
        then capture.json: a stopped write leaves the capture as it was)."""
        d = Path(directory)
        self.meta["frame_pixels"] = [int(n) for n in counts]
        self.frame = frame
        self.__post_init__()
        _atomic_npy(d / "frame.npy", frame.astype(np.float16))
        _write_meta(d, {**json.loads((d / "capture.json").read_text()), "frame_pixels": self.meta["frame_pixels"]})


def _write_meta(d: Path, meta: dict) -> None:
    _atomic_json(d / "capture.json", meta)


def _atomic_json(path: Path, obj) -> None:
    """JSON through a temp file (unique per process) and a rename: readers never see half of it."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


def _atomic_npy(path: Path, arr: np.ndarray) -> None:
    """np.save through a temp file (unique per process) and a rename: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "wb") as f:
        np.save(f, arr)
    os.replace(tmp, path)
