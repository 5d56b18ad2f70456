"""W+ inversion: round trips from known ws, determinism, losses (fallback and LPIPS, offline)."""

from __future__ import annotations

import pytest
import torch
from conftest import make_generator

from stylerelight.invert import PerceptualLoss, invert, psnr, ssim
from stylerelight.invert.precondition import gauss_newton_blocks, preconditioner_from_blocks, refine_preconditioner


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


def _refine_case(seed=2, n=3):
    """A generator, targets from known ws, and a start a fixed distance away from them."""
    G = _test_generator(seed)
    g = torch.Generator().manual_seed(seed)
    ws_true = G.mapping(torch.randn(n, G.z_dim, generator=g), truncation_psi=0.7)
    with torch.no_grad():
        target = G.synthesis(ws_true, noise_mode="const")
    start = ws_true + 0.3 * torch.randn(ws_true.shape, generator=g)
    return G, target, start


def test_lbfgs_refinement_beats_adam_at_equal_steps():
    """From a start near the answer, 20 L-BFGS iterations reach a lower error than 20 Adam steps
    (the default refinement is L-BFGS; docs/inversion.md has the held-out numbers)."""
    G, target, start = _refine_case()
    p0 = psnr(G.synthesis(start, noise_mode="const"), target)
    _, a = invert(G, target, steps=20, init=start, optimizer="adam", return_info=True, progress=False)
    ws, b = invert(G, target, steps=20, init=start, return_info=True, progress=False)
    pa, pb = psnr(a["reconstruction"], target), psnr(b["reconstruction"], target)
    print("start", p0, "adam", pa, "lbfgs", pb)
    assert (pb > pa + 1).all() and (pa > p0).all()
    # the reconstruction is the returned ws under the generator's constant noise
    assert torch.allclose(b["reconstruction"], G.synthesis(ws, noise_mode="const"), atol=1e-5)
    loss = b["loss"]
    assert loss.shape == (20, 3) and torch.isfinite(loss).all()
    assert (loss[-1] < 0.5 * loss[0]).all()


def test_lbfgs_refinement_is_per_image():
    """Each image has its own curvature history and line search: its result does not depend on the
    other images in the batch."""
    G, target, start = _refine_case(n=3)
    both = invert(G, target, steps=8, init=start, progress=False)
    one = invert(G, target[1:2], steps=8, init=start[1:2], progress=False)
    assert torch.equal(both[1:2], one)


def test_gauss_newton_blocks_match_the_exact_jacobian():
    """The probe estimate of E[J_l^T J_l] agrees with the exact Jacobian's (autograd, per sample)."""
    G = _test_generator()
    est = gauss_newton_blocks(G, samples=3, probes=400, psi=0.8, seed=1, batch=3)
    gen = torch.Generator().manual_seed(1)
    z = torch.randn(3, G.z_dim, generator=gen)  # the same samples: drawn first from the same seed
    exact = torch.zeros_like(est)
    for i in range(3):
        with torch.no_grad():
            ws = G.mapping(z[i: i + 1], truncation_psi=0.8)
        J = torch.autograd.functional.jacobian(lambda w: G.synthesis(w, noise_mode="const").reshape(-1), ws)
        J = J.reshape(J.shape[0], G.num_ws, G.w_dim).double()
        exact += torch.einsum("pld,ple->lde", J, J) / 3
    rel = (est - exact).norm() / exact.norm()
    assert rel < 0.1, float(rel)
    # blocks are symmetric positive semi-definite
    assert torch.allclose(est, est.transpose(1, 2)) and torch.linalg.eigvalsh(est).min() > -1e-9 * est.abs().max()
    # the same under no_grad (a first refinement inside an edit's no_grad block computes it there)
    few = gauss_newton_blocks(G, samples=2, probes=2, psi=0.8, seed=1)
    with torch.no_grad():
        assert torch.equal(gauss_newton_blocks(G, samples=2, probes=2, psi=0.8, seed=1), few)


def test_preconditioner_whitens_the_shifted_blocks():
    """P_l (H_l + shift mean eig(H_l) I) P_l is the same multiple of the identity for every layer,
    and the P_l's eigenvalues average 1."""
    g = torch.Generator().manual_seed(0)
    A = torch.randn(4, 6, 6, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0, 0.1, 10.0])[:, None, None]
    H = A @ A.transpose(1, 2)
    P = preconditioner_from_blocks(H, shift=0.2).double()
    assert torch.allclose(P, P.transpose(1, 2), atol=1e-6)
    assert abs(float(torch.linalg.eigvalsh(P).mean()) - 1) < 1e-5
    shifted = H + 0.2 * torch.linalg.eigvalsh(H).mean(1)[:, None, None] * torch.eye(6, dtype=torch.float64)
    M = P @ shifted @ P
    c = M[0, 0, 0]
    assert torch.allclose(M, c * torch.eye(6, dtype=torch.float64).expand(4, 6, 6), atol=1e-4 * float(c))


def test_preconditioner_is_kept_per_generator_and_on_disk(monkeypatch, tmp_path):
    """Computed once per generator; another process (a fresh copy of the same weights) reads the
    disk cache; changed weights or a damaged cache file are recomputed."""
    from stylerelight.invert import precondition

    monkeypatch.setenv("STYLERELIGHT_CACHE", str(tmp_path))
    calls = []
    real = precondition.gauss_newton_blocks
    monkeypatch.setattr(precondition, "gauss_newton_blocks",
                        lambda G, **kw: calls.append(1) or real(G, samples=4, probes=2))
    G = _test_generator()
    P = refine_preconditioner(G)
    assert refine_preconditioner(G) is P and len(calls) == 1
    files = list(tmp_path.glob("gauss_newton_*.pt"))
    assert len(files) == 1
    assert torch.equal(refine_preconditioner(_test_generator()), P) and len(calls) == 1  # read from disk
    files[0].write_bytes(b"not a torch file")
    assert torch.equal(refine_preconditioner(_test_generator()), P) and len(calls) == 2  # recomputed, same seed
    with torch.no_grad():
        next(G.synthesis.parameters()).mul_(2.0)
    assert not torch.equal(refine_preconditioner(G), P) and len(calls) == 3


def test_optimizer_choice_is_checked():
    G, target, start = _refine_case(n=1)
    with pytest.raises(ValueError, match="optimizer must be one of"):
        invert(G, target, steps=2, init=start, optimizer="sgd", progress=False)
    with pytest.raises(ValueError, match="refines a start"):
        invert(G, target, steps=2, optimizer="lbfgs", progress=False)
