"""Fine stage of the reconstruction: light-stage light and diffuse albedo, with self-shadows
explained by ray-traced geometry (Dib et al. 2021's virtual light stage, linearised).

For the fitted head and view, Mitsuba renders the OLAT basis of a white, purely diffuse version
of the head in the crop's frame: B_l(p), the shading light l casts at pixel p including its
shadows. The portrait's linear pixels are then y(p) = a(p) * sum_l c_l B_l(p): linear in the
light c for fixed albedo a, and in a for fixed c. We alternate a non-negative least-squares fit
of c (pulled towards the CNN's estimate, since lights behind the head are invisible) with the
per-pixel albedo y / shading (pulled towards the skin-tone prior where shading is weak), then
carry the albedo onto the mesh's visible vertices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..lighting import LightStage, srgb_decode
from ..synth.head_model import HeadModel
from ..synth.render import render_olat
from ..synth.subject import Subject
from .pose_fit import PoseFit

LIGHT_PRIOR = 0.05    # weight of the CNN light estimate in the NNLS fit (relative to the data term)
ALBEDO_PRIOR = 0.02   # pulls the per-pixel albedo towards the tone prior where shading is weak
SMOOTH_SIGMA = 0.08   # the albedo the light fit sees is blurred by this fraction of the crop size


def crop_transform(fit: PoseFit, render_res: int) -> tuple[np.ndarray, np.ndarray]:
    """(A [2, 2], t [2]) mapping render-camera pixels at `render_res` to crop pixels."""
    c, s = math.cos(math.radians(fit.roll)), math.sin(math.radians(fit.roll))
    A = fit.scale * fit.raw_resolution / render_res * np.array([[c, -s], [s, c]])
    return A, np.asarray(fit.shift, np.float64)


def warp_to_crop(images: np.ndarray, fit: PoseFit, crop_size: int) -> np.ndarray:
    """Render-camera images [..., R, R, C] -> crop frame [..., S, S, C] (bilinear; pixel centres at +0.5)."""
    lead, (R, _, C) = images.shape[:-3], images.shape[-3:]
    A, t = crop_transform(fit, R)
    Ai = np.linalg.inv(A)
    g = (np.arange(crop_size) + 0.5)
    pc = np.stack(np.meshgrid(g, g, indexing="xy"), -1).reshape(-1, 2)
    pr = (pc - t) @ Ai.T  # render pixels
    grid = torch.from_numpy((pr / R * 2 - 1).reshape(1, crop_size, crop_size, 2)).float()
    x = torch.from_numpy(np.ascontiguousarray(images.reshape(-1, R, R, C))).float().permute(0, 3, 1, 2)
    out = F.grid_sample(x, grid.expand(len(x), -1, -1, -1), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    return out.permute(0, 2, 3, 1).numpy().reshape(*lead, crop_size, crop_size, C)


def render_res_for(fit: PoseFit, crop_size: int) -> int:
    """A render-camera resolution at which one render pixel is about one crop pixel."""
    return int(np.clip(round(fit.raw_resolution * fit.scale), 32, 512))


def white_subject(identity, expression, model: HeadModel | None = None) -> Subject:
    model = model or HeadModel.default()
    V = model.num_vertices
    return Subject(seed=-1, id_coeffs=np.asarray(identity, np.float64), expr_coeffs=np.asarray(expression, np.float64),
                   tone=0.0, albedo=np.ones((V, 3), np.float32), specular=np.zeros(V, np.float32),
                   roughness=np.full(V, 0.5, np.float32), model=model)


def olat_basis(fit: PoseFit, crop_size: int, stage: LightStage, spp: int = 4, seed: int = 0,
               model: HeadModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(B [L, S, S, 3] white diffuse shading with shadows, coverage mask [S, S]) in the crop frame."""
    res = render_res_for(fit, crop_size)
    cap = render_olat(white_subject(fit.identity, fit.expression, model), stage, [fit.camera()], res, spp=spp,
                      seed=seed)
    B = warp_to_crop(cap.olat[0], fit, crop_size)
    mask = warp_to_crop(cap.mask[0][..., None], fit, crop_size)[..., 0]
    return np.maximum(B, 0), np.clip(mask, 0, 1)


def _nnls_prior(A: np.ndarray, y: np.ndarray, prior: np.ndarray, weight: float) -> np.ndarray:
    from scipy.optimize import nnls

    n = A.shape[1]
    scale = np.sqrt(weight * (A**2).sum() / n) + 1e-12
    A2 = np.vstack([A, scale * np.eye(n)])
    y2 = np.concatenate([y, scale * prior])
    return nnls(A2, y2, maxiter=50 * n)[0]


@dataclass
class PhotometricFit:
    light: np.ndarray         # [L, 3] displayed light (the portrait's exposure included), head frame
    albedo_map: np.ndarray    # [S, S, 3] per-pixel diffuse albedo in the crop
    shading: np.ndarray       # [S, S, 3] sum_l c_l B_l
    mask: np.ndarray          # [S, S] pixels used (face coverage, eroded)
    basis: np.ndarray         # [L, S, S, 3]


def fit_light_albedo(crop: np.ndarray, basis: np.ndarray, coverage: np.ndarray, light0: np.ndarray,
                     albedo0: np.ndarray, iterations: int = 4) -> PhotometricFit:
    """Alternate NNLS light and per-pixel albedo on the covered pixels of an aligned crop (uint8)."""
    import scipy.ndimage

    y = srgb_decode(np.asarray(crop, np.float64) / 255.0)
    mask = scipy.ndimage.binary_erosion(coverage > 0.99, iterations=1)
    # saturated or black pixels carry no linear information
    mask &= (crop.max(-1) < 254) & (crop.min(-1) > 1)
    Bm = basis[:, mask].astype(np.float64)  # [L, P, 3]
    ym = y[mask]                            # [P, 3]
    a0 = np.broadcast_to(np.asarray(albedo0, np.float64), ym.shape)
    a_light = a0.copy()
    light = np.asarray(light0, np.float64).copy()
    for it in range(iterations):
        # the light sees a smooth albedo: the prior's level (albedo and light scale trade off exactly)
        # times the low-frequency part of the current per-pixel albedo, so shading is not baked in
        for k in range(3):
            A = (Bm[:, :, k] * a_light[:, k][None]).T  # [P, L]
            light[:, k] = _nnls_prior(A, ym[:, k], light0[:, k], LIGHT_PRIOR)
        shade = np.einsum("lpk,lk->pk", Bm, light)
        ref = np.median(shade, axis=0) ** 2
        a = np.clip((ym * shade + ALBEDO_PRIOR * a0 * ref) / (shade**2 + ALBEDO_PRIOR * ref), 0.0, 1.0)
        if it + 1 < iterations:
            full = np.zeros(y.shape)
            full[mask] = a / np.median(a, axis=0) * np.median(a0, axis=0)
            w = scipy.ndimage.gaussian_filter(mask.astype(np.float64), SMOOTH_SIGMA * y.shape[0])
            sm = np.stack([scipy.ndimage.gaussian_filter(full[..., k], SMOOTH_SIGMA * y.shape[0])
                           for k in range(3)], -1) / np.maximum(w, 1e-6)[..., None]
            a_light = sm[mask]
    shading = np.einsum("lhwk,lk->hwk", basis.astype(np.float64), light)
    albedo_map = np.zeros_like(y)
    albedo_map[mask] = a
    albedo_map[~mask] = np.asarray(albedo0, np.float64)
    return PhotometricFit(light=light, albedo_map=albedo_map, shading=shading, mask=mask, basis=basis)
