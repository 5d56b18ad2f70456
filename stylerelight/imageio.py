"""Image conversions and files: the one place where generator tensors become pixels."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


def gan_to_uint8(img: torch.Tensor) -> np.ndarray:
    """Generator output [N, C, H, W] in about [-1, 1] -> uint8 [N, H, W, C] (NVlabs' rounding)."""
    x = (img.detach().to(torch.float32).cpu() * 127.5 + 128).clamp(0, 255).to(torch.uint8)
    return x.permute(0, 2, 3, 1).numpy()


def uint8_to_gan(img: np.ndarray) -> torch.Tensor:
    """uint8 [H, W, 3] or [N, H, W, 3] -> float32 [N, 3, H, W] in [-1, 1]."""
    a = torch.from_numpy(np.array(img, dtype=np.float32))  # a copy: inputs may be read-only
    if a.ndim == 3:
        a = a[None]
    return (a.permute(0, 3, 1, 2) / 127.5) - 1


def make_grid(images: np.ndarray, cols: int | None = None, pad: int = 2,
              background: int = 255) -> np.ndarray:
    """Tile uint8 [N, H, W, C] into one image, `cols` per row (default: about square)."""
    n, h, w, c = images.shape
    cols = cols or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    grid = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, c), background, np.uint8)
    for i, im in enumerate(images):
        r, q = divmod(i, cols)
        y, x = pad + r * (h + pad), pad + q * (w + pad)
        grid[y:y + h, x:x + w] = im
    return grid


def check_writable(path: str | os.PathLike, force: bool) -> Path:
    """Refuse to overwrite an existing file unless `force`; return the path."""
    path = Path(path)
    if path.exists() and not force:
        raise FileExistsError(f"{path} exists; pass --force to overwrite it")
    return path


def save_image(image: np.ndarray, path: str | os.PathLike, force: bool = False) -> Path:
    """Write uint8 [H, W, C] atomically (PNG/JPEG by extension)."""
    path = check_writable(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.tmp{os.getpid()}{path.suffix}")
    Image.fromarray(image.squeeze()).save(tmp)
    os.replace(tmp, path)
    return path
