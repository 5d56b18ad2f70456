"""Encoder training on OLAT captures relit on the fly (`train encoder --olat`), and its
2-process torchrun path."""

from __future__ import annotations

import pytest
import torch
from conftest import make_generator, render_captures, run_torchrun

import stylerelight as sr
from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer, RelitCaptures
from stylerelight.lighting import LightStage, OLATCapture, face_display

STAGE = LightStage.default()


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Two subjects, two cameras each, aligned for a 32^2 generator."""
    return render_captures(tmp_path_factory.mktemp("olat32"), (5, 6), 32)


def test_relit_captures_are_display_images_of_pool_lights(captures):
    """Every sample is one capture's camera under one pool light, shown through the one display
    transform (perhaps mirrored); draws are reproducible from the generator's state."""
    rc = RelitCaptures(captures, n_lights=3, seed=0)
    assert rc.resolution == 32 and rc.pool.coeffs.shape == (3, STAGE.num_lights, 3)
    cands = []
    for d in sorted(captures.iterdir()):
        cap = OLATCapture.load(d)
        for c in range(cap.num_cameras):
            for k in range(3):
                u8 = face_display(cap.relight(rc.pool.coeffs[k], c), cap.mask[c], cap.exposure(rc.pool.coeffs[k], c))[0]
                t = torch.from_numpy(u8).permute(2, 0, 1).float() / 127.5 - 1
                cands += [t, t.flip(2)]
    cands = torch.stack(cands)
    x = rc.sample(16, torch.Generator().manual_seed(0), mirror=True)
    assert x.shape == (16, 3, 32, 32)
    hit = torch.stack([(cands - xi).abs().flatten(1).amax(1).argmin() for xi in x])
    err = torch.stack([(cands[h] - xi).abs().max() for h, xi in zip(hit, x, strict=True)])
    assert float(err.max()) < 1e-6
    assert len(set(hit.tolist())) > 3            # subjects, cameras, lights and flips vary
    assert (hit % 2 == 1).any() and (hit % 2 == 0).any()
    assert torch.equal(rc.sample(4, torch.Generator().manual_seed(1)), rc.sample(4, torch.Generator().manual_seed(1)))
    unflipped = rc.sample(16, torch.Generator().manual_seed(0), mirror=False)
    assert all(int(((cands - xi).abs().flatten(1).amax(1) < 1e-6).nonzero()[0]) % 2 == 0 for xi in unflipped)


def test_relit_training_step_uses_both_real_sources(tmp_path, captures):
    """With renders and captures, each real batch mixes both (olat_fraction); the loss is finite
    and a mismatched capture resolution is refused."""
    G = make_generator(res=32)
    rc = RelitCaptures(captures, n_lights=4, seed=0)
    renders = torch.zeros([5, 3, 32, 32], dtype=torch.uint8)  # flat black: unlike any relit face
    cfg = EncoderTrainConfig(width=8, batch=8, synth_fraction=0.0, olat_fraction=0.5, total_kimg=0.016)
    t = EncoderTrainer(cfg, G, renders, tmp_path / "run", log=False, olat=rc)
    reals, codes, _ = t._reals(400)
    assert codes is None  # no teacher codes without teacher_weight
    black = (reals == -1).flatten(1).all(1)
    assert 150 < int(black.sum()) < 250
    assert t.train_step()["loss"] > 0
    with pytest.raises(ValueError, match="OLAT captures are 32"):
        EncoderTrainer(cfg, make_generator(res=16), None, tmp_path / "r16", log=False, olat=rc)


def test_train_encoder_torchrun_two_processes_on_relit_captures(tmp_path, captures):
    G = make_generator(res=32)
    sr.save_generator(G, tmp_path / "g.pt")
    cfg = tmp_path / "enc.yaml"
    cfg.write_text("width: 8\nbatch: 4\nsnapshot_kimg: 0.008\nimage_kimg: 1\ntotal_kimg: 0.016\n"
                   "olat_lights: 6\n")
    run = tmp_path / "ddp"
    r = run_torchrun(["train", "encoder", "--config", str(cfg), "--run-dir", str(run), "-c", str(tmp_path / "g.pt"),
                      "--olat", str(captures), "--threads", "1"], port=29537)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done at 0.016 kimg") == 1  # rank 0 reports
    s = torch.load(run / "snapshot.pt", weights_only=True)
    assert s["nimg"] == 16 and s["step"] == 4
    E = sr.load_encoder(run / "encoder.pt")
    assert E.meta["generator"]["hash"] == sr.gan.generator_hash(G)
