"""Linear HDR -> display: exposure (fixed or automatic from a region), sRGB, 8 bit. The only
place in the package where linear light becomes display pixels."""

from __future__ import annotations

import numpy as np


def srgb_encode(linear: np.ndarray) -> np.ndarray:
    x = np.clip(linear, 0.0, 1.0)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def srgb_decode(encoded: np.ndarray) -> np.ndarray:
    x = np.clip(encoded, 0.0, 1.0)
    return np.where(x <= 0.04045, x / 12.92, np.power((x + 0.055) / 1.055, 2.4))


def auto_exposure(linear: np.ndarray, mask: np.ndarray | None = None, target: float = 0.18,
                  percentile: float = 50.0) -> float:
    """Exposure that maps the `percentile` luminance inside `mask` (the face) to `target`."""
    lum = linear[..., :3] @ np.array([0.2126, 0.7152, 0.0722])
    vals = lum[mask > 0.5] if mask is not None and (mask > 0.5).any() else lum.ravel()
    ref = np.percentile(vals, percentile) if vals.size else 0.0
    return float(target / ref) if ref > 1e-12 else 1.0


def to_display(linear: np.ndarray, exposure: float | None = None, mask: np.ndarray | None = None,
               background: np.ndarray | None = None) -> np.ndarray:
    """uint8 [H, W, 3]: exposure (auto from `mask` when None), sRGB, 8 bit; `background`
    (display-referred, [3] in 0..1) fills where mask is 0, blended by the mask."""
    if exposure is None:
        exposure = auto_exposure(linear, mask)
    rgb = srgb_encode(np.asarray(linear, np.float64) * exposure)
    if background is not None and mask is not None:
        m = np.clip(mask, 0, 1)[..., None]
        rgb = rgb * m + np.asarray(background, np.float64) * (1 - m)
    return np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


FACE_BACKGROUND = np.array([0.5, 0.5, 0.5])  # display-referred neutral grey behind rendered heads


FACE_TARGET, FACE_PERCENTILE = 0.18, 60.0


def face_exposure(linear: np.ndarray, alpha: np.ndarray) -> float:
    """The exposure of every displayed face: the 60th-percentile luminance of the fully covered
    pixels maps to 0.18."""
    return auto_exposure(linear, np.asarray(alpha) > 0.99, target=FACE_TARGET, percentile=FACE_PERCENTILE)


def face_exposure_of_pixels(pixels: np.ndarray) -> float:
    """face_exposure from the fully covered pixels alone ([N, 3] linear): the same rule, for
    callers that hold a sample of a frame rather than the frame (OLATCapture.exposure)."""
    return auto_exposure(np.asarray(pixels, np.float64), None, target=FACE_TARGET, percentile=FACE_PERCENTILE)


def face_display(linear: np.ndarray, alpha: np.ndarray, exposure: float | None = None,
                 background: np.ndarray | None = FACE_BACKGROUND) -> tuple[np.ndarray, float]:
    """The one display transform for rendered faces (dataset portraits, OLAT relighting, the demo,
    reconstructions, the mapper's pairs): `linear` is premultiplied by the pixel coverage `alpha`
    (as Mitsuba and OLAT renders are); it is un-premultiplied, exposed (`face_exposure` unless
    given), sRGB-encoded and laid over `background` by alpha. Returns (uint8 [H, W, 3], exposure)."""
    alpha = np.clip(np.asarray(alpha, np.float64), 0, 1)
    exp = exposure if exposure is not None else face_exposure(linear, alpha)
    straight = np.asarray(linear, np.float64) / np.maximum(alpha, 1e-6)[..., None] * (alpha > 0)[..., None]
    return to_display(straight, exposure=exp, mask=alpha, background=background), exp


def envmap_preview(env, width: int = 128) -> np.ndarray:
    """An env map as a uint8 lat-long picture [width // 2, width, 3] for people to look at: its
    99th percentile at 0.8 of white (the sun clips, the sky stays readable), sRGB."""
    from PIL import Image

    d = to_display(env.data / max(float(np.percentile(env.data, 99)), 1e-6) * 0.8, exposure=1.0)
    return np.asarray(Image.fromarray(d).resize((width, width // 2), Image.BILINEAR))
