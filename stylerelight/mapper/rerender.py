"""An edit without learning: the W+ change between two ray-traced re-renders of the reconstruction.

The full reconstruction of the source (shape, pose, light, diffuse and specular albedo) is
rendered by Mitsuba twice -- under its own estimated light and view, and under the target light
and view -- and both renders are inverted like a photo (encoder + K L-BFGS steps). Their W+
difference is the edit's change, added to the photo's own code:

    w' = w + inv(render(rec, target)) - inv(render(rec, source estimate))

Why: the change is measured on images of the same reconstructed head, so the reconstruction's
errors (albedo, shape) appear on both sides and largely cancel, while the photo's own code keeps
what the head model cannot show. Keeping the light and the view renders the same image twice
(same seed), so the change is exactly zero. It costs one full reconstruction per photo and a
render and an inversion per edit (seconds, not the mapper's milliseconds); measured against the
mapper in benchmarks/eval_edit.py and the mapper's model card.

With a view grid (`grid=(yaw step, pitch step)`, `Editor.turn_grid`), a turn between grid views is
read off the changes at the four grid views around it, bilinearly, each computed once and kept:
under one light the change varies smoothly with the view, so a sweep or a view slider pays a render
and an inversion per grid view, not per edit (the mapper's model card, "The turn grid": 80-90% of the
guided edit's gain over the mapper's on turns halfway between grid views).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..lighting import LightStage
from ..recon.reconstruction import Reconstruction, light_to_envmap
from ..synth import Camera
from .conditioning import normalise_light

RENDER_SPP = 16  # samples per pixel of both re-renders (64 measured the same on validation subjects)
RENDER_SEED = 0  # one seed for both: their Monte Carlo noise is the same and cancels in the change
# Landmark residual (share of the crop's width) above which the fit is not of a face. Faces fit
# within 0.07 (48 validation renders, 'hard' lighting included: median 0.018); the generator's image
# of a code of no face (tests/data/not_a_face_64.png) fit at 0.13, with a pose that put the camera
# inside the head: its re-renders were black. Not a face detector: the landmark network gives most
# images (a cat, a colour blob) a face-like fit within 0.02; this catches fits that went wrong.
MAX_FIT_RESIDUAL = 0.1
KEEP = 256  # changes kept per RerenderChange: a light turned through 360 deg on a 15-deg grid is 24 of them


class NoFaceError(ValueError):
    """The head model could not fit the crop as a face (one line for the user; no face detector)."""


@dataclass
class SourceRender:
    """What one photo needs once: its reconstruction and the code of its re-render."""
    rec: Reconstruction
    ws: torch.Tensor  # [1, num_ws, w_dim]: the inverted re-render under the source's estimated light and view
    enc: torch.Tensor | None = None  # the encoder's code of that re-render (a warm start's reference)
    image: np.ndarray | None = None  # that re-render (uint8)


class RerenderChange:
    """change(source, light, yaw, pitch) -> the W+ change [1, num_ws, w_dim] for one edit."""

    def __init__(self, G, encoder, stage: LightStage, steps: int = 20, spp: int = RENDER_SPP,
                 warm: bool = False, source_steps: int | None = None, grid: tuple[float, float] | None = None):
        """warm: each target re-render's inversion starts at the source re-render's code moved by the
        encoder's change (src.ws + enc(target) - enc(source)) instead of at the encoder's code, so its
        `steps` refine from what the source's inversion already found; source_steps: the source
        re-render's refinement (once per photo; default `steps`); grid: (yaw, pitch) spacing in
        degrees of the views whose changes turns between them are interpolated from (None: exact)."""
        self.G, self.encoder, self.stage, self.steps, self.spp = G, encoder, stage, steps, spp
        self.warm, self.source_steps, self.grid = warm, source_steps, check_grid(grid)
        self._recent: dict = {}  # the last changes (a grid's views among them): editors sharing this object share them

    def _invert(self, img: np.ndarray, steps: int,
                start: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(refined code, encoder's code); start: added to the encoder's code as the refinement's start."""
        from ..invert import invert

        dev = next(self.G.parameters()).device
        x = torch.from_numpy(img.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None].to(dev)
        with torch.no_grad():
            enc = self.encoder(x)
        ws = enc if start is None else enc + start
        if steps:
            ws = invert(self.G, x, steps=steps, init=ws, progress=False)
        return ws.detach(), enc

    def _render(self, rec: Reconstruction, light: np.ndarray | torch.Tensor, yaw: float, pitch: float) -> np.ndarray:
        env = light_to_envmap(np.asarray(normalise_light(light), np.float64), self.stage)
        y, p, _ = rec.pose
        return rec.render(env, Camera(yaw=y + yaw, pitch=p + pitch), resolution=self.G.img_resolution,
                          spp=self.spp, seed=RENDER_SEED)

    def source_light(self, rec: Reconstruction) -> torch.Tensor:
        """The scale-free light the source re-render uses ("keep the light" means this one)."""
        return normalise_light(torch.as_tensor(np.asarray(rec.light, np.float32)))

    def prepare(self, crop: np.ndarray, rec: Reconstruction | None = None) -> SourceRender:
        """uint8 aligned crop -> its full reconstruction and re-rendered code (seconds: once per photo).
        rec: the crop's reconstruction when already made (another change's), reused."""
        from ..recon import reconstruct

        if rec is None:
            rec = reconstruct(crop, aligned=True, crop_size=self.G.img_resolution)
        if not rec.fit.rmse <= MAX_FIT_RESIDUAL * rec.crop_size:
            raise NoFaceError(f"the head model does not fit this crop as a face (landmark residual "
                              f"{rec.fit.rmse:.1f} px, faces fit within {MAX_FIT_RESIDUAL * rec.crop_size:.1f}): "
                              "nothing to re-render; use --method mapper")
        img = self._render(rec, self.source_light(rec), 0.0, 0.0)
        steps = self.steps if self.source_steps is None else self.source_steps
        return SourceRender(rec, *self._invert(img, steps), image=img)

    def change(self, src: SourceRender, light, yaw: float, pitch: float) -> torch.Tensor:
        """light: [L, 3] target coefficients (any scale; only the shape matters, as for the mapper).
        The same request again (e.g. the fused and the rerender edit of one photo) is not recomputed."""
        c = torch.as_tensor(light).detach().cpu().float().contiguous()
        if self.grid is not None:  # the grid views around the turn, bilinearly (one, weight 1, on a grid view)
            return sum(w * self._exact(src, light, c, y, p) for (y, p), w in grid_corners(float(yaw), float(pitch),
                                                                                        self.grid))
        return self._exact(src, light, c, float(yaw), float(pitch))

    def _key(self, src: SourceRender, c: torch.Tensor, yaw: float, pitch: float) -> tuple:
        """The cache's key of the change at one view (c: the light as change() holds it)."""
        return id(src), c.numpy().tobytes(), float(yaw), float(pitch), self.steps, self.spp, self.warm

    def hold(self, src: SourceRender, light, yaw: float, pitch: float, change: torch.Tensor) -> None:
        """Hold `change` as the change at one view, as if computed (benchmarks substitute their own)."""
        self._remember(self._key(src, torch.as_tensor(light).detach().cpu().float().contiguous(), yaw, pitch),
                       src, change)

    def _remember(self, key: tuple, src: SourceRender, change: torch.Tensor) -> None:
        if len(self._recent) >= KEEP:
            self._recent.pop(next(iter(self._recent)))
        self._recent[key] = (src, change)

    def _exact(self, src: SourceRender, light, c: torch.Tensor, yaw: float, pitch: float) -> torch.Tensor:
        """The change at one view, rendered and inverted (c: the light as the cache's key)."""
        key = self._key(src, c, yaw, pitch)
        hit = self._recent.get(key)
        if hit is not None and hit[0] is src:
            return hit[1]
        img = self._render(src.rec, light, yaw, pitch)
        if self.warm and src.image is not None and np.array_equal(img, src.image):
            out = torch.zeros_like(src.ws)  # the same image: no change (a refinement would move on)
        else:
            out = self._invert(img, self.steps, src.ws - src.enc if self.warm else None)[0] - src.ws
        self._remember(key, src, out)
        return out


