"""Reconstruction: pose and shape from landmarks, light and albedo with ray-traced self-shadows,
files, and the fast-path trainer."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from stylerelight.lighting import LightStage, disk_light
from stylerelight.recon.cnn import ReconTrainConfig, ReconTrainer, crop_landmarks
from stylerelight.recon.photometric import fit_light_albedo, olat_basis, specular_basis
from stylerelight.recon.pose_fit import fit_pose_shape
from stylerelight.recon.reconstruction import Reconstruction, vertex_albedo
from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject
from stylerelight.synth.mitsuba_setup import find_libllvm
from stylerelight.synth.subject import skin_albedo

needs_llvm = pytest.mark.skipif(find_libllvm() is None, reason="OLAT rendering needs libLLVM >= 17 "
                                "(apt-get install libllvm19; `make setup` does it as root)")


def _portrait(seed, env, yaw, pitch, res=64):
    subj = sample_subject(seed)
    img, info = render_portrait(subj, env, Camera(yaw=yaw, pitch=pitch), res, spp=16, return_info=True)
    return subj, img, crop_landmarks({"landmarks_raw": info["landmarks"]}, res), info


@pytest.mark.parametrize("yaw,pitch", [(-30.0, 10.0), (5.0, -15.0), (40.0, 0.0)])
def test_pose_from_true_landmarks(yaw, pitch):
    """The renderer's own landmarks give back its camera within 3 degrees (the acceptance median)."""
    subj = sample_subject(11)
    lm = Camera(yaw=yaw, pitch=pitch).project(subj.landmarks3d(), 192)
    crop = crop_landmarks({"landmarks_raw": lm}, 64)
    fit = fit_pose_shape(crop, 64)
    assert abs(fit.yaw - yaw) < 3 and abs(fit.pitch - pitch) < 3, (fit.yaw, fit.pitch)
    assert fit.rmse < 0.3  # crop pixels
    # the fitted camera and similarity put the landmarks where they were
    model_lm = subj.model.vertices(fit.identity, fit.expression)[subj.model.landmarks]
    assert np.abs(fit.project(model_lm) - crop).max() < 1.5


@needs_llvm
def test_side_light_is_found_and_shadows_are_not_baked_into_albedo():
    """One hard light from the subject's left: the fitted light points there, and the recovered
    albedo's left/right imbalance is at least 3x smaller than the image's (shadows explained)."""
    stage = LightStage.default()
    d = np.array([1.0, 0.2, 0.35])
    subj, img, lm, info = _portrait(5, disk_light(d), 0.0, 0.0)
    fit = fit_pose_shape(lm, 64)
    B, cov = olat_basis(fit, 64, stage, spp=4)
    light0 = np.full((stage.num_lights, 3), 1e-3)
    pf = fit_light_albedo(img, B, cov, light0, skin_albedo(subj.tone))
    w = pf.light.sum(1)
    top = stage.directions[np.argsort(w)[-3:]]
    est = (top * w[np.argsort(w)[-3:], None]).sum(0)
    est /= np.linalg.norm(est)
    assert np.degrees(np.arccos(est @ (d / np.linalg.norm(d)))) < 20
    # left/right halves of the fitted face region (the subject's left is the image's right at yaw 0)
    m = pf.mask
    half = np.zeros_like(m)
    half[:, 32:] = True
    from stylerelight.lighting import srgb_decode

    lin = srgb_decode(img / 255.0).mean(-1)
    alb = pf.albedo_map.mean(-1)

    def imbalance(x):
        a, b = x[m & half].mean(), x[m & ~half].mean()
        return abs(np.log(a / b))

    assert imbalance(lin) > 3 * imbalance(alb), (imbalance(lin), imbalance(alb))


