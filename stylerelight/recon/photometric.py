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


def white_subject(identity, expression, model: HeadModel | None = None, albedo: float = 1.0,
                  specular: float = 0.0, roughness: float = 0.5) -> Subject:
    """The fitted shape with uniform material: albedo 1 / specular 0 gives the diffuse basis, albedo
    0 / specular 1 the specular lobe alone (the blend BSDF is linear in its specular weight)."""
    model = model or HeadModel.default()
    V = model.num_vertices
    return Subject(seed=-1, id_coeffs=np.asarray(identity, np.float64), expr_coeffs=np.asarray(expression, np.float64),
                   tone=0.0, albedo=np.full((V, 3), albedo, np.float32), specular=np.full(V, specular, np.float32),
                   roughness=np.full(V, roughness, np.float32), model=model)


def olat_basis(fit: PoseFit, crop_size: int, stage: LightStage, spp: int = 4, seed: int = 0,
               model: HeadModel | None = None, albedo: float = 1.0, specular: float = 0.0,
               roughness: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """(B [L, S, S, 3], coverage mask [S, S]) in the crop frame, shadows included, of the fitted
    shape in a uniform material (default: white and purely diffuse)."""
    res = render_res_for(fit, crop_size)
    subj = white_subject(fit.identity, fit.expression, model, albedo=albedo, specular=specular, roughness=roughness)
    cap = render_olat(subj, stage, [fit.camera()], res, spp=spp, seed=seed)
    B = warp_to_crop(cap.olat[0], fit, crop_size)
    mask = warp_to_crop(cap.mask[0][..., None], fit, crop_size)[..., 0]
    return np.maximum(B, 0), np.clip(mask, 0, 1)


def specular_basis(fit: PoseFit, crop_size: int, stage: LightStage, roughness: float, spp: int = 4, seed: int = 0,
                   model: HeadModel | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(G, P) [L, S, S, 3] for one roughness: the specular lobe alone (albedo 0, specular weight 1)
    and the full glossy BSDF of a white head (albedo 1, weight 1). The blend BSDF the heads are
    rendered with is linear in albedo a and weight s: a * ((1 - s) D + s (P - G)) + s G."""
    G = olat_basis(fit, crop_size, stage, spp, seed, model, albedo=0.0, specular=1.0, roughness=roughness)[0]
    P = olat_basis(fit, crop_size, stage, spp, seed, model, albedo=1.0, specular=1.0, roughness=roughness)[0]
    return G, P


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
    mask: np.ndarray          # [S, S] pixels whose albedo was measured (face coverage, eroded)
    basis: np.ndarray         # [L, S, S, 3]
    specular: float = 0.0     # weight of the specular lobe (the blend BSDF's), 0: diffuse only
    roughness: float = 0.5    # its GGX roughness (chosen from the specular bases given)
    highlight: np.ndarray | None = None  # [S, S, 3] specular * sum_l c_l G_l
    residual: float = 0.0     # mean squared linear residual of the light fit (smooth albedo)


def _smooth(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of `values` [S, S, 3] over `mask`, normalised so pixels outside it are filled in."""
    import scipy.ndimage

    full = np.where(mask[..., None], values, 0.0)
    w = scipy.ndimage.gaussian_filter(mask.astype(np.float64), sigma)
    sm = np.stack([scipy.ndimage.gaussian_filter(full[..., k], sigma) for k in range(3)], -1)
    return sm / np.maximum(w, 1e-6)[..., None]


def _alternate(Bm, spec, ym, a0, light0, mask, iterations):
    """Alternate NNLS light (and the specular weight) with per-pixel albedo on the P fitted pixels.
    spec: None or (G, E) [L, P, 3], the lobe and the change of the diffuse part at weight 1."""
    S = mask.shape[0]
    a_light, light = a0.copy(), np.asarray(light0, np.float64).copy()
    s = 0.0 if spec is None else 0.3
    for _ in range(iterations):
        # the light sees a smooth albedo: the prior's level (albedo and light scale trade off exactly)
        # times the low-frequency part of the current per-pixel albedo, so shading is not baked in
        for k in range(3):
            A = Bm[:, :, k].T * a_light[:, k][:, None]  # [P, L]
            if spec is not None:
                A = A + s * (spec[1][:, :, k].T * a_light[:, k][:, None] + spec[0][:, :, k].T)
            light[:, k] = _nnls_prior(A, ym[:, k], light0[:, k], LIGHT_PRIOR)
        shade = np.einsum("lpk,lk->pk", Bm, light)
        hl = np.zeros_like(ym)
        if spec is not None:
            # the specular weight: least squares on what the smooth diffuse part leaves
            lobe, ediff = (np.einsum("lpk,lk->pk", x, light) for x in spec)
            gain = a_light * ediff + lobe
            s = float(np.clip(((ym - a_light * shade) * gain).sum() / max((gain**2).sum(), 1e-12), 0.0, 1.0))
            shade, hl = shade + s * ediff, s * lobe
        residual = float(((ym - a_light * shade - hl) ** 2).mean())
        ref = np.median(shade, axis=0) ** 2
        den = shade**2 + ALBEDO_PRIOR * ref
        # a pixel no fitted light reaches (in a channel whose light came out zero, e.g. a non-face
        # crop) says nothing about its albedo: the prior's
        a = np.clip(np.where(den > 1e-20, ((ym - hl) * shade + ALBEDO_PRIOR * a0 * ref) / np.maximum(den, 1e-20),
                             a0), 0.0, 1.0)
        full = np.zeros((S, S, 3))
        full[mask] = a / np.maximum(np.median(a, axis=0), 1e-6) * np.median(a0, axis=0)
        a_light = _smooth(full, mask, SMOOTH_SIGMA * S)[mask]
    return light, a, s, residual


def fit_light_albedo(crop: np.ndarray, basis: np.ndarray, coverage: np.ndarray, light0: np.ndarray,
                     albedo0: np.ndarray, iterations: int = 4,
                     specular_bases: dict[float, tuple[np.ndarray, np.ndarray]] | None = None,
                     background: np.ndarray | None = None) -> PhotometricFit:
    """Alternate NNLS light and per-pixel albedo on the covered pixels of an aligned crop (uint8).

    specular_bases: {roughness: (G, P)} (`specular_basis`); the image is then modelled with the
    heads' blend BSDF, one specular weight for the face and the roughness whose fit leaves the
    smallest residual. Saturated pixels are kept out of the light fit; their albedo is the
    neighbourhood's, raised where needed so the re-render saturates too.
    background: the flat display colour [3] (0..1) behind the head, when known: the partly covered
    outline pixels are then un-composited (display = coverage * face + (1 - coverage) * background)
    and get their albedo too, instead of the neighbourhood's."""
    import scipy.ndimage

    y = srgb_decode(np.asarray(crop, np.float64) / 255.0)
    cover = scipy.ndimage.binary_erosion(coverage > 0.99, iterations=1)
    clipped = crop >= 254                       # [S, S, 3]
    dark = crop.min(-1) <= 1
    # saturated or black pixels carry no linear information
    mask = cover & ~clipped.any(-1) & ~dark
    Bm = basis[:, mask].astype(np.float64)  # [L, P, 3]
    ym = y[mask]                            # [P, 3]
    a0 = np.broadcast_to(np.asarray(albedo0, np.float64), ym.shape).copy()
    best = None
    for r, GP in (specular_bases or {None: None}).items():
        spec = None if GP is None else (GP[0][:, mask].astype(np.float64),
                                        (GP[1] - GP[0])[:, mask].astype(np.float64) - Bm)
        light, a, s, residual = _alternate(Bm, spec, ym, a0, light0, mask, iterations)
        if best is None or residual < best[-1]:
            best = (r, GP, light, a, s, residual)
    r, GP, light, a, s, residual = best
    shading = np.einsum("lhwk,lk->hwk", basis.astype(np.float64), light)
    highlight = np.zeros_like(shading)
    if GP is not None:
        G, P = (x.astype(np.float64) for x in GP)
        shading = shading + s * np.einsum("lhwk,lk->hwk", P - G - basis, light)
        highlight = s * np.einsum("lhwk,lk->hwk", G, light)
    albedo_map = np.zeros_like(y)
    albedo_map[mask] = a
    albedo_map[~mask] = np.asarray(albedo0, np.float64)
    sat = cover & clipped.any(-1) & ~dark
    if sat.any() and mask.any():
        # a clipped channel only bounds the albedo from below
        near = _smooth(albedo_map, mask, SMOOTH_SIGMA * y.shape[0])[sat]
        direct = (y[sat] - highlight[sat]) / np.maximum(shading[sat], 1e-6)
        albedo_map[sat] = np.clip(np.where(clipped[sat], np.maximum(near, direct), direct), 0.0, 1.0)
        mask = mask | sat
    if background is not None and mask.any():
        alpha = np.clip(coverage, 0.0, 1.0)
        rim = (alpha > 0.2) & ~mask & ~dark & ~clipped.any(-1)
        if rim.any():
            al = alpha[rim][:, None]
            straight = np.clip((crop[rim] / 255.0 - (1 - al) * np.asarray(background)) / al, 0.0, 1.0)
            sh = shading[rim] / al
            direct = np.clip((srgb_decode(straight) - highlight[rim] / al) / np.maximum(sh, 1e-6), 0.0, 1.0)
            near = _smooth(albedo_map, mask, SMOOTH_SIGMA * y.shape[0])[rim]
            # trust the measurement where the pixel is mostly face and lit
            ref = np.median(shading[mask], axis=0)
            wgt = np.clip((al - 0.2) / 0.6, 0, 1) * np.clip(sh / np.maximum(0.2 * ref, 1e-12), 0, 1)
            albedo_map[rim] = wgt * direct + (1 - wgt) * near
            mask = mask | rim
    return PhotometricFit(light=light, albedo_map=albedo_map, shading=shading, mask=mask, basis=basis,
                          specular=s, roughness=0.5 if r is None else float(r), highlight=highlight,
                          residual=residual)
