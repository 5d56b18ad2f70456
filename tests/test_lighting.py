"""Env maps, light stage, OLAT captures, display: conventions, energy, formats, errors."""

from __future__ import annotations

import json

import numpy as np
import pytest

from stylerelight.lighting import (
    EnvMap,
    EnvMapError,
    LightStage,
    OLATCapture,
    direction_to_pixel,
    latlong_solid_angles,
    load_envmap,
    save_envmap,
    srgb_decode,
    srgb_encode,
    to_display,
)
from stylerelight.lighting.hdr_io import _rgbe_to_float


def test_orientation_convention():
    env = EnvMap(np.zeros((32, 64, 3), np.float32))
    d = env.directions()
    assert np.allclose(d[16, 32], [0, 0, -1], atol=0.1)  # centre column: behind the head (-z)
    assert np.allclose(d[16, 48], [1, 0, 0], atol=0.1)  # 3/4 across: +x, the subject's left
    assert np.allclose(d[16, 16], [-1, 0, 0], atol=0.1)
    assert np.allclose(d[16, 0], [0, 0, 1], atol=0.1)  # the seam: towards the frontal camera
    assert d[0, 10, 1] > 0.99 and d[-1, 10, 1] < -0.99  # top row up
    r, c = direction_to_pixel(d, 32, 64)
    assert np.allclose(r, np.arange(32)[:, None], atol=1e-4)
    assert np.allclose(c, np.arange(64)[None, :], atol=1e-4)


def test_solid_angles_sum_to_4pi():
    for h in (4, 31, 64):
        assert latlong_solid_angles(h, 2 * h).sum() == pytest.approx(4 * np.pi, rel=1e-12)


def test_rotate_and_resize():
    rng = np.random.default_rng(0)
    env = EnvMap(rng.random((16, 32, 3)).astype(np.float32))
    rot = env.rotate(90.0)  # a quarter turn = a shift of W/4 columns
    assert np.allclose(rot.data, np.roll(env.data, 8, axis=1), atol=1e-6)
    assert np.allclose(env.rotate(360.0).data, env.data, atol=1e-6)
    small = env.resize(8)
    assert small.data.shape == (8, 16, 3)
    assert np.allclose(small.mean_radiance(), env.mean_radiance(), rtol=1e-5)  # energy kept
    assert env.resize(32).data.shape == (32, 64, 3)


def test_stage_default_and_energy():
    stage = LightStage.default()
    assert stage.num_lights == 150
    assert np.allclose(np.linalg.norm(stage.directions, axis=1), 1)
    assert stage.solid_angles.sum() == pytest.approx(4 * np.pi, rel=1e-9)
    assert np.array_equal(stage.cell_of(stage.directions), np.arange(150))
    for h in (32, 128):
        c = stage.project(EnvMap(np.full((h, 2 * h, 3), 2.5, np.float32)))
        assert c.sum(0) == pytest.approx([2.5 * 4 * np.pi] * 3, rel=1e-6)
        assert np.allclose(c[:, 0], 2.5 * stage.solid_angles, rtol=0.01)


def test_project_point_light_lands_in_its_cell():
    stage = LightStage.default()
    env = np.zeros((64, 128, 3), np.float32)
    r, c = direction_to_pixel(stage.directions[17], 64, 128)
    env[int(round(r)), int(round(c))] = [1.0, 2.0, 3.0]
    coeffs = stage.project(EnvMap(env))
    sa = latlong_solid_angles(64, 128)[int(round(r)), int(round(c))]
    assert np.argmax(coeffs[:, 0]) == 17
    assert np.allclose(coeffs.sum(0), np.array([1, 2, 3]) * sa)


def test_stage_json_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    d = rng.normal(size=(20, 3))
    stage = LightStage(d, colors=rng.uniform(0.8, 1.2, (20, 3)), name="mine")
    stage.save(tmp_path / "s.json")
    back = LightStage.load(tmp_path / "s.json")
    assert np.allclose(back.directions, stage.directions) and np.allclose(back.colors, stage.colors)
    assert np.allclose(back.solid_angles, stage.solid_angles)
    (tmp_path / "bad.json").write_text(json.dumps({"lights": []}))
    with pytest.raises(EnvMapError):
        LightStage.load(tmp_path / "bad.json")