@needs_llvm
def test_reconstruction_files_round_trip(tmp_path):
    stage = LightStage.default()
    subj, img, lm, _ = _portrait(7, sample_envmap(3), 15.0, 5.0)
    fit = fit_pose_shape(lm, 64)
    B, cov = olat_basis(fit, 64, stage, spp=1)
    pf = fit_light_albedo(img, B, cov, np.full((stage.num_lights, 3), 1e-2), skin_albedo(0.5), iterations=2)
    albedo = vertex_albedo(pf.albedo_map, pf.mask, fit, subj, skin_albedo(0.5))
    V = subj.model.num_vertices
    rec = Reconstruction(pose=(fit.yaw, fit.pitch, fit.roll), light=pf.light, identity=fit.identity,
                         expression=fit.expression, albedo=albedo, specular=np.full(V, 0.3),
                         roughness=np.full(V, 0.4), landmarks=lm, fit=fit, crop_size=64, stage=stage)
    out = rec.save(tmp_path / "rec")
    for name in ("mesh.obj", "albedo.png", "specular.png", "light.exr", "render.png", "params.json"):
        assert (out / name).is_file(), name
    back = Reconstruction.load(out)
    for k in ("light", "identity", "expression", "albedo", "landmarks"):
        assert np.allclose(getattr(back, k), getattr(rec, k)), k
    assert back.pose == pytest.approx(rec.pose) and back.fit.scale == pytest.approx(rec.fit.scale)
    # the re-render of its own light resembles the input (same view and exposure)
    again = back.render(spp=4)
    psnr = 10 * np.log10(255**2 / ((again.astype(float) - img) ** 2).mean())
    assert psnr > 20, psnr
    with pytest.raises(FileExistsError):
        rec.save(tmp_path / "rec")
    with pytest.raises(ValueError, match="not a readable reconstruction"):
        Reconstruction.load(tmp_path)


def test_recon_cnn_trainer_fits_its_targets(tmp_path):
    """The fast-path trainer drives its loss down on a few images (targets as the dataset gives them)."""
    rng = np.random.default_rng(0)
    n = 8
    images = torch.from_numpy(rng.integers(0, 255, (n, 3, 32, 32), dtype=np.uint8))
    targets = {"yaw": rng.uniform(-45, 45, n).astype(np.float32), "pitch": rng.uniform(-20, 20, n).astype(np.float32),
               "landmarks": rng.uniform(8, 24, (n, 68, 2)).astype(np.float32),
               "identity": rng.standard_normal((n, 16)).astype(np.float32),
               "expression": rng.uniform(0, 1, (n, 4)).astype(np.float32),
               "tone": rng.uniform(0, 1, n).astype(np.float32),
               "light": rng.uniform(0, 0.1, (n, 150, 3)).astype(np.float32)}
    cfg = ReconTrainConfig(width=8, batch=8, lr=3e-3, total_kimg=0.4, snapshot_kimg=0.4)
    t = ReconTrainer(cfg, images, targets, tmp_path / "run", log=False)
    first = t.train_step()["loss"]
    t.train(progress=False)
    assert t.train_step()["loss"] < 0.5 * first
    from stylerelight.recon import load_recon_cnn

    m = load_recon_cnn(tmp_path / "run" / "recon.pt")
    est = m.estimate(images.float() / 127.5 - 1)
    assert est.landmarks.shape == (n, 68, 2) and est.light.shape == (n, 150, 3)
    assert np.abs(est.yaw - targets["yaw"]).mean() < np.abs(targets["yaw"]).mean()  # learnt something


def test_reconstruct_cli_bad_inputs(tmp_path):
    """Unreadable or face-less input: one line, exit 1, nothing written."""
    from click.testing import CliRunner
    from PIL import Image

    from stylerelight.cli import cli

    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    Image.fromarray(np.full((120, 120, 3), 90, np.uint8)).save(tmp_path / "blank.png")
    for src in ("bad.jpg", "blank.png", "missing.png"):
        r = CliRunner().invoke(cli, ["reconstruct", str(tmp_path / src), "-o", str(tmp_path / "out")])
        assert r.exit_code == 1, r.output
        lines = [ln for ln in r.output.strip().splitlines() if ln.strip() and not ln.startswith("reconstruct")]
        assert len(lines) == 1 and lines[0].startswith("Error"), r.output
        assert not (tmp_path / "out").exists()


