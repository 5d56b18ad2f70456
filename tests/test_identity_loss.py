"""dlib's face descriptor network in torch (stylerelight.face_descriptor) and the identity loss
built on it, against dlib itself on a real photo (skimage's astronaut)."""

import dlib
import numpy as np
import pytest
import torch
from skimage.data import astronaut

from stylerelight.align import align_face
from stylerelight.face_descriptor import DescriptorFileError, load_face_descriptor
from stylerelight.identity import (
    IdentityLoss,
    _aligned_rect,
    _models,
    chip_transform,
    cut_chips,
    identity_distance,
)


@pytest.fixture(scope="module")
def crop():
    return np.ascontiguousarray(align_face(astronaut(), output_size=256).image)


@pytest.fixture(scope="module")
def net():
    return load_face_descriptor()


def _t(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(img)).permute(2, 0, 1)[None].float() / 127.5 - 1


def test_descriptor_equals_dlibs(crop, net):
    predictor, rec = _models()
    shape = predictor(crop, _aligned_rect(256))
    for chip in (dlib.get_face_chip(crop, shape, 150, 0.25), np.ascontiguousarray(crop[53:203, 40:190])):
        ref = np.asarray(rec.compute_face_descriptor(chip))
        mine = net(torch.from_numpy(chip).permute(2, 0, 1)[None].float())[0].numpy()
        assert np.abs(mine - ref).max() < 1e-4, np.abs(mine - ref).max()


def test_chip_is_cut_where_dlib_cuts_it(crop):
    predictor, _ = _models()
    ref = dlib.get_face_chip(crop, predictor(crop, _aligned_rect(256)), 150, 0.25).astype(np.float64)
    mine = cut_chips(_t(crop), torch.from_numpy(chip_transform(crop))[None])[0].permute(1, 2, 0).numpy()
    # dlib rounds its chip down to uint8; the geometry is the same to the pixel
    assert np.abs(mine - ref).max() <= 1.0 + 1e-3 and np.abs(mine - ref).mean() < 0.6


def test_loss_is_dlibs_distance_and_has_a_useful_gradient(crop, net):
    loss = IdentityLoss(net)
    other = np.clip(crop.astype(int) + np.random.default_rng(0).integers(-25, 25, crop.shape), 0, 255).astype(np.uint8)
    d = float(loss(_t(other), _t(crop))[0])
    assert abs(d - float(identity_distance(crop, other)[0])) < 1e-3
    assert float(loss(_t(crop), _t(crop))[0]) < 1e-3
    # at the generator's size: descending the loss moves a blurred, tinted face towards the target's descriptor
    target = torch.nn.functional.interpolate(_t(crop), size=64, mode="area")
    x = (torch.nn.functional.avg_pool2d(target, 3, 1, 1) * 0.8 + 0.1).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=0.01)
    first = None
    for _ in range(8):
        value = loss(x, target).sum()
        first = float(value.detach()) if first is None else first
        opt.zero_grad()
        value.backward()
        opt.step()
    assert float(loss(x, target)[0]) < 0.8 * first


def test_other_files_are_refused(tmp_path):
    bad = tmp_path / "not_a_net.dat"
    bad.write_bytes(b"\x01\x05con_4" + b"\x00" * 64)
    with pytest.raises(DescriptorFileError):
        load_face_descriptor(bad)
    lm = tmp_path / "landmarks.dat"
    lm.write_bytes(b"\x01\x15input_rgb_image_sized" + b"\x00" * 32)
    with pytest.raises(DescriptorFileError):
        load_face_descriptor(lm)


def test_encoder_training_step_with_the_identity_loss_alone(tmp_path, small_G):
    """`identity_weight` > 0 puts the descriptor distance into `train encoder`'s loss: with every
    other term off, a step still moves the encoder, and the step reports the loss."""
    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer

    cfg = EncoderTrainConfig(width=8, batch=4, synth_fraction=1.0, latent_weight=0.0, l2_weight=0.0,
                             msssim_weight=0.0, lpips_weight=0.0, delta_weight=0.0, identity_weight=1.0,
                             identity_images=2, total_kimg=0.004)
    t = EncoderTrainer(cfg, small_G, None, tmp_path / "run", log=False)
    before = [p.detach().clone() for p in t.E.net.parameters()]
    stats = t.train_step()
    assert 0 < stats["loss/identity"] < 10 and stats["loss"] == pytest.approx(stats["loss/identity"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.E.net.parameters(), strict=True))
