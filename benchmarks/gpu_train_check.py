"""`train mapper` on a CUDA GPU against the CPU, in one run: the latent bank built on each (codes
compared), the same trainer stepped on each from the same start (weights compared), the loss
falling and an exact resume on the GPU, and pairs per second on each. With --torchrun also the CLI
with two processes sharing the one GPU (gloo with CUDA tensors; nccl needs a GPU per process).
With --encoder, `train encoder` the same way (generator samples only: no renders needed).

    python benchmarks/gpu_train_check.py --captures DIR [--probe-tables FILE] [--torchrun]

DIR: aligned OLAT captures for the bundled 64^2 generator (`lightstage render --aligned`, or the
tests' tiny ones). --probe-tables: the shading probe's tables pickled where Mitsuba runs
(`--write-probe-tables FILE` there), for a GPU machine without Mitsuba.
"""

from __future__ import annotations

import argparse
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import stylerelight as sr  # noqa: E402
from stylerelight.bundled import ENCODER, GENERATOR, bundled  # noqa: E402
from stylerelight.lighting import LightStage  # noqa: E402
from stylerelight.mapper import conditioning  # noqa: E402
from stylerelight.mapper.pairs import Bank, BankSpec, build_bank, sample_pairs  # noqa: E402
from stylerelight.mapper.training import MapperTrainConfig, MapperTrainer  # noqa: E402
from stylerelight.recon import default_cnn  # noqa: E402


def _stage_key() -> tuple:
    import numpy as np

    return tuple(map(tuple, np.round(np.asarray(LightStage.default().directions, np.float64), 6)))


def use_probe_tables(path) -> None:
    """The shading probe's tables from a file written by --write-probe-tables (no Mitsuba needed)."""
    with open(path, "rb") as f:
        tables = pickle.load(f)  # our own file, written on a machine with Mitsuba
    conditioning._probe_tables = lambda directions: tables


