"""The latent mapper: aligned OLAT captures, conditioning (against independent references),
the network, its file, pairs, training (loss falls, exact resume, generator refusal) and the
2-process torchrun path."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from conftest import make_generator, render_captures, run_torchrun

import stylerelight as sr
from stylerelight.bundled import ENCODER, GENERATOR, bundled
from stylerelight.lighting import LightStage, face_display
from stylerelight.mapper import Edit, build_mapper, load_mapper, normalise_light, save_mapper
from stylerelight.mapper.conditioning import MAP_CHANNELS, Conditioner, ShadingProbe, crop_coordinates, splat
from stylerelight.mapper.networks import LatentMapper
from stylerelight.mapper.pairs import Bank, BankSpec, build_bank, sample_pairs, to_tensor
from stylerelight.mapper.training import MapperTrainConfig, MapperTrainer
from stylerelight.recon.reconstruction import _vertex_normals
from stylerelight.synth import sample_envmap, sample_subject
from stylerelight.synth.head_model import HeadModel
from stylerelight.synth.olat_aligned import warp_to_crop

STAGE = LightStage.default()


@pytest.fixture(scope="module")
def captures(tmp_path_factory):
    """Two subjects, two cameras each, aligned for a 64^2 generator."""
    return render_captures(tmp_path_factory.mktemp("olat"), (3, 4), 64)


@pytest.fixture(scope="module")
def bundled_parts():
    G = sr.load_generator(bundled(GENERATOR))
    E = sr.load_encoder(bundled(ENCODER))
    from stylerelight.recon import default_cnn

    return G, E, default_cnn()


@pytest.fixture(scope="module")
def bank_dir(captures, bundled_parts, tmp_path_factory):
    G, E, cnn = bundled_parts
    return build_bank(captures, tmp_path_factory.mktemp("bank"), E, cnn, BankSpec(2, 12, 0), progress=False)


def test_aligned_capture_matches_dataset_portrait(captures):
    """Relit aligned OLAT shown through the one display transform ~ the dataset's Mitsuba portrait."""
    cap = sr.lighting.OLATCapture.load(captures / "subject_0003")
    env = sample_envmap(7, kind="overcast")
    cam = sr.synth.Camera(**{k: cap.cameras[0][k] for k in ("yaw", "pitch", "distance", "fov")})
    relit = cap.display(STAGE.project(env), 0).astype(float)
    ref = sr.synth.render_portrait(sample_subject(3), env, cam, 64, spp=32).astype(float)
    psnr = 10 * np.log10(255**2 / ((relit - ref) ** 2).mean())
    assert psnr > 24, psnr
    # the crop's landmarks sit where the FFHQ recipe puts eyes and mouth
    lm = np.asarray(cap.meta["landmarks"][0])
    eyes = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    assert abs(eyes[0] - 32) < 4 and 20 < eyes[1] < 32


def test_capture_exposure_follows_the_whole_frame(captures, tmp_path):
    """A relit crop is exposed as the dataset's portrait of the same light and view (whose exposure
    is set on the whole rendered frame), not by its own crop; without frame.npy (a real stage's
    captures, or captures made before it) the crop sets it; `lightstage render --aligned` on such a
    capture adds the frame back exactly."""
    import shutil

    from click.testing import CliRunner

    from stylerelight.cli import cli
    from stylerelight.lighting import face_exposure

    cap = sr.lighting.OLATCapture.load(captures / "subject_0003")
    assert cap.frame is not None and len(cap.meta["frame_pixels"]) == cap.num_cameras
    subject = sample_subject(3)
    frame_err, crop_err = [], []
    for c in range(cap.num_cameras):
        cam = sr.synth.Camera(**{k: cap.cameras[c][k] for k in ("yaw", "pitch", "distance", "fov")})
        for seed in (1, 2, 3):
            for kind in ("sun_sky", "studio"):
                env = sample_envmap(seed, kind=kind)
                coeffs = STAGE.project(env)
                _, info = sr.synth.render_portrait(subject, env, cam, 64, spp=16, return_info=True)
                frame_err.append(abs(np.log(cap.exposure(coeffs, c) / info["exposure"])))
                crop_err.append(abs(np.log(face_exposure(cap.relight(coeffs, c), cap.mask[c]) / info["exposure"])))
                np.testing.assert_array_equal(cap.display(coeffs, c), face_display(
                    cap.relight(coeffs, c), cap.mask[c], cap.exposure(coeffs, c))[0])
    # left: the 150-light discretisation of a sun, 1-spp noise and the 48^2 frame (measured: mean
    # 0.03, the crop's 0.075, up to 0.38)
    assert max(frame_err) < 0.15 and np.mean(frame_err) < 0.6 * np.mean(crop_err), (frame_err, crop_err)
    # without the frame: the crop's own exposure; the CLI puts the same frame back
    d = tmp_path / "subject_0003"
    shutil.copytree(captures / "subject_0003", d)
    (d / "frame.npy").unlink()
    old = sr.lighting.OLATCapture.load(d)
    coeffs = STAGE.project(sample_envmap(1, kind="sun_sky"))
    assert old.frame is None
    assert old.exposure(coeffs, 1) == face_exposure(old.relight(coeffs, 1), old.mask[1])
    r = CliRunner().invoke(cli, ["lightstage", "render", "--aligned", "--seed", "3", "--subjects", "1",
                                  "--out", str(tmp_path)])
    assert r.exit_code == 0 and "added" in r.output, r.output
    again = sr.lighting.OLATCapture.load(d)
    np.testing.assert_array_equal(np.asarray(again.frame), np.asarray(cap.frame))
    assert again.exposure(coeffs, 1) == cap.exposure(coeffs, 1)


def test_warp_to_crop_is_exact_for_affine_ramps():
    """A linear ramp warped by a quad comes out as the ramp evaluated at the crop's pixel centres."""
    h = w = 40
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    img = np.stack([xx, yy, np.ones_like(xx)], -1)
    quad = np.array([[8, 6], [8, 30], [32, 30], [32, 6]], np.float64)  # axis-aligned 24 px square
    out = warp_to_crop(img, quad, 12, oversample=4)
    # output pixel i averages the oversampled centres, i.e. the ramp at raw index 8 + (i + 0.5) * 2
    i = np.arange(12)
    np.testing.assert_allclose(out[0, :, 0], 8 + (i + 0.5) * 2, atol=1e-3)
    np.testing.assert_allclose(out[:, 0, 1], 6 + (i + 0.5) * 2, atol=1e-3)
    np.testing.assert_allclose(out[..., 2], 1, atol=1e-5)


