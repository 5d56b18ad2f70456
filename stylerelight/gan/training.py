"""StyleGAN2 training (config F losses) that resumes exactly from its last snapshot.

Non-saturating logistic loss, lazy R1 on reals, lazy path-length regularisation, style mixing,
generator EMA, Adam (beta1 = 0, beta2 = 0.99) with the lazy-regularisation lr/beta correction,
optional x-flips. A snapshot holds G, D, G_ema, both optimisers, every RNG state and the image
count; it is written atomically, and a run started on a folder that holds one continues from it.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .io import atomic_torch_save, load_generator, save_generator
from .networks import Discriminator, DiscriminatorConfig, Generator, GeneratorConfig, style_mix


@dataclass
class TrainConfig:
    resolution: int = 64
    z_dim: int = 256
    w_dim: int = 256
    mapping_layers: int = 4
    channel_base: int = 8192
    channel_max: int = 256
    batch: int = 16
    glr: float = 0.0025
    dlr: float = 0.0025
    r1_gamma: float = 0.05  # scaled with resolution^2 as in NVlabs' auto config: 0.0002 * res^2 / batch
    r1_interval: int = 16
    pl_weight: float = 2.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    mixing_prob: float = 0.9
    ema_kimg: float = 5.0
    ema_rampup: float | None = 0.05
    mirror: bool = True
    total_kimg: float = 1000.0
    snapshot_kimg: float = 4.0
    image_kimg: float = 20.0
    seed: int = 0
    threads: int = 0  # 0: torch's default

    # how long, how often and on how many threads: may change between resumes of one run
    RUN_CONTROL = ("total_kimg", "snapshot_kimg", "image_kimg", "threads")

    def defining(self) -> dict:
        """The fields that define the trained model; a resume needs them unchanged."""
        return _without_run_control(asdict(self))

    @classmethod
    def from_yaml(cls, path) -> TrainConfig:
        import yaml

        data = yaml.safe_load(Path(path).read_text()) or {}
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
        return cls(**data)


def _without_run_control(config: dict) -> dict:
    return {k: v for k, v in config.items() if k not in TrainConfig.RUN_CONTROL}


def _differing(a: dict, b: dict) -> str:
    """The keys whose values differ between two configs, for one-line errors."""
    return ", ".join(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def load_image_folder(data_dir, resolution: int) -> torch.Tensor:
    """All PNG/JPEG images under data_dir/images (or data_dir) as uint8 [N, 3, R, R]."""
    from PIL import Image

    root = Path(data_dir)
    folder = root / "images" if (root / "images").is_dir() else root
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not files:
        raise FileNotFoundError(f"{data_dir}: no .png/.jpg images found (build one with "
                                "`stylerelight lightstage build-dataset`)")
    out = np.empty((len(files), resolution, resolution, 3), np.uint8)
    for i, p in enumerate(files):
        im = Image.open(p).convert("RGB")
        if im.size != (resolution, resolution):
            im = im.resize((resolution, resolution), Image.LANCZOS)
        out[i] = np.asarray(im)
    return torch.from_numpy(out).permute(0, 3, 1, 2).contiguous()


def _make_nets(cfg: TrainConfig):
    gcfg = GeneratorConfig(z_dim=cfg.z_dim, w_dim=cfg.w_dim, img_resolution=cfg.resolution,
                           mapping_layers=cfg.mapping_layers, channel_base=cfg.channel_base,
                           channel_max=cfg.channel_max)
    dcfg = DiscriminatorConfig(img_resolution=cfg.resolution, channel_base=cfg.channel_base,
                               channel_max=cfg.channel_max)
    return Generator(gcfg), Discriminator(dcfg), Generator(gcfg)


def _adam(params, lr, interval):
    ratio = interval / (interval + 1)  # lazy regularisation: NVlabs' correction of lr and betas
    return torch.optim.Adam(params, lr=lr * ratio, betas=(0.0, 0.99**ratio), eps=1e-8)


class Trainer:
    def __init__(self, cfg: TrainConfig, data: torch.Tensor, run_dir, log: bool = True,
                 init_generator: str | Path | None = None):
        """`init_generator`: a generator checkpoint whose weights start G and G_ema of a *new* run
        (D and the optimisers start fresh); ignored when the run folder already holds a snapshot."""
        self.cfg, self.data, self.run_dir = cfg, data, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        torch.manual_seed(cfg.seed)
        self.G, self.D, self.G_ema = _make_nets(cfg)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False).eval()
        self.opt_G = _adam(self.G.parameters(), cfg.glr, cfg.pl_interval)
        self.opt_D = _adam(self.D.parameters(), cfg.dlr, cfg.r1_interval)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.nimg, self.step = 0, 0
        self.pl_mean = torch.zeros([])
        self.writer = None
        if log:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                self.writer = None
        self.grid_z = torch.randn([16, cfg.z_dim], generator=torch.Generator().manual_seed(123))
        if not self._resume() and init_generator is not None:
            self._init_generator(Path(init_generator))

    # -- snapshots ------------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return self.run_dir / "snapshot.pt"

    def save_snapshot(self) -> None:
        state = {"format": "stylerelight-train", "config": asdict(self.cfg), "nimg": self.nimg, "step": self.step,
                 "G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                 "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                 "rng": torch.get_rng_state(), "data_rng": self.data_gen.get_state(), "pl_mean": self.pl_mean}
        atomic_torch_save(state, self.snapshot_path)
        save_generator(self.G_ema, self.run_dir / "G_ema.pt")

    def _resume(self) -> bool:
        if not self.snapshot_path.exists():
            (self.run_dir / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
            return False
        s = torch.load(self.snapshot_path, map_location="cpu", weights_only=True)
        old, new = _without_run_control(s.get("config", {})), self.cfg.defining()
        if old != new:
            raise ValueError(f"{self.snapshot_path} was made with another config ({_differing(old, new)} differ); "
                             "use a new run folder")
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.G_ema.load_state_dict(s["G_ema"])
        self.opt_G.load_state_dict(s["opt_G"])
        self.opt_D.load_state_dict(s["opt_D"])
        torch.set_rng_state(s["rng"])
        self.data_gen.set_state(s["data_rng"])
        self.nimg, self.step, self.pl_mean = s["nimg"], s["step"], s["pl_mean"]
        return True

    def _init_generator(self, path: Path) -> None:
        """Warm start from a shipped generator (e.g. when a run folder was lost): same architecture only."""
        src = load_generator(path)
        want, got = self.G.cfg.to_dict(), src.cfg.to_dict()
        if want != got:
            raise ValueError(f"{path} has another architecture than the config ({_differing(want, got)} differ); "
                             "pick a matching config")
        state = src.state_dict()
        self.G.load_state_dict(state)
        self.G_ema.load_state_dict(state)
        (self.run_dir / "init_generator.txt").write_text(f"{path.resolve()}\n")

    # -- one iteration --------------------------------------------------------------------------

    def _reals(self, n):
        idx = torch.randint(len(self.data), [n], generator=self.data_gen)
        x = self.data[idx].to(torch.float32) / 127.5 - 1
        if self.cfg.mirror:
            flip = torch.rand([n], generator=self.data_gen) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return x

    def _fakes(self, n, update_w_avg=False):
        z = torch.randn([n, self.cfg.z_dim])
        ws = self.G.mapping(z, update_w_avg=update_w_avg)
        if self.cfg.mixing_prob > 0:
            ws2 = self.G.mapping(torch.randn([n, self.cfg.z_dim]))
            ws = style_mix(ws, ws2, self.cfg.mixing_prob)
        return self.G.synthesis(ws, noise_mode="random"), ws

    def train_step(self) -> dict:
        cfg, n = self.cfg, self.cfg.batch
        stats = {}
        # G main: non-saturating logistic loss
        self.G.requires_grad_(True)
        self.D.requires_grad_(False)
        img, _ = self._fakes(n, update_w_avg=True)
        loss_g = F.softplus(-self.D(img)).mean()
        self.opt_G.zero_grad(set_to_none=True)
        loss_g.backward()
        stats["loss/G"] = float(loss_g.detach())
        # G path-length regularisation (lazy)
        if cfg.pl_weight > 0 and self.step % cfg.pl_interval == 0:
            m = max(1, n // cfg.pl_batch_shrink)
            img, ws = self._fakes(m)
            noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
            (grad,) = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
            lengths = grad.square().sum(2).mean(1).sqrt()
            self.pl_mean = self.pl_mean.lerp(lengths.mean().detach(), cfg.pl_decay)
            pl_pen = (lengths - self.pl_mean).square().mean()
            (pl_pen * cfg.pl_weight * cfg.pl_interval).backward()
            stats["loss/pl"] = float(pl_pen.detach())
        self.opt_G.step()
        # D main
        self.G.requires_grad_(False)
        self.D.requires_grad_(True)
        with torch.no_grad():
            img, _ = self._fakes(n)
        reals = self._reals(n)
        do_r1 = cfg.r1_gamma > 0 and self.step % cfg.r1_interval == 0
        reals.requires_grad_(do_r1)
        logits_real = self.D(reals)
        loss_d = F.softplus(self.D(img)).mean() + F.softplus(-logits_real).mean()
        if do_r1:
            (grad,) = torch.autograd.grad(logits_real.sum(), reals, create_graph=True)
            r1 = grad.square().sum([1, 2, 3]).mean()
            loss_d = loss_d + r1 * (cfg.r1_gamma / 2) * cfg.r1_interval
            stats["loss/r1"] = float(r1.detach())
        self.opt_D.zero_grad(set_to_none=True)
        loss_d.backward()
        self.opt_D.step()
        stats["loss/D"] = float(loss_d.detach())
        stats["scores/real"] = float(logits_real.detach().mean())
        # EMA
        ema_nimg = cfg.ema_kimg * 1000
        if cfg.ema_rampup is not None:
            ema_nimg = min(ema_nimg, (self.nimg + n) * cfg.ema_rampup)
        beta = 0.5 ** (n / max(ema_nimg, 1e-8))
        with torch.no_grad():
            for pe, p in zip(self.G_ema.parameters(), self.G.parameters(), strict=True):
                pe.copy_(p.lerp(pe, beta))
            for be, b in zip(self.G_ema.buffers(), self.G.buffers(), strict=True):
                be.copy_(b)
        self.nimg += n
        self.step += 1
        return stats

    def image_grid(self) -> np.ndarray:
        from ..imageio import gan_to_uint8, make_grid

        with torch.no_grad():
            img = self.G_ema(self.grid_z, truncation_psi=1.0, noise_mode="const")
        return make_grid(gan_to_uint8(img), cols=4)

    def train(self, total_kimg: float | None = None, progress: bool = True):
        """Train until total_kimg (config's by default); snapshots every snapshot_kimg."""
        from tqdm import tqdm

        cfg = self.cfg
        total = int((total_kimg if total_kimg is not None else cfg.total_kimg) * 1000)
        snap_every, img_every = int(cfg.snapshot_kimg * 1000), int(cfg.image_kimg * 1000)
        next_snap = (self.nimg // snap_every + 1) * snap_every
        next_img = (self.nimg // img_every + 1) * img_every
        bar = tqdm(total=total, initial=min(self.nimg, total), unit="img", desc="train", disable=not progress)
        t0, steps = time.time(), 0
        while self.nimg < total:
            stats = self.train_step()
            steps += 1
            bar.update(cfg.batch)
            if self.writer is not None:
                for k, v in stats.items():
                    self.writer.add_scalar(k, v, self.nimg)
            if self.nimg >= next_snap or self.nimg >= total:
                self.save_snapshot()
                next_snap += snap_every
                if self.writer is not None:
                    self.writer.add_scalar("speed/kimg_per_hour", cfg.batch * steps / (time.time() - t0) * 3.6,
                                           self.nimg)
            if self.writer is not None and self.nimg >= next_img:
                self.writer.add_image("samples", self.image_grid(), self.nimg, dataformats="HWC")
                next_img += img_every
        bar.close()
        if self.writer is not None:
            self.writer.flush()
        return self
