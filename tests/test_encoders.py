"""Encoders: official pSp/e4e checkpoint layout against an independent functional reference,
the own format and its generator check, hybrid inversion, and `train encoder` resume."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import make_generator

import stylerelight as sr
from stylerelight.gan.io import rosinality_state_dict

COUNTS = (3, 4, 14, 3)  # IR-50 units per stage


# ---------------------------------------------------------------------------------------------
# an official-layout state dict and a forward pass written from the papers' description, with
# torch.nn.functional only (it shares no code with stylerelight.invert.encoders)


def _bn(sd, p, c, g):
    sd[p + "weight"] = 1 + 0.1 * torch.randn(c, generator=g)
    sd[p + "bias"] = 0.1 * torch.randn(c, generator=g)
    sd[p + "running_mean"] = 0.1 * torch.randn(c, generator=g)
    sd[p + "running_var"] = 0.5 + torch.rand(c, generator=g)
    sd[p + "num_batches_tracked"] = torch.tensor(7)


def _conv(sd, p, co, ci, k, g, bias=False):
    sd[p + "weight"] = torch.randn(co, ci, k, k, generator=g) / math.sqrt(ci * k * k)
    if bias:
        sd[p + "bias"] = 0.1 * torch.randn(co, generator=g)


def official_state(widths=(16, 16, 32, 32), n_styles=6, seed=0) -> dict:
    g = torch.Generator().manual_seed(seed)
    sd: dict = {}
    _conv(sd, "input_layer.0.", widths[0], 3, 3, g)
    _bn(sd, "input_layer.1.", widths[0], g)
    sd["input_layer.2.weight"] = 0.25 * torch.rand(widths[0], generator=g)
    i, c_in = 0, widths[0]
    for n, d in zip(COUNTS, widths, strict=True):
        for u in range(n):
            p = f"body.{i}."
            cin = c_in if u == 0 else d
            if cin != d:
                _conv(sd, p + "shortcut_layer.0.", d, cin, 1, g)
                _bn(sd, p + "shortcut_layer.1.", d, g)
            _bn(sd, p + "res_layer.0.", cin, g)
            _conv(sd, p + "res_layer.1.", d, cin, 3, g)
            sd[p + "res_layer.2.weight"] = 0.25 * torch.rand(d, generator=g)
            _conv(sd, p + "res_layer.3.", d, d, 3, g)
            _bn(sd, p + "res_layer.4.", d, g)
            _conv(sd, p + "res_layer.5.fc1.", d // 16, d, 1, g)
            _conv(sd, p + "res_layer.5.fc2.", d, d // 16, 1, g)
            i += 1
        c_in = d
    top = widths[3]
    for s in range(n_styles):
        spatial = 16 if s < 3 else 32 if s < 7 else 64
        for k in range(int(math.log2(spatial))):
            _conv(sd, f"styles.{s}.convs.{2 * k}.", top, top, 3, g, bias=True)
        sd[f"styles.{s}.linear.weight"] = torch.randn(top, top, generator=g)
        sd[f"styles.{s}.linear.bias"] = 0.1 * torch.randn(top, generator=g)
    _conv(sd, "latlayer1.", top, widths[2], 1, g, bias=True)
    _conv(sd, "latlayer2.", top, widths[1], 1, g, bias=True)
    return sd


def reference_forward(sd: dict, x: torch.Tensor, kind: str, n_styles: int) -> torch.Tensor:
    def bn(x, p):
        return F.batch_norm(x, sd[p + "running_mean"], sd[p + "running_var"], sd[p + "weight"], sd[p + "bias"],
                            False, 0.0, 1e-5)

    x = F.prelu(bn(F.conv2d(x, sd["input_layer.0.weight"], padding=1), "input_layer.1."), sd["input_layer.2.weight"])
    taps, i = [], 0
    for n in COUNTS:
        for u in range(n):
            p, stride = f"body.{i}.", 2 if u == 0 else 1
            if p + "shortcut_layer.0.weight" in sd:
                short = bn(F.conv2d(x, sd[p + "shortcut_layer.0.weight"], stride=stride), p + "shortcut_layer.1.")
            else:
                short = F.max_pool2d(x, 1, stride)
            r = F.conv2d(bn(x, p + "res_layer.0."), sd[p + "res_layer.1.weight"], padding=1)
            r = F.conv2d(F.prelu(r, sd[p + "res_layer.2.weight"]), sd[p + "res_layer.3.weight"], stride=stride,
                         padding=1)
            r = bn(r, p + "res_layer.4.")
            se = F.adaptive_avg_pool2d(r, 1)
            se = torch.sigmoid(F.conv2d(F.relu(F.conv2d(se, sd[p + "res_layer.5.fc1.weight"])),
                                        sd[p + "res_layer.5.fc2.weight"]))
            x = r * se + short
            i += 1
        taps.append(x)
    c1, c2, c3 = taps[1:]

    def up_add(a, b):
        return F.interpolate(a, size=b.shape[-2:], mode="bilinear", align_corners=True) + b

    p2 = up_add(c3, F.conv2d(c2, sd["latlayer1.weight"], sd["latlayer1.bias"]))
    p1 = up_add(p2, F.conv2d(c1, sd["latlayer2.weight"], sd["latlayer2.bias"]))

    def style(s, f):
        k = 0
        while f"styles.{s}.convs.{2 * k}.weight" in sd:
            f = F.leaky_relu(F.conv2d(f, sd[f"styles.{s}.convs.{2 * k}.weight"], sd[f"styles.{s}.convs.{2 * k}.bias"],
                                      stride=2, padding=1), 0.01)
            k += 1
        w = sd[f"styles.{s}.linear.weight"]
        return f.flatten(1) @ (w / math.sqrt(w.shape[1])).t() + sd[f"styles.{s}.linear.bias"]

    level = [c3 if s < 3 else p2 if s < 7 else p1 for s in range(n_styles)]
    out = [style(s, level[s]) for s in range(n_styles)]
    if kind == "e4e":
        out = [out[0]] + [out[0] + o for o in out[1:]]
    return torch.stack(out, 1)


def _write_official(path, kind, G, sd, n_styles, latent_avg):
    full = {f"encoder.{k}": v for k, v in sd.items()}
    full.update({f"decoder.{k}": v for k, v in rosinality_state_dict(G)["g_ema"].items()})
    etype = "GradualStyleEncoder" if kind == "psp" else "Encoder4Editing"
    torch.save({"state_dict": full, "latent_avg": latent_avg,
                "opts": {"encoder_type": etype, "output_size": G.img_resolution, "start_from_latent_avg": True,
                         "input_nc": 3, "learn_in_w": False}}, path)


@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_official_checkpoint_matches_reference(tmp_path, kind):
    G = make_generator(res=16, z_dim=32, w_dim=32)
    n_styles = G.num_ws  # 6 at 16^2
    sd = official_state(n_styles=n_styles, seed=1 if kind == "psp" else 2)
    latent_avg = torch.randn(32).repeat(n_styles, 1)  # as pSp stores it
    path = tmp_path / f"{kind}.pt"
    _write_official(path, kind, G, sd, n_styles, latent_avg)
    E = sr.load_encoder(path)
    assert E.kind == kind and E.num_ws == n_styles and E.w_dim == 32 and E.input_size == 256
    x = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        want = reference_forward(sd, x, kind, n_styles) + latent_avg
        got = E(x)
    assert got.shape == (2, n_styles, 32)
    assert (got - want).abs().max().item() < 1e-4
    # a smaller input is resized to 256^2 first, as the originals' loaders do
    assert E(x[:, :, ::4, ::4]).shape == (2, n_styles, 32)
    # the same file's decoder is a generator equal to the one written into it
    G2 = sr.load_generator(path)
    ws = torch.randn(1, G.num_ws, 32)
    assert torch.allclose(G2.synthesis(ws), G.synthesis(ws), atol=1e-5)
    # the encoder fits that generator; it is refused for another one
    sr.invert.check_encoder_for(E, G2)
    with pytest.raises(sr.CheckpointError, match="6 x 32"):
        sr.invert.check_encoder_for(E, make_generator(res=32, z_dim=32, w_dim=32))


def test_official_checkpoint_runs_no_code(tmp_path):
    import os
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"state_dict": {"encoder.x": torch.zeros(1)}, "opts": Evil()}, path, pickle_protocol=2)
    with pytest.raises(sr.CheckpointError, match="refusing"):
        sr.load_encoder(path)
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(sr.CheckpointError):
        sr.load_encoder(path)


def _compact_for(G, seed=0):
    from stylerelight.invert.encoders import CompactEncoder, Encoder

    torch.manual_seed(seed)
    net = CompactEncoder(G.num_ws, G.w_dim, G.img_resolution, width=8)
    with torch.no_grad():
        for h in net.heads:
            h[-1].weight.normal_(0, 0.01)
    return Encoder(net, G.mapping.w_avg.clone(), G.img_resolution, "compact",
                   meta={"config": {"n_styles": G.num_ws, "w_dim": G.w_dim, "resolution": G.img_resolution,
                                    "width": 8}})


def test_own_format_round_trip_and_generator_hash(tmp_path, small_G):
    E = _compact_for(small_G)
    sr.invert.save_encoder(E, tmp_path / "e.pt", G=small_G)
    E2 = sr.load_encoder(tmp_path / "e.pt")
    x = torch.rand(3, 3, 32, 32) * 2 - 1
    assert torch.equal(E(x), E2(x))
    sr.invert.check_encoder_for(E2, small_G)
    other = make_generator(seed=1)  # same sizes, other weights: refused by hash
    with pytest.raises(sr.CheckpointError, match="trained for generator"):
        sr.invert.check_encoder_for(E2, other)
    with pytest.raises(sr.CheckpointError, match="trained for generator"):
        sr.invert(other, x, encoder=E2, steps=0)
    # the loader never executes; damaged files end in one-line errors
    raw = (tmp_path / "e.pt").read_bytes()
    (tmp_path / "cut.pt").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(sr.CheckpointError, match="truncated or corrupt"):
        sr.load_encoder(tmp_path / "cut.pt")
    torch.save({"format": "stylerelight-encoder", "kind": "compact", "config": {"n_styles": 3}}, tmp_path / "d.pt")
    with pytest.raises(sr.CheckpointError, match="damaged"):
        sr.load_encoder(tmp_path / "d.pt")


def test_hybrid_inversion_starts_from_the_encoder(small_G):
    """steps=0 returns the encoder's ws exactly; refinement from them lowers the error."""
    G = small_G
    E = _compact_for(G)
    ws_true = G.mapping(torch.randn(2, G.z_dim, generator=torch.Generator().manual_seed(5)))
    target = G.synthesis(ws_true, noise_mode="const")
    ws0, info0 = sr.invert(G, target, encoder=E, steps=0, return_info=True, progress=False)
    assert torch.equal(ws0, E(target))
    assert torch.allclose(info0["reconstruction"], G.synthesis(ws0), atol=1e-5)
    ws, info = sr.invert(G, target, encoder=E, steps=30, return_info=True, progress=False, loss="msssim")
    p0 = sr.invert.psnr(info0["reconstruction"], target)
    p1 = sr.invert.psnr(info["reconstruction"], target)
    assert (p1 > p0 + 1).all(), (p0, p1)