def test_probe_normals_match_mesh_normals():
    probe = ShadingProbe(STAGE.directions)
    m = HeadModel.default()
    rng = np.random.default_rng(0)
    idc, ex = rng.standard_normal((2, len(m.id_names))), rng.uniform(0, 1, (2, len(m.expr_names)))
    got = probe.normals(torch.from_numpy(idc), torch.from_numpy(ex)).numpy()
    for i in range(2):
        ref = _vertex_normals(m.vertices(idc[i], ex[i]), m.triangles)[probe.vertex_index]
        np.testing.assert_allclose(got[i], ref, atol=2e-4)


def test_shading_is_linear_shadowed_and_scale_free():
    probe = ShadingProbe(STAGE.directions)
    n = probe.normals(torch.zeros(1, 16), torch.zeros(1, 4))
    front = torch.zeros(1, STAGE.num_lights, 3)
    back = torch.zeros_like(front)
    front[0, int(np.argmax(STAGE.directions[:, 2]))] = 1.0   # the light towards the face
    back[0, int(np.argmin(STAGE.directions[:, 2]))] = 1.0    # the light behind the head
    sf, sb = probe(n, front), probe(n, back)
    assert float(sb.abs().max()) == 0.0  # the face is in the head's own shadow
    assert float(sf.min()) > 0.05
    torch.testing.assert_close(probe(n, 2 * front + back), 2 * sf + sb)
    c = torch.rand(2, STAGE.num_lights, 3)
    torch.testing.assert_close(normalise_light(c), normalise_light(7.5 * c))


def test_crop_coordinates_follow_the_dataset_crop():
    """The shading map's projection: a shape's landmarks seen by synth.Camera and cropped with
    align.ffhq_quad (numpy, the dataset's own code) land where crop_coordinates puts them."""
    from stylerelight.align import ffhq_quad
    from stylerelight.synth import Camera

    probe = ShadingProbe(STAGE.directions)
    m = HeadModel.default()
    rng = np.random.default_rng(1)
    idc, ex = rng.standard_normal((3, len(m.id_names))), rng.uniform(0, 1, (3, len(m.expr_names)))
    yaw, pitch = np.array([-40.0, 0.0, 25.0]), np.array([10.0, -15.0, 0.0])
    pts, lm = probe.points(torch.from_numpy(idc), torch.from_numpy(ex))
    uv, _ = crop_coordinates(torch.cat([pts, lm], 1), lm, torch.from_numpy(yaw), torch.from_numpy(pitch))
    for i in range(3):
        v = m.vertices(idc[i], ex[i])
        np.testing.assert_allclose(pts[i].numpy(), v[probe.vertex_index], atol=1e-4)
        raw = Camera(yaw=yaw[i], pitch=pitch[i]).project(v[m.landmarks], 1000)
        quad, size = ffhq_quad(raw)
        x_axis, y_axis = (quad[3] - quad[0]) / size, (quad[1] - quad[0]) / size  # unit crop axes
        ref = np.stack([(raw - quad[0]) @ x_axis, (raw - quad[0]) @ y_axis], -1) / size
        np.testing.assert_allclose(uv[i, -68:].numpy(), ref, atol=1e-4)


def test_splat_averages_the_kept_points_per_cell():
    uv = torch.tensor([[[0.1, 0.1], [0.2, 0.2], [0.9, 0.1], [0.9, 0.1], [1.5, 0.5]]])
    vals = torch.tensor([[[1.0], [3.0], [5.0], [7.0], [9.0]]])
    keep = torch.tensor([[True, True, True, False, True]])
    mean, cov = splat(uv, vals, keep, 2)
    torch.testing.assert_close(mean[0, 0], torch.tensor([[2.0, 5.0], [0.0, 0.0]]))  # row 0: (0,0) and (0,1)
    torch.testing.assert_close(cov[0], torch.tensor([[1.0, 1.0], [0.0, 0.0]]))  # the point off the crop is dropped


def test_shading_map_sees_the_turn_and_the_light():
    """The map is in the target view's crop: a turn moves the face's coverage the way the head
    turns (a camera moved to the head's +x side sees that cheek, on the image's right: synth.Camera
    has image x along world +x at yaw 0), keeping the view leaves both coverages equal, and a light
    from the head's +x side lights the map's right half and leaves the left in the nose's shadow."""
    C = Conditioner(STAGE.num_lights, STAGE.directions, True, shading_map=16)
    n, d = 3, STAGE.directions
    side = torch.zeros(n, STAGE.num_lights, 3)
    side[:, int(np.argmax(d[:, 0] + 0.5 * d[:, 2]))] = 1.0  # from the head's +x side, in front
    e = Edit(light=side, src_pose=torch.zeros(n, 2), delta_pose=torch.tensor([[0.0, 0], [30, 0], [-30, 0]]),
             same_view=torch.tensor([1.0, 0, 0]), src_light=torch.ones(n, STAGE.num_lights, 3),
             identity=torch.zeros(n, 16), expression=torch.zeros(n, 4))
    c = C(e)
    assert c.shape == (n, C.dim) and C.dim == Conditioner(STAGE.num_lights, STAGE.directions).dim + MAP_CHANNELS * 256
    m = c[:, -MAP_CHANNELS * 256:].reshape(n, MAP_CHANNELS, 16, 16)
    cov_t, cov_s = m[:, 6], m[:, 7]
    torch.testing.assert_close(cov_t[0], cov_s[0])
    torch.testing.assert_close(cov_s[1], cov_s[0])  # the source view is the same for all three
    xs = torch.arange(16.0)
    centre = (cov_t * xs).sum([1, 2]) / cov_t.sum([1, 2])
    assert centre[2] + 1 < centre[0] < centre[1] - 1, centre
    col = (m[0, 0] * cov_t[0]).sum(0) / cov_t[0].sum(0).clamp_min(1)  # mean log shading per column
    covered = (cov_t[0].sum(0) > 0).nonzero().flatten()
    mid = int(covered.float().mean().round())
    assert col[mid:covered[-1] + 1].mean() > col[covered[0]:mid].mean() + 1.5, col


def test_mapper_starts_near_identity_and_maps_fast():
    m = LatentMapper(10, 128, 30)
    ws = torch.randn(4, 10, 128)
    out = m(ws, torch.randn(4, 30))
    assert (out - ws).abs().max() < 0.2 * ws.abs().max()


