"""Coarse stage of the reconstruction: head pose and shape from 68 landmarks of an aligned crop.

The crop is modelled as the image of a `synth.Camera(yaw, pitch)` (the renderer's own perspective
camera) followed by a 2D similarity (scale, in-plane rotation = roll, shift), which is what an
FFHQ-style alignment does to a photo. For given yaw, pitch and head-model coefficients the best
similarity has a closed form (weighted 2D Procrustes), so the optimiser only searches pose and
shape: a few hundred L-BFGS iterations on 68 points, from three starting yaws.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..synth.camera import TARGET, Camera
from ..synth.head_model import HeadModel

# jaw-line landmarks follow the silhouette in photos, not fixed vertices: trust them less
_WEIGHTS = np.ones(68)
_WEIGHTS[0:17] = 0.3
ID_PRIOR, EXPR_PRIOR = 2e-6, 2e-6  # per unit coefficient^2, against the mean squared residual over (crop size)^2


@dataclass
class PoseFit:
    yaw: float
    pitch: float
    roll: float               # degrees, in-plane rotation of the crop relative to the camera image
    scale: float              # crop pixels per raw-camera pixel at `raw_resolution`
    shift: np.ndarray         # [2] crop pixels
    raw_resolution: int
    identity: np.ndarray      # [K]
    expression: np.ndarray    # [E]
    rmse: float               # landmark residual, crop pixels

    def camera(self) -> Camera:
        return Camera(yaw=self.yaw, pitch=self.pitch)

    def project(self, points: np.ndarray) -> np.ndarray:
        """World points [N, 3] -> crop pixel coordinates [N, 2]."""
        raw = self.camera().project(points, self.raw_resolution)
        c, s = math.cos(math.radians(self.roll)), math.sin(math.radians(self.roll))
        rot = np.array([[c, -s], [s, c]])
        return self.scale * raw @ rot.T + self.shift


def camera_origin(yaw: torch.Tensor, pitch: torch.Tensor, cam: Camera) -> torch.Tensor:
    """Camera.origin in torch: [..., 3] for yaw, pitch [...] in degrees (0-d: one camera)."""
    y, p = torch.deg2rad(yaw), torch.deg2rad(pitch)
    d = torch.stack([torch.sin(y) * torch.cos(p), torch.sin(p), torch.cos(y) * torch.cos(p)], -1)
    return torch.as_tensor(TARGET, dtype=d.dtype) + cam.distance * d


def _project(points: torch.Tensor, yaw: torch.Tensor, pitch: torch.Tensor, cam: Camera, res: int) -> torch.Tensor:
    """Camera.project in torch, differentiable in yaw and pitch (degrees): points [..., K, 3] seen by
    the cameras yaw, pitch [...] (0-d: one camera) -> [..., K, 2]."""
    tgt = torch.as_tensor(TARGET, dtype=points.dtype)
    o = camera_origin(yaw.to(points.dtype), pitch.to(points.dtype), cam)
    f = (tgt - o) / torch.linalg.norm(tgt - o, dim=-1, keepdim=True)
    r = torch.linalg.cross(f, torch.tensor([0.0, 1.0, 0.0], dtype=points.dtype).expand_as(f))
    r = r / torch.linalg.norm(r, dim=-1, keepdim=True)
    u = torch.linalg.cross(r, f)
    pc = points - o[..., None, :]
    xc, yc, zc = (pc @ r[..., :, None])[..., 0], (pc @ u[..., :, None])[..., 0], (pc @ -f[..., :, None])[..., 0]
    fpx = 0.5 * res / math.tan(math.radians(cam.fov) / 2)
    return torch.stack([fpx * xc / -zc + res / 2, -fpx * yc / -zc + res / 2], -1)


def _procrustes(src: torch.Tensor, dst: torch.Tensor, w: torch.Tensor):
    """Weighted similarity dst ~ s R src + t in closed form; returns (fitted dst, s, angle, t)."""
    ws = w / w.sum()
    ms, md = (ws[:, None] * src).sum(0), (ws[:, None] * dst).sum(0)
    a, b = src - ms, dst - md
    num_re = (ws * (a[:, 0] * b[:, 0] + a[:, 1] * b[:, 1])).sum()
    num_im = (ws * (a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0])).sum()
    den = (ws * a.square().sum(1)).sum()
    sc, ss = num_re / den, num_im / den  # s cos, s sin
    fit = torch.stack([sc * a[:, 0] - ss * a[:, 1], ss * a[:, 0] + sc * a[:, 1]], -1) + md
    s = torch.sqrt(sc**2 + ss**2)
    ang = torch.atan2(ss, sc)
    t = md - torch.stack([sc * ms[0] - ss * ms[1], ss * ms[0] + sc * ms[1]])
    return fit, s, ang, t


def fit_pose_shape(landmarks: np.ndarray, crop_size: int, model: HeadModel | None = None,
                   raw_resolution: int = 256, iterations: int = 150,
                   yaw_starts=(-30.0, 0.0, 30.0), prior: dict | None = None, prior_sigma: float = 3.0) -> PoseFit:
    """Fit yaw, pitch, roll, identity and expression to 68 crop landmarks [68, 2] (pixels).

    prior: {"yaw", "pitch", "identity", "expression"} from the CNN: the fit starts there and
    yaw/pitch are pulled towards it with a Gaussian of `prior_sigma` degrees (the CNN reads pose
    off the whole face; the landmarks alone leave pose and head depth partly ambiguous)."""
    model = model or HeadModel.default()
    lm_idx = torch.as_tensor(model.landmarks, dtype=torch.long)
    mean = torch.as_tensor(model.mean, dtype=torch.float64)[lm_idx]
    idb = torch.as_tensor(model.id_basis, dtype=torch.float64)[:, lm_idx]
    exb = torch.as_tensor(model.expr_basis, dtype=torch.float64)[:, lm_idx]
    target = torch.as_tensor(np.asarray(landmarks, np.float64))
    w = torch.as_tensor(_WEIGHTS)
    cam = Camera()
    norm = float(crop_size) ** 2

    def points(a, e):
        return mean + torch.tensordot(a, idb, 1) + torch.tensordot(e, exb, 1)

    def objective(yaw, pitch, a, e):
        fit, *_ = _procrustes(_project(points(a, e), yaw, pitch, cam, raw_resolution), target, w)
        data = (w * (fit - target).square().sum(1)).sum() / w.sum() / norm
        reg = ID_PRIOR * a.square().sum() + EXPR_PRIOR * e.square().sum()
        if prior is not None:  # a pose prior worth about one landmark pixel per sigma
            pose = (yaw - prior["yaw"]).square() + (pitch - prior["pitch"]).square()
            reg = reg + pose / prior_sigma**2 / norm
        return data + reg

    def fit_from(y0: float):
        p0 = prior or {}
        yaw = torch.tensor(y0, dtype=torch.float64, requires_grad=True)
        pitch = torch.tensor(float(p0.get("pitch", 0.0)), dtype=torch.float64, requires_grad=True)
        a = torch.tensor(np.asarray(p0.get("identity", np.zeros(idb.shape[0])), np.float64), requires_grad=True)
        e = torch.tensor(np.asarray(p0.get("expression", np.zeros(exb.shape[0])), np.float64), requires_grad=True)
        opt = torch.optim.LBFGS([yaw, pitch, a, e], lr=1, max_iter=iterations, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = objective(yaw, pitch, a, e)
            loss.backward()
            return loss

        opt.step(closure)
        with torch.no_grad():
            return float(objective(yaw, pitch, a, e)), yaw.detach(), pitch.detach(), a.detach(), e.detach()

    starts = (float(prior["yaw"]),) if prior is not None else yaw_starts
    best = min((fit_from(y0) for y0 in starts), key=lambda r: r[0])
    _, yaw, pitch, a, e = best
    with torch.no_grad():
        fit, s, ang, t = _procrustes(_project(points(a, e), yaw, pitch, cam, raw_resolution), target, w)
        rmse = float((fit - target).square().sum(1).mean().sqrt())
    yaw_deg = (float(yaw) + 180) % 360 - 180
    return PoseFit(yaw=yaw_deg, pitch=float(pitch), roll=math.degrees(float(ang)), scale=float(s),
                   shift=t.numpy(), raw_resolution=raw_resolution, identity=a.numpy(), expression=e.numpy(),
                   rmse=rmse)


def pose_from_estimate(yaw: float, pitch: float, identity, expression, landmarks: np.ndarray, crop_size: int,
                       model: HeadModel | None = None, raw_resolution: int = 256) -> PoseFit:
    """The fast path's PoseFit: the CNN's pose and shape as they are, with only the crop
    similarity solved (closed form) against its landmarks; no iterations."""
    model = model or HeadModel.default()
    pts = torch.as_tensor(model.vertices(identity, expression)[model.landmarks])
    target = torch.as_tensor(np.asarray(landmarks, np.float64))
    proj = _project(pts, torch.tensor(float(yaw), dtype=torch.float64), torch.tensor(float(pitch), dtype=torch.float64),
                    Camera(), raw_resolution)
    fit, s, ang, t = _procrustes(proj, target, torch.as_tensor(_WEIGHTS))
    rmse = float((fit - target).square().sum(1).mean().sqrt())
    return PoseFit(yaw=float(yaw), pitch=float(pitch), roll=math.degrees(float(ang)), scale=float(s),
                   shift=t.numpy(), raw_resolution=raw_resolution, identity=np.asarray(identity, np.float64),
                   expression=np.asarray(expression, np.float64), rmse=rmse)