@needs_llvm
def test_bundled_reconstruction_end_to_end():
    """The bundled fast path + full fit on a render of an unseen subject (errors bounded) and on
    the real astronaut photo (aligned by dlib first; near-frontal)."""
    import skimage.data

    import stylerelight as sr

    subj, img, lm, _ = _portrait(1_000_123, sample_envmap(4242), -20.0, 8.0)
    fast = sr.reconstruct(img, aligned=True, fast_only=True)
    full = sr.reconstruct(img, aligned=True)
    for rec in (fast, full):
        assert abs(rec.pose[0] + 20) < 6 and abs(rec.pose[1] - 8) < 6, rec.pose
        assert np.linalg.norm(rec.landmarks - lm, axis=1).mean() < 3
    assert full.info["cnn_seconds"] < 1.0
    rerender = full.render(spp=4)
    assert 10 * np.log10(255**2 / ((rerender.astype(float) - img) ** 2).mean()) > 20
    astro = sr.reconstruct(skimage.data.astronaut())
    assert abs(astro.pose[0]) < 25 and astro.light.shape == (150, 3) and (astro.light >= 0).all()


def test_background_matte_finds_rendered_heads_not_photos():
    """A portrait on the flat display background gives its matte (and that colour); a photo none."""
    import skimage.data

    from stylerelight.recon.silhouette import background_matte

    S = 64
    yy, xx = np.mgrid[:S, :S]
    head = (xx - 30) ** 2 / 20**2 + (yy - 40) ** 2 / 26**2 < 1  # touches the bottom edge, as crops do
    rng = np.random.default_rng(0)
    img = np.where(head[..., None], rng.integers(60, 200, (S, S, 3)), 128).astype(np.uint8)
    found = background_matte(img)
    assert found is not None
    matte, bg = found
    assert (matte == head).mean() > 0.99 and np.allclose(bg, 128 / 255)
    assert background_matte(skimage.data.astronaut()[::8, ::8]) is None


def test_silhouette_refinement_pulls_the_outline_onto_the_matte():
    """From a landmark fit whose head shape is off, the refinement brings the projected outline onto
    the true head's matte (mean distance falls by half) and keeps the landmarks in place."""
    from stylerelight.recon.silhouette import _outline, _signed_distance, refine_with_matte
    from stylerelight.synth.head_model import HeadModel

    model = HeadModel.default()
    subj = sample_subject(21)
    cam = Camera(yaw=25.0, pitch=-5.0)
    lm = crop_landmarks({"landmarks_raw": cam.project(subj.landmarks3d(), 192)}, 64)
    true_fit = fit_pose_shape(lm, 64, model, prior={"yaw": 25.0, "pitch": -5.0, "identity": subj.id_coeffs,
                                                    "expression": subj.expr_coeffs})
    # the true head's matte: its projected vertex set, filled (what the renderer's coverage is)
    p = true_fit.project(subj.vertices())
    import scipy.ndimage

    occ = np.zeros((64, 64), bool)
    ij = np.floor(p).astype(int)
    ok = (ij >= 0).all(1) & (ij < 64).all(1)
    occ[ij[ok, 1], ij[ok, 0]] = True
    matte = scipy.ndimage.binary_fill_holes(scipy.ndimage.binary_closing(occ, iterations=2))
    start = fit_pose_shape(lm, 64, model, prior={"yaw": 25.0, "pitch": -5.0,
                                                  "identity": np.zeros_like(subj.id_coeffs),
                                                  "expression": subj.expr_coeffs})
    start.identity = -subj.id_coeffs  # a head shape the landmarks alone did not pin
    start.scale *= 0.97
    sd = _signed_distance(matte)

    def outline_error(fit):
        q = fit.project(model.vertices(fit.identity, fit.expression))
        o = q[_outline(q, 64)]
        return np.abs(scipy.ndimage.map_coordinates(sd, [o[:, 1] - 0.5, o[:, 0] - 0.5], order=1)).mean()

    refined = refine_with_matte(start, matte, lm, model, prior={"yaw": 25.0, "pitch": -5.0})
    assert outline_error(refined) < 0.5 * outline_error(start), (outline_error(start), outline_error(refined))
    assert refined.rmse < 1.5 and abs(refined.yaw - 25) < 5


