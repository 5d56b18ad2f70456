"""Silhouette refinement of pose, shape and crop similarity, when the portrait comes with a matte.

Landmarks pin the face but leave the skull and jaw outline loose; light-stage captures and our
rendered portraits have a matte (a known flat background), and the outline is where most of a
re-render's error sat (a one-pixel band of head against background). The refinement moves the
fitted head so that its outline vertices -- the projected vertices on the boundary of the
projected vertex set, re-selected each round -- lie on the matte's boundary (signed distance
field, sampled bilinearly), keeping the landmark term and the shape priors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from ..synth.camera import Camera
from ..synth.head_model import HeadModel
from .pose_fit import _WEIGHTS, EXPR_PRIOR, ID_PRIOR, PoseFit, _project

SILHOUETTE_WEIGHT = 1.0  # relative to the landmark term (both in crop pixels^2)


def background_matte(crop: np.ndarray, tol: int = 2,
                     min_border: float = 0.2) -> tuple[np.ndarray, np.ndarray] | None:
    """(foreground matte [S, S] bool, background colour [3] in 0..1) of a crop on a flat
    background, or None when it has none.

    The background is the most common border colour when at least `min_border` of the border
    pixels match it within `tol` levels and it is neither clipped white nor black (renders and
    light-stage plates; a photo's border is not that flat)."""
    import scipy.ndimage

    c = np.asarray(crop, np.int32)
    border = np.concatenate([c[0], c[-1], c[1:-1, 0], c[1:-1, -1]])
    colours, counts = np.unique(border, axis=0, return_counts=True)
    bg = colours[np.argmax(counts)]
    if (np.abs(border - bg).max(-1) <= tol).mean() < min_border or bg.max() >= 250 or bg.min() <= 5:
        return None
    fg = np.abs(c - bg).max(-1) > tol
    fg = scipy.ndimage.binary_fill_holes(scipy.ndimage.binary_opening(fg, iterations=1))
    lab, n = scipy.ndimage.label(fg)
    if n == 0:
        return None
    sizes = scipy.ndimage.sum(fg, lab, range(1, n + 1))
    fg = lab == (1 + int(np.argmax(sizes)))
    return (fg, bg / 255.0) if 0.05 < fg.mean() < 0.95 else None


def _signed_distance(matte: np.ndarray) -> np.ndarray:
    """Distance to the matte's boundary in pixels, negative inside (boundary between pixel centres)."""
    import scipy.ndimage

    return (scipy.ndimage.distance_transform_edt(~matte) - scipy.ndimage.distance_transform_edt(matte)
            + np.where(matte, 0.5, -0.5))


def _outline(points2d: np.ndarray, size: int, up: int = 2, pad: int = 8) -> np.ndarray:
    """Indices of points on the boundary of the projected point set (rasterised at `up` x, on a
    padded grid so the crop's own edge is not taken for an outline)."""
    import scipy.ndimage

    n = size * up + 2 * pad
    g = np.floor(points2d * up).astype(int) + pad
    inside = (g >= 0).all(1) & (g < n).all(1)
    occ = np.zeros((n, n), bool)
    occ[g[inside, 1], g[inside, 0]] = True
    occ = scipy.ndimage.binary_fill_holes(scipy.ndimage.binary_closing(occ, iterations=2))
    edge = occ & ~scipy.ndimage.binary_erosion(occ, iterations=1)
    keep = np.zeros_like(edge)
    keep[pad + up:n - pad - up, pad + up:n - pad - up] = True  # outline cut by the crop is no outline
    edge &= keep
    sel = np.zeros(len(points2d), bool)
    sel[inside] = edge[g[inside, 1], g[inside, 0]]
    return np.nonzero(sel)[0]


def refine_with_matte(fit: PoseFit, matte: np.ndarray, landmarks: np.ndarray, model: HeadModel | None = None,
                      rounds: int = 4, iterations: int = 30, prior: dict | None = None,
                      prior_sigma: float = 3.0) -> PoseFit:
    """Refit yaw, pitch, identity, expression and the crop similarity to landmarks + matte outline."""
    model = model or HeadModel.default()
    S = matte.shape[0]
    norm = float(S) ** 2
    cam = Camera()
    res = fit.raw_resolution
    sd = torch.as_tensor(_signed_distance(np.asarray(matte, bool)), dtype=torch.float64)[None, None]
    mean = torch.as_tensor(model.mean, dtype=torch.float64)
    idb = torch.as_tensor(model.id_basis, dtype=torch.float64)
    exb = torch.as_tensor(model.expr_basis, dtype=torch.float64)
    lm_idx = torch.as_tensor(model.landmarks, dtype=torch.long)
    target = torch.as_tensor(np.asarray(landmarks, np.float64))
    w = torch.as_tensor(_WEIGHTS)

    yaw = torch.tensor(fit.yaw, dtype=torch.float64, requires_grad=True)
    pitch = torch.tensor(fit.pitch, dtype=torch.float64, requires_grad=True)
    a = torch.tensor(np.asarray(fit.identity, np.float64), requires_grad=True)
    e = torch.tensor(np.asarray(fit.expression, np.float64), requires_grad=True)
    log_s = torch.tensor(math.log(fit.scale), dtype=torch.float64, requires_grad=True)
    ang = torch.tensor(math.radians(fit.roll), dtype=torch.float64, requires_grad=True)
    t = torch.tensor(np.asarray(fit.shift, np.float64), requires_grad=True)
    pose0 = prior or {"yaw": fit.yaw, "pitch": fit.pitch}

    def to_crop(idx: torch.Tensor | None):
        """Crop positions of the vertices `idx` (None: all), built from those vertices' rows only."""
        sel = slice(None) if idx is None else idx
        v = mean[sel] + torch.tensordot(a, idb[:, sel], 1) + torch.tensordot(e, exb[:, sel], 1)
        raw = _project(v, yaw, pitch, cam, res)
        c, s = torch.cos(ang), torch.sin(ang)
        rot = torch.stack([torch.stack([c, -s]), torch.stack([s, c])])
        return torch.exp(log_s) * raw @ rot.T + t

    def objective(outline: torch.Tensor):
        lm = to_crop(lm_idx)
        data = (w * (lm - target).square().sum(1)).sum() / w.sum() / norm
        p = to_crop(outline)
        grid = (p / S * 2 - 1)[None, None]  # pixel centres at +0.5 (align_corners=False)
        d = F.grid_sample(sd, grid, mode="bilinear", padding_mode="border", align_corners=False)[0, 0, 0]
        sil = d.square().mean() / norm
        reg = ID_PRIOR * a.square().sum() + EXPR_PRIOR * e.square().sum()
        reg = reg + ((yaw - pose0["yaw"]).square() + (pitch - pose0["pitch"]).square()) / prior_sigma**2 / norm
        return data + SILHOUETTE_WEIGHT * sil + reg

    for _ in range(rounds):
        with torch.no_grad():
            outline = torch.as_tensor(_outline(to_crop(None).numpy(), S))
        if len(outline) == 0:
            break
        opt = torch.optim.LBFGS([yaw, pitch, a, e, log_s, ang, t], lr=1, max_iter=iterations,
                                line_search_fn="strong_wolfe")

        def closure(outline=outline, opt=opt):
            opt.zero_grad()
            loss = objective(outline)
            loss.backward()
            return loss

        opt.step(closure)
    with torch.no_grad():
        rmse = float((to_crop(lm_idx) - target).square().sum(1).mean().sqrt())
    yaw, pitch, ang, log_s = (float(x.detach()) for x in (yaw, pitch, ang, log_s))
    return PoseFit(yaw=(yaw + 180) % 360 - 180, pitch=pitch, roll=math.degrees(ang),
                   scale=math.exp(log_s), shift=t.detach().numpy(), raw_resolution=res,
                   identity=a.detach().numpy(), expression=e.detach().numpy(), rmse=rmse)
