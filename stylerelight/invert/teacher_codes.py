"""Teacher codes for encoder training: each real training image's W+ code found by the encoder
and K refinement steps (`sr.invert(..., encoder=E, steps=K)`), stored beside the images.

An encoder trained on real images sees only image losses, whose gradient through the generator is
poorly conditioned for an image the generator cannot reproduce exactly; its latent loss on
generator samples (known ws) is what it learns fastest from. The refined codes give real images
such a target: a latent loss on the code that the refinement reaches from the encoder's own
start (distillation of the optimiser into the encoder).

Format: `DATA/teacher_codes.npy`, float16 [N, num_ws, w_dim], row i for image i in
`load_image_folder(DATA)` order, plus `DATA/teacher_codes.json` naming the generator, encoder
and steps. Work is done in chunks under `DATA/teacher_codes/` (resumable; processes share
the chunks by index). CLI: `stylerelight train teacher-codes`.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

CODES, INFO, CHUNKS = "teacher_codes.npy", "teacher_codes.json", "teacher_codes"


def compute_teacher_codes(G, E, data_dir, steps: int = 20, chunk: int = 50, rank: int = 0, world: int = 1,
                          progress: bool = True) -> Path | None:
    """Refine every image of `data_dir`; writes chunks, and (rank 0, once all exist) the codes file.
    Returns the codes file's path when it is complete, else None (other processes still working)."""
    from tqdm import tqdm

    from ..gan.io import generator_hash
    from ..gan.training import load_image_folder
    from .encoder_io import encoder_hash
    from .optimize import invert

    root = Path(data_dir)
    images = load_image_folder(root, G.img_resolution)
    parts = root / CHUNKS
    parts.mkdir(exist_ok=True)
    meta = {"images": len(images), "steps": steps, "chunk": chunk, "generator": generator_hash(G),
            "encoder": encoder_hash(E)}
    if (parts / "meta.json").exists():
        old = json.loads((parts / "meta.json").read_text())
        if old != meta:
            diff = ", ".join(f"{k} {old.get(k)} -> {v}" for k, v in meta.items() if old.get(k) != v)
            raise ValueError(f"{parts} holds chunks of another run ({diff}); delete it or repeat that run's settings")
    else:
        tmp = parts / f"meta.{rank}.tmp"
        tmp.write_text(json.dumps(meta) + "\n")
        tmp.replace(parts / "meta.json")
    n_chunks = (len(images) + chunk - 1) // chunk
    mine = [c for c in range(n_chunks) if c % world == rank and not (parts / f"{c:05d}.npy").exists()]
    for c in tqdm(mine, desc=f"teacher codes ({steps} steps)", unit="chunk", disable=not progress):
        x = images[c * chunk:(c + 1) * chunk].float() / 127.5 - 1
        ws = invert(G, x, steps=steps, encoder=E, progress=False)
        tmp = parts / f"{c:05d}.tmp.npy"
        np.save(tmp, ws.detach().cpu().numpy().astype(np.float16))
        tmp.replace(parts / f"{c:05d}.npy")
    if rank != 0 or not all((parts / f"{c:05d}.npy").exists() for c in range(n_chunks)):
        return None
    codes = np.concatenate([np.load(parts / f"{c:05d}.npy") for c in range(n_chunks)])
    tmp = root / (CODES + ".tmp.npy")
    np.save(tmp, codes)
    tmp.replace(root / CODES)
    (root / INFO).write_text(json.dumps({k: meta[k] for k in ("images", "steps", "generator", "encoder")},
                                        indent=1) + "\n")
    return root / CODES


def load_teacher_codes(data_dir, G, n_images: int) -> torch.Tensor:
    """The codes of `data_dir` as float16 [N, num_ws, w_dim], checked against the generator and the
    image count (one-line errors)."""
    from ..gan.io import generator_hash

    root = Path(data_dir)
    if not (root / CODES).exists():
        raise FileNotFoundError(f"{root / CODES} not found; compute it with `stylerelight train teacher-codes "
                                f"--data {root}` or set teacher_weight and code_samples to 0")
    info = json.loads((root / INFO).read_text())
    if info.get("generator") != generator_hash(G):
        raise ValueError(f"{root / CODES} belongs to generator {info.get('generator')}, not {generator_hash(G)}; "
                         "recompute it for this generator")
    codes = torch.from_numpy(np.load(root / CODES))
    if codes.shape != (n_images, G.num_ws, G.w_dim):
        raise ValueError(f"{root / CODES} is {list(codes.shape)}, expected {[n_images, G.num_ws, G.w_dim]}; "
                         "recompute it for this dataset")
    return codes
