"""What the mapper is told about an edit, as fixed-size vectors.

* light: [L, 3] light-stage coefficients, scale-free (portraits are shown at an exposure set on
  the face, so only the light's shape matters): divided by their mean luminance, log-scaled,
  standardised by statistics of the training light distribution stored with the mapper.
* camera: the source view as the reconstruction estimates it and the requested change of view,
  plus PhotoApp's same-view flag.
* geometry (optional): from the reconstruction of the source -- its estimated pose and light, and
  the shading of its estimated geometry under the target and the source light, with self-shadows
  (a per-vertex visibility table of the head model ray-traced once with Mitsuba), pooled over a
  4 x 4 grid of face regions. The log ratio target/source is the relighting's shading change.
* shading map (optional, `shading_map` S > 0): the same per-vertex shading seen from the *target*
  view: the probe vertices of the estimated shape projected by the target camera into the FFHQ crop
  of that view (the quad of the shape's own projected landmarks, as the dataset's portraits are
  cropped), front-facing ones averaged on an S x S grid: the log target shading, its log ratio to
  the source light's, and the coverage of the target and of the source view. Where the 4 x 4 regions
  are fixed on the face, the map says where in the edited image the shading and the face land.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from ..recon.pose_fit import _project, camera_origin
from ..recon.reconstruction import _vertex_normals
from ..synth.camera import Camera
from ..synth.mitsuba_setup import one_at_a_time

LUMA = np.array([0.2126, 0.7152, 0.0722])
LIGHT_EPS = 0.02
YAW_SCALE, PITCH_SCALE = 45.0, 20.0
GRID = 4  # face regions: GRID x GRID
MAP_CHANNELS = 8  # shading map: log target shading (3), log ratio to the source's (3), two coverages


def normalise_light(coeffs) -> torch.Tensor:
    """[..., L, 3] -> same shape, mean luminance over lights = 1 (scale-free)."""
    c = torch.as_tensor(np.asarray(coeffs, np.float32) if not isinstance(coeffs, torch.Tensor) else coeffs).float()
    c = c.clamp_min(0)
    lum = (c * torch.as_tensor(LUMA, dtype=c.dtype, device=c.device)).sum(-1).mean(-1, keepdim=True)[..., None]
    return c / lum.clamp_min(1e-12)


def light_concentration(coeffs, top: int = 10) -> torch.Tensor:
    """[..., L, 3] -> [...]: the share of the luminance in the `top` brightest lights: near 1 for a
    hard, directional light (sharp shadows), low for a diffuse one. The mapper trails the
    re-render on concentrated target lights (the model card)."""
    lum = (normalise_light(coeffs) * torch.as_tensor(LUMA, dtype=torch.float32)).sum(-1)
    return lum.topk(top, -1).values.sum(-1) / lum.sum(-1).clamp_min(1e-12)


def light_code(coeffs: torch.Tensor) -> torch.Tensor:
    """[N, L, 3] -> [N, 3L]: log of the scale-free coefficients (standardised later)."""
    return torch.log(LIGHT_EPS + normalise_light(coeffs)).flatten(1)


@dataclass
class Edit:
    """One batch of edits: the target light, the source view estimate and the view change."""
    light: torch.Tensor          # [N, L, 3] target light (world frame)
    src_pose: torch.Tensor       # [N, 2] (yaw, pitch) of the source as the reconstruction estimates it
    delta_pose: torch.Tensor     # [N, 2] requested change of view (degrees)
    same_view: torch.Tensor      # [N] 1 when delta_pose is zero
    src_light: torch.Tensor | None = None    # [N, L, 3] the reconstruction's light estimate
    identity: torch.Tensor | None = None     # [N, I] the reconstruction's shape
    expression: torch.Tensor | None = None   # [N, X]

    def at_source_view(self) -> Edit:
        """The same edit without the view change (what a view move is measured from)."""
        return Edit(**{**self.__dict__, "delta_pose": torch.zeros_like(self.delta_pose),
                       "same_view": torch.ones_like(self.same_view)})

    def to(self, device) -> Edit:
        return Edit(**{k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in self.__dict__.items()})


class ShadingProbe(torch.nn.Module):
    """Shading of the head model's face under a light, with self-shadows, on GRID x GRID regions.

    Visibility is ray-traced once for the mean head (a subject's shape moves the normals, which
    are recomputed from its coefficients; the mean head's shadows stand in for its own)."""

    def __init__(self, directions: np.ndarray):
        super().__init__()
        t = _probe_tables(tuple(map(tuple, np.round(np.asarray(directions, np.float64), 6))))
        for k in ("visibility", "pool", "mean", "id_basis", "expr_basis", "lm_mean", "lm_id", "lm_expr"):
            self.register_buffer(k, torch.from_numpy(t[k]).float())
        self.register_buffer("directions", torch.from_numpy(np.asarray(directions, np.float32)))
        self.register_buffer("faces", torch.from_numpy(t["faces"]).long())
        self.register_buffer("probe_of_vertex", torch.from_numpy(t["probe_of_vertex"]).long())
        self.register_buffer("probe_index", torch.from_numpy(t["probe_index"]).long())
        self.vertex_index = t["sel"]  # the head model's vertex index of each probe vertex

    def _shape(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[N, V, 3] the vertices the probe uses, of each subject's shape."""
        return (self.mean + torch.einsum("ni,ivc->nvc", identity.float(), self.id_basis)
                + torch.einsum("nx,xvc->nvc", expression.float(), self.expr_basis))

    def points(self, identity: torch.Tensor, expression: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """[N, P, 3] probe vertices and [N, 68, 3] landmarks of each subject's shape."""
        lm = (self.lm_mean + torch.einsum("ni,ivc->nvc", identity.float(), self.lm_id)
              + torch.einsum("nx,xvc->nvc", expression.float(), self.lm_expr))
        return self._shape(identity, expression)[:, self.probe_index], lm

    def normals(self, identity: torch.Tensor, expression: torch.Tensor) -> torch.Tensor:
        """[N, P, 3] normals at the probe vertices of each subject's shape (coefficients [N, I], [N, X])."""
        v = self._shape(identity, expression)
        f = self.faces
        fn = torch.cross(v[:, f[:, 1]] - v[:, f[:, 0]], v[:, f[:, 2]] - v[:, f[:, 0]], dim=-1)
        n = v.new_zeros(len(v), len(self.visibility) + 1, 3)
        for k in range(3):  # each face adds its normal to its probe corners (slot P collects the rest)
            n.index_add_(1, self.probe_of_vertex[f[:, k]], fn)
        n = n[:, :-1]
        return n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)

    def vertex_shading(self, normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """normals [N, P, 3], light [N, L, 3] (scale-free) -> shading per probe vertex [N, P, 3]."""
        cos = (normals @ self.directions.T).clamp_min(0) * self.visibility  # [N, P, L]
        return cos @ light

    def forward(self, normals: torch.Tensor, light: torch.Tensor) -> torch.Tensor:
        """normals [N, P, 3], light [N, L, 3] (scale-free) -> shading [N, R, 3]."""
        return self.pool @ self.vertex_shading(normals, light)


def crop_coordinates(points: torch.Tensor, landmarks: torch.Tensor, yaw: torch.Tensor,
                     pitch: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Where head points land in the FFHQ crop of a view: points [N, P, 3], the shape's landmarks
    [N, 68, 3], camera (yaw, pitch) [N] in degrees (synth.Camera, its distance and field of view) ->
    ([N, P, 2] crop coordinates in [0, 1] inside the crop, [N, 3] camera origins). The crop is
    `align.ffhq_quad` of the projected landmarks, as the dataset's portraits are cropped (its batched
    torch twin here; the test holds them equal)."""
    cam = Camera()
    yaw, pitch = yaw.to(points.dtype), pitch.to(points.dtype)
    lm = _project(landmarks, yaw, pitch, cam, 1)
    eye_l, eye_r = lm[:, 36:42].mean(1), lm[:, 42:48].mean(1)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    eye_to_mouth = (lm[:, 48] + lm[:, 54]) / 2 - eye_avg
    x = eye_to_eye - torch.stack([-eye_to_mouth[:, 1], eye_to_mouth[:, 0]], -1)
    x = torch.nn.functional.normalize(x, dim=-1) * torch.maximum(eye_to_eye.norm(dim=-1) * 2,
                                                                  eye_to_mouth.norm(dim=-1) * 1.8)[:, None]
    yv = torch.stack([-x[:, 1], x[:, 0]], -1)
    c = eye_avg + 0.1 * eye_to_mouth
    q = _project(points, yaw, pitch, cam, 1) - c[:, None]
    uv = torch.stack([(q * x[:, None]).sum(-1) / x.square().sum(-1)[:, None],
                      (q * yv[:, None]).sum(-1) / yv.square().sum(-1)[:, None]], -1)
    return (uv + 1) / 2, camera_origin(yaw, pitch, cam)


def splat(uv: torch.Tensor, values: torch.Tensor, keep: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean of values [N, P, C] of the kept points (keep [N, P]) on a size x size grid of the crop
    (uv [N, P, 2] in [0, 1]) -> ([N, C, size, size] means, 0 where none; [N, size, size] coverage)."""
    N, P, C = values.shape
    cell = (uv * size).floor().long()
    keep = keep & (cell >= 0).all(-1) & (cell < size).all(-1)
    idx = (cell[..., 1].clamp(0, size - 1) * size + cell[..., 0].clamp(0, size - 1)
           + size * size * torch.arange(N, device=uv.device)[:, None])
    k = keep.flatten().to(values.dtype)
    total = values.new_zeros(N * size * size, C).index_add_(0, idx.flatten(), values.flatten(0, 1) * k[:, None])
    count = values.new_zeros(N * size * size).index_add_(0, idx.flatten(), k)
    mean = total / count.clamp_min(1)[:, None]
    return (mean.reshape(N, size, size, C).permute(0, 3, 1, 2),
            (count > 0).to(values.dtype).reshape(N, size, size))


@lru_cache(maxsize=4)
@one_at_a_time
def _probe_tables(directions: tuple) -> dict:
    """Probe vertices (the front of the face), their regions, the mesh pieces that give their
    normals, and their visibility [P, L] of each light on the mean head."""
    from ..synth.head_model import HeadModel
    from ..synth.render import _mi, head_mesh
    from ..synth.subject import sample_subject

    d = np.asarray(directions, np.float64)
    m = HeadModel.default()
    v = m.mean.astype(np.float64)
    lm = v[m.landmarks]
    lo, hi = lm[:, :2].min(0), lm[:, :2].max(0)
    pad = 0.1 * (hi - lo)
    lo, hi = lo - pad, hi + pad
    n = _vertex_normals(v, m.triangles)
    front = (v[:, 2] > 0) & (n[:, 2] > 0.1) & (v[:, :2] >= lo).all(1) & (v[:, :2] <= hi).all(1)
    sel = np.flatnonzero(front)
    cell = np.clip(((v[sel, :2] - lo) / (hi - lo) * GRID).astype(int), 0, GRID - 1)
    region = cell[:, 0] + GRID * (GRID - 1 - cell[:, 1])  # row-major from the top
    pool = np.zeros((GRID * GRID, len(sel)), np.float32)
    pool[region, np.arange(len(sel))] = 1
    pool /= np.maximum(pool.sum(1, keepdims=True), 1)
    # the faces touching a probe vertex, re-indexed onto the vertices they use
    faces = m.triangles[np.isin(m.triangles, sel).any(1)]
    used = np.unique(faces)
    remap = np.full(len(v), -1)
    remap[used] = np.arange(len(used))
    probe_of_vertex = np.full(len(used), len(sel))
    probe_of_vertex[remap[sel]] = np.arange(len(sel))
    # visibility: shadow rays from each probe vertex (nudged along its normal) to each light
    mi, _ = _mi()
    subj = sample_subject(0, m, expression=False)
    subj.id_coeffs[:] = 0
    scene = mi.load_dict({"type": "scene", "head": head_mesh(subj)})
    P, L = len(sel), len(d)
    o = np.repeat(v[sel] + 2e-3 * n[sel], L, 0).astype(np.float32)
    w = np.tile(d, (P, 1)).astype(np.float32)
    ray = mi.Ray3f(mi.Point3f(*(mi.Float(o[:, k]) for k in range(3))),
                   mi.Vector3f(*(mi.Float(w[:, k]) for k in range(3))))
    hit = np.array(scene.ray_test(ray)).reshape(P, L)
    lmi = m.landmarks
    return {"visibility": (~hit).astype(np.float32), "pool": pool, "mean": v[used].astype(np.float32),
            "probe_index": remap[sel], "lm_mean": v[lmi].astype(np.float32),
            "lm_id": m.id_basis[:, lmi].astype(np.float32), "lm_expr": m.expr_basis[:, lmi].astype(np.float32),
            "id_basis": m.id_basis[:, used].astype(np.float32), "expr_basis": m.expr_basis[:, used].astype(np.float32),
            "faces": remap[faces], "probe_of_vertex": probe_of_vertex, "sel": sel}


class Conditioner(torch.nn.Module):
    """Edit -> condition vector [N, D]; statistics of the light code are buffers (saved with the mapper)."""

    def __init__(self, num_lights: int, directions: np.ndarray | None = None, geometry: bool = True,
                 shading_map: int = 0):
        super().__init__()
        if shading_map and not geometry:
            raise ValueError("a shading map is geometry conditioning: set geometry as well")
        self.num_lights, self.geometry, self.shading_map = num_lights, geometry, int(shading_map)
        self.register_buffer("light_mean", torch.zeros(3 * num_lights))
        self.register_buffer("light_std", torch.ones(3 * num_lights))
        self.probe = ShadingProbe(directions) if geometry else None

    @property
    def dim(self) -> int:
        d = 3 * self.num_lights + 5
        if self.geometry:
            d += 3 * self.num_lights + 2 * 3 * GRID * GRID
        return d + MAP_CHANNELS * self.shading_map**2

    def set_light_stats(self, codes: torch.Tensor) -> None:
        self.light_mean.copy_(codes.mean(0))
        self.light_std.copy_(codes.std(0).clamp_min(0.05))

    def _light(self, coeffs: torch.Tensor) -> torch.Tensor:
        return (light_code(coeffs) - self.light_mean) / self.light_std

    def forward(self, e: Edit, normals: torch.Tensor | None = None) -> torch.Tensor:
        pose = torch.stack([e.src_pose[:, 0] / YAW_SCALE, e.src_pose[:, 1] / PITCH_SCALE,
                            e.delta_pose[:, 0] / YAW_SCALE, e.delta_pose[:, 1] / PITCH_SCALE], 1)
        parts = [self._light(e.light), pose.float(), e.same_view.float()[:, None]]
        if self.geometry:
            if e.src_light is None or e.identity is None or e.expression is None:
                raise ValueError("this mapper is conditioned on the source reconstruction (light, shape); "
                                 "invert with a reconstruction")
            if normals is None:
                normals = self.probe.normals(e.identity, e.expression)
            # per-vertex shading under the target and the source light at once: [N, P, 6]
            vert = self.probe.vertex_shading(normals, torch.cat([normalise_light(e.light),
                                                                 normalise_light(e.src_light)], -1))
            tgt, src = (self.probe.pool @ vert).split(3, -1)
            ls, lt = torch.log(LIGHT_EPS + src), torch.log(LIGHT_EPS + tgt)
            parts += [self._light(e.src_light), lt.flatten(1), (lt - ls).flatten(1)]
            if self.shading_map:
                parts.append(self._map(e, normals, vert).flatten(1))
        return torch.cat(parts, 1)

    def _map(self, e: Edit, normals: torch.Tensor, vert: torch.Tensor) -> torch.Tensor:
        """[N, MAP_CHANNELS, S, S]: the shading of the estimated shape (per-vertex, target and source
        light: vert [N, P, 6]) as the target view sees it, and the coverage of both views."""
        N, S = len(vert), self.shading_map
        pts, lm = self.probe.points(e.identity, e.expression)
        v = torch.log(LIGHT_EPS + vert / self.probe.directions.shape[0])
        vt, vs = v.split(3, -1)
        pose = torch.cat([e.src_pose + e.delta_pose, e.src_pose]).float()  # the target view, then the source's
        pts2, n2 = torch.cat([pts, pts]), torch.cat([normals, normals])
        uv, o = crop_coordinates(pts2, torch.cat([lm, lm]), pose[:, 0], pose[:, 1])
        front = ((o[:, None] - pts2) * n2).sum(-1) > 0
        vals = torch.cat([vt, vt - vs], -1)
        m, cov = splat(uv, torch.cat([vals, vals]), front, S)
        return torch.cat([m[:N], cov[:N, None], cov[N:, None]], 1)