def test_attached_carries_answer_as_in_their_file():
    """A network with the shading map, widened from a file's network, given that file's carries
    (attach_carries) answers every carried and turned edit exactly as the file does."""
    from stylerelight.mapper.model import attach_carries
    from stylerelight.mapper.networks import load_widened

    G = make_generator(res=16)
    A = build_mapper(G, STAGE.directions, True, 32)
    for kind in ("light", "view"):
        A.add_carry(32, kind)
    A.view_carry_gain = 0.5
    with torch.no_grad():
        for p in A.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    B = build_mapper(G, STAGE.directions, True, 32, shading_map=4)
    B.conditioner.load_state_dict(A.conditioner.state_dict(), strict=False)
    load_widened(B.net, A.net.state_dict())
    attach_carries(B, A)
    assert B.view_carry_gain == 0.5
    n = 3
    e = Edit(torch.rand(n, 150, 3), torch.zeros(n, 2), torch.tensor([[10.0, 0], [0, 0], [0, 5]]),
             torch.tensor([0.0, 1, 0]), torch.rand(n, 150, 3), torch.randn(n, 16), torch.rand(n, 4))
    ws, w_enc = torch.randn(n, G.num_ws, G.w_dim), torch.randn(n, G.num_ws, G.w_dim)
    with torch.no_grad():
        for M in (A, B):
            M.eval()
        d, lit = A(w_enc, e), A(w_enc, e.at_source_view())
        torch.testing.assert_close(B.carried(w_enc, d, ws, e), A.carried(w_enc, d, ws, e))
        torch.testing.assert_close(B.turned(ws, w_enc, d, lit, e), A.turned(ws, w_enc, d, lit, e))
        assert not torch.allclose(A.carried(w_enc, d, ws, e), d)  # the carries do act
    with pytest.raises(ValueError, match="does not widen"):
        attach_carries(build_mapper(G, STAGE.directions, False, 32), A)


def test_whole_code_branch_starts_silent_reads_other_layers_and_round_trips(tmp_path):
    """A network gaining code_mix, widened from one without, answers exactly as before; once its
    read-out is non-zero a change of one layer's code moves the other layers' answers (which the
    per-layer network never does); the file keeps the branch."""
    from stylerelight.mapper.networks import load_widened

    G = make_generator(res=16)
    A = build_mapper(G, STAGE.directions, True, 32)
    B = build_mapper(G, STAGE.directions, True, 32, code_mix=16)
    B.conditioner.load_state_dict(A.conditioner.state_dict(), strict=False)
    load_widened(B.net, A.net.state_dict())
    ws, cond = torch.randn(2, G.num_ws, G.w_dim), torch.randn(2, A.net.cond_dim)
    moved = ws.clone()
    moved[:, 0] += 1.0  # only the first layer's code changes
    with torch.no_grad():
        torch.testing.assert_close(B.net(ws, cond), A.net(ws, cond))
        for net in (A.net, B.net):  # per layer: the other layers' answers do not move
            torch.testing.assert_close(net(moved, cond)[:, 1:], net(ws, cond)[:, 1:])
        B.net.layer_code.weight.normal_(0, 0.1)
        assert (B.net(moved, cond)[:, 1:] - B.net(ws, cond)[:, 1:]).abs().max() > 1e-4
    save_mapper(B, tmp_path / "m.pt")
    C = load_mapper(tmp_path / "m.pt")
    assert C.net.code_mix == 16
    with torch.no_grad():
        torch.testing.assert_close(C.net(ws, cond), B.net(ws, cond))


def test_mapper_and_carries_keep_to_their_device():
    """Everything the mapper computes follows its weights' device (no constant made on the CPU):
    checked on PyTorch's "meta" device, where any CPU tensor in the way raises, as a GPU would
    (benchmarks/gpu_train_check.py runs the real GPU)."""
    G = make_generator(res=16)
    M = build_mapper(G, STAGE.directions, True, 32, {"yaw": 45, "pitch": 20})
    M.add_carry(32, "light")
    M.add_carry(32, "view")
    M = M.to("meta")
    p, n = M.conditioner.probe, 3
    edit = Edit(light=torch.rand(n, STAGE.num_lights, 3), src_pose=torch.zeros(n, 2),
                delta_pose=torch.tensor([[10.0, 0], [0, 0], [0, 5]]), same_view=torch.tensor([0.0, 1, 0]),
                src_light=torch.rand(n, STAGE.num_lights, 3), identity=torch.zeros(n, p.id_basis.shape[0]),
                expression=torch.zeros(n, p.expr_basis.shape[0])).to("meta")
    normals = p.normals(edit.identity, edit.expression)
    ws = torch.randn(n, G.num_ws, G.w_dim, device="meta")
    direct = M(ws, edit, normals)
    lit = M(ws, edit.at_source_view(), normals)
    for out in (direct, M.carried(ws, direct, ws, edit), M.turned(ws, ws, direct, lit, edit, normals)):
        assert out.device.type == "meta" and out.shape == ws.shape


def test_mapper_file_round_trip_and_refusals(tmp_path):
    G, G2 = make_generator(res=16, seed=0), make_generator(res=16, seed=1)
    M = build_mapper(G, STAGE.directions, geometry=True, hidden=32)
    with torch.no_grad():
        for p in M.net.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    save_mapper(M, tmp_path / "m.pt")
    M2 = load_mapper(tmp_path / "m.pt")
    ws = torch.randn(2, G.num_ws, G.w_dim)
    e = Edit(torch.rand(2, 150, 3), torch.zeros(2, 2), torch.tensor([[10.0, 0], [0, 0]]), torch.tensor([0.0, 1]),
             torch.rand(2, 150, 3), torch.randn(2, 16), torch.rand(2, 4))
    torch.testing.assert_close(M2(ws, e), M.eval()(ws, e))
    M2.check_for(G)
    with pytest.raises(sr.CheckpointError, match="trained for generator"):
        M2.check_for(G2)
    with pytest.raises(sr.CheckpointError, match="light-stage layout"):
        M2.check_for(G, directions=LightStage.default(120).directions[:150])
    S = build_mapper(G, STAGE.directions, geometry=True, hidden=32, shading_map=4)
    with torch.no_grad():
        S.net.cond[0].weight.add_(torch.randn_like(S.net.cond[0].weight) * 0.1)
    save_mapper(S, tmp_path / "s.pt")
    S2 = load_mapper(tmp_path / "s.pt")
    assert S2.conditioner.shading_map == 4
    torch.testing.assert_close(S2(ws, e), S.eval()(ws, e))
    torch.save({"format": "stylerelight-mapper", "config": {}}, tmp_path / "bad.pt")
    with pytest.raises(sr.CheckpointError, match="damaged mapper"):
        load_mapper(tmp_path / "bad.pt")


