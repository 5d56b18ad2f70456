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


def test_export_relit_writes_the_training_draws(tmp_path, captures):
    """`lightstage export-relit` writes, image for image, what RelitCaptures draws unmirrored from
    its seed (as uint8), refuses to write over images without --force, and the folder reads back
    through the trainer's loader."""
    import numpy as np
    from click.testing import CliRunner

    from stylerelight.cli import cli
    from stylerelight.invert.encoder_training import load_image_folders

    out = tmp_path / "stage"
    args = ["lightstage", "export-relit", "--olat", str(captures), "--out", str(out), "--count", "5",
            "--stage-lights", "0.5", "--lights", "6", "--seed", "3"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    got = load_image_folders(str(out), 32)
    rc = RelitCaptures(captures, n_lights=6, seed=3, stage_lights=0.5)
    want = rc.sample(5, torch.Generator().manual_seed(3), mirror=False)
    assert got.shape == (5, 3, 32, 32)
    assert float((got.float() / 127.5 - 1 - want).abs().max()) <= 1 / 127.5 + 1e-6  # uint8 rounding only
    assert len({bytes(np.asarray(g)) for g in got}) == 5
    r = CliRunner().invoke(cli, args)
    assert r.exit_code != 0 and "--force" in r.output and "Traceback" not in r.output


def test_several_data_folders_bring_their_own_teacher_codes(tmp_path):
    """`data` naming two folders: their images in order, and the teacher codes of each folder
    beside its own images; a wrong image count is refused."""
    import json

    import numpy as np
    from PIL import Image

    from stylerelight.invert.encoder_training import data_folders, load_image_folders

    G = make_generator(res=32)
    folders, codes = [], []
    for k, n in enumerate((3, 2)):
        d = tmp_path / f"d{k}"
        (d / "images").mkdir(parents=True)
        for i in range(n):
            Image.fromarray(np.full((32, 32, 3), 40 * k + 10 * i, np.uint8)).save(d / "images" / f"{i:03d}.png")
        c = torch.randn(n, G.num_ws, G.w_dim, generator=torch.Generator().manual_seed(k))
        np.save(d / "teacher_codes.npy", c.numpy().astype(np.float16))
        (d / "teacher_codes.json").write_text(json.dumps({"generator": sr.gan.generator_hash(G), "images": n}))
        folders.append(str(d))
        codes.append(c.half().float())
    assert data_folders(f"{folders[0]}, {folders[1]}") == folders == data_folders(folders)
    images = load_image_folders(",".join(folders), 32)
    assert images.shape == (5, 3, 32, 32)
    assert [int(images[i, 0, 0, 0]) for i in range(5)] == [0, 10, 20, 40, 50]
    cfg = EncoderTrainConfig(width=8, batch=4, teacher_weight=1.0, total_kimg=0.004, data=folders)
    t = EncoderTrainer(cfg, G, images, tmp_path / "run", log=False)
    assert torch.equal(t.teacher.float(), torch.cat(codes))
    with pytest.raises(ValueError, match="hold 5 images"):
        EncoderTrainer(cfg, G, images[:4], tmp_path / "run2", log=False)
    assert load_image_folders("", 32) is None
