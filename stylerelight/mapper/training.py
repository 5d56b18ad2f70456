"""Training the latent mapper (`stylerelight train mapper`), on one process or data-parallel
through torchrun (torch.distributed: gloo on CPU, nccl on GPUs), on the CPU or a GPU (`device`:
networks and batches there; the latent bank, its pairs and the RNG stay on the CPU, so a run
draws the same pairs wherever it trains).

Losses, as PhotoApp with what this package adds: the image of the mapped code against the target
(MS-SSIM + L1; LPIPS when its VGG weights are present; dlib's descriptor distance when
`identity_weight` > 0), the latent loss against the encoded target
where the target is in the bank, and the identity edit (same light and view) that must give the
input back. The generator, encoder and reconstruction stay frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..gan.io import generator_hash
from ..invert.losses import PerceptualLoss, ms_ssim_l1
from ..invert.optimize import psnr, w_stats
from ..runs import RUN_CONTROL, RunTrainer, config_from_yaml, dist_info
from .model import BLENDS, CARRY_KINDS, attach_carries, build_mapper, check_blend, check_view_carry_gain, save_mapper
from .networks import load_widened
from .pairs import Bank, sample_carry_pairs, sample_pairs, sample_view_carry_pairs


@dataclass
class MapperTrainConfig:
    geometry: bool = True        # condition on the source reconstruction (pose, light, shading of its shape)
    shading_map: int = 0         # > 0: also the target view's shading map, S x S (conditioning.Conditioner)
    hidden: int = 256
    code_mix: int = 0            # > 0: every layer also reads the whole code (networks.LatentMapper)
    lights_per_subject: int = 6  # latent bank: lights per subject, each seen from every camera
    light_pool: int = 2000       # target lights drawn from this many env maps
    hdr_dir: str = ""            # optional folder of .hdr/.exr env maps mixed into the light pool
    bank_refine_steps: int = 0   # latent bank codes: encoder + this many L-BFGS steps (0: encoder only)
    bank_subjects: int = 0       # latent bank: the first this many captures (0: all; a refined bank is costly)
    init_mapper: str = ""        # a new run starts from this mapper's network (same generator, sizes)
    # a carry run: its carries come from this mapper instead of init_mapper (carries kept across a
    # retrained network: init_mapper is the new network, this the old file): the trained one starts
    # from its carry of that kind, its other carry is kept frozen
    init_carries: str = ""
    batch: int = 32              # global batch (split over processes)
    image_batch: int = 8         # of which this many also get the image loss (G forward/backward)
    lr: float = 3e-4
    lr_halflife_kimg: float = 200.0
    latent_weight: float = 1.0
    image_weight: float = 1.0
    pixel_weight: float = 0.0    # + this x MSE of the image-loss pairs (edits are judged in PSNR)
    lpips_weight: float = 0.8    # used only when LPIPS' VGG weights are present offline
    same_weight: float = 1.0     # extra weight of the identity edit's latent loss
    identity_weight: float = 0.0  # dlib descriptor distance of the edit to its target (IdentityLoss); 0: off
    identity_images: int = 4     # of the image-loss pairs, this many per process also get it (~0.15 s each on a CPU)
    mode_probs: tuple = (0.35, 0.25, 0.25, 0.15)  # relight, view, both, same
    fresh_fraction: float = 0.5  # relight targets under a light outside the bank (image loss only)
    # > 0: fresh target lights drawn with weight 1 + this x their concentration (conditioning.light_concentration):
    # more hard, directional lights, where the mapper trails the re-render most
    hard_light_weight: float = 0.0
    holdout_subjects: int = 0    # the last k bank subjects are kept out of training (validation)
    # detail carry (`networks.DetailCarry`): carry_lights > 0 trains only the carry of init_mapper
    # (its network frozen) on sources refined as the Editor refines (the first carry_lights bank
    # lights of every subject, all cameras; BANK/refined) against fresh relit targets
    # carry_kind "view": the view carry instead (`Mapper.turned`): turns under a kept light, the
    # target the same bank light seen from another camera; init_mapper's network and carry frozen
    carry_lights: int = 0
    carry_kind: str = "light"
    carry_estimate_fraction: float = 0.75  # view carry: pairs whose kept light is the source's estimate
    carry_turn_scale: float = 0.0  # view carry: > 0 favours small turns (weight exp(-turn / this), degrees)
    # the share of the view carry the exported mapper applies (Mapper.view_carry_gain; training learns the
    # whole carry; the share is chosen on validation); None: init_mapper's (1 for a new view carry)
    view_carry_gain: float | None = None
    # the Editor's light blend ramps the exported file carries (Mapper.blend; chosen on validation for this
    # network, benchmarks/light_blend_sweep.py); None: a carry run keeps init_mapper's (its network is
    # init_mapper's), a network run carries none (the Editor's defaults)
    light_blend: tuple | None = None
    image_blend: tuple | None = None
    carry_hidden: int = 256
    carry_steps: int = 20        # L-BFGS steps of the sources' refinement (Editor.invert's REFINE_STEPS)
    carry_modes: tuple = (0.55, 0.3, 0.15)  # relight, both (light and view), same (target = source)
    carry_pixel_weight: float = 50.0  # + this x MSE (as the refinement's pixel term): edits are judged in PSNR
    total_kimg: float = 100.0
    snapshot_kimg: float = 2.0
    image_kimg: float = 10.0
    seed: int = 0
    threads: int = 0

    @classmethod
    def from_yaml(cls, path) -> MapperTrainConfig:
        cfg = config_from_yaml(cls, path)
        cfg.mode_probs = tuple(cfg.mode_probs)
        cfg.carry_modes = tuple(cfg.carry_modes)
        cfg.check()
        return cfg

    def check(self) -> None:
        if self.carry_lights and not self.init_mapper:
            raise ValueError("carry_lights trains the detail carry of a trained mapper: set init_mapper")
        if self.init_carries and not self.carry_lights:
            raise ValueError("init_carries starts a carry run's carry: set carry_lights (or drop init_carries)")
        if self.carry_kind not in CARRY_KINDS:
            raise ValueError(f"carry_kind must be one of {', '.join(CARRY_KINDS)}, not {self.carry_kind!r}")
        if self.view_carry_gain is not None:
            check_view_carry_gain(self.view_carry_gain)
        for name in BLENDS:
            if getattr(self, name) is not None:
                setattr(self, name, check_blend(name, getattr(self, name)))


class MapperTrainer(RunTrainer):
    kind = "mapper"
    run_control = RUN_CONTROL + ("hdr_dir", "init_mapper", "init_carries", "view_carry_gain", *BLENDS)

    def __init__(self, cfg: MapperTrainConfig, G, bank: Bank, run_dir, log: bool = True,
                 device: str | torch.device = "cpu"):
        self.rank, self.world = dist_info()
        cfg.check()
        super().__init__(cfg, run_dir, log and self.rank == 0)
        if cfg.batch % self.world or cfg.image_batch % self.world:
            raise ValueError(f"batch {cfg.batch} and image_batch {cfg.image_batch} must divide by the "
                             f"{self.world} processes")
        self.device = torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        self.bank = bank
        if tuple(bank.ws.shape[-2:]) != (G.num_ws, G.w_dim):
            raise ValueError(f"the latent bank holds {tuple(bank.ws.shape[-2:])} ws, the generator takes "
                             f"{(G.num_ws, G.w_dim)}; rebuild the bank for this generator")
        self.gen_hash = generator_hash(G)
        w_avg, w_std = w_stats(G)
        self.var = w_std**2 / G.w_dim
        stage_dirs = bank.capture(0).stage.directions
        yaw = float(bank.cam[..., 0].abs().max())
        pitch = float(bank.cam[..., 1].abs().max())
        with self.scope():
            self.M = build_mapper(G, stage_dirs, cfg.geometry, cfg.hidden, {"yaw": yaw, "pitch": pitch},
                                  w_avg=w_avg, w_std=w_std / math.sqrt(G.w_dim),
                                  info={"bank_subjects": bank.shape[0], "encoder": bank.encoder_hash},
                                  shading_map=cfg.shading_map, code_mix=cfg.code_mix)
        from .conditioning import light_code, light_concentration

        self.M.conditioner.set_light_stats(light_code(torch.from_numpy(bank.lights)))
        self.fresh_weights = (1 + cfg.hard_light_weight * light_concentration(torch.from_numpy(bank.lights))
                              if cfg.hard_light_weight > 0 else None)
        self.carry = cfg.carry_kind if cfg.carry_lights else None  # "light" / "view": trains that carry alone
        if self.carry:
            if bank.ref_ws is None:
                bank.load_refined(cfg.carry_lights)
            with self.scope():
                self.M.add_carry(cfg.carry_hidden, self.carry)
            self.M.requires_grad_(False)
            self._init_mapper(cfg.init_mapper)  # the frozen parts (a resume below restores the trained one)
        self.M.to(self.device)
        self.trained = getattr(self.M, CARRY_KINDS[self.carry]) if self.carry else self.M.net  # what this run trains
        self.trained.requires_grad_(True)
        self.net = self.trained
        if self.world > 1:
            ids = [self.device.index] if self.device.type == "cuda" and self.device.index is not None else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.trained, device_ids=ids)
        self.opt = torch.optim.Adam(self.trained.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        self.data_gen = torch.Generator().manual_seed(cfg.seed * 1000 + 1 + self.rank)
        S = bank.shape[0]
        self.train_subjects = list(range(S - cfg.holdout_subjects)) if cfg.holdout_subjects else None
        self.loss_fn = PerceptualLoss("auto").to(self.device)
        self.id_loss = None
        if cfg.identity_weight:
            from ..identity import IdentityLoss

            # FileNotFoundError (one line) without face-recognition-models
            self.id_loss = IdentityLoss().to(self.device)
        grid_gen = torch.Generator().manual_seed(99)
        self.grid_pairs = (sample_view_carry_pairs(bank, 6, grid_gen) if self.carry == "view" else
                           sample_carry_pairs(bank, 6, grid_gen) if self.carry
                           else sample_pairs(bank, 6, grid_gen, fresh_fraction=1.0)).to(self.device)
        if not self.resume() and cfg.init_mapper and not self.carry:
            self._init_mapper(cfg.init_mapper)

    def _init_mapper(self, path) -> None:
        """Warm start (e.g. a mapper trained on another latent bank): its network's weights; the
        light statistics stay this bank's, the optimiser starts fresh. Training a carry, the network
        stays as it was trained, light statistics and its other carry included (the carry of the kind
        trained, if it has one, is the start); with `init_carries` both carries come from that file."""
        from .model import load_mapper

        src = load_mapper(path)
        src.check_for(self.G)
        try:  # a mapper gaining the shading map starts from one without: its new inputs start at zero
            load_widened(self.M.net, src.net.state_dict())
        except (ValueError, RuntimeError):
            raise ValueError(f"{path} has another network (geometry, hidden size); pick a matching mapper") from None
        if self.carry:
            self.M.conditioner.load_state_dict(src.conditioner.state_dict(), strict=False)
            self.M.blend = dict(src.blend)  # chosen for the network, which a carry run keeps
            where, carries = path, src
            if self.cfg.init_carries:  # a retrained network: the carries come from the old file
                where, carries = self.cfg.init_carries, load_mapper(self.cfg.init_carries)
                if getattr(carries, CARRY_KINDS[self.carry]) is None:
                    raise ValueError(f"{where} has no {self.carry} carry to start from; pick another init_carries")
            theirs, mine = getattr(carries, CARRY_KINDS[self.carry]), getattr(self.M, CARRY_KINDS[self.carry])
            if theirs is not None and theirs.config() != mine.config():
                raise ValueError(f"{where} has a {self.carry} carry of another size; set carry_hidden to match")
            with self.scope():  # the carries it has (the trained one starts from its), widened; its gain
                attach_carries(self.M, carries)
            for kind, name in CARRY_KINDS.items():
                if kind != self.carry and getattr(self.M, name) is not None:
                    getattr(self.M, name).requires_grad_(False)  # kept as it is, frozen
        if self.rank == 0:
            (self.run_dir / "init_mapper.txt").write_text(f"{Path(path).resolve()}\n")

    # -- run hooks -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"M": {k: v for k, v in self.M.state_dict().items() if not k.startswith("conditioner.probe.")},
                "opt": self.opt.state_dict(), "data_rng": self.data_gen.get_state(), "generator_hash": self.gen_hash}

    def load_state(self, s: dict) -> None:
        if s.get("generator_hash") != self.gen_hash:
            raise ValueError(f"{self.snapshot_path} was trained for generator {s.get('generator_hash')}, not "
                             f"{self.gen_hash}; use that generator or a new run folder")
        self.M.load_state_dict(s["M"], strict=False)
        self.opt.load_state_dict(s["opt"])
        if self.rank == 0:
            self.data_gen.set_state(s["data_rng"])

    def save_snapshot(self) -> None:
        if self.rank == 0:
            super().save_snapshot()

    def export(self) -> None:
        if self.cfg.view_carry_gain is not None:
            self.M.view_carry_gain = float(self.cfg.view_carry_gain)
        self.M.blend.update({k: getattr(self.cfg, k) for k in BLENDS if getattr(self.cfg, k) is not None})
        self.M.info.update({"kimg": self.nimg / 1000, "config": {k: v for k, v in self.cfg.__dict__.items()}})
        save_mapper(self.M, self.run_dir / "mapper.pt")

    # -- one step --------------------------------------------------------------------------------

    def losses(self, b, n_img: int) -> tuple[torch.Tensor, dict]:
        """The training objective on a batch of pairs (the first n_img also get the image loss)."""
        cfg = self.cfg
        b = b.to(self.device)
        normals = self._normals(b)
        ws = self.net(b.src_ws, self.M.conditioner(b.edit, normals))
        stats, loss = {}, torch.zeros([], device=self.device)
        same = torch.tensor([m == "same" for m in b.mode], device=self.device).float()
        w = b.has_tgt_ws.float() * (1 + cfg.same_weight * same)
        if cfg.latent_weight and w.sum() > 0:
            per = (ws - b.tgt_ws).square().mean(dim=[1, 2]) / self.var
            lat = (per * w).sum() / w.sum()
            loss = loss + cfg.latent_weight * lat
            stats["loss/latent"] = float(lat.detach())
        if n_img and (cfg.image_weight or cfg.pixel_weight or self.id_loss is not None):
            img = self.G.synthesis(ws[:n_img], noise_mode="const")
            if img.shape[-1] != b.tgt_img.shape[-1]:  # captures smaller than the generator (e.g. FFHQ at 256^2)
                img = torch.nn.functional.interpolate(img, size=b.tgt_img.shape[-2:], mode="area")
            if cfg.image_weight:
                im = ms_ssim_l1(img, b.tgt_img[:n_img]).mean()
                loss = loss + cfg.image_weight * im
                stats["loss/msssim_l1"] = float(im.detach())
                if self.loss_fn.kind == "lpips" and cfg.lpips_weight:
                    lp = self.loss_fn(img, b.tgt_img[:n_img]).mean()
                    loss = loss + cfg.lpips_weight * lp
                    stats["loss/lpips"] = float(lp.detach())
            if cfg.pixel_weight:
                mse = (img - b.tgt_img[:n_img]).square().mean()
                loss = loss + cfg.pixel_weight * mse
                stats["loss/mse"] = float(mse.detach())
            if self.id_loss is not None and cfg.identity_images:
                k = min(cfg.identity_images, n_img)
                ident = self.id_loss(img[:k], b.tgt_img[:k]).mean()
                loss = loss + cfg.identity_weight * ident
                stats["loss/identity"] = float(ident.detach())
            with torch.no_grad():
                stats["psnr/edit"] = float(psnr(img, b.tgt_img[:n_img]).mean())
        stats["loss"] = float(loss.detach())
        return loss, stats

    def _normals(self, b) -> torch.Tensor | None:
        """The shading probe's normals of the batch's sources (None for a mapper without geometry)."""
        if not self.M.geometry:
            return None
        return self.bank.probe_normals(self.M.conditioner.probe)[b.src_index].to(self.device).float()

    def carry_losses(self, b) -> tuple[torch.Tensor, dict]:
        """A carry's objective on every pair: the image of M(w_enc) + carry (light) or of the turned
        refined code + view carry (view) against the target; "answer" is the code without the carry."""
        b = b.to(self.device)
        normals = self._normals(b)
        with torch.no_grad():
            cond = self.M.conditioner(b.edit, normals)
            answer = self.M.net(b.src_ws, cond)
            if self.carry == "view":  # the turned refined code: ws + M(w_enc, view) - M(w_enc, same view)
                same = self.M.conditioner(b.edit.at_source_view(), normals)
                move = answer - self.M.net(b.src_ws, same)
                answer = b.ref_ws + move
            else:
                move = answer - b.src_ws
        ws = answer + self.net(b.ref_ws - b.src_ws, move, cond)
        img = self.G.synthesis(ws, noise_mode="const")
        im = ms_ssim_l1(img, b.tgt_img).mean()
        mse = (img - b.tgt_img).square().mean()
        loss = self.cfg.image_weight * im + self.cfg.carry_pixel_weight * mse
        stats = {"loss/msssim_l1": float(im.detach()), "loss/mse": float(mse.detach()), "loss": float(loss.detach())}
        with torch.no_grad():
            base = self.G.synthesis(answer, noise_mode="const")
            for name, x in (("edit", img), ("answer", base)):
                stats[f"psnr/{name}"] = float(psnr(x, b.tgt_img).mean())
        return loss, stats

    def train_step(self) -> dict:
        cfg = self.cfg
        n, n_img = cfg.batch // self.world, cfg.image_batch // self.world
        lr = cfg.lr * 0.5 ** (self.nimg / 1000 / cfg.lr_halflife_kimg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        self.trained.train()
        if self.carry == "view":
            b = sample_view_carry_pairs(self.bank, n, self.data_gen, cfg.carry_estimate_fraction, self.train_subjects,
                                        cfg.carry_turn_scale)
            loss, stats = self.carry_losses(b)
        elif self.carry:
            b = sample_carry_pairs(self.bank, n, self.data_gen, cfg.carry_modes, self.train_subjects)
            loss, stats = self.carry_losses(b)
        else:
            b = sample_pairs(self.bank, n, self.data_gen, cfg.mode_probs, cfg.fresh_fraction, self.train_subjects,
                             self.fresh_weights)
            loss, stats = self.losses(b, n_img)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.trained.eval()
        stats["lr"] = lr
        return stats

    def image_grid(self) -> np.ndarray:
        """Rows: source | edit | target for a fixed set of held pairs."""
        from ..imageio import gan_to_uint8

        b = self.grid_pairs
        with torch.no_grad():
            ws = self.M(b.src_ws, b.edit)
            if self.carry == "view":
                ws = self.M.turned(b.ref_ws, b.src_ws, ws, self.M(b.src_ws, b.edit.at_source_view()), b.edit)
            elif self.carry:
                ws = self.M.carried(b.src_ws, ws, b.ref_ws, b.edit)
            edit = self.G.synthesis(ws, noise_mode="const")
        rows = [torch.cat(list(t), 2) for t in (b.src_img, edit, b.tgt_img)]
        return gan_to_uint8(torch.cat(rows, 1)[None])[0]

