"""Ray tracing the head with Mitsuba 3: OLAT captures, env-map ground truth, dataset portraits.

OLAT: for every pixel sample and every light, Mitsuba traces the primary ray, samples a point on
the light's disk, traces a shadow ray and evaluates the head's BSDF (Mitsuba's own, the same one
the env-map render uses), so the only difference between relighting and the ground truth is the
light stage's discretisation of the env map. All lights and samples of one camera go through
Mitsuba as one wide vectorised batch. Renders run one at a time per process (`render_olat` and
`render_envmap` take `mitsuba_setup.MITSUBA_LOCK`): two threads rendering at once crashed the LLVM
backend, e.g. the live page's background refinement beside another render.
"""

from __future__ import annotations

import math

import numpy as np

from ..lighting import FACE_BACKGROUND, EnvMap, LightStage, OLATCapture, face_display
from .camera import Camera, default_rig
from .mitsuba_setup import one_at_a_time, set_variant
from .subject import Subject

LIGHT_DISTANCE = 30.0  # head units (the head is about 2 units tall)
LIGHT_RADIUS_DEG = 2.0  # angular radius of each light's disk as seen from the head
BACKGROUND = FACE_BACKGROUND  # display-referred neutral grey of dataset portraits


def _mi():
    set_variant()
    import drjit as dr
    import mitsuba as mi

    return mi, dr


def head_bsdf_dict() -> dict:
    """Diffuse albedo, specular intensity and roughness maps as per-vertex attributes."""
    albedo = {"type": "mesh_attribute", "name": "vertex_albedo"}
    return {"type": "blendbsdf", "weight": {"type": "mesh_attribute", "name": "vertex_specular"},
            "bsdf_0": {"type": "diffuse", "reflectance": albedo},
            "bsdf_1": {"type": "principled", "base_color": albedo,
                       "roughness": {"type": "mesh_attribute", "name": "vertex_roughness"},
                       "specular": 0.5}}


def head_mesh(subject: Subject):
    mi, _ = _mi()
    v = subject.vertices().astype(np.float32)
    f = subject.model.triangles.astype(np.uint32)
    mesh = mi.Mesh("head", len(v), len(f), has_vertex_normals=True, has_vertex_texcoords=False)
    params = mi.traverse(mesh)
    # buffer types differ between vectorised (mi.Float) and scalar (dr.scalar.ArrayXf) variants
    fbuf, ubuf = type(params["vertex_positions"]), type(params["faces"])
    params["vertex_positions"] = fbuf(v.ravel())
    params["faces"] = ubuf(f.ravel())
    params.update()
    mesh.add_attribute("vertex_albedo", 3, fbuf(subject.albedo.astype(np.float32).ravel()))
    mesh.add_attribute("vertex_specular", 1, fbuf(subject.specular.astype(np.float32)))
    mesh.add_attribute("vertex_roughness", 1, fbuf(subject.roughness.astype(np.float32)))
    mesh.recompute_vertex_normals()
    mesh.set_bsdf(mi.load_dict(head_bsdf_dict()))
    return mesh


def _sensor_dict(cam: Camera, resolution: int, spp: int = 16) -> dict:
    mi, _ = _mi()
    from .camera import TARGET

    return {"type": "perspective", "fov": cam.fov, "fov_axis": "x",
            "to_world": mi.ScalarTransform4f().look_at(origin=cam.origin().tolist(), target=TARGET.tolist(),
                                                       up=[0, 1, 0]),
            "film": {"type": "hdrfilm", "width": resolution, "height": resolution, "pixel_format": "rgba",
                     "rfilter": {"type": "box"}},
            "sampler": {"type": "multijitter", "sample_count": spp}}


def _light_frames(stage: LightStage):
    d = stage.directions
    helper = np.where(np.abs(d[:, 1:2]) < 0.9, [[0.0, 1.0, 0.0]], [[1.0, 0.0, 0.0]])
    t1 = np.cross(d, helper)
    t1 /= np.linalg.norm(t1, axis=1, keepdims=True)
    t2 = np.cross(d, t1)
    return d, t1, t2


def light_disk(distance: float = LIGHT_DISTANCE, radius_deg: float = LIGHT_RADIUS_DEG):
    """(disk radius, radiance) of a light whose solid-angle-integrated radiance is 1 at the origin."""
    r = distance * math.tan(math.radians(radius_deg))
    omega = 2 * math.pi * (1 - distance / math.hypot(distance, r))
    return r, 1.0 / omega


