"""The run conventions every trainer shares (GAN, encoder, and the trainers still to come).

A run folder holds `config.json`, an atomic `snapshot.pt` (model, optimisers, RNG states, image
count) and tensorboard logs under `tb/`. A trainer started on a folder with a snapshot continues
it exactly, provided the fields that define the model are unchanged; run-control fields (length,
intervals, threads) may change between resumes. Training draws from its own RNG state and thread
count and hands the caller's global torch state back unchanged when it returns.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import MISSING, asdict, fields
from pathlib import Path

import torch

RUN_CONTROL = ("total_kimg", "snapshot_kimg", "image_kimg", "threads")


def atomic_torch_save(obj, path: str | os.PathLike) -> None:
    """torch.save to a temp file in the same folder, then rename: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def without_run_control(config: dict, run_control: tuple = RUN_CONTROL) -> dict:
    return {k: v for k, v in config.items() if k not in run_control}


def differing(a: dict, b: dict) -> str:
    """The keys whose values differ between two configs, for one-line errors."""
    return ", ".join(sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k)))


def config_from_yaml(cls, path):
    """Build dataclass `cls` from a YAML file; unknown keys are an error naming them."""
    import yaml

    data = yaml.safe_load(Path(path).read_text()) or {}
    unknown = set(data) - set(cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"{path}: unknown config keys {sorted(unknown)}")
    return cls(**data)


def sample_images(data: torch.Tensor, n: int, gen: torch.Generator, mirror: bool, with_index: bool = False):
    """n images drawn with replacement from uint8 [N, C, H, W] as float in [-1, 1], each flipped
    left-right with probability 1/2 when `mirror` (both draws from `gen`, so runs resume exactly).
    with_index: (images, their indices, which were flipped)."""
    idx = torch.randint(len(data), [n], generator=gen)
    x = data[idx].to(torch.float32) / 127.5 - 1
    flip = torch.zeros(n, dtype=torch.bool)
    if mirror:
        flip = torch.rand([n], generator=gen) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    return (x, idx, flip) if with_index else x


def dist_info() -> tuple[int, int]:
    """(rank, world size) of this process under torch.distributed; (0, 1) without it."""
    d = torch.distributed
    if d.is_available() and d.is_initialized():
        return d.get_rank(), d.get_world_size()
    return 0, 1


class RunTrainer:
    """Base class: subclasses build their networks inside `init_rng()`, and implement
    `train_step() -> stats`, `state() -> dict`, `load_state(dict)`, `export()` (write the run's
    product, e.g. G_ema.pt) and optionally `image_grid() -> uint8 HWC`. `cfg` is a dataclass
    with at least batch, seed, threads, total_kimg, snapshot_kimg, image_kimg."""

    kind = "run"
    run_control = RUN_CONTROL  # config fields that may change between resumes

    def __init__(self, cfg, run_dir, log: bool = True):
        self.cfg, self.run_dir = cfg, Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.nimg, self.step = 0, 0
        self.rng_state = torch.Generator().manual_seed(cfg.seed).get_state()
        self.writer = None
        if log:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(str(self.run_dir / "tb"))
            except ImportError:
                self.writer = None

    # -- global state: the run's own RNG and threads while it works, the caller's afterwards -----

    def _enter(self):
        saved = (torch.get_rng_state(), torch.get_num_threads())
        torch.set_rng_state(self.rng_state)
        if self.cfg.threads:
            torch.set_num_threads(self.cfg.threads)
        return saved

    def _leave(self, saved) -> None:
        self.rng_state = torch.get_rng_state()
        torch.set_rng_state(saved[0])
        torch.set_num_threads(saved[1])

    class _Scope:
        def __init__(self, trainer):
            self.t = trainer

        def __enter__(self):
            self.saved = self.t._enter()

        def __exit__(self, *exc):
            self.t._leave(self.saved)

    def scope(self):
        """`with trainer.scope():` code that draws from the run's RNG (network construction)."""
        return self._Scope(self)

    # -- snapshots -------------------------------------------------------------------------------

    @property
    def snapshot_path(self) -> Path:
        return self.run_dir / "snapshot.pt"

    def save_snapshot(self) -> None:
        state = {"format": f"stylerelight-train-{self.kind}" if self.kind != "gan" else "stylerelight-train",
                 "config": asdict(self.cfg), "nimg": self.nimg, "step": self.step,
                 "rng": torch.get_rng_state(), **self.state()}
        atomic_torch_save(state, self.snapshot_path)
        self.export()

    def resume(self) -> bool:
        """Load the run folder's snapshot if there is one (config checked); else record the config."""
        if not self.snapshot_path.exists():
            (self.run_dir / "config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
            return False
        s = torch.load(self.snapshot_path, map_location="cpu", weights_only=True)
        # a field added to the config after the snapshot was written counts at its default
        added = {f.name: f.default for f in fields(self.cfg) if f.default is not MISSING}
        old = without_run_control({**added, **s.get("config", {})}, self.run_control)
        new = without_run_control(asdict(self.cfg), self.run_control)
        if old != new:
            raise ValueError(f"{self.snapshot_path} was made with another config ({differing(old, new)} differ); "
                             "use a new run folder")
        self.load_state(s)
        self.rng_state = s["rng"]
        self.nimg, self.step = s["nimg"], s["step"]
        return True

    # -- subclass hooks --------------------------------------------------------------------------

    def train_step(self) -> dict:
        raise NotImplementedError

    def state(self) -> dict:
        raise NotImplementedError

    def load_state(self, s: dict) -> None:
        raise NotImplementedError

    def export(self) -> None:
        pass

    def image_grid(self):
        return None

    # -- the loop --------------------------------------------------------------------------------

    def train(self, total_kimg: float | None = None, progress: bool = True):
        """Train until total_kimg (config's by default); snapshot every snapshot_kimg."""
        from tqdm import tqdm

        cfg = self.cfg
        total = int((total_kimg if total_kimg is not None else cfg.total_kimg) * 1000)
        snap_every, img_every = int(cfg.snapshot_kimg * 1000), int(cfg.image_kimg * 1000)
        next_snap = (self.nimg // snap_every + 1) * snap_every
        next_img = (self.nimg // img_every + 1) * img_every
        bar = tqdm(total=total, initial=min(self.nimg, total), unit="img", desc=f"train {self.kind}",
                   disable=not progress)
        t0, steps = time.time(), 0
        saved = self._enter()
        try:
            while self.nimg < total:
                stats = self.train_step()
                self.nimg += cfg.batch
                self.step += 1
                steps += 1
                bar.update(cfg.batch)
                if stats.get("loss"):
                    bar.set_postfix(loss=f"{stats['loss']:.4f}")
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
                    grid = self.image_grid()
                    if grid is not None:
                        self.writer.add_image("samples", grid, self.nimg, dataformats="HWC")
                    next_img += img_every
            if not steps and self.nimg >= total:  # a finished run asked again: export anew (e.g. run-control changes)
                self.save_snapshot()
        finally:
            self._leave(saved)
            bar.close()
            if self.writer is not None:
                self.writer.flush()
        return self
