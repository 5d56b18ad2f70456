"""SWD: small for sets from one distribution (patch sampling noise only), ordered by how far
distributions are apart."""

from __future__ import annotations

import torch

from stylerelight.gan.metrics import laplacian_pyramid, sliced_wasserstein


def _blobs(n, seed, sharp=8.0):
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    c = torch.rand(n, 2, generator=g) * 16 + 8
    col = torch.rand(n, 3, 1, 1, generator=g) * 2 - 1
    blob = torch.exp(-((yy - c[:, :1, None]) ** 2 + (xx - c[:, 1:, None]) ** 2) / sharp)
    return (blob[:, None] * col).clamp(-1, 1)


def test_pyramid_reconstructs_and_swd_orders():
    x = _blobs(4, 0)
    levels = laplacian_pyramid(x)
    assert [lv.shape[-1] for lv in levels] == [32, 16]
    a, b = _blobs(64, 1), _blobs(64, 2)
    same = sum(sliced_wasserstein(a, a)) / 2
    real_real = sum(sliced_wasserstein(a, b)) / 2
    blurry = sum(sliced_wasserstein(a, _blobs(64, 3, sharp=40.0))) / 2
    noise = sum(sliced_wasserstein(a, torch.rand(64, 3, 32, 32) * 2 - 1)) / 2
    assert same < blurry and real_real < blurry < noise
    assert sliced_wasserstein(a, b) == sliced_wasserstein(a, b)  # seeded