def test_train_encoder_cli_resumes_after_kill(tmp_path, small_G):
    """A killed `train encoder` run resumes from its snapshot and ends equal to an uninterrupted one."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from PIL import Image

    G = small_G
    sr.save_generator(G, tmp_path / "g.pt")
    d = tmp_path / "data" / "images"
    d.mkdir(parents=True)
    with torch.no_grad():
        imgs = sr.imageio.gan_to_uint8(G(torch.randn(8, G.z_dim)))
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(d / f"{i:03d}.png")
    cfg = tmp_path / "enc.yaml"
    cfg.write_text("width: 8\nbatch: 4\nsnapshot_kimg: 0.008\nimage_kimg: 0.008\ntotal_kimg: 0.064\n"
                   "synth_fraction: 0.5\n")

    def cmd(run):
        return [sys.executable, "-m", "stylerelight.cli", "train", "encoder", "--config", str(cfg), "--run",
                str(run), "-c", str(tmp_path / "g.pt"), "--data", str(tmp_path / "data")]

    env = dict(os.environ, PYTHONUNBUFFERED="1", OMP_NUM_THREADS="1")
    ref = subprocess.run(cmd(tmp_path / "ref"), env=env, capture_output=True, text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr[-2000:]
    run = tmp_path / "killed"
    proc = subprocess.Popen(cmd(run), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (run / "snapshot.pt").exists() and time.time() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = torch.load(run / "snapshot.pt", weights_only=True)
    assert 8 <= first["nimg"] < 64
    r = subprocess.run(cmd(run), env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    a = torch.load(tmp_path / "ref" / "snapshot.pt", weights_only=True)
    b = torch.load(run / "snapshot.pt", weights_only=True)
    assert a["nimg"] == b["nimg"] == 64
    for k, v in a["E"].items():
        assert torch.allclose(v, b["E"][k], rtol=1e-5, atol=1e-6), k
    # the product loads, records the generator and beats the untrained (average-face) start
    E = sr.load_encoder(run / "encoder.pt")
    assert E.meta["generator"]["hash"] == sr.gan.generator_hash(G)
    x = imgs.astype(np.float32)
    target = torch.from_numpy(x).permute(0, 3, 1, 2) / 127.5 - 1
    with torch.no_grad():
        avg = G.synthesis(E.latent_avg.expand(len(target), G.num_ws, -1).contiguous())
        assert (sr.invert.psnr(G.synthesis(E(target)), target).mean()
                > sr.invert.psnr(avg, target).mean())


def test_iterative_encoder_warm_start_and_passes(tmp_path, small_G):
    """A ReStyle-style encoder warm-started from a single-pass one: its first pass equals that
    encoder; it needs its generator; training steps run and the file round-trips."""
    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer

    G = small_G
    single = _compact_for(G)
    sr.invert.save_encoder(single, tmp_path / "single.pt", G=G)
    cfg = EncoderTrainConfig(width=8, batch=4, iterations=3, init_encoder=str(tmp_path / "single.pt"),
                             synth_fraction=1.0, total_kimg=0.008, snapshot_kimg=0.008, image_kimg=1)
    t = EncoderTrainer(cfg, G, None, tmp_path / "run", log=False)
    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        delta = single(x) - single.latent_avg
        one = t.E(x, iterations=1)
        assert torch.allclose(one - t.E.latent_avg, delta, atol=1e-5)
        two = t.E(x, iterations=2)  # the second pass adds the same correction again (recon channels are zero)
        assert torch.allclose(two - one, delta, atol=1e-5)
    t.train(progress=False)
    E = sr.load_encoder(tmp_path / "run" / "encoder.pt")
    assert E.iterative and E.iterations == 3
    with pytest.raises(ValueError, match="needs its generator"):
        E(x)
    ws = sr.invert(G, x, encoder=E, steps=0, progress=False)  # sr.invert attaches G
    assert torch.allclose(ws, t.E(x), atol=1e-5)


def test_wider_warm_start_keeps_the_function(tmp_path, small_G):
    """Growing a trained compact encoder (wider convs, head reduce and hidden units): the grown
    network returns the same offsets before training, its new weights are not all zero (they can learn), its file
    records the new sizes and loads as such; an init encoder wider than the run is refused."""
    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer

    G = small_G
    small = _compact_for(G)
    with torch.no_grad():  # a trained-looking encoder: no zero layers anywhere
        for p in small.net.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    sr.invert.save_encoder(small, tmp_path / "small.pt", G=G)
    cfg = EncoderTrainConfig(width=12, reduce_width=40, head_width=300, batch=4,
                             init_encoder=str(tmp_path / "small.pt"), synth_fraction=1.0,
                             total_kimg=0.004, snapshot_kimg=0.004, image_kimg=1)
    t = EncoderTrainer(cfg, G, None, tmp_path / "run", log=False)
    assert t.E.net.stem.weight.shape[0] == 12 and t.E.net.heads[0][0].weight.shape == (300, 40 * 16)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        assert torch.allclose(t.E.net(x), small.net(x), atol=1e-5)
    assert t.E.net.heads[0][0].weight[256:].abs().sum() > 0 and t.E.net.stem.weight[8:].abs().sum() > 0
    t.train(progress=False)
    E = sr.load_encoder(tmp_path / "run" / "encoder.pt")
    assert E.meta["config"]["reduce_width"] == 40 and E.net.heads[0][0].weight.shape == (300, 640)
    with torch.no_grad():
        assert torch.allclose(sr.invert(G, x, encoder=E, steps=0, progress=False), E(x))
    narrow = EncoderTrainConfig(width=4, batch=4, init_encoder=str(tmp_path / "small.pt"), synth_fraction=1.0)
    with pytest.raises(ValueError, match="narrower, not wider"):
        EncoderTrainer(narrow, G, None, tmp_path / "run2", log=False)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["psp", "e4e"])
def test_full_width_ir_se50_matches_reference(tmp_path, kind):
    """The official widths (64..512, 512-d styles); the narrow test above covers the same code paths."""
    G = make_generator(res=16, z_dim=512, w_dim=512, channel_max=16)
    sd = official_state(widths=(64, 128, 256, 512), n_styles=G.num_ws, seed=4)
    latent_avg = torch.randn(512).repeat(G.num_ws, 1)
    _write_official(tmp_path / "full.pt", kind, G, sd, G.num_ws, latent_avg)
    E = sr.load_encoder(tmp_path / "full.pt")
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(3)) * 2 - 1
    with torch.no_grad():
        assert (E(x) - (reference_forward(sd, x, kind, G.num_ws) + latent_avg)).abs().max().item() < 1e-4


def test_teacher_codes_are_the_refined_codes_and_train_the_encoder(tmp_path, small_G):
    """Teacher codes equal sr.invert(encoder + K steps) of each image, however the work is split
    across processes; the trainer pairs each unmirrored render with its own code, its teacher loss
    falls, and codes of another generator are refused."""
    from PIL import Image

    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer
    from stylerelight.invert.teacher_codes import compute_teacher_codes

    G = small_G
    E = _compact_for(G)
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    with torch.no_grad():
        imgs = sr.imageio.gan_to_uint8(G(torch.randn(6, G.z_dim, generator=torch.Generator().manual_seed(3))))
    for i, im in enumerate(imgs):
        Image.fromarray(im).save(d / "images" / f"{i:03d}.png")
    assert compute_teacher_codes(G, E, d, steps=3, chunk=4, rank=0, world=2, progress=False) is None
    assert compute_teacher_codes(G, E, d, steps=3, chunk=4, rank=1, world=2, progress=False) is None
    with pytest.raises(ValueError, match="another run .*steps 3 -> 2"):
        compute_teacher_codes(G, E, d, steps=2, chunk=4, rank=1, world=2, progress=False)
    sr.save_generator(G, tmp_path / "g.pt")
    sr.invert.save_encoder(E, tmp_path / "e.pt", G=G)
    from click.testing import CliRunner

    from stylerelight.cli import cli

    r = CliRunner().invoke(cli, ["train", "teacher-codes", "--data", str(d), "-c", str(tmp_path / "g.pt"), "--encoder",
                                 str(tmp_path / "e.pt"), "--steps", "3", "--chunk", "4", "--device", "cpu"])
    assert r.exit_code == 0 and "teacher_codes.npy" in r.output, r.output  # rank 0's chunk 0, then merges
    codes = torch.from_numpy(np.load(d / "teacher_codes.npy")).float()
    x = torch.from_numpy(imgs.astype(np.float32)).permute(0, 3, 1, 2) / 127.5 - 1
    expect = torch.cat([sr.invert(G, c, encoder=E, steps=3, progress=False) for c in x.split(4)])
    assert codes.shape == (6, G.num_ws, G.w_dim)
    assert torch.allclose(codes, expect, atol=2e-3 * float(expect.abs().max()))

    data = torch.from_numpy(imgs).permute(0, 3, 1, 2).contiguous()
    cfg = EncoderTrainConfig(width=8, batch=8, synth_fraction=0.0, teacher_weight=1.0, l2_weight=0.0,
                             msssim_weight=0.0, delta_weight=0.0, lr=2e-3, total_kimg=1)
    cfg.data = str(d)
    t = EncoderTrainer(cfg, G, data, tmp_path / "run", log=False)
    reals, got, has = t._reals(64)
    assert 10 < int(has.sum()) < 54  # mirrored renders carry no code
    for xi, ci in zip(reals[has], got[has], strict=True):
        i = int(((x - xi).abs().flatten(1).amax(1) < 1e-6).nonzero()[0])
        assert torch.equal(ci, codes[i].half().float())
    losses = [t.train_step()["loss/teacher"] for _ in range(30)]
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5])
    with pytest.raises(ValueError, match="belongs to generator"):
        EncoderTrainer(cfg, make_generator(seed=1), data, tmp_path / "run2", log=False)


def test_code_samples_are_scaled_crossovers_of_teacher_codes(tmp_path, small_G):
    """code_samples: those synthetic ws are teacher codes of the data (two images crossed over at one
    layer), their offset from w_avg scaled by one s in [1, code_scale_max]; the image is G of them."""
    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer

    G = small_G
    d = tmp_path / "data"
    (d / "images").mkdir(parents=True)
    codes = G.mapping(torch.randn(5, G.z_dim, generator=torch.Generator().manual_seed(4)))
    codes = codes + 0.3 * torch.randn(codes.shape, generator=torch.Generator().manual_seed(5))  # a W+ per image
    np.save(d / "teacher_codes.npy", codes.detach().numpy().astype(np.float16))
    (d / "teacher_codes.json").write_text(json.dumps({"generator": sr.gan.generator_hash(G), "images": 5}))
    data = torch.zeros(5, 3, G.img_resolution, G.img_resolution, dtype=torch.uint8)
    cfg = EncoderTrainConfig(width=8, batch=4, synth_fraction=1.0, code_samples=0.75, code_scale_max=1.5,
                             mixing_prob=1.0, total_kimg=1)
    cfg.data = str(d)
    t = EncoderTrainer(cfg, G, data, tmp_path / "run", log=False)
    table = torch.from_numpy(np.load(d / "teacher_codes.npy")).float()
    img, ws = t._synthetic(8)
    assert torch.allclose(img, G.synthesis(ws, noise_mode="const"), atol=1e-5)
    w_avg = t.w_avg.cpu()
    crossed = 0
    for w in ws[:6]:  # round(8 * 0.75) code samples first
        off = w - w_avg
        # one scale per sample, read off the first layer (which comes from the first image)
        fits = [(float((off[0] * (c[0] - w_avg)).sum() / (c[0] - w_avg).square().sum()), c) for c in table]
        s = min(fits, key=lambda f: float((w_avg + f[0] * (f[1][0] - w_avg) - w[0]).abs().max()))[0]
        assert 1.0 - 1e-3 <= s <= 1.5 + 1e-3
        src = []
        for layer in range(G.num_ws):
            err = [float((w_avg + s * (c[layer] - w_avg) - w[layer]).abs().max()) for c in table]
            assert min(err) < 1e-4, "each layer is a teacher code's layer, scaled as the first"
            src.append(int(np.argmin(err)))
        assert sum(a != b for a, b in zip(src[:-1], src[1:], strict=True)) <= 1  # at most one crossover
        crossed += len(set(src)) == 2
    assert (ws[6:] - w_avg).square().mean() < (ws[:6] - w_avg).square().mean()  # the rest: mapping samples
    assert crossed >= 1
