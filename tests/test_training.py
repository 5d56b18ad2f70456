"""StyleGAN2 training: losses move, snapshots are atomic, and a killed run resumes exactly."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import stylerelight as sr
from stylerelight.gan.training import TrainConfig, Trainer

ROOT = Path(__file__).resolve().parent.parent
TINY = ROOT / "train" / "configs" / "tiny.yaml"


def _dataset(tmp_path, n=32):
    d = tmp_path / "data" / "images"
    d.mkdir(parents=True)
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:16, 0:16]
    for i in range(n):  # blobs of random colour and position: something to learn
        cy, cx = rng.uniform(4, 12, 2)
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 8.0)[..., None]
        img = 40 + blob * rng.uniform(100, 215, 3)
        Image.fromarray(img.astype(np.uint8)).save(d / f"{i:04d}.png")
    return tmp_path / "data"


def test_training_steps_and_snapshot(tmp_path):
    from stylerelight.gan.training import load_image_folder

    cfg = TrainConfig.from_yaml(TINY)
    data = load_image_folder(_dataset(tmp_path), cfg.resolution)
    assert data.shape == (32, 3, 16, 16) and data.dtype == torch.uint8
    t = Trainer(cfg, data, tmp_path / "run", log=False)
    before = {k: v.clone() for k, v in t.G.state_dict().items()}
    t.train(total_kimg=0.016, progress=False)  # 4 steps: includes R1 and path-length steps
    assert t.nimg == 16 and t.snapshot_path.exists()
    moved = [k for k, v in t.G.state_dict().items() if not torch.equal(v, before[k])]
    assert len(moved) > 10
    G = sr.load_generator(tmp_path / "run" / "G_ema.pt")
    assert G.img_resolution == 16
    snap = torch.load(t.snapshot_path, weights_only=True)
    assert snap["nimg"] == 16 and set(snap) >= {"G", "D", "G_ema", "opt_G", "opt_D", "rng", "data_rng"}
    # run control (length, snapshot interval, threads) may change on resume; the model's config may not
    t2 = Trainer(dataclasses.replace(cfg, total_kimg=5.0, threads=1), data, tmp_path / "run", log=False)
    assert t2.nimg == 16 and torch.equal(t2.G_ema.mapping.fc0.weight, t.G_ema.mapping.fc0.weight)
    with pytest.raises(ValueError, match="glr"):
        Trainer(dataclasses.replace(cfg, glr=0.01), data, tmp_path / "run", log=False)


def test_new_run_warm_starts_from_a_generator_checkpoint(tmp_path):
    """--init-generator: a new run's G and G_ema equal the checkpoint's; D is fresh; a snapshot wins."""
    from stylerelight.gan.io import save_generator
    from stylerelight.gan.training import load_image_folder

    cfg = TrainConfig.from_yaml(TINY)
    data = load_image_folder(_dataset(tmp_path), cfg.resolution)
    donor = Trainer(dataclasses.replace(cfg, seed=5), data, tmp_path / "donor", log=False)
    donor.train(total_kimg=0.008, progress=False)
    save_generator(donor.G_ema, tmp_path / "g.pt")
    t = Trainer(cfg, data, tmp_path / "run", log=False, init_generator=tmp_path / "g.pt")
    for k, v in donor.G_ema.state_dict().items():
        assert torch.equal(t.G.state_dict()[k], v) and torch.equal(t.G_ema.state_dict()[k], v), k
    fresh = Trainer(cfg, data, tmp_path / "fresh", log=False)
    assert all(torch.equal(t.D.state_dict()[k], v) for k, v in fresh.D.state_dict().items())
    assert t.nimg == 0
    t.train(total_kimg=0.004, progress=False)
    # an existing snapshot is resumed, the init checkpoint ignored
    t2 = Trainer(cfg, data, tmp_path / "run", log=False, init_generator=tmp_path / "g.pt")
    assert t2.nimg == 4 and torch.equal(t2.G.mapping.fc0.weight, t.G.mapping.fc0.weight)
    # another architecture is refused, naming what differs
    with pytest.raises(ValueError, match="w_dim"):
        Trainer(dataclasses.replace(cfg, w_dim=cfg.w_dim * 2), data, tmp_path / "other", log=False,
                init_generator=tmp_path / "g.pt")


def _train_cmd(data, run, kimg):
    return [sys.executable, "-m", "stylerelight.cli", "train", "gan", "--data", str(data), "--config", str(TINY),
            "--run", str(run), "--kimg", str(kimg)]


def test_killed_run_resumes_without_loss(tmp_path):
    """Kill a run after its first snapshot, resume it, and compare with an uninterrupted run."""
    data = _dataset(tmp_path)
    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    ref = subprocess.run(_train_cmd(data, tmp_path / "ref", 0.096), env=env, capture_output=True, text=True,
                         timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(_train_cmd(data, run, 0.096), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "snapshot.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(run / "snapshot.pt", weights_only=True)
    assert 16 <= first["nimg"] < 96  # killed part-way
    r = subprocess.run(_train_cmd(data, run, 0.096), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "snapshot.pt", weights_only=True)
    b = torch.load(run / "snapshot.pt", weights_only=True)
    assert a["nimg"] == b["nimg"] == 96
    for key in ("G", "D", "G_ema"):
        for k, v in a[key].items():
            assert torch.allclose(v, b[key][k], rtol=1e-5, atol=1e-6), (key, k)


def test_training_leaves_global_torch_state_alone(tmp_path):
    """Trainers draw from their own RNG and thread count; the caller's are unchanged afterwards."""
    from stylerelight.gan.training import load_image_folder

    cfg = dataclasses.replace(TrainConfig.from_yaml(TINY), threads=1)
    data = load_image_folder(_dataset(tmp_path), cfg.resolution)
    torch.manual_seed(1234)
    threads = torch.get_num_threads()
    before = torch.get_rng_state()
    t = Trainer(cfg, data, tmp_path / "run", log=False)
    t.train(total_kimg=0.008, progress=False)
    assert torch.equal(torch.get_rng_state(), before) and torch.get_num_threads() == threads
    # and the run's own stream continues across the two calls as in one
    t.train(total_kimg=0.016, progress=False)
    ref = Trainer(cfg, data, tmp_path / "ref", log=False)
    ref.train(total_kimg=0.016, progress=False)
    for k, v in ref.G.state_dict().items():
        assert torch.allclose(v, t.G.state_dict()[k], rtol=1e-5, atol=1e-6), k


