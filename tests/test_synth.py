"""The virtual light stage: head model, subjects, env maps, Mitsuba renders and OLAT physics."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from stylerelight.lighting import EnvMap, LightStage
from stylerelight.synth import (
    Camera,
    HeadModel,
    render_envmap,
    render_olat,
    render_portrait,
    sample_envmap,
    sample_subject,
)
from stylerelight.synth.envmaps import HELD_OUT_KINDS, KINDS
from stylerelight.synth.mitsuba_setup import find_libllvm  # noqa: E402
from stylerelight.synth.render import LIGHT_DISTANCE, head_mesh, light_disk

needs_llvm = pytest.mark.skipif(find_libllvm() is None, reason="OLAT rendering needs libLLVM >= 17 "
                                "(apt-get install libllvm19; `make setup` does it as root)")


@pytest.fixture(scope="module")
def subject():
    return sample_subject(3)


def test_head_model_is_a_closed_mesh_with_68_landmarks():
    m = HeadModel.default()
    assert 10_000 <= len(m.triangles) <= 20_000
    edges = Counter()
    for a, b, c in m.triangles:
        for e in ((a, b), (b, c), (c, a)):
            edges[tuple(sorted(e))] += 1
    assert set(edges.values()) == {2}  # closed, manifold
    assert len(set(m.landmarks.tolist())) == 68
    lm = m.mean[m.landmarks]
    assert lm[42:48, 0].mean() > 0.1 > -0.1 > lm[36:42, 0].mean()  # left eye at +x (subject's left)
    assert np.argmax(lm[:, 2]) in range(27, 36)  # the nose is the frontmost landmark
    assert lm[8, 1] < lm[57, 1] < lm[33, 1] < lm[27, 1]  # chin < lower lip < nose base < bridge
    # outward orientation: the signed volume is positive
    v = m.mean[m.triangles]
    assert np.einsum("ij,ij->i", v[:, 0], np.cross(v[:, 1], v[:, 2])).sum() > 0


def test_head_model_is_linear_and_round_trips(tmp_path):
    m = HeadModel.default()
    a, b = np.random.default_rng(0).normal(size=(2, len(m.id_names)))
    assert np.allclose(m.vertices(a) + m.vertices(b) - m.vertices(), m.vertices(a + b), atol=1e-5)
    m.save(tmp_path / "model.npz")
    back = HeadModel.load(tmp_path / "model.npz")
    assert np.array_equal(back.mean, m.mean) and np.array_equal(back.landmarks, m.landmarks)
    assert back.id_names == m.id_names and set(back.regions) == set(m.regions)


def test_subjects_are_seeded_and_varied():
    s1, s2 = sample_subject(5), sample_subject(5)
    assert np.array_equal(s1.vertices(), s2.vertices()) and np.array_equal(s1.albedo, s2.albedo)
    tones = [sample_subject(i).albedo.mean() for i in range(12)]
    assert max(tones) > 2.5 * min(tones)  # light to dark skin
    assert not np.allclose(sample_subject(6).vertices(), s1.vertices())


@pytest.mark.parametrize("kind", KINDS + HELD_OUT_KINDS)
def test_envmaps(kind):
    a, b = sample_envmap(9, kind=kind), sample_envmap(9, kind=kind)
    assert np.array_equal(a.data, b.data) and a.data.shape == (64, 128, 3)
    assert np.isfinite(a.data).all() and (a.data >= 0).all() and a.data.max() > 0


def test_envmap_orientation_lights_the_expected_cheek(subject):
    """A bright spot at 3/4 of the width (+x) lights the subject's left cheek, which a frontal
    camera sees on the right half of the image."""
    env = np.zeros((32, 64, 3), np.float32)
    env[14:18, 46:50] = 200.0
    img = render_envmap(subject, EnvMap(env), Camera(), 32, spp=16).mean(-1)
    assert img[:, 16:].sum() > 5 * img[:, :16].sum()


def test_positive_yaw_shows_more_of_the_left_cheek(subject):
    lm = subject.landmarks3d()
    cheek_l, cheek_r = lm[14], lm[2]  # jaw points on the subject's left and right
    for yaw in (20.0, 40.0):
        cam = Camera(yaw=yaw)
        p = cam.project(np.stack([cheek_l, cheek_r, lm[30], lm[27]]), 64)
        nose_offset = p[2, 0] - p[3, 0]
        assert nose_offset < 0  # the nose tip points to the image's left
        width_l, width_r = abs(p[0, 0] - p[2, 0]), abs(p[1, 0] - p[2, 0])
        assert width_l > width_r  # more of the left cheek is visible
    # and the rendered silhouette agrees: more head pixels right of the nose
    _, alpha = render_envmap(subject, sample_envmap(0, kind="overcast"), Camera(yaw=30), 48, spp=4,
                             return_mask=True)
    nose_x = Camera(yaw=30).project(lm[30:31], 48)[0, 0]
    cols = np.nonzero(alpha[20:28].max(0) > 0.5)[0]
    assert cols.max() - nose_x > nose_x - cols.min()


@needs_llvm
def test_olat_relighting_matches_envmap_render(subject):
    """The light-stage promise: relighting with stage.project(env) equals rendering under env."""
    stage = LightStage.default()
    cams = [Camera(yaw=20.0)]
    cap = render_olat(subject, stage, cams, resolution=32, spp=4)
    assert cap.olat.shape == (1, 150, 32, 32, 3)
    env = sample_envmap(1, kind="overcast", height=64)
    gt, alpha = render_envmap(subject, env, cams[0], 32, spp=256, return_mask=True)
    relit = cap.relight(stage.project(env), camera=0)
    m = alpha > 0.99
    err = np.sqrt(((relit - gt)[m] ** 2).mean() / (gt[m] ** 2).mean())
    assert err < 0.08
    assert np.abs(cap.mask[0] - alpha).mean() < 0.02


@needs_llvm
def test_two_lights_on_equal_the_sum_of_their_olat_images(subject):
    """Linearity against Mitsuba's own integrator with two real disk area emitters."""
    import mitsuba as mi

    from stylerelight.synth.render import _sensor_dict

    stage = LightStage.default()
    l1, l2 = 10, 75
    cam = Camera(yaw=-10.0)
    cap = render_olat(subject, stage, [cam], resolution=24, spp=64, seed=1)
    r, radiance = light_disk()
    lights = {}
    for k, li in enumerate((l1, l2)):
        d = stage.directions[li]
        lights[f"light{k}"] = {
            "type": "disk",
            "to_world": mi.ScalarTransform4f().look_at(origin=(d * LIGHT_DISTANCE).tolist(), target=[0, 0, 0],
                                                       up=[0, 1, 0] if abs(d[1]) < 0.9 else [1, 0, 0])
            @ mi.ScalarTransform4f().scale([r, r, 1]),
            "emitter": {"type": "area", "radiance": {"type": "rgb", "value": [radiance] * 3}}}
    scene = mi.load_dict({"type": "scene", "integrator": {"type": "direct", "hide_emitters": True},
                          "sensor": _sensor_dict(cam, 24, 1024), "head": head_mesh(subject), **lights})
    both = np.array(mi.render(scene, seed=3))[..., :3]
    summed = cap.olat[0, l1] + cap.olat[0, l2]
    lit = both.mean(-1) > 0.02 * both.max()
    assert lit.sum() > 20
    rel = np.abs(both - summed)[lit].mean() / both[lit].mean()
    print("two lights: mean relative difference", rel)
    assert rel < 0.05, rel


