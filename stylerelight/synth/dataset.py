"""The dataset builder: random subjects, env maps and views rendered as FFHQ-aligned portraits.

Image i depends only on (seed, i), so a build can be stopped and resumed, split over workers,
and repeated with identical files. Each image gets a JSON sidecar with its parameters; the
manifest (manifest.jsonl) is assembled from the sidecars when a build completes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np

from .camera import Camera
from .envmaps import sample_envmap
from .render import render_portrait
from .subject import sample_subject

YAW_RANGE, PITCH_RANGE = 45.0, 20.0


def image_params(seed: int, index: int, num_subjects: int | None = None, subject_offset: int = 0,
                 env_kinds: tuple[str, ...] | None = None) -> dict:
    """The random choices for image `index` of a dataset with `seed`. Subjects are
    subject_offset + [0, num_subjects): held-out sets use an offset no training set reaches."""
    rng = np.random.default_rng([seed, index])
    subject = int(rng.integers(num_subjects)) if num_subjects else int(rng.integers(2**31))
    env_kind = str(rng.choice(env_kinds)) if env_kinds else None
    return {"index": index, "subject_seed": subject_offset + subject, "env_seed": int(rng.integers(2**31)),
            "env_kind": env_kind,
            "yaw": float(rng.uniform(-YAW_RANGE, YAW_RANGE)), "pitch": float(rng.uniform(-PITCH_RANGE, PITCH_RANGE)),
            "render_seed": int(rng.integers(2**31))}


def portrait_from_params(params: dict, resolution: int, spp: int):
    """(uint8 portrait, render info, subject) for one image's `image_params`, as the builder renders it."""
    subj = sample_subject(params["subject_seed"])
    env = sample_envmap(params["env_seed"], kind=params.get("env_kind"))
    cam = Camera(yaw=params["yaw"], pitch=params["pitch"])
    img, info = render_portrait(subj, env, cam, resolution, spp=spp, seed=params["render_seed"], return_info=True)
    return img, info, subj


def render_one(out: Path, params: dict, resolution: int, spp: int) -> dict:
    from PIL import Image

    img, info, subj = portrait_from_params(params, resolution, spp)
    name = f"{params['index']:07d}"
    tmp = out / "images" / f".{name}.tmp.png"
    Image.fromarray(img).save(tmp)
    os.replace(tmp, out / "images" / f"{name}.png")
    rec = {**params, "file": f"images/{name}.png", "subject": subj.to_json(), "exposure": info["exposure"],
           "landmarks_raw": info["landmarks"], "resolution": resolution}
    (out / "params" / f"{name}.json").write_text(json.dumps(rec))
    return rec


def _worker(args):
    out, params, resolution, spp = args
    render_one(Path(out), params, resolution, spp)
    return params["index"]


def build_dataset(out: str | Path, images: int, resolution: int = 64, seed: int = 0, spp: int = 32,
                  workers: int = 1, num_subjects: int | None = None, progress: bool = True,
                  subject_offset: int = 0, env_kinds: tuple[str, ...] | None = None) -> Path:
    """Render `images` portraits into out/images (resumable: finished images are skipped)."""
    from tqdm import tqdm

    out = Path(out)
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "params").mkdir(exist_ok=True)
    config = {"images": images, "resolution": resolution, "seed": seed, "spp": spp, "num_subjects": num_subjects,
              "subject_offset": subject_offset, "env_kinds": list(env_kinds) if env_kinds else None}
    cfg_path = out / "dataset.json"
    if cfg_path.exists():
        old = json.loads(cfg_path.read_text())
        keys = ("resolution", "seed", "spp", "num_subjects", "subject_offset", "env_kinds")
        defaults = {"subject_offset": 0}
        if {k: old.get(k, defaults.get(k)) for k in keys} != {k: config[k] for k in keys}:
            raise FileExistsError(f"{out} holds a dataset with other settings ({old}); use another --out or --force")
    cfg_path.write_text(json.dumps(config, indent=1))
    todo = [i for i in range(images) if not (out / "params" / f"{i:07d}.json").exists()]
    jobs = [(str(out), image_params(seed, i, num_subjects, subject_offset, env_kinds), resolution, spp) for i in todo]
    bar = tqdm(total=images, initial=images - len(todo), desc="build-dataset", unit="img", disable=not progress)
    if workers > 1 and jobs:
        import multiprocessing as mp

        with mp.get_context("spawn").Pool(workers, initializer=_init_worker) as pool:
            for _ in pool.imap_unordered(_worker, jobs, chunksize=4):
                bar.update(1)
    else:
        for job in jobs:
            _worker(job)
            bar.update(1)
    bar.close()
    with open(out / "manifest.jsonl.tmp", "w") as f:
        for i in range(images):
            f.write((out / "params" / f"{i:07d}.json").read_text().strip() + "\n")
    os.replace(out / "manifest.jsonl.tmp", out / "manifest.jsonl")
    return out


def _init_worker():
    import torch

    torch.set_num_threads(1)
