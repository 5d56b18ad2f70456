"""Fast path of the reconstruction: a small CNN that reads pose, 68 landmarks, head-model
coefficients, skin tone and the light-stage light straight off an aligned portrait (the ICCV 2021
idea of a network in front of the ray tracer). It is trained on virtual light-stage renders whose
parameters are known (`stylerelight train recon`); its estimate starts the ray-traced fit.

Light targets are the displayed light: the env map's stage coefficients times the portrait's
exposure (what the pixels can tell), as log(1e-3 + c) standardised per coefficient.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..runs import RUN_CONTROL, RunTrainer, atomic_torch_save, config_from_yaml

FORMAT = "stylerelight-recon-cnn"
YAW_SCALE, PITCH_SCALE, LIGHT_EPS = 45.0, 20.0, 1e-3


def _block(c_in: int, c_out: int) -> nn.Sequential:
    """conv - GroupNorm - SiLU, then a stride-2 conv: halves the resolution."""
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, 1, 1), nn.GroupNorm(8, c_out), nn.SiLU(),
                         nn.Conv2d(c_out, c_out, 3, 2, 1), nn.GroupNorm(8, c_out), nn.SiLU())


class ReconNet(nn.Module):
    def __init__(self, resolution: int = 64, num_lights: int = 150, num_id: int = 16, num_expr: int = 4,
                 width: int = 32):
        super().__init__()
        self.sizes = {"pose": 2, "landmarks": 136, "identity": num_id, "expression": num_expr, "tone": 1,
                      "light": num_lights * 3}
        n_down = int(math.log2(resolution)) - 2
        chans = [3] + [min(width * 2**i, 4 * width) for i in range(n_down)]
        self.trunk = nn.Sequential(*[_block(chans[i], chans[i + 1]) for i in range(n_down)])
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(chans[-1] * 16, 512), nn.SiLU(),
                                  nn.Linear(512, sum(self.sizes.values())))

    def forward(self, x: torch.Tensor) -> dict:
        out = self.head(self.trunk(x))
        return dict(zip(self.sizes, out.split(list(self.sizes.values()), dim=1), strict=True))


# ---------------------------------------------------------------------------------------------
# targets from a dataset's params


def crop_landmarks(params: dict, crop_size: int) -> np.ndarray:
    """The projected 68 landmarks in the aligned crop's pixels (the builder aligned from them)."""
    from ..align import AlignedFace, ffhq_quad

    lm = np.asarray(params["landmarks_raw"], np.float64)
    quad, _ = ffhq_quad(lm)
    m = AlignedFace(np.zeros((crop_size, crop_size, 3), np.uint8), quad, lm, (0, 0)).quad_to_output()
    return lm @ m[:2, :2].T + m[:2, 2]


def dataset_targets(data_dir, stage=None) -> dict:
    """Raw targets for every image of a build-dataset folder, cached in DATA/recon_targets.npz."""
    from ..lighting import LightStage
    from ..synth import sample_envmap

    root = Path(data_dir)
    cache = root / "recon_targets.npz"
    files = sorted((root / "params").glob("*.json"))
    if cache.is_file():
        z = np.load(cache)
        if len(z["yaw"]) == len(files):
            return dict(z)
    stage = stage or LightStage.default()
    rows = {k: [] for k in ("yaw", "pitch", "landmarks", "identity", "expression", "tone", "light")}
    res = None
    for f in files:
        p = json.loads(f.read_text())
        res = res or int(p["resolution"])
        env = sample_envmap(p["env_seed"], kind=p.get("env_kind"))
        rows["yaw"].append(p["yaw"])
        rows["pitch"].append(p["pitch"])
        rows["landmarks"].append(crop_landmarks(p, res))
        rows["identity"].append(p["subject"]["id_coeffs"])
        rows["expression"].append(list(p["subject"]["expr_coeffs"].values()))
        rows["tone"].append(p["subject"]["tone"])
        rows["light"].append(stage.project(env) * p["exposure"])
    out = {k: np.asarray(v, np.float32) for k, v in rows.items()}
    tmp = cache.with_name(".recon_targets.tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(cache)
    return out


def encode_targets(t: dict, light_stats: tuple[np.ndarray, np.ndarray], crop_size: int) -> dict:
    mu, sd = light_stats
    return {"pose": np.stack([t["yaw"] / YAW_SCALE, t["pitch"] / PITCH_SCALE], -1),
            "landmarks": (t["landmarks"] / crop_size - 0.5).reshape(len(t["yaw"]), -1) * 2,
            "identity": t["identity"] / 2, "expression": t["expression"], "tone": t["tone"][:, None] * 2 - 1,
            "light": ((np.log(LIGHT_EPS + t["light"]) - mu) / sd).reshape(len(t["yaw"]), -1)}


@dataclass
class Estimate:
    """What the CNN reads off a portrait (degrees, crop pixels, linear displayed light [L, 3])."""
    yaw: np.ndarray
    pitch: np.ndarray
    landmarks: np.ndarray
    identity: np.ndarray
    expression: np.ndarray
    tone: np.ndarray
    light: np.ndarray


class ReconCNN(nn.Module):
    """The network with what it needs to decode its outputs (light statistics, crop size)."""

    def __init__(self, net: ReconNet, light_mean: torch.Tensor, light_std: torch.Tensor, resolution: int):
        super().__init__()
        self.net, self.resolution = net, resolution
        self.register_buffer("light_mean", light_mean)
        self.register_buffer("light_std", light_std)

    @torch.no_grad()
    def estimate(self, images: torch.Tensor) -> Estimate:
        """images [N, 3, H, W] in [-1, 1] (resized to the network's size)."""
        x = images.float()
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="area")
        o = {k: v.cpu().double() for k, v in self.net.eval()(x).items()}
        n = len(x)
        light = torch.exp(o["light"].reshape(n, -1, 3) * self.light_std.double() + self.light_mean.double())
        return Estimate(yaw=(o["pose"][:, 0] * YAW_SCALE).numpy(), pitch=(o["pose"][:, 1] * PITCH_SCALE).numpy(),
                        landmarks=((o["landmarks"].reshape(n, 68, 2) / 2 + 0.5) * self.resolution).numpy(),
                        identity=(o["identity"] * 2).numpy(), expression=o["expression"].numpy(),
                        tone=((o["tone"][:, 0] + 1) / 2).numpy(),
                        light=(light - LIGHT_EPS).clamp_min(0).numpy())


