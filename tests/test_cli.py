"""CLI: generate, convert, doctor; one-line errors and no overwrites without --force."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import make_generator, write_nvlabs_shaped_pickle
from PIL import Image

import stylerelight as sr
from stylerelight.cli import cli, parse_seeds


def _run(*args):
    return CliRunner().invoke(cli, list(map(str, args)), catch_exceptions=False)


def _one_line_error(r):
    assert r.exit_code != 0
    lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error"), r.output
    assert "Traceback" not in r.output


def test_parse_seeds():
    assert parse_seeds("0-3,7") == [0, 1, 2, 3, 7]
    assert parse_seeds("5") == [5]


def test_generate_grid_matches_library(tmp_path):
    G = make_generator(res=16)
    sr.save_generator(G, tmp_path / "g.pt")
    out = tmp_path / "grid.png"
    r = _run("generate", "-c", tmp_path / "g.pt", "--seeds", "0-3", "--trunc", "0.7", "--cols", "4",
             "-o", out)
    assert r.exit_code == 0, r.output
    grid = np.asarray(Image.open(out))
    assert grid.shape == (2 + 18, 2 + 4 * 18, 3)
    with torch.no_grad():
        img = G(G.z_from_seed(2), truncation_psi=0.7)
    expect = sr.imageio.gan_to_uint8(img)[0]
    assert np.array_equal(grid[2:18, 2 + 2 * 18: 18 + 2 * 18], expect)
    # never overwrite without --force
    before = out.read_bytes()
    r = _run("generate", "-c", tmp_path / "g.pt", "--seeds", "5", "-o", out)
    _one_line_error(r)
    assert "--force" in r.output and out.read_bytes() == before
    r = _run("generate", "-c", tmp_path / "g.pt", "--seeds", "5", "-o", out, "--force")
    assert r.exit_code == 0 and out.read_bytes() != before


def test_generate_errors(tmp_path):
    _one_line_error(_run("generate", "-c", tmp_path / "missing.pt", "-o", tmp_path / "x.png"))
    (tmp_path / "junk.pkl").write_bytes(b"\x80\x04junk")
    _one_line_error(_run("generate", "-c", tmp_path / "junk.pkl", "-o", tmp_path / "x.png"))
    r = _run("generate", "-c", tmp_path / "junk.pkl", "--seeds", "a-b", "-o", tmp_path / "x.png")
    assert r.exit_code != 0 and "Traceback" not in r.output
    assert not (tmp_path / "x.png").exists()


def test_convert(tmp_path):
    G = make_generator()
    write_nvlabs_shaped_pickle(G, tmp_path / "nv.pkl")
    r = _run("convert", tmp_path / "nv.pkl", tmp_path / "own.pt")
    assert r.exit_code == 0, r.output
    obj = torch.load(tmp_path / "own.pt", weights_only=True)
    assert obj["format"] == "stylerelight-generator"
    _one_line_error(_run("convert", tmp_path / "nv.pkl", tmp_path / "own.pt"))
    assert _run("convert", tmp_path / "nv.pkl", tmp_path / "own.pt", "--force").exit_code == 0


def test_doctor_reports_every_component():
    r = _run("doctor")
    assert r.exit_code == 0
    for name in ("torch", "compiled ops", "mitsuba", "dlib landmarks", "lpips backbone"):
        assert name in r.output


def test_lightstage_render_relight_and_dataset(tmp_path, monkeypatch):
    import pytest

    from stylerelight.synth.mitsuba_setup import find_libllvm

    if find_libllvm() is None:
        pytest.skip("OLAT rendering needs libLLVM >= 17 (apt-get install libllvm19)")
    import json

    from stylerelight.lighting import LightStage, OLATCapture, save_envmap
    from stylerelight.synth import sample_envmap

    # a small stage keeps this quick; the default 150-light rig is covered in test_synth
    LightStage.default(24).save(tmp_path / "stage.json")
    r = _run("lightstage", "render", "--subjects", "1", "--out", tmp_path / "caps", "--resolution", "16",
             "--spp", "1", "--stage", tmp_path / "stage.json")
    assert r.exit_code == 0, r.output
    cap_dir = tmp_path / "caps" / "subject_0000"
    cap = OLATCapture.load(cap_dir)
    assert cap.olat.shape == (8, 24, 16, 16, 3) and len(cap.meta["landmarks"]) == 8
    r = _run("lightstage", "render", "--subjects", "1", "--out", tmp_path / "caps", "--resolution", "16",
             "--stage", tmp_path / "stage.json")
    assert "skip" in r.output  # resumable
    save_envmap(sample_envmap(0), tmp_path / "env.hdr")
    out = tmp_path / "relit.png"
    r = _run("lightstage", "relight", cap_dir, "--light", tmp_path / "env.hdr", "--camera", "3", "-o", out)
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(out)).shape == (16, 16, 3)
    _one_line_error(_run("lightstage", "relight", cap_dir, "--light", tmp_path / "nope.hdr", "-o", tmp_path / "x.png"))
    _one_line_error(_run("lightstage", "relight", cap_dir, "--light", tmp_path / "env.hdr", "--camera", "9",
                         "-o", tmp_path / "y.png"))
    # dataset: deterministic, resumable, with a manifest
    args = ["lightstage", "build-dataset", "--images", "3", "--resolution", "16", "--spp", "4", "--seed", "5"]
    assert _run(*args, "--out", tmp_path / "d1").exit_code == 0
    (tmp_path / "d1" / "params" / "0000001.json").unlink()
    (tmp_path / "d1" / "images" / "0000001.png").unlink()
    assert _run(*args, "--out", tmp_path / "d1").exit_code == 0
    assert _run(*args, "--out", tmp_path / "d2").exit_code == 0
    for i in range(3):
        a = np.asarray(Image.open(tmp_path / "d1" / "images" / f"{i:07d}.png"))
        b = np.asarray(Image.open(tmp_path / "d2" / "images" / f"{i:07d}.png"))
        assert a.shape == (16, 16, 3) and np.abs(a.astype(int) - b).max() <= 1
    rows = [json.loads(ln) for ln in (tmp_path / "d1" / "manifest.jsonl").read_text().splitlines()]
    assert [r["index"] for r in rows] == [0, 1, 2]
    assert all(abs(r["yaw"]) <= 45 and abs(r["pitch"]) <= 20 for r in rows)


def test_demo_writes_contact_sheet(tmp_path):
    import pytest

    from stylerelight.synth.mitsuba_setup import find_libllvm

    if find_libllvm() is None:
        pytest.skip("the demo renders OLAT, which needs libLLVM >= 17 (apt-get install libllvm19)")
    G = make_generator(res=32)
    sr.save_generator(G, tmp_path / "g.pt")
    r = _run("demo", "--out", tmp_path / "demo", "--resolution", "24", "-c", tmp_path / "g.pt", "--steps", "5")
    assert r.exit_code == 0, r.output
    sheet = np.asarray(Image.open(tmp_path / "demo" / "lightstage_contact_sheet.png"))
    assert sheet.shape[1] == 2 + 6 * 26
    # the generator part: 16 samples in 2 rows of 8, and (held-out render | reconstruction)
    assert np.asarray(Image.open(tmp_path / "demo" / "generator_samples.png")).shape == (2 + 2 * 34, 2 + 8 * 34, 3)
    assert np.asarray(Image.open(tmp_path / "demo" / "inversion.png")).shape == (2 + 34, 2 + 2 * 34, 3)
    assert "PSNR" in r.output


def test_align_and_invert_commands(tmp_path):
    import skimage.data

    Image.fromarray(skimage.data.astronaut()).save(tmp_path / "astro.png")
    r = _run("align", tmp_path / "astro.png", "-o", tmp_path / "al.png", "--size", "64")
    assert r.exit_code == 0, r.output
    assert np.asarray(Image.open(tmp_path / "al.png")).shape == (64, 64, 3)
    G = make_generator(res=32)
    sr.save_generator(G, tmp_path / "g.pt")
    r = _run("invert", tmp_path / "astro.png", "-c", tmp_path / "g.pt", "-o", tmp_path / "lat.pt", "--steps", "3",
             "--save-reconstruction", tmp_path / "rec.png")
    assert r.exit_code == 0, r.output
    lat = torch.load(tmp_path / "lat.pt", weights_only=True)
    assert lat["ws"].shape == (1, G.num_ws, G.w_dim)
    assert np.asarray(Image.open(tmp_path / "rec.png")).shape == (32, 32, 3)
    # no face / unreadable: one line, nothing written
    Image.fromarray(np.full((100, 100, 3), 90, np.uint8)).save(tmp_path / "blank.png")
    _one_line_error(_run("align", tmp_path / "blank.png", "-o", tmp_path / "none.png"))
    _one_line_error(_run("invert", tmp_path / "blank.png", "-c", tmp_path / "g.pt", "-o", tmp_path / "none.pt"))
    (tmp_path / "bad.jpg").write_bytes(b"garbage")
    _one_line_error(_run("align", tmp_path / "bad.jpg", "-o", tmp_path / "none.png"))
    assert not (tmp_path / "none.png").exists() and not (tmp_path / "none.pt").exists()


def test_invert_methods_and_latent_file(tmp_path):
    """--method encoder/hybrid with an encoder file; the latent records generator and alignment;
    grey / RGBA / 16-bit aligned inputs work; a mismatched encoder or latent is one line."""
    from stylerelight.invert.encoders import CompactEncoder, Encoder
    from stylerelight.invert.latent_file import load_latent

    G = make_generator(res=32)
    sr.save_generator(G, tmp_path / "g.pt")
    net = CompactEncoder(G.num_ws, G.w_dim, 32, width=8)
    E = Encoder(net, G.mapping.w_avg.clone(), 32, "compact",
                meta={"config": {"n_styles": G.num_ws, "w_dim": G.w_dim, "resolution": 32, "width": 8}})
    sr.invert.save_encoder(E, tmp_path / "e.pt", G=G)
    face = (np.random.default_rng(0).uniform(0, 255, (48, 48, 3))).astype(np.uint8)
    Image.fromarray(face).save(tmp_path / "rgb.png")
    Image.fromarray(face[..., 0]).save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([face, np.full((48, 48), 255, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(face[..., 0].astype(np.uint16) * 257).save(tmp_path / "g16.png")
    base = ["-c", tmp_path / "g.pt", "--encoder", tmp_path / "e.pt", "--aligned"]
    r = _run("invert", tmp_path / "rgb.png", *base, "--method", "encoder", "-o", tmp_path / "enc.pt")
    assert r.exit_code == 0, r.output
    lat = load_latent(tmp_path / "enc.pt", G)
    x = sr.imageio.uint8_to_gan(np.asarray(Image.fromarray(face).resize((32, 32), Image.LANCZOS)))
    assert torch.allclose(lat.ws, E(x), atol=1e-6)  # encoder only: exactly the encoder's ws
    assert lat.info["method"] == "encoder" and lat.generator["hash"] == sr.gan.generator_hash(G)
    for name in ("grey", "rgba", "g16"):
        r = _run("invert", tmp_path / f"{name}.png", *base, "--steps", "2", "-o", tmp_path / f"{name}.pt")
        assert r.exit_code == 0, r.output
        assert load_latent(tmp_path / f"{name}.pt").info["method"] == "hybrid"
    # existing output kept without --force
    _one_line_error(_run("invert", tmp_path / "rgb.png", *base, "--method", "encoder", "-o", tmp_path / "enc.pt"))
    # hybrid without an encoder for a user's generator: told what to pass
    _one_line_error(_run("invert", tmp_path / "rgb.png", "-c", tmp_path / "g.pt", "--aligned", "--method", "hybrid",
                         "-o", tmp_path / "x.pt"))
    # an encoder / latent of another generator is refused in one line
    G2 = make_generator(res=32, seed=3)
    sr.save_generator(G2, tmp_path / "g2.pt")
    _one_line_error(_run("invert", tmp_path / "rgb.png", "-c", tmp_path / "g2.pt", "--encoder", tmp_path / "e.pt",
                         "--aligned", "--method", "encoder", "-o", tmp_path / "x.pt"))
    assert not (tmp_path / "x.pt").exists()
    with pytest.raises(sr.CheckpointError, match="belongs to generator"):
        load_latent(tmp_path / "enc.pt", G2)
