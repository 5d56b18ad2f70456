"""Damaged files never escape as tracebacks: seeded bit-flipped, truncated and spliced generator
(own, rosinality, NVlabs), encoder, mapper and latent files all end in the one-line CheckpointError;
env maps in the one-line EnvMapError; photos in the one-line AlignError."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import make_generator, write_nvlabs_shaped_pickle

import stylerelight as sr
from stylerelight.align import AlignError, load_image
from stylerelight.edit import load_light_file
from stylerelight.gan.io import rosinality_state_dict
from stylerelight.invert.encoders import CompactEncoder, Encoder
from stylerelight.invert.latent_file import Latent, load_latent, save_latent
from stylerelight.lighting import EnvMapError, LightStage, save_envmap
from stylerelight.mapper import build_mapper, load_mapper, save_mapper
from stylerelight.synth import sample_envmap

VARIANTS = 210  # per file kind: 70 each of bit flips, truncations and splices


@pytest.fixture(scope="module")
def originals(tmp_path_factory):
    d = tmp_path_factory.mktemp("orig")
    G = make_generator(res=16)
    write_nvlabs_shaped_pickle(G, d / "g.pkl")
    sr.save_generator(G, d / "g.pt")
    torch.save(rosinality_state_dict(G), d / "r.pt")
    E = Encoder(CompactEncoder(G.num_ws, G.w_dim, 16, width=8), G.mapping.w_avg.clone(), 16, "compact",
                meta={"config": {"n_styles": G.num_ws, "w_dim": G.w_dim, "resolution": 16, "width": 8}})
    sr.invert.save_encoder(E, d / "e.pt", G=G)
    save_latent(Latent.for_generator(G, torch.randn(1, G.num_ws, G.w_dim)), d / "l.pt")
    save_mapper(build_mapper(G, LightStage.default(24).directions, geometry=False, hidden=16), d / "m.pt")
    env = sample_envmap(1, height=8)
    save_envmap(env, d / "env.hdr")
    save_envmap(env, d / "env.exr")
    from PIL import Image

    Image.fromarray((np.random.default_rng(0).random((24, 32, 3)) * 255).astype(np.uint8)).save(d / "p.png")
    Image.fromarray((np.random.default_rng(1).random((24, 32, 3)) * 255).astype(np.uint8)).save(d / "p.jpg")

    def light(p):
        try:
            return load_light_file(p, 24)
        except EnvMapError as e:
            raise sr.CheckpointError(str(e)) from None

    def photo(p):
        try:
            return load_image(p)
        except AlignError as e:
            raise sr.CheckpointError(str(e)) from None

    return {"mapper": (d / "m.pt", load_mapper), "hdr": (d / "env.hdr", light), "exr": (d / "env.exr", light),
            "png": (d / "p.png", photo), "jpg": (d / "p.jpg", photo),
            "nvlabs": (d / "g.pkl", sr.load_generator), "own": (d / "g.pt", sr.load_generator),
            "rosinality": (d / "r.pt", sr.load_generator), "encoder": (d / "e.pt", sr.load_encoder),
            "latent": (d / "l.pt", load_latent)}


@pytest.mark.parametrize("kind", ["nvlabs", "own", "rosinality", "encoder", "latent", "mapper", "hdr", "exr", "png",
                                  "jpg"])
def test_damaged_files_give_one_line_errors(tmp_path, originals, kind):
    path, load = originals[kind]
    raw = path.read_bytes()
    donors = [p.read_bytes() for p, _ in originals.values()]
    rng = np.random.default_rng(sum(map(ord, kind)))
    loaded = 0
    for i in range(VARIANTS):
        b = bytearray(raw)
        if i % 3 == 0:
            for _ in range(int(rng.integers(1, 4))):
                b[int(rng.integers(len(b)))] ^= 1 << int(rng.integers(8))
        elif i % 3 == 1:
            b = b[: int(rng.integers(1, len(b)))]
        else:
            a, c = sorted(int(v) for v in rng.integers(0, len(b), 2))
            b = b[:a] + donors[int(rng.integers(len(donors)))][a:c] + b[c:]
        p = tmp_path / f"fuzz{i}{path.suffix}"
        p.write_bytes(bytes(b))
        try:
            load(p)
            loaded += 1  # a flip in tensor data can leave a valid file
        except sr.CheckpointError as e:
            assert "\n" not in str(e) and str(p) in str(e)
    assert loaded < VARIANTS  # the damage was seen