def _hand_written_rle_hdr(path, rgbe):
    """An RLE .hdr written byte by byte, independently of the package's writer."""
    h, w, _ = rgbe.shape
    out = bytearray(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\nEXPOSURE=1.0\n\n-Y %d +X %d\n" % (h, w))
    for y in range(h):
        out += bytes([2, 2, w >> 8, w & 255])
        for c in range(4):
            row = rgbe[y, :, c]
            half = w // 2  # first half as one literal run, second half as repeat runs of one value
            out += bytes([half]) + bytes(row[:half].tolist())
            out += bytes([128 + (w - half), row[half]])
    path.write_bytes(bytes(out))


def test_rle_hdr_loads_exactly(tmp_path):
    rng = np.random.default_rng(2)
    h, w = 8, 16
    rgbe = rng.integers(0, 256, (h, w, 4)).astype(np.uint8)
    rgbe[..., 3] = rng.integers(120, 140, (h, w))
    rgbe[..., 0] |= 128  # canonical RGBE (the largest mantissa >= 128), as writers produce
    rgbe[:, w // 2:] = rgbe[:, w // 2: w // 2 + 1]  # constant second half (repeat runs)
    _hand_written_rle_hdr(tmp_path / "a.hdr", rgbe)
    data = load_envmap(tmp_path / "a.hdr").data
    m = rgbe[..., :3].astype(np.float64) + 0.5
    expect = m * np.ldexp(1.0, rgbe[..., 3:4].astype(int) - 136)
    assert np.array_equal(data, expect.astype(np.float32))
    # our writer's RLE output decodes to the same RGBE values
    save_envmap(EnvMap(data), tmp_path / "b.hdr")
    assert np.array_equal(load_envmap(tmp_path / "b.hdr").data, data)
    assert np.array_equal(_rgbe_to_float(rgbe), data)


def test_flat_and_flipped_hdr(tmp_path):
    rgbe = np.zeros((4, 8, 4), np.uint8)
    rgbe[..., 0] = np.arange(8)[None] * 20
    rgbe[..., 3] = 128
    rgbe[0, 0, 1] = 200
    head = b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n"
    (tmp_path / "flat.hdr").write_bytes(head + b"-Y 4 +X 8\n" + rgbe.tobytes())
    (tmp_path / "flip.hdr").write_bytes(head + b"+Y 4 +X 8\n" + rgbe.tobytes())
    a, b = load_envmap(tmp_path / "flat.hdr").data, load_envmap(tmp_path / "flip.hdr").data
    assert np.array_equal(a, b[::-1]) and a[0, 0, 1] > 0


@pytest.mark.parametrize("compression", ["none", "zip", "piz", "dwaa", "dwab"])
def test_exr_compressions(tmp_path, compression):
    import OpenEXR

    rng = np.random.default_rng(3)
    a = (rng.random((16, 32, 3)) * 4).astype(np.float32)
    path = tmp_path / f"x_{compression}.exr"
    save_envmap(EnvMap(a), path, compression=compression)
    b = load_envmap(path).data
    with OpenEXR.File(str(path)) as f:  # the library's own decode, RGB interleaved
        ref = np.asarray(f.channels()["RGB"].pixels, np.float32)
    assert np.array_equal(b, np.maximum(ref, 0))
    if compression in ("none", "zip", "piz"):
        assert np.array_equal(a, b)
    else:  # DWA is lossy by design
        assert np.abs(a - b).mean() < 0.02 * a.mean()


def test_bad_envmaps(tmp_path):
    with pytest.raises(EnvMapError, match="width = 2 x height"):
        EnvMap(np.zeros((10, 10, 3)))
    with pytest.raises(EnvMapError, match="RGB"):
        EnvMap(np.zeros((10, 20, 5)))
    with pytest.warns(UserWarning, match="non-finite or negative"):
        env = EnvMap(np.array([[[np.nan, -1, 2]] * 4] * 2, np.float32))
    assert np.isfinite(env.data).all() and (env.data >= 0).all()
    (tmp_path / "junk.hdr").write_bytes(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 4 +X 8\n\x02\x02")
    (tmp_path / "junk.exr").write_bytes(b"not an exr")
    (tmp_path / "x.png").write_bytes(b"\x89PNG")
    for name, match in [("junk.hdr", "truncated"), ("junk.exr", "unreadable"), ("x.png", "unknown env map format"),
                        ("missing.hdr", "no such file")]:
        with pytest.raises(EnvMapError, match=match) as e:
            load_envmap(tmp_path / name)
        assert "\n" not in str(e.value)


def test_olat_relight_and_round_trip(tmp_path):
    rng = np.random.default_rng(4)
    stage = LightStage.default(20)
    olat = rng.random((2, 20, 6, 6, 3)).astype(np.float32)
    cap = OLATCapture(olat, rng.random((2, 6, 6)).astype(np.float32), [{"yaw": 0.0}, {"yaw": 10.0}], stage)
    one_hot = np.zeros((20, 3))
    one_hot[5] = [1, 2, 3]
    assert np.allclose(cap.relight(one_hot, camera=1), olat[1, 5] * [1, 2, 3], atol=1e-6)
    c1, c2 = rng.random((20, 3)), rng.random((20, 3))
    assert np.allclose(cap.relight(c1 + c2), cap.relight(c1) + cap.relight(c2), atol=1e-5)
    cap.save(tmp_path / "cap")
    back = OLATCapture.load(tmp_path / "cap")
    assert np.allclose(back.olat, olat, rtol=1e-3, atol=1e-3)  # float16 on disk
    assert np.allclose(back.mask, cap.mask, atol=1 / 255)
    assert back.cameras == cap.cameras
    with pytest.raises(FileExistsError):
        cap.save(tmp_path / "cap")
    with pytest.raises(ValueError):
        cap.relight(np.zeros((19, 3)))
    with pytest.raises(EnvMapError, match="not an OLAT capture"):
        OLATCapture.load(tmp_path)


def test_display_transform():
    x = np.linspace(0, 1, 101)
    assert np.allclose(srgb_decode(srgb_encode(x)), x, atol=1e-12)
    assert np.allclose(srgb_encode(np.array([0.0, 1.0])), [0.0, 1.0], atol=1e-12)
    img = np.full((4, 4, 3), 0.5)
    u8 = to_display(img, exposure=0.36)  # 0.18 linear -> about 118 in sRGB
    assert abs(int(u8[0, 0, 0]) - 118) <= 1
    auto = to_display(img * 7, mask=np.ones((4, 4)))  # auto exposure maps the face median to 0.18
    assert np.array_equal(auto, u8)


def test_face_display_is_the_one_transform():
    """Premultiplied linear -> uint8: un-premultiplied, exposure from the covered face, grey outside."""
    from stylerelight.lighting import face_display, srgb_encode

    rng = np.random.default_rng(0)
    straight = rng.uniform(0.05, 0.3, (8, 8, 3))
    alpha = np.ones((8, 8))
    alpha[:, :2] = 0.0
    alpha[:, 2] = 0.5
    img, exp = face_display(straight * alpha[..., None], alpha)
    lum = straight[:, 3:] @ np.array([0.2126, 0.7152, 0.0722])
    assert exp == pytest.approx(0.18 / np.percentile(lum, 60))
    want = np.round(np.clip(srgb_encode(straight[:, 3:] * exp), 0, 1) * 255)
    assert np.abs(img[:, 3:].astype(float) - want).max() <= 1
    assert (img[:, :2] == 128).all()  # the grey background where nothing was hit
    edge = srgb_encode(straight[:, 2] * exp) * 0.5 + 0.25  # half covered: half face, half grey
    assert np.abs(img[:, 2] / 255.0 - edge).max() < 0.01



def test_disk_light_covers_its_cap_and_points_where_asked():
    d = np.array([0.6, 0.3, 0.74])
    from stylerelight.lighting import disk_light

    env = disk_light(d, angle_deg=10.0, radiance=5.0, fill=0.0, height=256)
    lit = env.data[..., 0] > 0
    cap = 2 * np.pi * (1 - np.cos(np.radians(10.0)))  # solid angle of a 10-degree cap
    assert abs(float(env.solid_angles()[lit].sum()) - cap) < 0.03 * cap
    # the irradiance-weighted mean direction is the disk's axis
    w = (env.data[..., 0] * env.solid_angles())[..., None]
    mean = (env.directions() * w).sum((0, 1))
    assert np.degrees(np.arccos(mean @ d / np.linalg.norm(mean) / np.linalg.norm(d))) < 0.5
    assert np.allclose(env.data[~lit], 0.0) and np.allclose(env.data[lit], 5.0)


def test_envmap_preview_keeps_the_sky_readable():
    """99th percentile at 0.8 of white: a tiny bright sun clips, the sky does not."""
    from stylerelight.lighting import EnvMap, envmap_preview

    data = np.full((32, 64, 3), 0.5, np.float32)
    data[:16] = [0.3, 0.5, 1.0]   # a blue upper half
    data[4, 10] = 1000.0          # the sun, one pixel
    img = envmap_preview(EnvMap(data), width=64)
    assert img.shape == (32, 64, 3) and img.dtype == np.uint8
    sky, ground = img[2:14].reshape(-1, 3).mean(0), img[18:30].reshape(-1, 3).mean(0)
    assert 150 < sky[2] < 255 and sky[2] > sky[0] + 40   # blue and not clipped
    assert abs(ground[0] - ground[2]) < 2                # grey stays grey


def test_stage_lights_are_few_lights_over_a_dim_ambient():
    """The stage's own lighting: 1-3 lights carry all but 0.3-10% of the power, which is spread
    over the sphere as a uniform radiance (each cell's share = its solid angle)."""
    from stylerelight.lighting.captures import stage_lights

    stage = LightStage.default()
    rng = np.random.default_rng(0)
    counts = set()
    for _ in range(40):
        c = stage_lights(stage, rng)
        assert c.shape == (stage.num_lights, 3) and (c >= 0).all()
        per_sr = c / stage.solid_angles[:, None]           # radiance of each cell
        floor = np.median(per_sr, 0)                         # the ambient's (most cells hold only it)
        keys = (per_sr > floor * 1.0001).any(1)
        counts.add(int(keys.sum()))
        assert np.allclose(per_sr[~keys], floor, rtol=1e-9)  # uniform radiance elsewhere
        ambient = floor * 4 * np.pi
        key_power = (c[keys] - floor * stage.solid_angles[keys, None]).sum(0).mean()
        assert 0.003 * 0.999 < ambient.mean() / key_power < 0.1 * 1.001
    assert counts == {1, 2, 3}


def test_light_pool_stage_light_share_leaves_the_env_map_draws_unchanged():
    """Stage lights take their share of a pool from a stream of their own: the pool's other
    entries are the plain pool's, in order, so pools made before the option are reproduced."""
    from stylerelight.lighting.captures import LightPool

    stage = LightStage.default()
    plain = LightPool(stage, 30, seed=3).coeffs
    mixed = LightPool(stage, 30, seed=3, stage_light_fraction=0.4).coeffs
    is_env = np.array([any(np.array_equal(m, q) for q in plain) for m in mixed])
    assert 5 < int((~is_env).sum()) < 25
    np.testing.assert_array_equal(mixed[is_env], plain[:int(is_env.sum())])
    for c in mixed[~is_env]:  # the others: at most three cells above a uniform radiance
        per_sr = (c / stage.solid_angles[:, None]).sum(1)
        assert (per_sr > np.median(per_sr) * 1.0001).sum() <= 3
