"""Sliced Wasserstein distance between image sets (Karras et al. 2018, ProGAN's SWD).

Needs no pretrained network, so it runs offline: 7x7 neighbourhoods are sampled from each
level of a Laplacian pyramid, normalised per channel, and the 1-D Wasserstein distance of
their random projections is averaged. Report it next to its real-vs-real value (two disjoint
real sets of the same size), which is the floor a perfect generator would reach.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_GAUSS = torch.tensor([1.0, 4.0, 6.0, 4.0, 1.0]) / 16


def _blur(x: torch.Tensor) -> torch.Tensor:
    k = (_GAUSS[:, None] * _GAUSS[None, :]).to(x)[None, None].expand(x.shape[1], 1, 5, 5)
    return F.conv2d(F.pad(x, [2, 2, 2, 2], mode="reflect"), k, groups=x.shape[1])


def laplacian_pyramid(x: torch.Tensor, min_size: int = 16) -> list[torch.Tensor]:
    levels = []
    while x.shape[-1] > min_size:
        down = F.avg_pool2d(_blur(x), 2)
        up = F.interpolate(down, scale_factor=2, mode="bilinear", align_corners=False)
        levels.append(x - up)
        x = down
    levels.append(x)
    return levels


def _descriptors(level: torch.Tensor, per_image: int, gen: torch.Generator) -> torch.Tensor:
    n, c, h, w = level.shape
    s = 3  # 7x7 neighbourhoods
    ys = torch.randint(s, h - s, [n, per_image], generator=gen)
    xs = torch.randint(s, w - s, [n, per_image], generator=gen)
    patches = F.unfold(level, 7)  # [n, c*49, (h-6)*(w-6)]
    idx = (ys - s) * (w - 6) + (xs - s)
    d = torch.gather(patches, 2, idx[:, None, :].expand(-1, patches.shape[1], -1))
    return d.permute(0, 2, 1).reshape(-1, c * 49)


def _normalise(d: torch.Tensor) -> torch.Tensor:
    return (d - d.mean(0, keepdim=True)) / d.std(0, keepdim=True).clamp_min(1e-8)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, per_image: int = 64, projections: int = 128,
                       repeats: int = 4, seed: int = 0) -> list[float]:
    """SWD per pyramid level (fine to coarse) between image sets a and b ([N, 3, H, W] in
    [-1, 1], same N), x 1e3 as customary."""
    if a.shape != b.shape:
        raise ValueError(f"image sets must have the same shape, got {list(a.shape)} and {list(b.shape)}")
    gen = torch.Generator().manual_seed(seed)
    out = []
    for la, lb in zip(laplacian_pyramid(a.float()), laplacian_pyramid(b.float()), strict=True):
        da, db = _descriptors(la, per_image, gen), _descriptors(lb, per_image, gen)
        both = _normalise(torch.cat([da, db]))
        da, db = both[: len(da)], both[len(da):]
        dist = 0.0
        for _ in range(repeats):
            proj = torch.randn(da.shape[1], projections, generator=gen)
            proj = proj / proj.norm(dim=0, keepdim=True)
            pa, _ = torch.sort(da @ proj, dim=0)
            pb, _ = torch.sort(db @ proj, dim=0)
            dist += (pa - pb).abs().mean().item()
        out.append(dist / repeats * 1e3)
    return out