def test_rerender_read_starts_as_its_mix_routes_kinds_and_round_trips(tmp_path):
    """The re-render read answers m + a[kind] (r - m) until trained (its MLP's read-out is zero), with
    each kind of edit (relight, turn, both) reading its own mixes; a mapper file keeps it exactly and a
    file without one loads without it."""
    from stylerelight.mapper.networks import READ_KINDS, read_kind

    G = make_generator(res=16, seed=0)
    M = build_mapper(G, STAGE.directions, geometry=False, hidden=32)
    save_mapper(M, tmp_path / "plain.pt")
    assert load_mapper(tmp_path / "plain.pt").read is None
    read = M.add_read(hidden=8)
    with torch.no_grad():
        read.a.copy_(torch.tensor([0.2, 0.5, 0.8])[:, None, None].expand_as(read.a))
    m, r = torch.randn(3, G.num_ws, G.w_dim), torch.randn(3, G.num_ws, G.w_dim)
    kind = read_kind(torch.tensor([True, False, True]), torch.tensor([False, True, True]))
    assert kind.tolist() == [READ_KINDS.index(k) for k in ("relight", "turn", "both")]
    want = m + torch.tensor([0.2, 0.5, 0.8])[:, None, None] * (r - m)
    torch.testing.assert_close(read(m, r, kind), want, atol=1e-6, rtol=0)
    with torch.no_grad():
        read.out.weight.normal_(0, 0.1)  # a trained read's own term
        assert float((read(m, r, kind) - want).abs().max()) > 1e-3
    save_mapper(M, tmp_path / "read.pt")
    M2 = load_mapper(tmp_path / "read.pt")
    torch.testing.assert_close(M2.read(m, r, kind), read(m, r, kind), atol=0, rtol=0)


def test_read_training_learns_the_mix_of_its_pairs_and_leaves_global_state(tmp_path, bundled_parts):
    """fit_read on edits whose targets are the generator's images of m + 0.7 (r - m) (the read starts at
    a mix of 0.4): the image loss falls to under half and every case's PSNR rises; pair files load (identity
    edits left out, files without "kind" read fuse_sweep's case names, files of other refinement steps are
    refused together); torch's global RNG and threads are untouched."""
    from stylerelight.imageio import gan_to_uint8
    from stylerelight.mapper.read_training import fit_read, load_read_pairs, score_read

    G = bundled_parts[0]  # a trained generator: its images stay in range (uint8 scores as the eval's)
    M = build_mapper(G, STAGE.directions, geometry=False, hidden=32)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        m = G.mapping(torch.randn(16, G.z_dim, generator=gen), None)
    r = m + 0.3 * torch.randn(m.shape, generator=gen)
    with torch.no_grad():
        t = gan_to_uint8(G.synthesis(m + 0.7 * (r - m), noise_mode="const"))
    groups = np.array(["relight", "yaw +-15", "relight + yaw 15", "same (true light)"] * 4)
    np.savez(tmp_path / "old.npz", m=m[:8].numpy(), r=r[:8].numpy(), t=t[:8], group=groups[:8])
    np.savez(tmp_path / "new.npz", m=m[8:].numpy(), r=r[8:].numpy(), t=t[8:], group=groups[8:],
             kind=np.array([0, 1, 2, -1] * 2), rr_steps=np.array(20))
    pairs = load_read_pairs([str(tmp_path / "old.npz"), str(tmp_path / "new.npz")])
    assert len(pairs) == 12 and "same (true light)" not in set(pairs.group)
    assert pairs.kind.tolist() == [0, 1, 2] * 4 and pairs.steps == 20
    np.savez(tmp_path / "zero.npz", **{**np.load(tmp_path / "new.npz"), "rr_steps": np.array(0)})
    with pytest.raises(ValueError, match="different steps"):
        load_read_pairs([str(tmp_path / "new.npz"), str(tmp_path / "zero.npz")])
    with pytest.raises(ValueError, match="not a read pair file"):
        np.savez(tmp_path / "bad.npz", x=np.zeros(3))
        load_read_pairs([str(tmp_path / "bad.npz")])
    read = M.add_read(hidden=8)
    before = score_read(G, read, pairs)
    rng, threads, needs = torch.get_rng_state(), torch.get_num_threads(), [p.requires_grad for p in G.parameters()]
    losses = fit_read(G, read, pairs, epochs=12, batch=6)
    assert torch.equal(torch.get_rng_state(), rng) and torch.get_num_threads() == threads
    assert losses[-1] < 0.5 * losses[0], losses
    after = score_read(G, read, pairs)
    assert all(after[g] > before[g] for g in before), (before, after)
    assert [p.requires_grad for p in G.parameters()] == needs  # the generator is left as it was
    # the command: the mapper file gets the read (steps from the pair files); no overwrite without --force
    from click.testing import CliRunner

    from stylerelight.cli import cli

    save_mapper(build_mapper(G, STAGE.directions, geometry=False, hidden=32), tmp_path / "m.pt")
    args = ["train", "read", "--pairs", str(tmp_path / "new.npz"), "--val", str(tmp_path / "old.npz"), "--mapper",
            str(tmp_path / "m.pt"), "-o", str(tmp_path / "m_read.pt"), "--epochs", "1", "--mix", "0.5"]
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 0, r.output
    got = load_mapper(tmp_path / "m_read.pt")
    assert got.read.steps == 20 and got.info["read"]["mix"] == 0.5 and got.net.hidden == 32
    r = CliRunner().invoke(cli, args)
    assert r.exit_code == 1 and "pass --force" in r.output and len(r.output.strip().splitlines()) == 1, r.output


def test_pairs_follow_their_modes(bank_dir, captures):
    bank = Bank(bank_dir, captures)
    b = sample_pairs(bank, 64, torch.Generator().manual_seed(0), fresh_fraction=0.5)
    for i, mode in enumerate(b.mode):
        same_view = bool(b.edit.same_view[i])
        assert same_view == (mode in ("relight", "same"))
        if mode == "same":
            torch.testing.assert_close(b.tgt_img[i], b.src_img[i])
            torch.testing.assert_close(b.tgt_ws[i], b.src_ws[i])
    assert b.has_tgt_ws.any() and not b.has_tgt_ws.all()
    # a bank image is the capture relit by its bank light through the display transform
    cap = bank.capture(0)
    k = bank.light_ids[0, 1]
    ref = face_display(cap.relight(bank.lights[k], 1), cap.mask[1], cap.exposure(bank.lights[k], 1))[0]
    np.testing.assert_array_equal(bank.images[0, 1, 1].numpy(), ref)


