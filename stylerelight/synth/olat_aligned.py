"""OLAT captures aligned for a generator: every light's image in the generator's FFHQ crop.

Each camera is rendered above the output size (`supersample` x), cropped with the FFHQ quad of
the head's projected 68 landmarks (the quad `align.ffhq_quad` gives the dataset portraits) and
box-filtered down, in linear light, together with the coverage mask. The one display transform
(`lighting.face_display`) then turns any relit image into a portrait. Differences from a
dataset portrait of the same subject, light and view: the downsampling happens in linear light
before the display transform (the dataset downsamples display pixels) and OLAT sampling noise;
`tests/test_olat_aligned.py` measures it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ..align import _homography, ffhq_quad
from ..lighting import LightStage, OLATCapture
from .camera import Camera
from .render import render_olat
from .subject import Subject

YAW_RANGE, PITCH_RANGE = 45.0, 20.0  # the dataset portraits' pose range
# The whole frame for exposure (OLATCapture.frame) is rendered this small: its face exposure lands
# within 2% (mean |log| error 0.022) of the dataset portrait's 192^2 frame (0.029 at 32^2).
FRAME_RESOLUTION = 48


def sample_cameras(seed: int, n: int = 8, yaw_range: float = YAW_RANGE, pitch_range: float = PITCH_RANGE
                   ) -> list[Camera]:
    """n cameras spread over the pose range: yaw stratified into n bins, pitch uniform."""
    rng = np.random.default_rng([seed, 8128])
    yaws = -yaw_range + (np.arange(n) + rng.random(n)) * (2 * yaw_range / n)
    pitches = rng.uniform(-pitch_range, pitch_range, n)
    return [Camera(yaw=float(y), pitch=float(p)) for y, p in zip(yaws, pitches, strict=True)]


def warp_to_crop(images: np.ndarray, quad: np.ndarray, output_size: int, oversample: int = 4) -> np.ndarray:
    """[..., H, W, C] linear images -> [..., S, S, C] in the FFHQ crop of `quad` (raw pixel coords),
    bilinear at oversample x S then box-filtered (a linear-light antialiased resize)."""
    lead, (h, w, c) = images.shape[:-3], images.shape[-3:]
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).reshape(-1, h, w, c)
    x = x.permute(1, 2, 0, 3).reshape(1, h, w, -1).permute(0, 3, 1, 2)  # [1, N*C, H, W]
    t = output_size * oversample
    to_raw = _homography(np.array([[0, 0], [0, t], [t, t], [t, 0]], np.float64), quad + 0.5)
    ys, xs = np.mgrid[0:t, 0:t] + 0.5
    p = np.stack([xs.ravel(), ys.ravel(), np.ones(t * t)])
    q = to_raw @ p
    u, v = q[0] / q[2] - 0.5, q[1] / q[2] - 0.5  # raw pixel index coordinates
    grid = np.stack([(u + 0.5) / w * 2 - 1, (v + 0.5) / h * 2 - 1], -1).reshape(1, t, t, 2)
    out = F.grid_sample(x, torch.from_numpy(grid).float(), mode="bilinear", padding_mode="zeros",
                        align_corners=False)
    out = F.avg_pool2d(out, oversample)  # [1, N*C, S, S]
    out = out[0].reshape(-1, c, output_size, output_size).permute(0, 2, 3, 1)
    return out.reshape(*lead, output_size, output_size, c).numpy()


def render_frame_pixels(subject: Subject, stage: LightStage, cameras: list[Camera],
                        resolution: int = FRAME_RESOLUTION, seed: int = 0) -> tuple[np.ndarray, list[int]]:
    """([C, L, P, 3] linear, counts): every light's values at the fully covered pixels of each
    camera's whole frame (zero-padded to P), for OLATCapture.exposure."""
    cap = render_olat(subject, stage, cameras, resolution, spp=1, seed=seed * 7919 + 1)
    keep = [np.flatnonzero(m.ravel() > 0.99) for m in cap.mask]
    P = max(1, max(len(k) for k in keep))
    frame = np.zeros((len(cameras), stage.num_lights, P, 3), np.float32)
    for ci, k in enumerate(keep):
        frame[ci, :, :len(k)] = cap.olat[ci].reshape(stage.num_lights, -1, 3)[:, k]
    return frame, [len(k) for k in keep]


def render_olat_aligned(subject: Subject, stage: LightStage | None = None, cameras: list[Camera] | None = None,
                        resolution: int = 64, supersample: float = 1.34, spp: int = 1, seed: int = 0,
                        progress=None, frame_resolution: int = FRAME_RESOLUTION) -> OLATCapture:
    """An OLATCapture whose images [C, L, S, S, 3] and masks lie in the generator's crop, with
    the whole frames' pixels for the exposure (frame_resolution 0: without)."""
    stage = stage or LightStage.default()
    cameras = cameras or sample_cameras(seed)
    raw = int(round(resolution * supersample * 1.5))  # the face's crop spans about 2/3 of the raw frame
    olat = np.zeros((len(cameras), stage.num_lights, resolution, resolution, 3), np.float32)
    mask = np.zeros((len(cameras), resolution, resolution), np.float32)
    lm3 = subject.landmarks3d()
    quads, lms = [], []
    for ci, cam in enumerate(cameras):
        cap = render_olat(subject, stage, [cam], raw, spp=spp, seed=seed * 1009 + ci, progress=progress)
        lm = cam.project(lm3, raw)
        quad, _ = ffhq_quad(lm)
        both = np.concatenate([cap.olat[0].transpose(1, 2, 0, 3).reshape(raw, raw, -1), cap.mask[0][..., None]], -1)
        warped = warp_to_crop(both, quad, resolution)
        olat[ci] = warped[..., :-1].reshape(resolution, resolution, stage.num_lights, 3).transpose(2, 0, 1, 3)
        mask[ci] = np.clip(warped[..., -1], 0, 1)
        to_crop = _homography(quad + 0.5, np.array([[0, 0], [0, resolution], [resolution, resolution],
                                                     [resolution, 0]], np.float64))
        lh = np.c_[lm + 0.5, np.ones(68)] @ to_crop.T
        lms.append((lh[:, :2] / lh[:, 2:]).tolist())
        quads.append(quad.tolist())
    cams = [{**cam.to_json(raw), "raw_resolution": raw, "quad": q} for cam, q in zip(cameras, quads, strict=True)]
    meta = {"subject": subject.to_json(), "landmarks": lms, "aligned": "ffhq",
            "units": "unit solid-angle-integrated radiance per light", "spp": spp, "supersample": supersample}
    frame = None
    if frame_resolution:
        frame, meta["frame_pixels"] = render_frame_pixels(subject, stage, cameras, frame_resolution, seed)
    return OLATCapture(olat, mask, cams, stage, meta, frame)