def test_light_disk_units():
    r, radiance = light_disk()
    omega = 2 * math.pi * (1 - LIGHT_DISTANCE / math.hypot(LIGHT_DISTANCE, r))
    assert radiance * omega == pytest.approx(1.0)


def test_render_determinism_and_portrait(subject):
    env = sample_envmap(2, kind="studio")
    a = render_envmap(subject, env, Camera(), 16, spp=8, seed=4)
    b = render_envmap(subject, env, Camera(), 16, spp=8, seed=4)
    assert np.allclose(a, b, atol=1e-6)  # float summation order may differ across threads
    assert not np.allclose(a, render_envmap(subject, env, Camera(), 16, spp=8, seed=5), atol=1e-3)
    p1 = render_portrait(subject, env, Camera(yaw=15), 32, spp=8, seed=1)
    p2 = render_portrait(subject, env, Camera(yaw=15), 32, spp=8, seed=1)
    assert p1.dtype == np.uint8 and p1.shape == (32, 32, 3) and np.array_equal(p1, p2)
    corner = p1[:3, :3].reshape(-1, 3).astype(int)
    assert np.abs(corner - 128).max() <= 2  # the neutral background


def test_scalar_fallback_without_llvm(tmp_path):
    """No usable libLLVM: forward renders fall back to scalar_rgb with one warning; OLAT says why not."""
    import os
    import subprocess
    import sys

    code = (
        "import warnings\n"
        "warnings.simplefilter('always')\n"
        "from stylerelight.synth import *\n"
        "with warnings.catch_warnings(record=True) as w:\n"
        "    img = render_envmap(sample_subject(1), sample_envmap(1), Camera(), 8, spp=2)\n"
        "    img2 = render_envmap(sample_subject(1), sample_envmap(1), Camera(), 8, spp=2)\n"
        "msgs = [str(x.message) for x in w if 'scalar_rgb' in str(x.message)]\n"
        "assert len(msgs) == 1 and img.shape == (8, 8, 3) and img.max() > 0, msgs\n"
        "try:\n"
        "    render_olat(sample_subject(1), resolution=8)\n"
        "except ValueError as e:\n"
        "    print('OLAT:', e)\n"
    )
    env = dict(os.environ, DRJIT_LIBLLVM_PATH=str(tmp_path / "no-llvm.so"))
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "OLAT: OLAT rendering needs" in r.stdout


def test_mitsuba_renders_take_turns_across_threads():
    """Renders run one at a time in a process (two threads rendering at once crashed the LLVM backend): a
    render in another thread waits while the lock is held, then gives what a render in this thread gives."""
    import threading
    import time

    from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject
    from stylerelight.synth.mitsuba_setup import MITSUBA_LOCK

    args = (sample_subject(3), sample_envmap(3), Camera(yaw=5))
    out = {}
    worker = threading.Thread(target=lambda: out.setdefault("img", render_portrait(*args, 16, spp=2)))
    with MITSUBA_LOCK:
        worker.start()
        time.sleep(0.5)
        assert worker.is_alive() and "img" not in out
    worker.join(timeout=120)
    assert np.array_equal(out["img"], render_portrait(*args, 16, spp=2))
