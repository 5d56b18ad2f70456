"""Training a compact encoder for a given generator (`stylerelight train encoder`), on one
process or data-parallel through torchrun (gloo on CPU, nccl on GPUs).

Each batch mixes generator samples, whose ws are known (latent loss, as in e4e's and ReStyle's
use of synthetic pairs), with real images (image losses only): L2 plus multi-scale SSIM + L1,
LPIPS when its VGG weights are on the machine, dlib's face descriptor distance when
`identity_weight` > 0 (`identity.IdentityLoss`: dlib's network in torch), and e4e's delta
regulariser that keeps the per-layer ws near the first one. The generator stays frozen;
gradients reach the encoder through it.

Real images come from a folder of renders, from OLAT captures relit on the fly, or both. Relit
captures cost nothing to render, so every batch sees new lighting (an env map pool of the
training kinds, randomly rotated), which is what an encoder needs to generalise across light.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..gan.io import generator_hash
from ..runs import RUN_CONTROL, RunTrainer, config_from_yaml, dist_info, sample_images
from .encoder_io import build_compact, save_encoder
from .encoders import Encoder
from .losses import PerceptualLoss, ms_ssim_l1
from .optimize import psnr, w_stats


@dataclass
class EncoderTrainConfig:
    generator: str = ""          # checkpoint path; empty: the bundled generator
    data: str | list = ""        # folder(s) of real aligned images (images/*.png): a list, or names joined by commas
    olat: str = ""               # folder of OLAT captures aligned for the generator, relit on the fly
    olat_fraction: float = 0.5   # with both data and olat: share of the real images relit from olat
    olat_lights: int = 4000      # env map pool for relighting (procedural, training kinds, rotated)
    olat_stage_lights: float = 0.0  # share of that pool that is the stage's own lighting (1-3 of its lights)
    hdr_dir: str = ""            # optional .hdr/.exr env maps mixed into that pool
    width: int = 32              # compact encoder: channels of the first level (x2 per level, at most x4)
    reduce_width: int = 32       # compact encoder: channels of each w's head at 4x4
    head_width: int = 256        # compact encoder: hidden units of each w's head
    iterations: int = 1          # > 1: iterative (ReStyle) encoder, this many passes at inference
    init_encoder: str = ""       # a new run starts from this compact encoder (a 3-channel or narrower one grows)
    batch: int = 16
    lr: float = 5e-4
    lr_halflife_kimg: float = 40.0  # lr * 0.5 ** (kimg / halflife): resume-safe (depends on the image count only)
    synth_fraction: float = 0.5  # share of each batch drawn from the generator
    truncation_min: float = 0.7  # synthetic samples: psi uniform in [truncation_min, 1]
    mixing_prob: float = 0.5     # synthetic samples: style mixing, so W+ (not only W) is covered
    latent_weight: float = 1.0
    l2_weight: float = 1.0
    msssim_weight: float = 1.0
    lpips_weight: float = 0.8    # used only when LPIPS' VGG weights are present offline
    delta_weight: float = 1e-3   # e4e's delta regulariser: mean squared distance of w_i from w_0 over w's variance
    teacher_weight: float = 0.0  # latent loss on the real images' teacher codes (DATA/teacher_codes.npy); 0: off
    code_samples: float = 0.0    # share of the synthetic samples whose ws are teacher codes (crossed over, scaled)
    code_scale_max: float = 1.0  # those codes' offsets from w_avg scaled by s ~ U[1, code_scale_max]
    identity_weight: float = 0.0  # dlib descriptor distance (IdentityLoss); 0: off
    identity_images: int = 4     # images per process and step that the identity loss sees (~0.15 s each on a CPU)
    mirror: bool = True
    total_kimg: float = 100.0
    snapshot_kimg: float = 1.0
    image_kimg: float = 4.0
    seed: int = 0
    threads: int = 0

    @classmethod
    def from_yaml(cls, path) -> EncoderTrainConfig:
        return config_from_yaml(cls, path)


class EncoderTrainer(RunTrainer):
    kind = "encoder"
    run_control = RUN_CONTROL + ("generator", "data", "olat", "hdr_dir", "init_encoder")

    def __init__(self, cfg: EncoderTrainConfig, G, data: torch.Tensor | None, run_dir, log: bool = True,
                 olat: RelitCaptures | None = None, device: str | torch.device = "cpu"):
        self.rank, self.world = dist_info()
        super().__init__(cfg, run_dir, log and self.rank == 0)
        if cfg.batch % self.world:
            raise ValueError(f"batch {cfg.batch} must divide by the {self.world} processes")
        # networks and batches on `device`; every random draw stays on the CPU (the run's RNG), so a
        # run draws the same samples wherever it trains
        self.device = torch.device(device)
        self.G = G.to(self.device).eval().requires_grad_(False)
        self.data = data if data is not None and len(data) else None
        self.olat = olat
        if self.data is None and self.olat is None and cfg.synth_fraction < 1:
            raise ValueError("synth_fraction < 1 needs real images; pass --data or --olat, or set synth_fraction: 1")
        if self.data is not None and self.data.shape[-1] != G.img_resolution:
            raise ValueError(f"the images are {self.data.shape[-1]}^2 but the generator makes "
                             f"{G.img_resolution}^2; use data rendered for this generator")
        self.teacher = None
        if cfg.teacher_weight or cfg.code_samples:
            if self.data is None:
                raise ValueError("teacher_weight and code_samples need a data folder with teacher codes "
                                 "(`stylerelight train teacher-codes`)")
            from ..gan.training import image_files
            from .teacher_codes import load_teacher_codes

            folders = data_folders(cfg.data)
            # one folder: the images handed over are its images; several: each folder's files say its share
            counts = ([(folders[0], len(self.data))] if len(folders) == 1
                      else [(d, len(image_files(d))) for d in folders])
            self.teacher = torch.cat([load_teacher_codes(folder, G, count) for folder, count in counts])
            if len(self.teacher) != len(self.data):
                raise ValueError(f"the data folders {folders} hold {len(self.teacher)} images, the trainer got "
                                 f"{len(self.data)}; pass the images of the config's folders")
        if self.olat is not None and self.olat.resolution != G.img_resolution:
            raise ValueError(f"the OLAT captures are {self.olat.resolution}^2 but the generator makes "
                             f"{G.img_resolution}^2; render them aligned for this generator")
        self.gen_hash = generator_hash(G)
        self.w_avg, self.w_std = w_stats(G)
        net_cfg = {"n_styles": G.num_ws, "w_dim": G.w_dim, "resolution": G.img_resolution, "width": cfg.width,
                   "reduce_width": cfg.reduce_width, "head_width": cfg.head_width, "iterations": cfg.iterations}
        with self.scope():
            net = build_compact(net_cfg)
        self.E = Encoder(net, self.w_avg.clone(), G.img_resolution, "compact",
                         meta={"config": net_cfg, "generator": self._gen_info()}, iterations=cfg.iterations)
        self.E.attach(G)
        self.E.to(self.device)
        self.opt = torch.optim.Adam(self.E.net.parameters(), lr=cfg.lr, betas=(0.9, 0.999))
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.loss_fn = PerceptualLoss("auto").to(self.device)
        self.id_loss = None
        if cfg.identity_weight:
            from ..identity import IdentityLoss

            # FileNotFoundError (one line) without face-recognition-models
            self.id_loss = IdentityLoss().to(self.device)
        grid_rng = torch.Generator().manual_seed(321)
        with torch.no_grad():
            z = torch.randn([4, G.z_dim], generator=grid_rng).to(self.device)
            fakes = G.synthesis(G.mapping(z), noise_mode="const")
        reals = [self.data[:4].float() / 127.5 - 1] if self.data is not None else []
        if self.olat is not None:
            reals.append(self.olat.sample(4, grid_rng, mirror=False))
        self.grid_images = torch.cat([*[r.to(self.device) for r in reals], fakes])
        if not self.resume() and cfg.init_encoder:
            self._init_encoder(cfg.init_encoder)
        if self.world > 1:
            self._distinct_streams()
            for t in [*self.E.net.parameters(), *self.E.net.buffers()]:  # every process starts as rank 0
                torch.distributed.broadcast(t.data, 0)

    def _distinct_streams(self) -> None:
        """Each process draws its own samples: its RNGs are seeded from (seed, rank, images seen at
        start). A resume therefore continues with fresh draws (one process resumes exactly)."""
        seed = [self.cfg.seed, self.rank, self.nimg]
        self.rng_state = torch.Generator().manual_seed(hash(tuple(seed)) % 2**62).get_state()
        self.data_gen.manual_seed(hash(tuple(seed + [1])) % 2**62)

    def _init_encoder(self, path) -> None:
        """Warm start from a compact encoder of the same or a narrower architecture, keeping its
        function: its weights fill the leading slices; the weights from new input channels or units
        into its old outputs start at zero (so the old features and the output are unchanged), and the
        new channels' own weights keep their random start, so they carry signal to learn from
        (Net2Net-style growth, Chen et al. 2016). A single-pass encoder fills a 6-channel stem the same
        way: the first iterative pass begins as that encoder."""
        from .encoder_io import load_encoder

        src = load_encoder(path).net.state_dict()
        own = self.E.net.state_dict()
        if set(src) != set(own):
            raise ValueError(f"{path} is not a compact encoder of this architecture; pick a matching one")
        for k, v in src.items():
            o = own[k]
            if v.shape != o.shape:
                if v.ndim != o.ndim or any(a > b for a, b in zip(v.shape, o.shape, strict=True)):
                    raise ValueError(f"{path}: {k} is {list(v.shape)}, this run needs {list(o.shape)} "
                                     "(an init encoder may be narrower, not wider)")
                o = o.clone()
                if v.ndim >= 2:  # weights: [out, in, ...]; old outputs ignore the new inputs
                    o[: v.shape[0], v.shape[1]:] = 0
                o[tuple(slice(0, n) for n in v.shape)] = v
                v = o
            own[k] = v
        self.E.net.load_state_dict(own)
        (self.run_dir / "init_encoder.txt").write_text(f"{Path(path).resolve()}\n")

    def _gen_info(self) -> dict:
        G = self.G
        return {"hash": self.gen_hash, "img_resolution": G.img_resolution, "num_ws": G.num_ws, "w_dim": G.w_dim}

    # -- run hooks -------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"E": self.E.net.state_dict(), "opt": self.opt.state_dict(), "data_rng": self.data_gen.get_state(),
                "generator_hash": self.gen_hash}

    def load_state(self, s: dict) -> None:
        if s.get("generator_hash") != self.gen_hash:
            raise ValueError(f"{self.snapshot_path} was trained for generator {s.get('generator_hash')}, not "
                             f"{self.gen_hash}; use that generator or a new run folder")
        self.E.net.load_state_dict(s["E"])
        self.opt.load_state_dict(s["opt"])
        self.data_gen.set_state(s["data_rng"])

    def save_snapshot(self) -> None:
        if self.rank == 0:
            super().save_snapshot()

    def export(self) -> None:
        save_encoder(self.E, self.run_dir / "encoder.pt")

    # -- one step --------------------------------------------------------------------------------

    def _synthetic(self, n: int):
        G, cfg = self.G, self.cfg
        with torch.no_grad():
            dev = self.device
            z = torch.randn([n, G.z_dim])
            psi = (cfg.truncation_min + (1 - cfg.truncation_min) * torch.rand([n, 1, 1])).to(dev)
            w = G.mapping(z.to(dev), truncation_psi=1.0)
            w2 = G.mapping(torch.randn([n, G.z_dim]).to(dev), truncation_psi=1.0)
            ws = self.w_avg + psi * (self._crossover(w, w2) - self.w_avg)
            n_codes = int(round(n * cfg.code_samples)) if self.teacher is not None else 0
            if n_codes:
                ws[:n_codes] = self._code_samples(n_codes).to(dev)
            img = G.synthesis(ws, noise_mode="const")
        return img, ws

    def _crossover(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Style mixing of two batches of W+ codes: with mixing_prob, b from a random layer on."""
        n, L = len(a), self.G.num_ws
        cut = torch.randint(1, L, [n, 1, 1])
        mix = (torch.rand([n, 1, 1]) < self.cfg.mixing_prob) & (torch.arange(L)[None, :, None] >= cut)
        return torch.where(mix.to(a.device), b, a)

    def _code_samples(self, n: int) -> torch.Tensor:
        """Known-code samples where real images' codes lie: refined codes sit about twice as far from
        w_avg (per layer, in w's units) as the mapping network's samples (docs/encoders.md, session 20).
        Teacher codes of two random images crossed over at a random layer (with mixing_prob), their
        offset from w_avg scaled by s ~ U[1, code_scale_max]."""
        a = self.teacher[torch.randint(len(self.teacher), [n])].float()
        b = self.teacher[torch.randint(len(self.teacher), [n])].float()
        ws = self._crossover(a, b)
        s = 1 + (self.cfg.code_scale_max - 1) * torch.rand([n, 1, 1])
        w_avg = self.w_avg.cpu()
        return w_avg + s * (ws - w_avg)

    def _reals(self, n: int) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """n real images on the device, and with teacher codes their codes and a mask of the images
        that have one (relit captures and mirrored renders have none)."""
        x, codes, has = self._sample_reals(n)
        return x.to(self.device), None if codes is None else codes.to(self.device), has

    def _renders(self, n: int):
        x, idx, flip = sample_images(self.data, n, self.data_gen, self.cfg.mirror, with_index=True)
        return (x, None, None) if self.teacher is None else (x, self.teacher[idx].float(), ~flip)

    def _sample_reals(self, n: int):
        if self.olat is None:
            return self._renders(n)
        n_olat = n if self.data is None else int(torch.binomial(torch.tensor(float(n)),
                                                                  torch.tensor(self.cfg.olat_fraction),
                                                                  generator=self.data_gen))
        x = self.olat.sample(n_olat, self.data_gen, self.cfg.mirror)
        if n_olat == n:
            return x, None, None
        xr, codes, has = self._renders(n - n_olat)
        if codes is not None:
            codes = torch.cat([codes.new_zeros([n_olat, *codes.shape[1:]]), codes])
            has = torch.cat([torch.zeros(n_olat, dtype=torch.bool), has])
        return torch.cat([x, xr]), codes, has

    def _all_reduce_grads(self) -> None:
        """Average the gradients over processes (one flat buffer: one message per step)."""
        grads = [p.grad for p in self.E.net.parameters() if p.grad is not None]
        flat = torch.cat([g.flatten() for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world
        i = 0
        for g in grads:
            g.copy_(flat[i:i + g.numel()].view_as(g))
            i += g.numel()

    def train_step(self) -> dict:
        cfg = self.cfg
        batch = cfg.batch // self.world
        has_reals = self.data is not None or self.olat is not None
        n_syn = batch if not has_reals else int(round(batch * cfg.synth_fraction))
        lr = cfg.lr * 0.5 ** (self.nimg / 1000 / cfg.lr_halflife_kimg)
        for g in self.opt.param_groups:
            g["lr"] = lr
        codes = None
        if n_syn < batch:
            x_real, codes, has_code = self._reals(batch - n_syn)
        if n_syn:
            x_syn, ws_syn = self._synthetic(n_syn)
            x = torch.cat([x_syn, x_real]) if n_syn < batch else x_syn
        else:
            x = x_real
        self.E.net.train()
        if self.E.iterative:  # ReStyle: a random number of passes without gradient, then one with
            xp = self.E.prepare(x)
            with torch.no_grad():
                ws = self.E.start(len(x))
                rec = self.G.synthesis(ws[:1], noise_mode="const").expand(len(x), -1, -1, -1)
                for _ in range(int(torch.randint(cfg.iterations, [1]))):
                    ws = self.E.step(xp, ws, rec)
                    rec = self.G.synthesis(ws, noise_mode="const")
            ws = self.E.step(xp, ws, rec)
        else:
            ws = self.E(x)
        rec = self.G.synthesis(ws, noise_mode="const")
        var = self.w_std**2 / self.G.w_dim  # per-dimension variance of w (w_std is the whole vector's)
        stats = {}
        loss = torch.zeros([], device=self.device)
        if n_syn and cfg.latent_weight:
            lat = (ws[:n_syn] - ws_syn).square().mean() / var
            loss = loss + cfg.latent_weight * lat
            stats["loss/latent"] = float(lat.detach())
        if codes is not None and cfg.teacher_weight:
            mask = has_code.to(self.device, torch.float32)
            err = (ws[n_syn:] - codes).square().mean(dim=(1, 2)) / var
            teach = (err * mask).sum() / mask.sum().clamp_min(1)
            loss = loss + cfg.teacher_weight * teach
            stats["loss/teacher"] = float(teach.detach())
        l2 = (rec - x).square().mean()
        msssim = ms_ssim_l1(rec, x).mean()
        loss = loss + cfg.l2_weight * l2 + cfg.msssim_weight * msssim
        if self.loss_fn.kind == "lpips" and cfg.lpips_weight:
            lp = self.loss_fn(rec, x).mean()
            loss = loss + cfg.lpips_weight * lp
            stats["loss/lpips"] = float(lp.detach())
        if self.id_loss is not None and cfg.identity_images:
            # real images first (the synthetic ones' latents are already known), at most identity_images
            order = torch.cat([torch.arange(n_syn, len(x)), torch.arange(n_syn)])[: cfg.identity_images]
            ident = self.id_loss(rec[order], x[order]).mean()
            loss = loss + cfg.identity_weight * ident
            stats["loss/identity"] = float(ident.detach())
        delta = (ws[:, 1:] - ws[:, :1]).square().mean() / var
        loss = loss + cfg.delta_weight * delta
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        if self.world > 1:
            self._all_reduce_grads()
        self.opt.step()
        self.E.net.eval()
        with torch.no_grad():
            p = psnr(rec, x)
        stats.update({"loss": float(loss.detach()), "loss/l2": float(l2.detach()),
                      "loss/msssim_l1": float(msssim.detach()), "loss/delta": float(delta.detach()),
                      "psnr/synthetic": float(p[:n_syn].mean()) if n_syn else math.nan,
                      "psnr/real": float(p[n_syn:].mean()) if n_syn < batch else math.nan, "lr": lr})
        return {k: v for k, v in stats.items() if not (isinstance(v, float) and math.isnan(v))}

    def image_grid(self) -> np.ndarray:
        from ..imageio import gan_to_uint8, make_grid

        with torch.no_grad():
            rec = self.G.synthesis(self.E(self.grid_images), noise_mode="const")
        pairs = torch.stack([self.grid_images, rec], 1).flatten(0, 1)  # target | encoder, per row pair
        return make_grid(gan_to_uint8(pairs), cols=4)


def data_folders(data: str | list) -> list[str]:
    """The config's `data` as a list of folders (a YAML list, or names joined by commas)."""
    items = data if isinstance(data, (list, tuple)) else str(data or "").split(",")
    return [str(d).strip() for d in items if str(d).strip()]


def load_image_folders(data: str | list, resolution: int) -> torch.Tensor | None:
    """The images of every folder of `data`, in order, as one uint8 [N, 3, R, R] (None without folders).

    Several folders let renders and exported relit captures, each with teacher codes of its own,
    train together without copying either."""
    from ..gan.training import load_image_folder

    parts = [load_image_folder(d, resolution) for d in data_folders(data)]
    return torch.cat(parts) if parts else None


class RelitCaptures:
    """Real training images that cost no rendering: OLAT captures relit on the fly under a pool of
    env maps, from one of each capture's cameras, through the one display transform (as the
    dataset's portraits). Captures are memory-mapped, so processes share the page cache."""

    def __init__(self, olat_dir, n_lights: int = 4000, seed: int = 0, hdr_dir: str | None = None,
                 stage_lights: float = 0.0):
        from ..lighting import OLATCapture
        from ..lighting.captures import LightPool, capture_dirs

        self.dirs = capture_dirs(olat_dir)
        self._load = OLATCapture.load
        self._caps: dict[int, object] = {}
        first = self.capture(0)
        self.resolution = first.resolution[0]
        self.pool = LightPool(first.stage, n_lights, seed, hdr_dir, stage_light_fraction=stage_lights)

    def capture(self, i: int):
        if i not in self._caps:
            self._caps[i] = self._load(self.dirs[i])
        return self._caps[i]

    def sample(self, n: int, gen: torch.Generator, mirror: bool = True) -> torch.Tensor:
        """n relit images [n, 3, H, W] in [-1, 1] (subject, camera, light and flip drawn from `gen`)."""
        out = []
        for _ in range(n):
            cap = self.capture(int(torch.randint(len(self.dirs), [1], generator=gen)))
            cam = int(torch.randint(cap.num_cameras, [1], generator=gen))
            light = self.pool.coeffs[int(torch.randint(len(self.pool), [1], generator=gen))]
            u8 = cap.display(light, cam)
            x = torch.from_numpy(np.ascontiguousarray(u8)).permute(2, 0, 1).float() / 127.5 - 1
            if mirror and bool(torch.rand([1], generator=gen) < 0.5):
                x = x.flip(2)
            out.append(x)
        return torch.stack(out) if out else torch.zeros([0, 3, self.resolution, self.resolution])
