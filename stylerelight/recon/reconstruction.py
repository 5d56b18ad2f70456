"""`sr.reconstruct(image)`: coarse to fine, as Dib et al. -- the CNN reads landmarks, pose, shape,
tone and light off the aligned crop (milliseconds); landmarks -> pose and shape (L-BFGS); then the
ray-traced photometric fit of light, diffuse albedo, specular weight and roughness with
self-shadows; the albedo goes onto the mesh.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..lighting import EnvMap, LightStage, face_display, srgb_encode
from ..synth.camera import Camera
from ..synth.head_model import HeadModel
from ..synth.subject import Subject, skin_albedo
from .photometric import fit_light_albedo, olat_basis, specular_basis, warp_to_crop
from .pose_fit import PoseFit, fit_pose_shape, pose_from_estimate
from .silhouette import background_matte, refine_with_matte

ROUGHNESS_GRID = (0.3, 0.5)  # specular lobes tried by the fit (two OLAT bases each)
# vertex albedo: measured from this cosine to the camera, fully trusted from that one (chosen on validation
# renders: same-view re-render 30.1 dB and new views 25.7 dB, vs 31.4 / 24.7 at 0.02 / 0.02 and 29.8 / 25.7 at 0.25)
FACING_MIN, FACING_FULL = 0.1, 0.4


@dataclass
class Reconstruction:
    pose: tuple[float, float, float]     # (yaw, pitch, roll) degrees, synth.Camera's convention
    light: np.ndarray                    # [L, 3] light-stage coefficients, head frame, displayed scale
    identity: np.ndarray
    expression: np.ndarray
    albedo: np.ndarray                   # [V, 3] linear diffuse albedo per vertex
    specular: np.ndarray                 # [V]
    roughness: np.ndarray                # [V]
    landmarks: np.ndarray                # [68, 2] crop pixels
    fit: PoseFit
    crop_size: int
    stage: LightStage = field(default_factory=LightStage.default)
    info: dict = field(default_factory=dict)

    def subject(self, model: HeadModel | None = None) -> Subject:
        model = model or HeadModel.default()
        return Subject(seed=-1, id_coeffs=self.identity, expr_coeffs=self.expression, tone=0.0,
                       albedo=self.albedo.astype(np.float32), specular=self.specular.astype(np.float32),
                       roughness=self.roughness.astype(np.float32), model=model)

    def render(self, env=None, camera: Camera | None = None, resolution: int | None = None, spp: int = 16,
               seed: int = 0) -> np.ndarray:
        """uint8 [S, S, 3]: the reconstruction ray-traced (shadows included) under `env` (EnvMap or
        [L, 3] coefficients; None: the estimated light) from `camera` (absolute; None: the input's
        view, in the input crop's frame). Another light or view is shown as the dataset portraits are
        (auto exposure on the face, FFHQ-aligned); the input's own light keeps the input's exposure."""
        from ..synth.render import render_olat, render_portrait

        res = resolution or self.crop_size
        subj = self.subject()
        if isinstance(env, EnvMap):
            return render_portrait(subj, env, camera or self.fit.camera(), res, spp=spp, seed=seed)
        light = self.light if env is None else np.asarray(env, np.float64)
        if light.shape != (self.stage.num_lights, 3):
            raise ValueError(f"light must be [{self.stage.num_lights}, 3] coefficients, got {list(light.shape)}")
        exposure = 1.0 if env is None else None
        if camera is None:
            from .photometric import render_res_for

            raw = render_res_for(self.fit, res)
            cap = render_olat(subj, self.stage, [self.fit.camera()], raw, spp=max(1, spp // 4), seed=seed)
            img = np.einsum("lhwk,lk->hwk", cap.olat[0].astype(np.float64), light)
            img = warp_to_crop(img[None].astype(np.float32), self.fit, res)[0]
            mask = warp_to_crop(cap.mask[0][None, ..., None], self.fit, res)[0, ..., 0]
            return face_display(img, mask, exposure)[0]
        from ..align import align_from_landmarks

        raw = res * 3
        cap = render_olat(subj, self.stage, [camera], raw, spp=max(1, spp // 4), seed=seed)
        img = np.einsum("lhwk,lk->hwk", cap.olat[0].astype(np.float64), light)
        disp = face_display(img, cap.mask[0], exposure)[0]
        lm = camera.project(subj.landmarks3d(), raw)
        return align_from_landmarks(disp, lm, output_size=res).image

    # -- files -----------------------------------------------------------------------------------

    def save(self, directory, force: bool = False) -> Path:
        """mesh.obj (vertex colours = albedo), albedo.png / specular.png (per-vertex values splatted
        into the head model's UV layout), light.exr (lat-long), render.png, params.json + arrays.npz."""
        from ..imageio import save_image
        from ..lighting import save_envmap

        d = Path(directory)
        if d.exists() and any(d.iterdir()) and not force:
            raise FileExistsError(f"{d} is not empty; pass --force to overwrite it")
        d.mkdir(parents=True, exist_ok=True)
        subj = self.subject()
        v, f = subj.vertices(), subj.model.triangles
        col = srgb_encode(self.albedo)
        lines = [f"v {a:.5f} {b:.5f} {c:.5f} {r:.4f} {g:.4f} {bb:.4f}"
                 for (a, b, c), (r, g, bb) in zip(v, col, strict=True)]
        lines += [f"f {i + 1} {j + 1} {k + 1}" for i, j, k in f]
        (d / "mesh.obj").write_text("\n".join(lines) + "\n")
        save_image(_uv_splat(subj.model.uv, col), d / "albedo.png", force=True)
        save_image(_uv_splat(subj.model.uv, np.repeat(self.specular[:, None], 3, 1)), d / "specular.png", force=True)
        save_envmap(light_to_envmap(self.light, self.stage), d / "light.exr")
        save_image(self.render(), d / "render.png", force=True)
        np.savez(d / "arrays.npz", light=self.light, identity=self.identity, expression=self.expression,
                 albedo=self.albedo, specular=self.specular, roughness=self.roughness, landmarks=self.landmarks)
        params = {"format": "stylerelight-reconstruction", "version": 1, "pose": list(self.pose),
                  "specular": float(np.mean(self.specular)), "roughness": float(np.mean(self.roughness)),
                  "crop_size": self.crop_size, "stage": self.stage.to_json(),
                  "fit": {"yaw": self.fit.yaw, "pitch": self.fit.pitch, "roll": self.fit.roll, "scale": self.fit.scale,
                          "shift": list(map(float, self.fit.shift)), "raw_resolution": self.fit.raw_resolution,
                          "rmse": self.fit.rmse},
                  "info": self.info}
        (d / "params.json").write_text(json.dumps(params, indent=1))
        return d

    @classmethod
    def load(cls, directory) -> Reconstruction:
        d = Path(directory)
        try:
            p = json.loads((d / "params.json").read_text())
            if p.get("format") != "stylerelight-reconstruction":
                raise ValueError("not a reconstruction folder")
            z = np.load(d / "arrays.npz", allow_pickle=False)
            fp = p["fit"]
            fit = PoseFit(yaw=fp["yaw"], pitch=fp["pitch"], roll=fp["roll"], scale=fp["scale"],
                          shift=np.asarray(fp["shift"]), raw_resolution=int(fp["raw_resolution"]),
                          identity=z["identity"], expression=z["expression"], rmse=fp["rmse"])
            return cls(pose=tuple(p["pose"]), light=z["light"], identity=z["identity"], expression=z["expression"],
                       albedo=z["albedo"], specular=z["specular"], roughness=z["roughness"], landmarks=z["landmarks"],
                       fit=fit, crop_size=int(p["crop_size"]), stage=LightStage.from_json(p["stage"]),
                       info=dict(p.get("info", {})))
        except (OSError, KeyError, ValueError, TypeError) as e:
            raise ValueError(f"{d}: not a readable reconstruction ({str(e).splitlines()[0]}); "
                             "write one with `stylerelight reconstruct`") from None


def light_to_envmap(light: np.ndarray, stage: LightStage, height: int = 32) -> EnvMap:
    """Lat-long radiance whose stage projection is `light`: each cell holds c_l / solid angle."""
    from ..lighting import latlong_directions

    cells = stage.cell_of(latlong_directions(height, 2 * height))
    return EnvMap((np.asarray(light, np.float64) / stage.solid_angles[:, None])[cells].astype(np.float32))


def _uv_splat(uv: np.ndarray, values: np.ndarray, size: int = 256) -> np.ndarray:
    """Per-vertex display values [V, 3] in 0..1 -> uint8 UV map (nearest vertex per texel)."""
    from scipy.spatial import cKDTree

    g = (np.arange(size) + 0.5) / size
    uu, vv = np.meshgrid(g, g, indexing="xy")
    _, idx = cKDTree(np.asarray(uv, np.float64)).query(np.stack([uu.ravel(), 1 - vv.ravel()], -1))
    return np.clip(np.round(values[idx].reshape(size, size, 3) * 255), 0, 255).astype(np.uint8)


def _vertex_normals(v: np.ndarray, f: np.ndarray) -> np.ndarray:
    fn = np.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
    n = np.zeros_like(v)
    for k in range(3):
        np.add.at(n, f[:, k], fn)
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def vertex_albedo(albedo_map: np.ndarray, mask: np.ndarray, fit: PoseFit, subj: Subject,
                  default: np.ndarray) -> np.ndarray:
    """Carry the crop's per-pixel albedo onto the vertices that face the camera and project into
    the measured region; the rest take the median of the measured ones (or `default`). Between
    FACING_MIN and FACING_FULL (cosine to the camera) a vertex blends its pixel with that median:
    grazing pixels also absorb the fit's shading error, which other views would show."""
    v = subj.vertices()
    n = _vertex_normals(v, subj.model.triangles)
    cam = fit.camera()
    cos = ((cam.origin()[None] - v) * n).sum(1) / np.linalg.norm(cam.origin()[None] - v, axis=1)
    p = fit.project(v)
    S = albedo_map.shape[0]
    ij = np.floor(p).astype(int)
    inside = (ij >= 0).all(1) & (ij < S).all(1)
    ok = (cos > FACING_MIN) & inside
    ok[ok] &= mask[ij[ok, 1], ij[ok, 0]]
    out = np.empty((len(v), 3))
    if not ok.any():
        out[:] = default
        return out
    measured = albedo_map[ij[ok, 1], ij[ok, 0]]
    med = np.median(measured, axis=0)
    w = np.clip((cos[ok] - FACING_MIN) / max(FACING_FULL - FACING_MIN, 1e-6), 0.0, 1.0)[:, None]
    out[ok] = w * measured + (1 - w) * med
    out[~ok] = med
    return out


def reconstruct(image, aligned: bool = False, cnn=None, steps: int = 4, fast_only: bool = False,
                spp: int = 4, crop_size: int = 64, stage: LightStage | None = None,
                matte: np.ndarray | str | None = "auto") -> Reconstruction:
    """Reconstruct a portrait: a photo (aligned first with dlib) or, aligned=True, an aligned crop
    (uint8 [H, W, 3], a path, or a [-1, 1] tensor [1, 3, H, W] / [3, H, W]).

    matte: the head's foreground mask [S, S] in the crop, "auto" (found when the crop lies on a
    flat background, as renders and light-stage plates do; photos have none) or None. With a matte
    the full fit also aligns the head's outline with it."""
    import time

    import torch
    from PIL import Image

    from ..align import align_face, load_image

    t0 = time.time()
    if isinstance(image, torch.Tensor):
        x = image.detach().float().cpu()
        x = x[0] if x.ndim == 4 else x
        crop = np.clip(np.round((x.permute(1, 2, 0).numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    else:
        crop = load_image(image) if aligned else align_face(image, output_size=crop_size).image
    if crop.shape[0] != crop_size:
        crop = np.asarray(Image.fromarray(crop).resize((crop_size, crop_size), Image.LANCZOS))
    if cnn is None:
        from . import default_cnn

        cnn = default_cnn()
    stage = stage or LightStage.default()
    x = torch.from_numpy(crop.astype(np.float32) / 127.5 - 1).permute(2, 0, 1)[None]
    t_cnn = time.perf_counter()
    est = cnn.estimate(x)
    t_cnn = time.perf_counter() - t_cnn
    model = HeadModel.default()
    if fast_only:
        fit = pose_from_estimate(est.yaw[0], est.pitch[0], est.identity[0], est.expression[0], est.landmarks[0],
                                 crop_size, model)
    else:
        fit = fit_pose_shape(est.landmarks[0], crop_size, model,
                             prior={"yaw": float(est.yaw[0]), "pitch": float(est.pitch[0]),
                                    "identity": est.identity[0], "expression": est.expression[0]})
        background = None
        if isinstance(matte, str) and matte == "auto":
            found = background_matte(crop)
            matte, background = found if found is not None else (None, None)
        if matte is not None:
            matte = np.asarray(matte, bool)
            if matte.shape != crop.shape[:2]:
                raise ValueError(f"matte must be [{crop.shape[0]}, {crop.shape[1]}], got {list(matte.shape)}")
            fit = refine_with_matte(fit, matte, est.landmarks[0], model,
                                    prior={"yaw": float(est.yaw[0]), "pitch": float(est.pitch[0])})
    albedo0 = skin_albedo(float(est.tone[0]))
    info = {"cnn_seconds": t_cnn, "matte": matte is not None and not fast_only,
            "cnn": {"yaw": float(est.yaw[0]), "pitch": float(est.pitch[0]),
                    "tone": float(est.tone[0])}}
    if fast_only:
        V = model.num_vertices
        rec_albedo, light = np.tile(albedo0, (V, 1)), est.light[0]
        specular, roughness = 0.0, 0.5  # the fast path's light was learnt as diffuse-only shading
    else:
        B, cov = olat_basis(fit, crop_size, stage, spp=spp, model=model)
        G = {r: specular_basis(fit, crop_size, stage, r, spp=spp, model=model) for r in ROUGHNESS_GRID}
        pf = fit_light_albedo(crop, B, cov, est.light[0], albedo0, iterations=steps, specular_bases=G,
                              background=background)
        subj = Subject(-1, fit.identity, fit.expression, 0.0, np.zeros((model.num_vertices, 3), np.float32),
                       np.zeros(model.num_vertices, np.float32), np.zeros(model.num_vertices, np.float32), model)
        rec_albedo = vertex_albedo(pf.albedo_map, pf.mask, fit, subj, albedo0)
        light, specular, roughness = pf.light, pf.specular, pf.roughness
    V = model.num_vertices
    rec = Reconstruction(pose=(fit.yaw, fit.pitch, fit.roll), light=light, identity=fit.identity,
                         expression=fit.expression, albedo=np.clip(rec_albedo, 0.0, 1.0),
                         specular=np.full(V, specular), roughness=np.full(V, roughness), landmarks=est.landmarks[0],
                         fit=fit, crop_size=crop_size, stage=stage, info=info)
    rec.info["seconds"] = time.time() - t0
    rec.info["fast_only"] = bool(fast_only)
    return rec