def test_fresh_targets_follow_their_weights(bank_dir, captures):
    """fresh_weights: a weight on one pool light alone makes it every fresh target's light; and the
    concentration that hard_light_weight uses is 1 for one light, top/L for an even light."""
    from stylerelight.mapper.conditioning import light_concentration

    bank = Bank(bank_dir, captures)
    j = len(bank.lights) - 1
    w = torch.zeros(len(bank.lights))
    w[j] = 1
    b = sample_pairs(bank, 48, torch.Generator().manual_seed(1), fresh_fraction=1.0, fresh_weights=w)
    fresh = [i for i, m in enumerate(b.mode) if m in ("relight", "both")]
    assert fresh and not b.has_tgt_ws[fresh].any()
    for i in fresh:
        torch.testing.assert_close(b.edit.light[i], torch.from_numpy(bank.lights[j]).float())
    one, even = torch.zeros(2, 150, 3), torch.ones(150, 3)
    one[0, 7], one[1, 99, 2] = 2.0, 5.0
    torch.testing.assert_close(light_concentration(one), torch.ones(2))
    torch.testing.assert_close(light_concentration(even), torch.tensor(10 / 150))


def test_refined_bank_built_in_parts(tmp_path, bank_dir, captures, bundled_parts):
    """refine_steps > 0: the bank's codes are the encoder's refined by L-BFGS (as Editor.invert);
    two builders with part=(0, 2), (1, 2) share the subjects; the settings are checked on reuse."""
    import json

    from stylerelight.invert import psnr

    G, E, cnn = bundled_parts
    spec = BankSpec(2, 12, 0, refine_steps=5)
    with pytest.raises(ValueError, match="needs the generator"):
        build_bank(captures, tmp_path / "r", E, cnn, spec, progress=False)
    for part in ((0, 2), (1, 2)):
        build_bank(captures, tmp_path / "r", E, cnn, spec, progress=False, G=G, part=part)
    enc, ref = Bank(bank_dir, captures), Bank(tmp_path / "r", captures)
    assert ref.shape == enc.shape
    np.testing.assert_array_equal(ref.images.numpy(), enc.images.numpy())
    x = to_tensor(enc.images.reshape(-1, *enc.images.shape[-3:]).numpy())
    with torch.no_grad():
        p_enc = psnr(G.synthesis(enc.ws.reshape(-1, G.num_ws, G.w_dim).float(), noise_mode="const"), x)
        p_ref = psnr(G.synthesis(ref.ws.reshape(-1, G.num_ws, G.w_dim).float(), noise_mode="const"), x)
    assert (p_ref > p_enc).all() and float(p_ref.mean()) > float(p_enc.mean()) + 0.5, (p_enc, p_ref)
    with pytest.raises(FileExistsError, match="other settings"):
        build_bank(captures, tmp_path / "r", E, cnn, BankSpec(2, 12, 0), progress=False)
    # a bank written before refine_steps existed reads as encoder codes
    meta = json.loads((bank_dir / "bank.json").read_text())
    meta["spec"].pop("refine_steps", None)
    (bank_dir / "bank.json").write_text(json.dumps(meta))
    build_bank(captures, bank_dir, E, cnn, BankSpec(2, 12, 0), progress=False)


def test_bank_reads_captures_of_any_folder_name(tmp_path, captures, bundled_parts):
    """A user's stage names its subject folders as it likes; the bank has one shard per folder."""
    _, E, cnn = bundled_parts
    olat = tmp_path / "olat"
    olat.mkdir()
    for src, name in zip(sorted(captures.iterdir()), ("alice", "bob"), strict=True):
        (olat / name).symlink_to(src, target_is_directory=True)
    (tmp_path / "bank").mkdir()
    (tmp_path / "bank" / ".alice.tmp.npz").write_bytes(b"")  # a build stopped mid-write
    bank = Bank(build_bank(olat, tmp_path / "bank", E, cnn, BankSpec(2, 12, 0), progress=False), olat)
    assert bank.names == ["alice", "bob"] and bank.shape[0] == 2
    assert bank.capture(1).num_cameras == 2
    # limit (config bank_subjects): the bank holds the first captures only, in folder order
    one = Bank(build_bank(olat, tmp_path / "one", E, cnn, BankSpec(2, 12, 0), progress=False, limit=1), olat)
    assert one.names == ["alice"] and one.shape[0] == 1
    np.testing.assert_array_equal(one.ws.numpy(), bank.ws[:1].numpy())
    # a bank folder built for more captures reads only the first ones when asked
    first = Bank(tmp_path / "bank", olat, limit=1)
    assert first.names == ["alice"]
    np.testing.assert_array_equal(first.ws.numpy(), bank.ws[:1].numpy())


def _trainer(bank_dir, captures, run, G, **kw):
    cfg = MapperTrainConfig(**{**dict(lights_per_subject=2, light_pool=12, batch=8, image_batch=2, lr=1e-3,
                                      image_weight=0.2, total_kimg=0.08, snapshot_kimg=0.04, image_kimg=1, threads=1),
                               **kw})
    return MapperTrainer(cfg, G, Bank(bank_dir, captures), run, log=False)


