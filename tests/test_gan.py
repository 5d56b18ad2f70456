"""StyleGAN2 networks: shapes at every resolution, determinism, noise, truncation, mixing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from conftest import make_generator

import stylegan2_ops as ops
from stylerelight.gan import Discriminator, Generator, GeneratorConfig, style_mix
from stylerelight.gan.layers import conv2d_resample, modulated_conv2d


@pytest.mark.parametrize("res", [4, 8, 16, 32, 64, 128, 256, 512, 1024])
def test_every_resolution(res):
    G = Generator(img_resolution=res, z_dim=8, w_dim=8, channel_base=4 * res, channel_max=8,
                  mapping_layers=2).eval()
    assert G.num_ws == 2 * int(torch.log2(torch.tensor(res))) - 2
    with torch.no_grad():
        img = G(torch.randn(1, 8))
    assert img.shape == (1, 3, res, res) and torch.isfinite(img).all()
    D = Discriminator(img_resolution=res, channel_base=4 * res, channel_max=8)
    assert D(img.repeat(2, 1, 1, 1)).shape == (2, 1)


def test_ffhq_config_f_size():
    """Default config = FFHQ config F: 18 ws and the 30,370,060 parameters of the published G."""
    G = Generator(GeneratorConfig())
    assert G.num_ws == 18 and G.img_resolution == 1024
    assert sum(p.numel() for p in G.parameters()) == 30_370_060


def test_same_seed_same_image_and_seed_draws_like_numpy(small_G):
    z1, z2 = small_G.z_from_seed(7), small_G.z_from_seed(7)
    assert torch.equal(z1, z2)
    import numpy as np

    assert torch.allclose(z1, torch.from_numpy(np.random.RandomState(7).randn(1, small_G.z_dim)).float())
    with torch.no_grad():
        assert torch.equal(small_G(z1), small_G(z2))
        assert not torch.equal(small_G(z1), small_G(small_G.z_from_seed(8)))


def test_noise_modes(small_G):
    ws = small_G.mapping(torch.randn(2, small_G.z_dim))
    with torch.no_grad():
        const1 = small_G.synthesis(ws, noise_mode="const")
        const2 = small_G.synthesis(ws, noise_mode="const")
        none = small_G.synthesis(ws, noise_mode="none")
        torch.manual_seed(1)
        r1 = small_G.synthesis(ws, noise_mode="random")
        torch.manual_seed(1)
        r1b = small_G.synthesis(ws, noise_mode="random")
        r2 = small_G.synthesis(ws, noise_mode="random")
        # with all noise strengths zero, every mode is the same
        for n, p in small_G.named_parameters():
            if n.endswith("noise_strength"):
                p.zero_()
        zeroed = [small_G.synthesis(ws, noise_mode=m) for m in ("const", "random", "none")]
    assert torch.equal(const1, const2) and torch.equal(r1, r1b)
    assert not torch.allclose(const1, none) and not torch.allclose(r1, r2)
    assert torch.equal(zeroed[0], zeroed[1]) and torch.equal(zeroed[1], zeroed[2])
    assert torch.equal(zeroed[2], none)
    with pytest.raises(ValueError):
        small_G.synthesis(ws, noise_mode="sometimes")


def test_truncation(small_G):
    z = torch.randn(3, small_G.z_dim)
    w = small_G.mapping(z)
    assert torch.equal(small_G.mapping(z, truncation_psi=1.0), w)
    w0 = small_G.mapping(z, truncation_psi=0.0)
    assert torch.allclose(w0, small_G.mapping.w_avg.expand_as(w0))
    wt = small_G.mapping(z, truncation_psi=0.5)
    assert torch.allclose(wt, small_G.mapping.w_avg + 0.5 * (w - small_G.mapping.w_avg), atol=1e-6)
    wc = small_G.mapping(z, truncation_psi=0.5, truncation_cutoff=3)
    assert torch.allclose(wc[:, :3], wt[:, :3]) and torch.equal(wc[:, 3:], w[:, 3:])
    assert w.shape == (3, small_G.num_ws, small_G.w_dim)
    assert torch.equal(w[:, 0], w[:, -1])  # broadcast: the same w on every layer


def test_mapping_normalises_z(small_G):
    z = torch.randn(2, small_G.z_dim)
    assert torch.allclose(small_G.mapping(z), small_G.mapping(z * 5.0), atol=1e-5)


def test_w_avg_tracking():
    G = make_generator()
    before = G.mapping.w_avg.clone()
    z = torch.randn(64, G.z_dim)
    mean_w = G.mapping(z)[:, 0].mean(0)
    G.mapping(z, update_w_avg=True)
    assert torch.allclose(G.mapping.w_avg, mean_w.lerp(before, G.mapping.w_avg_beta), atol=1e-6)


def test_wplus_per_layer_styles_matter(small_G):
    ws = small_G.mapping(torch.randn(1, small_G.z_dim))
    with torch.no_grad():
        base = small_G.synthesis(ws)
        for layer in (0, small_G.num_ws // 2, small_G.num_ws - 1):
            ws2 = ws.clone()
            ws2[:, layer] += 1.0
            assert not torch.allclose(small_G.synthesis(ws2), base)


def test_style_mix():
    g = torch.Generator().manual_seed(0)
    a, b = torch.zeros(64, 6, 4), torch.ones(64, 6, 4)
    m = style_mix(a, b, prob=1.0, generator=g)
    first_b = (m[:, :, 0] == 1).float().argmax(1)
    assert (first_b >= 1).all() and (first_b <= 5).all()
    for i in range(64):  # a prefix from a, then b
        assert (m[i, : first_b[i]] == 0).all() and (m[i, first_b[i]:] == 1).all()
    assert torch.equal(style_mix(a, b, prob=0.0, generator=g), a)


def test_fused_and_unfused_modconv_agree():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(3, 6, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(5, 6, 3, 3, dtype=torch.float64, generator=g)
    s = torch.randn(3, 6, dtype=torch.float64, generator=g)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    for up in (1, 2):
        for demod in (True, False):
            a = modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, demodulate=demod, fused=True)
            b = modulated_conv2d(x, w, s, up=up, padding=1, resample_filter=f, demodulate=demod, fused=False)
            assert torch.allclose(a, b, atol=1e-10)


def test_modconv_demodulation_normalises_output_variance():
    """Demodulation: unit-variance i.i.d. input gives about unit-variance output per channel."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(2, 64, 32, 32, generator=g)
    w = torch.randn(8, 64, 3, 3, generator=g)
    s = torch.rand(2, 64, generator=g) * 3
    y = modulated_conv2d(x, w, s, padding=1)[..., 1:-1, 1:-1]
    assert torch.allclose(y.std(dim=[2, 3]), torch.ones(2, 8), atol=0.1)