def check_grid(grid) -> tuple[float, float] | None:
    """(yaw step, pitch step) in degrees, both > 0, or None."""
    if grid is None:
        return None
    try:
        g = tuple(float(v) for v in grid)
    except (TypeError, ValueError):
        g = ()
    if len(g) != 2 or not all(v > 0 for v in g):
        raise ValueError(f"a turn grid is two positive steps in degrees (yaw, pitch), got {grid}")
    return g


def check_light_grid(step) -> float | None:
    """A light-rotation grid step in degrees (> 0, at most 180), or None."""
    if step is None:
        return None
    try:
        s = float(step)
    except (TypeError, ValueError):
        s = float("nan")
    if not 0 < s <= 180:
        raise ValueError(f"a light grid is one step in degrees of the light's rotation, in (0, 180], got {step}")
    return s


def rotation_corners(rotate: float, step: float) -> list[tuple[float, float]]:
    """The grid rotations (degrees in [0, 360)) around `rotate` with their linear weights; one, weight 1,
    on a grid rotation."""
    return [(y % 360.0, w) for (y, _), w in grid_corners(float(rotate), 0.0, (step, 1.0))]


def grid_corners(yaw: float, pitch: float, grid: tuple[float, float]) -> list[tuple[tuple[float, float], float]]:
    """The grid views around (yaw, pitch) with their bilinear weights (zero weights left out: one
    corner, weight 1, on a grid view)."""
    axes = []
    for v, step in ((yaw, grid[0]), (pitch, grid[1])):
        lo = math.floor(v / step) * step
        w = round((v - lo) / step, 9)  # a sweep's float steps land on grid views, not a hair beside them
        if w == 1.0:
            lo, w = lo + step, 0.0
        axes.append([(lo, 1.0 - w)] + ([(lo + step, w)] if w > 0 else []))
    return [((y, p), wy * wp) for y, wy in axes[0] for p, wp in axes[1]]
