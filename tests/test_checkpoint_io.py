"""Checkpoint formats: round trips, content detection, and refusal of anything unsafe."""

from __future__ import annotations

import os
import pickle

import pytest
import torch
from conftest import make_generator, write_nvlabs_shaped_pickle

import stylerelight as sr
from stylerelight.gan import CheckpointError
from stylerelight.gan.io import rosinality_state_dict


def _same_outputs(G1, G2, atol=0.0):
    z = torch.randn(2, G1.z_dim, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ws = torch.randn(2, G1.num_ws, G1.w_dim, generator=torch.Generator().manual_seed(1))
        a = [G1.mapping(z), G1.mapping(z, truncation_psi=0.6), G1.synthesis(ws)]
        b = [G2.mapping(z), G2.mapping(z, truncation_psi=0.6), G2.synthesis(ws)]
    for x, y in zip(a, b, strict=True):
        assert (x - y).abs().max() <= atol


def test_own_format_round_trip(tmp_path):
    G = make_generator(conv_clamp=256.0)
    sr.save_generator(G, tmp_path / "g.pt")
    G2 = sr.load_generator(tmp_path / "g.pt")
    assert G2.cfg == G.cfg
    _same_outputs(G, G2)
    obj = torch.load(tmp_path / "g.pt", weights_only=True)  # plain data, no code
    assert obj["format"] == "stylerelight-generator"


def test_rosinality_shaped_round_trip(tmp_path):
    G = make_generator(res=64, channel_base=512, channel_max=64)
    torch.save(rosinality_state_dict(G), tmp_path / "ros.pt")
    G2 = sr.load_generator(tmp_path / "ros.pt")
    assert G2.cfg.channels == {r: G.cfg.channels_at(r) for r in (4, 8, 16, 32, 64)}
    _same_outputs(G, G2)
    # and back: own -> rosinality -> own is the identity on every weight
    sd2 = rosinality_state_dict(G2)
    for k, v in rosinality_state_dict(G)["g_ema"].items():
        assert torch.equal(v, sd2["g_ema"][k]), k


def test_rosinality_training_checkpoint_without_latent_avg(tmp_path):
    """rosinality's train.py saves g, d, g_ema, optimisers and an argparse Namespace."""
    import argparse

    G = make_generator()
    ck = rosinality_state_dict(G)
    latent_avg = ck.pop("latent_avg")
    ck.update(g={}, d={}, args=argparse.Namespace(lr_mlp=0.01, size=32))
    torch.save(ck, tmp_path / "train.pt")
    G2 = sr.load_generator(tmp_path / "train.pt")
    with torch.no_grad():
        z = torch.randn(10000, G.z_dim, generator=torch.Generator().manual_seed(0))
        expect = G.mapping(z)[:, 0].mean(0)
    assert torch.allclose(G2.mapping.w_avg, expect, atol=1e-5)
    assert not torch.allclose(G2.mapping.w_avg, latent_avg)


def test_nvlabs_shaped_round_trip(tmp_path):
    G = make_generator(res=32, conv_clamp=128.0)
    write_nvlabs_shaped_pickle(G, tmp_path / "nv.pkl")
    G2 = sr.load_generator(tmp_path / "nv.pkl")
    assert G2.cfg.conv_clamp == 128.0
    assert G2.cfg.mapping_lr_multiplier == pytest.approx(0.01)
    _same_outputs(G, G2)
    # own -> NVlabs-shaped -> own -> rosinality-shaped -> own
    sr.save_generator(G2, tmp_path / "own.pt")
    torch.save(rosinality_state_dict(sr.load_generator(tmp_path / "own.pt")), tmp_path / "r.pt")
    G3 = sr.load_generator(tmp_path / "r.pt")
    G3.cfg.conv_clamp = None
    _same_outputs(make_generator(res=32), G3)


def test_nvlabs_embedded_source_is_never_executed(tmp_path):
    marker = tmp_path / "pwned"
    src = f"open({str(marker)!r}, 'w').write('x')\n"
    write_nvlabs_shaped_pickle(make_generator(), tmp_path / "nv.pkl", module_src=src)
    sr.load_generator(tmp_path / "nv.pkl")
    assert not marker.exists()


class _Evil:
    def __init__(self, cmd):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


@pytest.mark.parametrize("suffix", [".pkl", ".pt"])
def test_hostile_pickles_are_refused(tmp_path, suffix):
    marker = tmp_path / "pwned"
    payload = {"G_ema": _Evil(f"touch {marker}"), "g_ema": _Evil(f"touch {marker}")}
    path = tmp_path / f"evil{suffix}"
    if suffix == ".pt":
        torch.save(payload, path)
    else:
        with open(path, "wb") as f:
            pickle.dump(payload, f)
    with pytest.raises(CheckpointError) as e:
        sr.load_generator(path)
    msg = str(e.value)
    assert "refusing" in msg and str(path) in msg and "\n" not in msg
    assert not marker.exists()


def test_hostile_global_inside_nvlabs_state(tmp_path):
    """A dangerous global nested deep inside an otherwise valid NVlabs pickle."""
    marker = tmp_path / "pwned"
    G = make_generator()
    write_nvlabs_shaped_pickle(G, tmp_path / "ok.pkl")
    data = open(tmp_path / "ok.pkl", "rb").read()
    evil = pickle.dumps(_Evil(f"touch {marker}"), protocol=4)
    # prepend an evil object to the stream (executed on load by a plain unpickler)
    with open(tmp_path / "bad.pkl", "wb") as f:
        f.write(evil[:-1] + b"0" + data)  # POP the evil result, then load the real data
    with pytest.raises(CheckpointError, match="refusing"):
        sr.load_generator(tmp_path / "bad.pkl")
    assert not marker.exists()


def test_tensorflow_pickle_message(tmp_path):
    class Net:
        pass

    Net.__module__, Net.__qualname__ = "dnnlib.tflib.network", "Network"
    import sys
    import types

    mods = {"dnnlib": types.ModuleType("dnnlib"), "dnnlib.tflib": types.ModuleType("dnnlib.tflib"),
            "dnnlib.tflib.network": types.ModuleType("dnnlib.tflib.network")}
    mods["dnnlib.tflib.network"].Network = Net
    saved = {k: sys.modules.get(k) for k in mods}
    sys.modules.update(mods)
    try:
        with open(tmp_path / "tf.pkl", "wb") as f:
            pickle.dump((Net(), Net(), Net()), f)
    finally:
        for k, v in saved.items():
            sys.modules.pop(k) if v is None else sys.modules.__setitem__(k, v)
    with pytest.raises(CheckpointError, match="TensorFlow"):
        sr.load_generator(tmp_path / "tf.pkl")


@pytest.mark.parametrize("cut", [0.5, 0.9])
def test_truncated_files(tmp_path, cut):
    G = make_generator()
    sr.save_generator(G, tmp_path / "g.pt")
    write_nvlabs_shaped_pickle(G, tmp_path / "g.pkl")
    for name in ("g.pt", "g.pkl"):
        data = (tmp_path / name).read_bytes()
        bad = tmp_path / f"cut_{name}"
        bad.write_bytes(data[: int(len(data) * cut)])
        with pytest.raises(CheckpointError) as e:
            sr.load_generator(bad)
        assert str(bad) in str(e.value) and "\n" not in str(e.value)


def test_files_without_generator_and_unknown_formats(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="holds no generator"):
        sr.load_generator(tmp_path / "other.pt")
    with open(tmp_path / "other.pkl", "wb") as f:
        pickle.dump({"D": 1}, f)
    with pytest.raises(CheckpointError, match="holds no generator"):
        sr.load_generator(tmp_path / "other.pkl")
    (tmp_path / "x.pt").write_bytes(b"GIF89a not a checkpoint")
    with pytest.raises(CheckpointError, match="unknown format"):
        sr.load_generator(tmp_path / "x.pt")
    (tmp_path / "empty.pt").write_bytes(b"")
    with pytest.raises(CheckpointError):
        sr.load_generator(tmp_path / "empty.pt")
    with pytest.raises(CheckpointError, match="no such file"):
        sr.load_generator(tmp_path / "missing.pt")
    torch.save({"g_ema": {"style.1.weight": torch.zeros(4, 4)}}, tmp_path / "partial.pt")
    with pytest.raises(CheckpointError, match="lacks"):
        sr.load_generator(tmp_path / "partial.pt")


def test_format_detected_by_content_not_extension(tmp_path):
    G = make_generator()
    write_nvlabs_shaped_pickle(G, tmp_path / "really_a_pickle.pt")
    sr.save_generator(G, tmp_path / "really_own.pkl")
    _same_outputs(sr.load_generator(tmp_path / "really_a_pickle.pt"),
                  sr.load_generator(tmp_path / "really_own.pkl"))