def test_conv2d_resample_equals_explicit_composition():
    """Up: zero insertion, true convolution, FIR (gain 4). Down: correlation, FIR, decimation."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 3, 8, 8, dtype=torch.float64, generator=g)
    w = torch.randn(5, 3, 3, 3, dtype=torch.float64, generator=g)
    f = ops.setup_filter([1, 3, 3, 1]).double()
    up = conv2d_resample(x, w, f, up=2, padding=1)
    z = ops.upfirdn2d(x, None, up=2, padding=[3, 2, 3, 2], impl="ref")
    expect = ops.upfirdn2d(F.conv2d(z, w.flip([2, 3])), f, gain=4, impl="ref")
    assert torch.allclose(up, expect, atol=1e-12)
    down = conv2d_resample(x, w, f, down=2, padding=1)
    expect = ops.upfirdn2d(F.conv2d(F.pad(x, [2, 2, 2, 2]), w), f, down=2, impl="ref")
    assert torch.allclose(down, expect, atol=1e-12)


def test_conv_clamp_bounds_activations():
    G = make_generator(res=16, conv_clamp=0.05)
    with torch.no_grad():
        img = G(torch.randn(2, G.z_dim))
    # the image is a sum of per-resolution ToRGB outputs, each clamped to +-0.05
    assert img.abs().max() <= 0.05 * 3 + 1e-6


def test_discriminator_double_backward_r1():
    """R1 needs gradients of gradients through bias_act and upfirdn2d."""
    D = Discriminator(img_resolution=16, channel_base=64, channel_max=8)
    img = torch.randn(4, 3, 16, 16, requires_grad=True)
    (g,) = torch.autograd.grad(D(img).sum(), img, create_graph=True)
    r1 = g.square().sum()
    r1.backward()
    grads = [p.grad for p in D.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(x).all() for x in grads)
    assert sum(x.abs().sum() for x in grads) > 0


def test_minibatch_stddev_feature():
    from stylerelight.gan.networks import minibatch_stddev

    x = torch.zeros(4, 2, 3, 3)
    x[0] = 1.0
    y = minibatch_stddev(x, 4)
    assert y.shape == (4, 3, 3, 3)
    assert torch.allclose(y[:, 2], torch.full((4, 3, 3), (0.1875 + 1e-8) ** 0.5))
