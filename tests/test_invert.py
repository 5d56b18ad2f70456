"""W+ inversion: round trips from known ws, determinism, losses (fallback and LPIPS, offline)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_generator

from stylerelight.invert import PerceptualLoss, invert, psnr, ssim


def _test_generator(seed=0):
    """A small generator scaled so that its images lie in about [-1, 1], as trained ones do."""
    G = make_generator(res=32, z_dim=32, w_dim=32, seed=seed)
    with torch.no_grad():
        for n, p in G.named_parameters():
            if "torgb.weight" in n:
                p.mul_(0.25)
    return G.requires_grad_(False)


def test_round_trip_reaches_30db():
    G = _test_generator()
    torch.manual_seed(1)
    ws_true = G.mapping(torch.randn(3, G.z_dim), truncation_psi=0.7)
    with torch.no_grad():
        target = G.synthesis(ws_true)
    ws, info = invert(G, target, steps=500, return_info=True, psnr_every=100, progress=False)
    assert ws.shape == ws_true.shape
    steps = [s for s, _ in info["psnr"]]
    means = [float(p.mean()) for _, p in info["psnr"]]
    print("PSNR against steps:", dict(zip(steps, [round(m, 1) for m in means], strict=True)))
    assert means[-1] >= 30.0 and means[-1] > means[0] + 10
    assert float(psnr(info["reconstruction"], target).min()) >= 28.0
    assert info["loss"].shape == (500, 3)


def test_inversion_is_deterministic():
    G = _test_generator(1)
    target = G(torch.randn(1, G.z_dim)).detach()
    a = invert(G, target, steps=20, seed=3, progress=False)
    b = invert(G, target, steps=20, seed=3, progress=False)
    assert torch.equal(a, b)
    with pytest.raises(ValueError):
        invert(G, torch.zeros(1, 3, 16, 16), steps=1, progress=False)


def test_ssim_properties():
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert torch.allclose(ssim(x, x), torch.ones(2))
    n = torch.randn_like(x)
    s1, s2 = ssim(x, x + 0.1 * n), ssim(x, x + 0.6 * n)
    assert (s2 < s1).all() and (s1 < 1).all() and (s2 < 0.5).all()
    assert torch.allclose(ssim(x, 0.5 * x + 0.2), ssim(0.5 * x + 0.2, x))  # symmetric
    assert torch.allclose(psnr(x, x + 0.02), torch.full((2,), 20 * torch.log10(torch.tensor(2 / 0.02))), atol=1e-3)


def test_fallback_loss_is_said_once(capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty hub cache: no VGG weights
    from stylerelight.invert import losses

    losses._said.clear()
    a, b = PerceptualLoss(), PerceptualLoss()
    assert a.kind == b.kind == "msssim"
    assert capsys.readouterr().err.count("fallback loss") == 1


def test_lpips_path_loads_offline_from_hub_cache(monkeypatch, tmp_path):
    """A stand-in VGG16 state dict in a temporary torch hub cache: the real lpips loading runs."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    ck = tmp_path / "hub" / "checkpoints"
    ck.mkdir(parents=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.vgg16().state_dict(), ck / "vgg16-397923af.pth")
    loss = PerceptualLoss("auto")
    assert loss.kind == "lpips"
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    d_same, d_other = loss(x, x), loss(x, torch.flip(x, [3]))
    assert torch.allclose(d_same, torch.zeros(2), atol=1e-6) and (d_other > 0).all()
    G = _test_generator()
    target = G(torch.randn(1, G.z_dim)).detach()
    ws, info = invert(G, target, steps=5, loss="lpips", return_info=True, progress=False)
    assert info["loss_kind"] == "lpips" and torch.isfinite(ws).all()