def check_encoder(on: dict, tmp: Path, torchrun: bool) -> None:
    from stylerelight.invert.encoder_training import EncoderTrainConfig, EncoderTrainer

    cfg = dict(width=32, iterations=2, batch=16, synth_fraction=1.0, total_kimg=1, snapshot_kimg=0.08,
               image_kimg=10, seed=0)
    tr = {dev: EncoderTrainer(EncoderTrainConfig(**cfg), sr.load_generator(bundled(GENERATOR)), None,
                              tmp / f"enc_{dev}", log=False, device=on[dev]) for dev in on}
    tr["cuda"].E.net.load_state_dict({k: v.cpu() for k, v in tr["cpu"].E.net.state_dict().items()})
    for t in tr.values():
        t.train(0.08, progress=False)  # 5 steps
    diff = max(float((p.detach().cpu() - q.detach().cpu()).abs().max()) for p, q in
               zip(tr["cpu"].E.net.parameters(), tr["cuda"].E.net.parameters(), strict=True))
    print(f"train encoder, 5 steps from the same start: max |weight diff| GPU vs CPU {diff:.2e}")
    for dev in on:
        t = EncoderTrainer(EncoderTrainConfig(**dict(cfg, batch=64)), sr.load_generator(bundled(GENERATOR)), None,
                           tmp / f"encspeed_{dev}", log=False, device=on[dev])
        t.train(0.128, progress=False)
        t0 = time.perf_counter()
        t.train(0.128 + 0.64, progress=False)
        if on[dev] != "cpu":
            torch.cuda.synchronize()
        print(f"train encoder speed on {dev} (batch 64, 2 passes): {640 / (time.perf_counter() - t0):.0f} img/s")
    if torchrun:
        cfg_file = tmp / "enc.yaml"
        cfg_file.write_text("width: 32\niterations: 2\nbatch: 16\nsynth_fraction: 1.0\ntotal_kimg: 0.032\n"
                            "snapshot_kimg: 0.016\nimage_kimg: 1\n")
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                            "29542", "-m", "stylerelight", "train", "encoder", "--config", str(cfg_file), "--run-dir",
                            str(tmp / "enc_ddp"), "--device", "auto"], capture_output=True, text=True, timeout=600)
        print(f"torchrun train encoder, 2 processes on one GPU: exit {r.returncode}; "
              f"{r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-1500:]}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--captures", default=None)
    ap.add_argument("--probe-tables", default=None)
    ap.add_argument("--write-probe-tables", default=None, help="write the probe's tables here and stop")
    ap.add_argument("--torchrun", action="store_true")
    ap.add_argument("--gpu", default="cuda")
    ap.add_argument("--encoder", action="store_true", help="also check train encoder")
    args = ap.parse_args()
    if args.write_probe_tables:
        with open(args.write_probe_tables, "wb") as f:
            pickle.dump(conditioning._probe_tables(_stage_key()), f)
        return
    if args.probe_tables:
        use_probe_tables(args.probe_tables)
    on = {"cpu": "cpu", "cuda": args.gpu}  # --gpu cpu: a dry run of this script without a GPU
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name() if args.gpu != 'cpu' else 'no GPU (dry run)'}")
    Gs = {dev: sr.load_generator(bundled(GENERATOR), device=on[dev]) for dev in on}
    Es = {dev: sr.load_encoder(bundled(ENCODER), device=on[dev]) for dev in on}
    cnn = default_cnn()
    tmp = Path(tempfile.mkdtemp())
    banks = {}
    for dev in on:
        t0 = time.perf_counter()
        banks[dev] = build_bank(args.captures, tmp / f"bank_{dev}", Es[dev], cnn, BankSpec(2, 12, 0),
                                G=Gs[dev], progress=False)
        print(f"latent bank on {dev}: {time.perf_counter() - t0:.1f} s")
    a, b = Bank(banks["cpu"], args.captures), Bank(banks["cuda"], args.captures)
    print(f"bank codes, GPU vs CPU: max |diff| {float((a.ws.float() - b.ws.float()).abs().max()):.2e} "
          f"(float16 codes; w spread {float(a.ws.float().std()):.2f})")
    cfg = dict(lights_per_subject=2, light_pool=12, batch=8, image_batch=4, total_kimg=1, snapshot_kimg=0.04,
               image_kimg=1, seed=0)
    trainers = {dev: MapperTrainer(MapperTrainConfig(**cfg), Gs[dev], Bank(banks["cpu"], args.captures),
                                   tmp / f"run_{dev}", log=False, device=on[dev]) for dev in on}
    start = {k: v.detach().cpu().clone() for k, v in trainers["cpu"].M.state_dict().items()}
    trainers["cuda"].M.load_state_dict(start)  # the same start on both (a GPU may draw other initial weights)
    fixed = sample_pairs(trainers["cpu"].bank, 16, torch.Generator().manual_seed(5))
    objective = {}
    for dev, t in trainers.items():
        with torch.no_grad():
            objective[dev] = [float(t.losses(fixed, 16)[0])]
        t.train(0.04, progress=False)  # 5 steps
        with torch.no_grad():
            objective[dev].append(float(t.losses(fixed, 16)[0]))
    diff = max(float((p.detach().cpu() - q.detach().cpu()).abs().max()) for p, q in
               zip(trainers["cpu"].M.net.parameters(), trainers["cuda"].M.net.parameters(), strict=True))
    print(f"5 steps from the same start: objective CPU {objective['cpu']}, GPU {objective['cuda']}; "
          f"max |weight diff| {diff:.2e}")
    t = trainers["cuda"]
    t.train(0.4, progress=False)
    with torch.no_grad():
        print(f"GPU, 50 steps: objective {objective['cuda'][0]:.4f} -> {float(t.losses(fixed, 16)[0]):.4f}")
    r1 = MapperTrainer(MapperTrainConfig(**cfg), Gs["cuda"], Bank(banks["cpu"], args.captures), tmp / "r1", log=False,
                       device=on["cuda"])
    r1.train(0.04, progress=False)
    r1 = MapperTrainer(MapperTrainConfig(**cfg), Gs["cuda"], Bank(banks["cpu"], args.captures), tmp / "r1", log=False,
                       device=on["cuda"])  # resumed from its snapshot
    r1.train(0.08, progress=False)
    r2 = MapperTrainer(MapperTrainConfig(**cfg), Gs["cuda"], Bank(banks["cpu"], args.captures), tmp / "r2", log=False,
                       device=on["cuda"])
    r2.train(0.08, progress=False)
    rdiff = max(float((p - q).abs().max()) for p, q in zip(r1.M.state_dict().values(), r2.M.state_dict().values(),
                                                             strict=True))
    print(f"GPU resume after a stop vs straight through: max |diff| {rdiff:.2e}; mapper file loads: "
          f"{type(sr.mapper.load_mapper(tmp / 'r1' / 'mapper.pt')).__name__}")
    big = dict(cfg, batch=64, image_batch=32)
    for dev in on:
        tr = MapperTrainer(MapperTrainConfig(**big), Gs[dev], Bank(banks["cpu"], args.captures), tmp / f"speed_{dev}",
                           log=False, device=on[dev])
        tr.train(0.128, progress=False)  # warm-up: 2 steps
        t0 = time.perf_counter()
        tr.train(0.128 + 0.64, progress=False)
        if on[dev] != "cpu":
            torch.cuda.synchronize()
        print(f"training speed on {dev} (batch 64, 32 with the image loss): "
              f"{640 / (time.perf_counter() - t0):.0f} pairs/s")
    if args.encoder:
        check_encoder(on, tmp, args.torchrun)
    if args.torchrun:
        cfg_file = tmp / "tiny.yaml"
        cfg_file.write_text("geometry: false\nlights_per_subject: 2\nlight_pool: 12\nbatch: 8\nimage_batch: 4\n"
                            "total_kimg: 0.016\nsnapshot_kimg: 0.008\nimage_kimg: 1\n")
        r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                            "29541", "-m", "stylerelight", "train", "mapper", "--olat", args.captures, "--config",
                            str(cfg_file), "--run-dir", str(tmp / "ddp"), "--device", "auto"],
                           capture_output=True, text=True, timeout=600)
        print(f"torchrun, 2 processes on one GPU (geometry off: the CLI cannot read the probe file): "
              f"exit {r.returncode}; {r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-1500:]}")


if __name__ == "__main__":
    main()