@needs_llvm
@pytest.mark.parametrize("specular,roughness", [(0.0, 0.5), (0.7, 0.3)])
def test_specular_weight_and_roughness_are_recovered(specular, roughness):
    """A head of uniform specular weight and roughness under a continuous env map, seen at its true
    pose: a matte head gets a weight near 0, a shiny one a high weight and its true roughness. (The
    weight reads high by about 0.2 on shiny heads: the env map's continuous light through the
    150-light stage; see docs/reconstruction.md.)"""
    from stylerelight.synth.subject import Subject

    stage = LightStage.default()
    s0 = sample_subject(33)
    V = s0.model.num_vertices
    subj = Subject(33, s0.id_coeffs, s0.expr_coeffs, s0.tone, s0.albedo, np.full(V, specular, np.float32),
                   np.full(V, roughness, np.float32), s0.model)
    img, info = render_portrait(subj, sample_envmap(5, kind="studio"), Camera(yaw=15.0, pitch=5.0), 64, spp=16,
                                return_info=True)
    lm = crop_landmarks({"landmarks_raw": info["landmarks"]}, 64)
    fit = fit_pose_shape(lm, 64, prior={"yaw": 15.0, "pitch": 5.0, "identity": subj.id_coeffs,
                                        "expression": subj.expr_coeffs})
    B, cov = olat_basis(fit, 64, stage, spp=4)
    G = {r: specular_basis(fit, 64, stage, r, spp=4) for r in (0.3, 0.5)}
    pf = fit_light_albedo(img, B, cov, np.full((stage.num_lights, 3), 1e-2), skin_albedo(subj.tone),
                          specular_bases=G)
    if specular == 0:
        assert pf.specular < 0.25, pf.specular
    else:
        assert 0.45 < pf.specular and pf.roughness == roughness, (pf.specular, pf.roughness)


def test_a_channel_no_light_reaches_keeps_the_prior_albedo():
    """Light and albedo are fitted per channel (no specular lobe): where no basis light reaches a
    channel (a degenerate fit, e.g. a crop that is not a face), that channel's albedo is the prior's
    and everything stays finite, while the other channels fit exactly as before."""
    from stylerelight.lighting.display import srgb_encode

    rng = np.random.default_rng(0)
    L, S = 12, 16
    basis = rng.uniform(0.0, 1.0, (L, S, S, 3)) * rng.uniform(0.0, 1.0, (L, 1, 1, 1))
    light = rng.uniform(0.0, 0.3, (L, 3))
    albedo = rng.uniform(0.3, 0.7, (S, S, 3))
    img = np.round(255 * srgb_encode(np.clip(albedo * np.einsum("lhwk,lk->hwk", basis, light), 0, 1)))
    img = np.clip(img, 2, 253).astype(np.uint8)
    cov, light0, prior = np.ones((S, S)), np.full((L, 3), 0.05), np.array([0.5, 0.4, 0.3])
    full = fit_light_albedo(img, basis, cov, light0, prior)
    dark = basis.copy()
    dark[..., 2] = 0.0
    with np.errstate(all="raise"):
        fit = fit_light_albedo(img, dark, cov, light0, prior)
    assert np.isfinite(fit.albedo_map).all() and np.isfinite(fit.light).all()
    np.testing.assert_allclose(fit.albedo_map[fit.mask][:, 2], prior[2])
    np.testing.assert_allclose(fit.albedo_map[..., :2], full.albedo_map[..., :2])
    np.testing.assert_allclose(fit.light[:, :2], full.light[:, :2])
