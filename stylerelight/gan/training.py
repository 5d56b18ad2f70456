"""StyleGAN2 training (config F losses) that resumes exactly from its last snapshot.

Non-saturating logistic loss, lazy R1 on reals, lazy path-length regularisation, style mixing,
generator EMA, Adam (beta1 = 0, beta2 = 0.99) with the lazy-regularisation lr/beta correction,
optional x-flips. A snapshot holds G, D, G_ema, both optimisers, every RNG state and the image
count; it is written atomically, and a run started on a folder that holds one continues from it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..runs import RUN_CONTROL, RunTrainer, config_from_yaml, differing, sample_images, without_run_control
from .io import load_generator, save_generator
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
    RUN_CONTROL = RUN_CONTROL

    def defining(self) -> dict:
        """The fields that define the trained model; a resume needs them unchanged."""
        return without_run_control(asdict(self))

    @classmethod
    def from_yaml(cls, path) -> TrainConfig:
        return config_from_yaml(cls, path)


def image_files(data_dir) -> list[Path]:
    """The PNG/JPEG files under data_dir/images (or data_dir), sorted: the order of `load_image_folder`."""
    root = Path(data_dir)
    folder = root / "images" if (root / "images").is_dir() else root
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))


def load_image_folder(data_dir, resolution: int, resize: bool = False) -> torch.Tensor:
    """All PNG/JPEG images under data_dir/images (or data_dir) as uint8 [N, 3, R, R].

    Images of another size are refused (naming both sizes) unless `resize`: a config that
    disagrees with its dataset is a mistake to report, not to paper over."""
    from PIL import Image

    files = image_files(data_dir)
    if not files:
        raise FileNotFoundError(f"{data_dir}: no .png/.jpg images found (build one with "
                                "`stylerelight lightstage build-dataset`)")
    out = np.empty((len(files), resolution, resolution, 3), np.uint8)
    for i, p in enumerate(files):
        im = Image.open(p).convert("RGB")
        if im.size != (resolution, resolution):
            if not resize:
                raise ValueError(f"{p} is {im.size[0]}x{im.size[1]} but the config says resolution {resolution}; "
                                 "use a matching config or dataset")
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


class Trainer(RunTrainer):
    kind = "gan"

    def __init__(self, cfg: TrainConfig, data: torch.Tensor, run_dir, log: bool = True,
                 init_generator: str | Path | None = None):
        """`init_generator`: a generator checkpoint whose weights start G and G_ema of a *new* run
        (D and the optimisers start fresh); ignored when the run folder already holds a snapshot."""
        super().__init__(cfg, run_dir, log)
        self.data = data
        if data.shape[-1] != cfg.resolution:
            raise ValueError(f"the dataset's images are {data.shape[-1]}^2 but the config says resolution "
                             f"{cfg.resolution}; rebuild the data or fix the config")
        with self.scope():
            self.G, self.D, self.G_ema = _make_nets(cfg)
        self.G_ema.load_state_dict(self.G.state_dict())
        self.G_ema.requires_grad_(False).eval()
        self.opt_G = _adam(self.G.parameters(), cfg.glr, cfg.pl_interval)
        self.opt_D = _adam(self.D.parameters(), cfg.dlr, cfg.r1_interval)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.pl_mean = torch.zeros([])
        self.grid_z = torch.randn([16, cfg.z_dim], generator=torch.Generator().manual_seed(123))
        if not self.resume() and init_generator is not None:
            self._init_generator(Path(init_generator))

    # -- snapshots ------------------------------------------------------------------------------

    def state(self) -> dict:
        return {"G": self.G.state_dict(), "D": self.D.state_dict(), "G_ema": self.G_ema.state_dict(),
                "opt_G": self.opt_G.state_dict(), "opt_D": self.opt_D.state_dict(),
                "data_rng": self.data_gen.get_state(), "pl_mean": self.pl_mean}

    def load_state(self, s: dict) -> None:
        self.G.load_state_dict(s["G"])
        self.D.load_state_dict(s["D"])
        self.G_ema.load_state_dict(s["G_ema"])
        self.opt_G.load_state_dict(s["opt_G"])
        self.opt_D.load_state_dict(s["opt_D"])
        self.data_gen.set_state(s["data_rng"])
        self.pl_mean = s["pl_mean"]

    def export(self) -> None:
        save_generator(self.G_ema, self.run_dir / "G_ema.pt")

    def _init_generator(self, path: Path) -> None:
        """Warm start from a shipped generator (e.g. when a run folder was lost): same architecture only."""
        src = load_generator(path)
        want, got = self.G.cfg.to_dict(), src.cfg.to_dict()
        if want != got:
            raise ValueError(f"{path} has another architecture than the config ({differing(want, got)} differ); "
                             "pick a matching config")
        state = src.state_dict()
        self.G.load_state_dict(state)
        self.G_ema.load_state_dict(state)
        (self.run_dir / "init_generator.txt").write_text(f"{path.resolve()}\n")

    # -- one iteration --------------------------------------------------------------------------

    def _reals(self, n: int) -> torch.Tensor:
        return sample_images(self.data, n, self.data_gen, self.cfg.mirror)

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
        return stats

    def image_grid(self) -> np.ndarray:
        from ..imageio import gan_to_uint8, make_grid

        with torch.no_grad():
            img = self.G_ema(self.grid_z, truncation_psi=1.0, noise_mode="const")
        return make_grid(gan_to_uint8(img), cols=4)
