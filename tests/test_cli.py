"""CLI: generate, convert, doctor; one-line errors and no overwrites without --force."""

from __future__ import annotations

import numpy as np
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