def test_training_lowers_the_loss_and_resumes_exactly(tmp_path, bank_dir, captures, bundled_parts):
    G = bundled_parts[0]
    t = _trainer(bank_dir, captures, tmp_path / "a", G)
    fixed = sample_pairs(t.bank, 16, torch.Generator().manual_seed(5))

    def objective(tr):  # the trained loss (latent + image) on a fixed batch
        with torch.no_grad():
            return float(tr.losses(fixed, 16)[0])

    before = objective(t)
    t.train(0.04, progress=False)
    t2 = _trainer(bank_dir, captures, tmp_path / "a", G)  # a new process would do the same
    assert t2.nimg == 40
    t2.train(0.08, progress=False)
    straight = _trainer(bank_dir, captures, tmp_path / "b", G)
    straight.train(0.08, progress=False)
    for (k, a), (_, b) in zip(t2.M.state_dict().items(), straight.M.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    straight.train(0.4, progress=False)
    assert objective(straight) < 0.9 * before, (objective(straight), before)
    M = load_mapper(tmp_path / "b" / "mapper.pt")
    M.check_for(G)
    with pytest.raises(ValueError, match="latent bank holds"):
        _trainer(bank_dir, captures, tmp_path / "c", make_generator(res=16))


def test_mapper_records_its_encoder_and_editor_warns_on_another(tmp_path, bank_dir, captures, bundled_parts):
    """The bank and the mapper trained on it record whose codes they hold; an Editor pairing the
    mapper with another encoder warns (edits still run), the right pairing is silent, and a bank
    folder refuses to be extended by another encoder."""
    import copy
    import json
    import warnings

    from stylerelight.invert import encoder_hash

    G, E, cnn = bundled_parts
    assert json.loads((bank_dir / "bank.json").read_text())["encoder_hash"] == encoder_hash(E)
    t = _trainer(bank_dir, captures, tmp_path / "a", G)
    t.export()
    M = load_mapper(tmp_path / "a" / "mapper.pt")
    assert M.info["encoder"] == encoder_hash(E)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sr.Editor(G, E, M, cnn)
    other = copy.deepcopy(E)
    with torch.no_grad():
        next(other.net.parameters()).add_(1e-3)
    assert encoder_hash(other) != encoder_hash(E)
    with pytest.warns(UserWarning, match="trained on codes of encoder"):
        sr.Editor(G, other, M, cnn)
    with pytest.raises(FileExistsError, match="other settings"):
        build_bank(captures, bank_dir, other, cnn, BankSpec(2, 12, 0), progress=False)


def test_new_run_warm_starts_from_a_mapper(tmp_path, bank_dir, captures, bundled_parts):
    """init_mapper: a new run starts from another run's network (e.g. one trained on another
    latent bank); a mapper with another network is refused."""
    G = bundled_parts[0]
    t = _trainer(bank_dir, captures, tmp_path / "a", G)
    t.train(0.04, progress=False)
    w = _trainer(bank_dir, captures, tmp_path / "w", G, init_mapper=str(tmp_path / "a" / "mapper.pt"))
    assert w.nimg == 0
    for (k, a), (_, b) in zip(w.M.net.state_dict().items(), t.M.net.state_dict().items(), strict=True):
        torch.testing.assert_close(a, b, msg=k)
    fresh = _trainer(bank_dir, captures, tmp_path / "f", G)
    assert any(not torch.equal(a, b) for a, b in zip(fresh.M.net.state_dict().values(),
                                                   t.M.net.state_dict().values(), strict=True))
    with pytest.raises(ValueError, match="another network"):
        _trainer(bank_dir, captures, tmp_path / "h", G, hidden=64, init_mapper=str(tmp_path / "a" / "mapper.pt"))
    # a mapper gaining the shading map starts as the one it starts from (its new inputs at zero), and learns them
    s = _trainer(bank_dir, captures, tmp_path / "s", G, shading_map=8, init_mapper=str(tmp_path / "a" / "mapper.pt"))
    assert s.M.net.cond_dim == t.M.net.cond_dim + 8 * 8 * 8
    b = sample_pairs(t.bank, 8, torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(s.M(b.src_ws, b.edit), t.M(b.src_ws, b.edit))
    s.train(0.04, progress=False)
    assert float(s.M.net.cond[0].weight.detach()[:, t.M.net.cond_dim:].abs().max()) > 0
    with pytest.raises(ValueError, match="another network"):  # and a mapper with the map does not narrow
        _trainer(bank_dir, captures, tmp_path / "n", G, init_mapper=str(tmp_path / "s" / "mapper.pt"))


def test_torchrun_two_processes_on_cpu(tmp_path, bank_dir, captures):
    run = tmp_path / "ddp"
    run.mkdir()
    os.symlink(bank_dir, run / "bank")
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("lights_per_subject: 2\nlight_pool: 12\nbatch: 8\nimage_batch: 4\ntotal_kimg: 0.016\n"
                   "snapshot_kimg: 0.008\nimage_kimg: 1\n")
    r = run_torchrun(["train", "mapper", "--olat", str(captures), "--config", str(cfg), "--run-dir", str(run),
                      "--threads", "1"], port=29533)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.count("done at 0.016 kimg") == 1  # rank 0 reports
    load_mapper(run / "mapper.pt")
    s = torch.load(run / "snapshot.pt", weights_only=True)
    assert s["nimg"] == 16


def test_train_mapper_refuses_a_device_it_cannot_use(tmp_path, captures):
    from click.testing import CliRunner

    from stylerelight.cli import cli

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("lights_per_subject: 2\nlight_pool: 12\nbatch: 8\nimage_batch: 4\ntotal_kimg: 0.008\n")
    bad = [("nonsense", "not a device")] + ([] if torch.cuda.is_available() else [("cuda", "no CUDA GPU here")])
    for device, words in bad:
        r = CliRunner().invoke(cli, ["train", "mapper", "--olat", str(captures), "--config", str(cfg), "--run-dir",
                                     str(tmp_path / "run"), "--device", device])
        lines = [ln for ln in r.output.strip().splitlines() if ln.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and words in lines[0], r.output
        assert not (tmp_path / "run").exists()


def test_identity_loss_term_reaches_the_mapper(tmp_path, bank_dir, captures, bundled_parts):
    """identity_weight > 0 adds dlib's descriptor distance of the edit to its target; with every
    other loss off, a step still moves the mapper and reports the term."""
    cfg = MapperTrainConfig(lights_per_subject=2, light_pool=12, batch=8, image_batch=4, latent_weight=0.0,
                            image_weight=0.0, identity_weight=1.0, identity_images=2, total_kimg=0.08, threads=1)
    t = MapperTrainer(cfg, bundled_parts[0], Bank(bank_dir, captures), tmp_path / "id", log=False)
    before = [p.detach().clone() for p in t.net.parameters()]
    stats = t.train_step()
    assert 0 < stats["loss/identity"] < 10 and stats["loss"] == pytest.approx(stats["loss/identity"], rel=1e-5)
    assert any(not torch.equal(a, b) for a, b in zip(before, t.net.parameters(), strict=True))


def test_pixel_term_is_the_mse_of_the_image_pairs(tmp_path, bank_dir, captures, bundled_parts):
    """pixel_weight > 0 adds the MSE of the edits' images to their targets (the PSNR the edits are
    judged by); with every other loss off it is the whole loss and moves the mapper."""
    cfg = MapperTrainConfig(lights_per_subject=2, light_pool=12, batch=8, image_batch=4, latent_weight=0.0,
                            image_weight=0.0, pixel_weight=2.0, total_kimg=0.08, threads=1)
    t = MapperTrainer(cfg, bundled_parts[0], Bank(bank_dir, captures), tmp_path / "px", log=False)
    before = [p.detach().clone() for p in t.net.parameters()]
    stats = t.train_step()
    assert stats["loss"] == pytest.approx(2.0 * stats["loss/mse"], rel=1e-5)
    # the pixel term's MSE is the images' mean squared error, consistent with their mean PSNR (Jensen)
    assert stats["loss/mse"] >= 4 * 10 ** (-stats["psnr/edit"] / 10) * 0.9999 > 0
    assert any(not torch.equal(a, b) for a, b in zip(before, t.net.parameters(), strict=True))


def test_detail_carry_starts_as_the_answer_trains_alone_and_resumes(tmp_path, bank_dir, captures, bundled_parts):
    """carry_lights > 0: the sources are refined as Editor.invert refines them (float32); the carry
    starts at zero (the mapper's answer unchanged), trains with the mapper frozen (its loss falls on
    a fixed batch), resumes exactly, and travels in the mapper file to the Editor."""
    import shutil

    from stylerelight.invert import psnr
    from stylerelight.mapper.pairs import refine_sources, sample_carry_pairs

    G, E, cnn = bundled_parts
    bank = tmp_path / "bank"
    shutil.copytree(bank_dir, bank)
    refine_sources(bank, G, E, lights=1, steps=5, progress=False)
    with pytest.raises(FileExistsError, match="other settings"):
        refine_sources(bank, G, E, lights=1, steps=6, progress=False)
    b = Bank(bank, captures)
    b.load_refined()
    x = to_tensor(b.images[:, :, :1].reshape(-1, *b.images.shape[-3:]).numpy())
    with torch.no_grad():
        torch.testing.assert_close(b.ref_enc.reshape(-1, G.num_ws, G.w_dim), E(x), atol=1e-5, rtol=1e-5)
        p_enc = psnr(G.synthesis(b.ref_enc.reshape(-1, G.num_ws, G.w_dim), noise_mode="const"), x)
        p_ref = psnr(G.synthesis(b.ref_ws.reshape(-1, G.num_ws, G.w_dim), noise_mode="const"), x)
    assert (p_ref > p_enc).all(), (p_enc, p_ref)

    base = _trainer(bank, captures, tmp_path / "m", G)
    base.train(0.04, progress=False)
    with pytest.raises(ValueError, match="init_mapper"):
        MapperTrainConfig.from_yaml(_yaml(tmp_path / "c.yaml", carry_lights=1))
    kw = dict(init_mapper=str(tmp_path / "m" / "mapper.pt"), carry_lights=1, carry_steps=5, carry_hidden=32)
    t = _trainer(bank, captures, tmp_path / "a", G, **kw)
    fixed = sample_carry_pairs(t.bank, 16, torch.Generator().manual_seed(5))
    with torch.no_grad():
        answer = t.M(fixed.src_ws, fixed.edit)
        torch.testing.assert_close(t.M.carried(fixed.src_ws, answer, fixed.ref_ws, fixed.edit), answer)
    frozen = {k: v.clone() for k, v in t.M.net.state_dict().items()}

    def objective(tr):
        with torch.no_grad():
            return float(tr.carry_losses(fixed)[0])

    before = objective(t)
    t.train(0.04, progress=False)
    t2 = _trainer(bank, captures, tmp_path / "a", G, **kw)
    assert t2.nimg == 40
    t2.train(0.08, progress=False)
    straight = _trainer(bank, captures, tmp_path / "b", G, **kw)
    straight.train(0.08, progress=False)
    for (k, a), (_, c) in zip(t2.M.state_dict().items(), straight.M.state_dict().items(), strict=True):
        torch.testing.assert_close(a, c, msg=k)
    straight.cfg.lr = 3e-3
    straight.train(0.24, progress=False)
    assert objective(straight) < 0.97 * before, (objective(straight), before)
    for k, v in straight.M.net.state_dict().items():
        torch.testing.assert_close(v, frozen[k], msg=k)
    M = load_mapper(tmp_path / "b" / "mapper.pt")
    assert M.carry is not None
    with torch.no_grad():
        got = M.carried(fixed.src_ws, M(fixed.src_ws, fixed.edit), fixed.ref_ws, fixed.edit)
        want = straight.M.carried(fixed.src_ws, straight.M(fixed.src_ws, fixed.edit), fixed.ref_ws, fixed.edit)
    torch.testing.assert_close(got, want)
    # init_carries: a carry kept across a retrained network starts from the old file's carry
    moved = _trainer(bank, captures, tmp_path / "c", G, **kw, init_carries=str(tmp_path / "b" / "mapper.pt"))
    for (k, a), (_, c) in zip(moved.M.carry.state_dict().items(), M.carry.state_dict().items(), strict=True):
        torch.testing.assert_close(a, c, msg=k)
    with pytest.raises(ValueError, match="no light carry"):
        _trainer(bank, captures, tmp_path / "d", G, **kw, init_carries=str(tmp_path / "m" / "mapper.pt"))
    # the Editor adds it where the light changes (a > 0), nowhere else
    import copy

    plain = copy.deepcopy(M)
    plain.carry = None
    eds = [sr.Editor(G, E, m, cnn) for m in (M, plain)]
    for ed in eds:  # any move of this barely trained mapper reads as a change of light
        ed.light_blend, ed.image_blend = (0.0, 1e-6), None
    lat = eds[0].invert(b.images[0, 0, 0].numpy(), aligned=True, steps=5)
    for light, changes in ((None, False), (torch.from_numpy(b.lights[3]).float(), True)):
        ws = [ed.map([lat], [ed.resolve_light(light, 0.0, lat)], [0.0], [0.0]) for ed in eds]
        assert torch.equal(ws[0], ws[1]) != changes


def _yaml(path, **kw):
    path.write_text("".join(f"{k}: {v}\n" for k, v in kw.items()))
    return path


def test_view_carry_starts_as_the_turned_code_trains_alone_and_applies_only_to_turns(tmp_path, bank_dir, captures,
                                                                                   bundled_parts):
    """carry_kind "view": pairs are turns under a kept light (the bank image of another camera, the
    source's estimate or true light); the view carry starts at zero (the turned refined code
    ws + M(w_enc, view) - M(w_enc, same view) unchanged), trains with the network and the detail
    carry of init_mapper frozen (its loss falls on a fixed batch), travels in the file beside the
    detail carry, and the Editor adds it to turns only."""
    import copy
    import shutil

    from stylerelight.mapper.model import save_mapper
    from stylerelight.mapper.pairs import refine_sources, sample_view_carry_pairs

    G, E, cnn = bundled_parts
    bank = tmp_path / "bank"
    shutil.copytree(bank_dir, bank)
    refine_sources(bank, G, E, lights=1, steps=3, progress=False)
    one = Bank(bank, captures)
    one.load_refined()
    refine_sources(bank, G, E, lights=2, steps=3, progress=False)  # extends: refines the second light only
    two = Bank(bank, captures)
    two.load_refined()
    assert two.ref_ws.shape[2] == 2 and torch.equal(two.ref_ws[:, :, :1], one.ref_ws)
    for s in range(len(two.names)):  # the second light's codes: as refine_sources makes a shard's
        x = to_tensor(two.images[s, :, 1].numpy())
        with torch.no_grad():
            enc = E(x)
        torch.testing.assert_close(two.ref_enc[s, :, 1], enc)
        torch.testing.assert_close(two.ref_ws[s, :, 1], sr.invert(G, x, steps=3, init=enc, progress=False))
    with pytest.raises(FileNotFoundError, match="2 bank lights, not 3"):
        two.load_refined(3)
    base = _trainer(bank, captures, tmp_path / "m", G)
    base.train(0.04, progress=False)
    torch.manual_seed(0)
    light_carry = base.M.add_carry(32)
    for p in light_carry.parameters():  # a detail carry that does something, to see it kept
        p.data.normal_(0, 0.01)
    save_mapper(base.M, tmp_path / "init.pt")
    kw = dict(init_mapper=str(tmp_path / "init.pt"), carry_lights=1, carry_steps=3, carry_hidden=32,
              carry_kind="view", lr=3e-3)
    with pytest.raises(ValueError, match="carry_kind"):
        _trainer(bank, captures, tmp_path / "x", G, **{**kw, "carry_kind": "colour"})
    t = _trainer(bank, captures, tmp_path / "a", G, **kw)
    b = t.bank
    fixed = sample_view_carry_pairs(b, 16, torch.Generator().manual_seed(5), estimate_fraction=0.5)
    s, c1, k1 = fixed.src_index
    assert (fixed.edit.same_view == 0).all()
    torch.testing.assert_close(fixed.edit.delta_pose, b.cam[s, 1 - c1] - b.cam[s, c1])  # two cameras
    torch.testing.assert_close(fixed.tgt_img, to_tensor(b.images[s, 1 - c1, k1].numpy()))
    est = [torch.equal(fixed.edit.light[i], b.est_light[s[i], c1[i], k1[i]]) for i in range(16)]
    true = [torch.allclose(fixed.edit.light[i], torch.from_numpy(b.lights[b.light_ids[s[i], k1[i]]]).float())
            for i in range(16)]
    assert all(a != c for a, c in zip(est, true, strict=True)) and any(est) and any(true)
    with torch.no_grad():
        direct, lit = t.M(fixed.src_ws, fixed.edit), t.M(fixed.src_ws, fixed.edit.at_source_view())
        torch.testing.assert_close(t.M.turned(fixed.ref_ws, fixed.src_ws, direct, lit, fixed.edit),
                                   fixed.ref_ws + direct - lit)
    torch.testing.assert_close(t.M.carry.linear.weight, light_carry.linear.weight)

    def objective(tr):
        with torch.no_grad():
            return float(tr.carry_losses(fixed)[0])

    before = objective(t)
    t.train(0.24, progress=False)
    assert objective(t) < 0.97 * before, (objective(t), before)
    for k, v in base.M.state_dict().items():  # network, conditioner and detail carry as they were
        if not k.startswith("conditioner.probe."):
            torch.testing.assert_close(t.M.state_dict()[k], v, msg=k)
    M = load_mapper(tmp_path / "a" / "mapper.pt")
    assert M.view_carry is not None and M.carry is not None
    with torch.no_grad():
        got = M.turned(fixed.ref_ws, fixed.src_ws, direct, lit, fixed.edit)
        want = t.M.turned(fixed.ref_ws, fixed.src_ws, direct, lit, fixed.edit)
        torch.testing.assert_close(got, want)
        assert not torch.allclose(got, fixed.ref_ws + direct - lit)
        same = fixed.edit.at_source_view()
        torch.testing.assert_close(M.turned(fixed.ref_ws, fixed.src_ws, lit, lit, same), fixed.ref_ws)
    # the share applied (view_carry_gain): set at export, a finished run asked again exports anew
    t3 = _trainer(bank, captures, tmp_path / "a", G, **kw, view_carry_gain=0.5)
    t3.train(0.24, progress=False)
    assert t3.nimg == t.nimg
    half = load_mapper(tmp_path / "a" / "mapper.pt")
    assert half.view_carry_gain == 0.5 and M.view_carry_gain == 1.0
    with torch.no_grad():
        base_turn = fixed.ref_ws + direct - lit
        torch.testing.assert_close(half.turned(fixed.ref_ws, fixed.src_ws, direct, lit, fixed.edit),
                                   base_turn + 0.5 * (got - base_turn))
    # init_carries on a network without carries: the detail carry starts from the file's and trains,
    # its view carry and gain come along frozen
    kw_light = {**kw, "carry_kind": "light", "init_mapper": str(tmp_path / "m" / "mapper.pt"),
                "init_carries": str(tmp_path / "a" / "mapper.pt")}
    moved = _trainer(bank, captures, tmp_path / "l", G, **kw_light)
    assert moved.M.view_carry_gain == 0.5
    for part in ("carry", "view_carry"):
        for k, v in getattr(half, part).state_dict().items():
            torch.testing.assert_close(getattr(moved.M, part).state_dict()[k], v, msg=f"{part}.{k}")
    moved.train(0.04, progress=False)
    assert not torch.equal(moved.M.carry.linear.weight, half.carry.linear.weight)
    torch.testing.assert_close(moved.M.view_carry.linear.weight, half.view_carry.linear.weight)
    # the light blend chosen for a network: set at export, kept by a carry run on that network, read by the
    # Editor (a file without one gets the Editor's defaults); a ramp that is not lo < hi is refused
    with pytest.raises(ValueError, match="light_blend"):
        MapperTrainConfig(light_blend=(0.4, 0.3)).check()
    t4 = _trainer(bank, captures, tmp_path / "a", G, **kw, view_carry_gain=0.5, light_blend=(0.5, 0.7),
                  image_blend=(3.0, 5.0))
    t4.train(0.24, progress=False)
    blended = load_mapper(tmp_path / "a" / "mapper.pt")
    assert blended.blend == {"light_blend": (0.5, 0.7), "image_blend": (3.0, 5.0)} and half.blend == {}
    kept = _trainer(bank, captures, tmp_path / "k", G,
                    **{**kw_light, "init_mapper": str(tmp_path / "a" / "mapper.pt"), "init_carries": ""})
    assert kept.M.blend == blended.blend
    from stylerelight.edit import IMAGE_BLEND, LIGHT_BLEND

    ed_b, ed_h = sr.Editor(G, E, blended, cnn), sr.Editor(G, E, half, cnn)
    assert (ed_b.light_blend, ed_b.image_blend, ed_h.light_blend, ed_h.image_blend) == (
        (0.5, 0.7), (3.0, 5.0), LIGHT_BLEND, IMAGE_BLEND)
    # the Editor: a turn under the kept light gets it, an edit in place does not
    plain = copy.deepcopy(M)
    plain.view_carry = None
    eds = [sr.Editor(G, E, m, cnn) for m in (M, plain)]
    lat = eds[0].invert(b.images[0, 0, 0].numpy(), aligned=True, steps=3)
    src_yaw = eds[0].check_angles(lat, 0.0, 0.0)[0]
    turn = -4.0 if src_yaw > 0 else 4.0  # towards the middle of the trained range
    for yaw in (0.0, turn):
        ws = [ed.map([lat], [ed.resolve_light(None, 0.0, lat)], [yaw], [0.0]) for ed in eds]
        assert torch.equal(ws[0], ws[1]) == (yaw == 0.0)
