"""Latent files: one format for `invert`, `edit` and the API.

{"format": "stylerelight-latent", "version": 1, "ws": [N, num_ws, w_dim], "noise": {layer: [N, 1, r, r]}
or None, "generator": {"hash", "num_ws", "w_dim", "img_resolution"}, "alignment": {"quad", "landmarks",
"input_size"} or None, "reconstruction": dict or None, "info": {...}}; plain tensors and containers
only, so `torch.load(weights_only=True)` reads it. A latent is refused for another generator.
Files written before this format ({"ws", "noise", ...} without "format") still load, unchecked.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from ..gan.io import CheckpointError, generator_hash, read_torch_file
from ..runs import atomic_torch_save

FORMAT = "stylerelight-latent"


@dataclass
class Latent:
    ws: torch.Tensor                       # [N, num_ws, w_dim]
    noise: dict | None = None              # per-layer noise maps [N, 1, r, r]; None: the generator's const
    generator: dict = field(default_factory=dict)  # hash and sizes of the generator it belongs to
    alignment: dict | None = None          # quad [4, 2], landmarks [68, 2], input_size (H, W)
    reconstruction: dict | None = None     # the source reconstruction's parameters, when made
    info: dict = field(default_factory=dict)

    @classmethod
    def for_generator(cls, G, ws: torch.Tensor, **kw) -> Latent:
        gen = {"hash": generator_hash(G), "num_ws": G.num_ws, "w_dim": G.w_dim, "img_resolution": G.img_resolution}
        return cls(ws=ws.detach().cpu(), generator=gen, **kw)

    def check(self, G) -> None:
        """One-line refusal when this latent belongs to another generator."""
        if tuple(self.ws.shape[1:]) != (G.num_ws, G.w_dim):
            raise CheckpointError(f"the latent holds {self.ws.shape[1]} x {self.ws.shape[2]} ws but the generator "
                                  f"takes {G.num_ws} x {G.w_dim}; invert the photo with this generator")
        want = self.generator.get("hash")
        got = generator_hash(G) if want else None
        if want and want != got:
            raise CheckpointError(f"the latent belongs to generator {want}, not this one ({got}); "
                                  "use that generator or invert the photo again")


def alignment_dict(aligned) -> dict:
    """The parts of an `align.AlignedFace` needed to paste an edit back."""
    return {"quad": torch.from_numpy(np.asarray(aligned.quad, np.float64)),
            "landmarks": torch.from_numpy(np.asarray(aligned.landmarks, np.float64)),
            "input_size": [int(v) for v in aligned.input_size]}


def save_latent(lat: Latent, path: str | os.PathLike, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    noise = {k: v.detach().cpu() for k, v in lat.noise.items()} if lat.noise else None
    atomic_torch_save({"format": FORMAT, "version": 1, "ws": lat.ws.detach().cpu(), "noise": noise,
                       "generator": dict(lat.generator), "alignment": lat.alignment,
                       "reconstruction": lat.reconstruction, "info": dict(lat.info)}, path)
    return path


def load_latent(path: str | os.PathLike, G=None) -> Latent:
    """Read a latent file (checked against G when given)."""
    path = Path(path)
    obj = read_torch_file(path, "a latent (.pt) from `stylerelight invert`")
    try:
        ws = obj["ws"]
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or not torch.isfinite(ws).all():
            raise ValueError("ws is not a finite [N, num_ws, w_dim] tensor")
        noise = obj.get("noise")
        if noise is not None and not (isinstance(noise, dict) and all(
                isinstance(v, torch.Tensor) and v.ndim == 4 and v.shape[0] == ws.shape[0] for v in noise.values())):
            raise ValueError("noise maps are not [N, 1, r, r] tensors")
        if obj.get("format") == FORMAT:
            lat = Latent(ws=ws.float(), noise=noise, generator=dict(obj.get("generator") or {}),
                         alignment=obj.get("alignment"), reconstruction=obj.get("reconstruction"),
                         info=dict(obj.get("info") or {}))
        else:  # the earlier `invert` output
            info = {k: obj[k] for k in ("psnr", "steps", "loss_kind", "source") if k in obj}
            lat = Latent(ws=ws.float(), noise=noise, info=info)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise CheckpointError(f"{path}: damaged latent file ({str(e).splitlines()[0] if str(e) else e!r})") from None
    if G is not None:
        lat.check(G)
    return lat