def save_recon_cnn(model: ReconCNN, path) -> None:
    net = model.net
    cfg = {"resolution": model.resolution, "num_lights": net.sizes["light"] // 3, "num_id": net.sizes["identity"],
           "num_expr": net.sizes["expression"], "width": net.trunk[0][0].out_channels}
    atomic_torch_save({"format": FORMAT, "version": 1, "config": cfg,
                       "state_dict": {k: v.detach().cpu() for k, v in net.state_dict().items()},
                       "light_mean": model.light_mean.cpu(), "light_std": model.light_std.cpu()}, path)


class ReconFileError(ValueError):
    """A reconstruction file that cannot be read; the message is one line for the user."""


def load_recon_cnn(path, device="cpu") -> ReconCNN:
    """Read with torch.load(weights_only=True): nothing in the file is executed."""
    import pickle
    import zipfile

    path = Path(path)
    if not path.is_file():
        raise ReconFileError(f"{path}: no such file; expected a reconstruction network (.pt)")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError) as e:
        raise ReconFileError(f"{path}: unreadable or unsafe reconstruction network ({type(e).__name__})") from None
    try:
        if obj.get("format") != FORMAT:
            raise ValueError("not a reconstruction network")
        net = ReconNet(**obj["config"])
        net.load_state_dict(obj["state_dict"])
        model = ReconCNN(net, obj["light_mean"], obj["light_std"], int(obj["config"]["resolution"]))
    except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
        raise ReconFileError(f"{path}: damaged reconstruction network ({str(e).splitlines()[0]})") from None
    return model.to(device).eval()


# ---------------------------------------------------------------------------------------------
# training


@dataclass
class ReconTrainConfig:
    data: str = "data/lightstage64"
    width: int = 32
    batch: int = 32
    lr: float = 1e-3
    lr_halflife_kimg: float = 40.0
    weights: str = "pose=1,landmarks=1,identity=0.2,expression=0.2,tone=0.2,light=0.3"
    total_kimg: float = 100.0
    snapshot_kimg: float = 2.0
    image_kimg: float = 1000.0
    seed: int = 0
    threads: int = 0

    @classmethod
    def from_yaml(cls, path) -> ReconTrainConfig:
        return config_from_yaml(cls, path)


class ReconTrainer(RunTrainer):
    kind = "recon"
    run_control = RUN_CONTROL + ("data",)

    def __init__(self, cfg: ReconTrainConfig, images: torch.Tensor, targets: dict, run_dir, log: bool = True):
        super().__init__(cfg, run_dir, log)
        self.images = images
        res = images.shape[-1]
        logl = np.log(LIGHT_EPS + targets["light"])
        stats = (logl.mean(0), logl.std(0) + 1e-3)
        self.targets = {k: torch.from_numpy(np.asarray(v, np.float32))
                        for k, v in encode_targets(targets, stats, res).items()}
        with self.scope():
            net = ReconNet(res, targets["light"].shape[1], targets["identity"].shape[1],
                           targets["expression"].shape[1], cfg.width)
        self.model = ReconCNN(net, torch.from_numpy(stats[0]).float(), torch.from_numpy(stats[1]).float(), res)
        self.weights = {k: float(v) for k, v in (kv.split("=") for kv in cfg.weights.split(","))}
        self.opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        self.data_gen = torch.Generator().manual_seed(cfg.seed + 1)
        self.resume()

    def state(self) -> dict:
        return {"net": self.model.net.state_dict(), "opt": self.opt.state_dict(), "data_rng": self.data_gen.get_state()}

    def load_state(self, s: dict) -> None:
        self.model.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])
        self.data_gen.set_state(s["data_rng"])

    def export(self) -> None:
        save_recon_cnn(self.model, self.run_dir / "recon.pt")

    def train_step(self) -> dict:
        cfg = self.cfg
        for g in self.opt.param_groups:
            g["lr"] = cfg.lr * 0.5 ** (self.nimg / 1000 / cfg.lr_halflife_kimg)
        idx = torch.randint(len(self.images), [cfg.batch], generator=self.data_gen)
        x = self.images[idx].float() / 127.5 - 1
        out = self.model.net.train()(x)
        stats, loss = {}, torch.zeros([])
        for k, w in self.weights.items():
            term = F.mse_loss(out[k], self.targets[k][idx])
            loss = loss + w * term
            stats[f"loss/{k}"] = float(term.detach())
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        stats["loss"] = float(loss.detach())
        return stats