def test_config_resolution_must_match_the_dataset(tmp_path):
    from stylerelight.gan.training import load_image_folder

    with pytest.raises(ValueError, match="16x16 but the config says resolution 32"):
        load_image_folder(_dataset(tmp_path), 32)
    assert load_image_folder(tmp_path / "data", 32, resize=True).shape[-1] == 32


def test_resume_takes_config_fields_added_later_at_their_default(tmp_path):
    """A snapshot written before a config field existed resumes when the field has its default
    value, and is refused when it has another."""
    from dataclasses import dataclass

    from stylerelight.runs import RunTrainer

    @dataclass
    class Cfg:
        batch: int = 1
        seed: int = 0
        threads: int = 0
        total_kimg: float = 1.0
        snapshot_kimg: float = 1.0
        image_kimg: float = 1.0
        lr: float = 0.1
        new_field: int = 0  # the field "added later"

    class Tiny(RunTrainer):
        def state(self):
            return {}

        def load_state(self, s):
            pass

        def export(self):
            pass

    t = Tiny(Cfg(), tmp_path, log=False)
    t.save_snapshot()
    s = torch.load(t.snapshot_path, weights_only=True)
    del s["config"]["new_field"]
    torch.save(s, t.snapshot_path)
    assert Tiny(Cfg(), tmp_path, log=False).resume()
    with pytest.raises(ValueError, match="new_field"):
        Tiny(Cfg(new_field=3), tmp_path, log=False).resume()
    with pytest.raises(ValueError, match="lr"):
        Tiny(Cfg(lr=0.2), tmp_path, log=False).resume()
