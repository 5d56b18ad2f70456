"""The bundled generator (checkpoints/lightstage_stylegan2.pt) loads and makes varied heads.

Its full evaluation (50 + 50 held-out renders, SWD) is benchmarks/eval_generator.py; here one
held-out render is inverted as a smoke check of the same property.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import stylerelight as sr

CKPT = Path(__file__).resolve().parent.parent / "checkpoints" / "lightstage_stylegan2.pt"


@pytest.fixture(scope="module")
def G():
    return sr.load_generator(CKPT)


def test_loads_as_documented(G):
    card = CKPT.with_suffix(".md").read_text()
    assert (G.img_resolution, G.z_dim, G.w_dim, G.num_ws) == (64, 128, 128, 10)
    assert "64" in card and "kimg" in card
    assert sum(p.numel() for p in G.parameters()) < 3_000_000  # small enough to ship


def _samples(G, n):
    with torch.no_grad():
        return G(torch.cat([G.z_from_seed(s) for s in range(n)]), noise_mode="const").clamp(-1, 1)


def test_samples_are_varied_heads_on_the_dataset_background(G):
    n = 48
    img = _samples(G, n)
    # dataset portraits sit on display grey 0.5 (0 in generator space); the head fills the centre
    corners = torch.cat([img[:, :, :6, :6], img[:, :, :6, -6:]], dim=3)
    centre = img[:, :, 24:40, 24:40]
    assert corners.abs().mean() < 0.1
    assert (centre - corners.mean(dim=[2, 3], keepdim=True)).abs().mean(dim=[1, 2, 3]).median() > 0.1
    # varied: no two samples alike
    flat = img.flatten(1)
    d = torch.cdist(flat, flat) / flat.shape[1] ** 0.5
    assert d[~torch.eye(n, dtype=torch.bool)].min() > 0.05


def test_samples_look_like_faces(G):
    from stylerelight.align import face_found_rate
    from stylerelight.synth.dataset import image_params, portrait_from_params

    n = 48
    img = _samples(G, n)
    # face-like: dlib finds faces in the samples at least half as often as in real renders made
    # the way the training set was (head silhouettes at 76 kimg scored 8.5% vs 51.5% over 200; 156 kimg: 52.0% vs 51.5%)
    # images 0..n-1 of the training set's recipe (seed 0, 3,000 subjects, spp 8)
    real = [portrait_from_params(image_params(0, i, 3000), 64, spp=8)[0] for i in range(n)]
    fake_rate = face_found_rate(sr.imageio.gan_to_uint8(img))
    real_rate = face_found_rate(np.stack(real))
    assert real_rate > 0.2
    assert fake_rate >= 0.5 * real_rate, (fake_rate, real_rate)


def test_inverts_a_held_out_render(G):
    from stylerelight.invert import psnr
    from stylerelight.synth import Camera, render_portrait, sample_envmap, sample_subject

    # a subject no training set draws (seeds < 3000) under the held-out 'hard' lighting kind
    target_u8 = render_portrait(sample_subject(1_000_123), sample_envmap(321, kind="hard"), Camera(yaw=-15, pitch=8),
                                64, spp=16)
    target = sr.imageio.uint8_to_gan(target_u8)
    ws, info = sr.invert(G, target, steps=150, return_info=True, progress=False)
    assert np.isfinite(ws.numpy()).all()
    assert float(psnr(info["reconstruction"], target)[0]) > 22.0