@one_at_a_time
def render_olat(subject: Subject, stage: LightStage | None = None, cameras: list[Camera] | None = None,
                resolution: int = 64, spp: int = 4, seed: int = 0, lights_per_batch: int = 50,
                progress=None) -> OLATCapture:
    """OLAT images [C, L, H, W, 3] of one subject (direct light, self-shadows, diffuse + specular)."""
    mi, dr = _mi()
    if mi.variant().startswith("scalar"):
        raise ValueError("OLAT rendering needs Mitsuba's vectorised llvm_ad_rgb (or cuda_ad_rgb) variant; "
                         "install Debian's libllvm19 (see `stylerelight doctor`)")
    stage = stage or LightStage.default()
    cameras = cameras or default_rig()
    scene = mi.load_dict({"type": "scene", "head": head_mesh(subject)})
    L, P = stage.num_lights, resolution * resolution
    disk_r, radiance = light_disk()
    d, t1, t2 = _light_frames(stage)
    rng = np.random.default_rng(seed)
    olat = np.zeros((len(cameras), L, resolution, resolution, 3), np.float32)
    mask = np.zeros((len(cameras), resolution, resolution), np.float32)
    ctx = mi.BSDFContext()
    for ci, cam in enumerate(cameras):
        sensor = mi.load_dict(_sensor_dict(cam, resolution))
        # stratified sub-pixel positions shared by all lights of this camera
        n = int(round(math.sqrt(spp)))
        sub = (np.stack(np.meshgrid(np.arange(n), np.arange(n), indexing="ij"), -1).reshape(-1, 2) + 0.5) / n
        jitter = (rng.random((P, len(sub), 2)) - 0.5) / n
        ys, xs = np.divmod(np.arange(P), resolution)
        px = (xs[:, None] + sub[None, :, 1] + jitter[..., 1]) / resolution
        py = (ys[:, None] + sub[None, :, 0] + jitter[..., 0]) / resolution
        S = len(sub)
        for l0 in range(0, L, lights_per_batch):
            l1 = min(L, l0 + lights_per_batch)
            nl = l1 - l0
            # lanes ordered (pixel, sample, light)
            fx = np.repeat(px.ravel(), nl).astype(np.float32)
            fy = np.repeat(py.ravel(), nl).astype(np.float32)
            li = np.tile(np.arange(l0, l1), P * S)
            u = rng.random((2, len(li)))
            rr = disk_r * np.sqrt(u[0])
            ang = 2 * np.pi * u[1]
            lp = (d[li] * LIGHT_DISTANCE + (rr * np.cos(ang))[:, None] * t1[li]
                  + (rr * np.sin(ang))[:, None] * t2[li]).astype(np.float32)
            ray, _ = sensor.sample_ray(0.0, 0.5, mi.Point2f(mi.Float(fx), mi.Float(fy)), mi.Point2f(0.5, 0.5))
            si = scene.ray_intersect(ray)
            p_l = mi.Point3f(mi.Float(lp[:, 0]), mi.Float(lp[:, 1]), mi.Float(lp[:, 2]))
            n_l = mi.Vector3f(*(mi.Float(-d[li, k].astype(np.float32)) for k in range(3)))
            wi = p_l - si.p
            dist2 = dr.squared_norm(wi)
            wi = wi / dr.sqrt(dist2)
            cos_l = dr.maximum(-dr.dot(wi, n_l), 0.0)
            weight = radiance * cos_l * (math.pi * disk_r * disk_r) / dist2
            valid = si.is_valid()
            visible = valid & ~scene.ray_test(si.spawn_ray_to(p_l), valid)
            f = si.bsdf().eval(ctx, si, si.to_local(wi), visible)
            val = dr.select(visible, f * weight, 0.0)
            out = np.array(val).T.reshape(P, S, nl, 3).mean(1)  # [P, nl, 3]
            olat[ci, l0:l1] = out.transpose(1, 0, 2).reshape(nl, resolution, resolution, 3)
            if l0 == 0:
                hit = np.array(valid).reshape(P, S, nl)[:, :, 0].mean(1)
                mask[ci] = hit.reshape(resolution, resolution)
            if progress is not None:
                progress.update(nl)
    lm3 = subject.landmarks3d()
    lm = [cam.project(lm3, resolution).tolist() for cam in cameras]
    cams = [cam.to_json(resolution) for cam in cameras]
    return OLATCapture(olat, mask, cams, stage, {"subject": subject.to_json(), "landmarks": lm,
                                                  "units": "unit solid-angle-integrated radiance per light",
                                                  "spp": spp})


def _envmap_emitter(env: EnvMap) -> dict:
    """Mitsuba's envmap looks along +z at its centre column; ours along -z: rotate 180 about y."""
    mi, _ = _mi()
    return {"type": "envmap", "bitmap": mi.Bitmap(np.ascontiguousarray(env.data, np.float32)),
            "to_world": mi.ScalarTransform4f().rotate([0, 1, 0], 180.0)}


@one_at_a_time
def render_envmap(subject: Subject, env: EnvMap, camera: Camera, resolution: int = 64, spp: int = 256,
                  seed: int = 0, return_mask: bool = False):
    """Linear [H, W, 3] of the subject lit directly by `env` (Mitsuba's envmap emitter, direct
    integrator with MIS): the ground truth that OLAT relighting must reproduce."""
    mi, _ = _mi()
    scene = mi.load_dict({"type": "scene", "integrator": {"type": "direct", "hide_emitters": True},
                          "sensor": _sensor_dict(camera, resolution, spp), "head": head_mesh(subject),
                          "env": _envmap_emitter(env)})
    img = np.array(mi.render(scene, seed=seed), np.float32)
    rgb, alpha = img[..., :3], img[..., 3]
    return (rgb, alpha) if return_mask else rgb


def render_portrait(subject: Subject, env: EnvMap, camera: Camera, resolution: int = 64, spp: int = 64,
                    seed: int = 0, exposure: float | None = None, return_info: bool = False):
    """uint8 [resolution, resolution, 3] exactly as the dataset builder writes it: rendered
    larger, displayed (auto exposure on the face, sRGB) over a neutral background, then
    FFHQ-aligned from the head's projected 68 landmarks with `align.align_from_landmarks`."""
    from ..align import align_from_landmarks

    raw = int(math.ceil(resolution * 3))
    rgb, alpha = render_envmap(subject, env, camera, raw, spp=spp, seed=seed, return_mask=True)
    disp, exp = face_display(rgb, alpha, exposure)
    lm = camera.project(subject.landmarks3d(), raw)
    aligned = align_from_landmarks(disp, lm, output_size=resolution)
    if return_info:
        return aligned.image, {"exposure": exp, "landmarks": lm.tolist(), "quad": aligned.quad.tolist(),
                               "raw_resolution": raw}
    return aligned.image
