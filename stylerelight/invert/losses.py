"""Image distances for inversion: LPIPS (VGG) when its backbone weights are available offline,
else the documented fallback, multi-scale SSIM plus L1 (said once)."""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

_said: set[str] = set()


def _say_once(msg: str) -> None:
    if msg not in _said:
        _said.add(msg)
        import sys

        print(f"stylerelight: {msg}", file=sys.stderr)


def _gaussian_window(size: int = 7, sigma: float = 1.5, device=None) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, window: int = 7) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004, Gaussian window) for NCHW tensors; [N]."""
    c = a.shape[1]
    win = _gaussian_window(min(window, a.shape[-1]), device=a.device).expand(c, 1, -1, -1)

    def filt(x):
        return F.conv2d(x, win, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_a, mu_b = filt(a), filt(b)
    saa, sbb, sab = filt(a * a) - mu_a**2, filt(b * b) - mu_b**2, filt(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean(dim=[1, 2, 3])


def ms_ssim_l1(a: torch.Tensor, b: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """The offline fallback: sum over scales of (1 - SSIM) plus L1; [N]."""
    loss = torch.zeros(a.shape[0], device=a.device)
    for s in range(scales):
        if s:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        if a.shape[-1] < 8:
            break
        loss = loss + (1 - ssim(a, b))
    return loss + (a - b).abs().mean(dim=[1, 2, 3])


def lpips_weights_path() -> Path | None:
    """The VGG16 backbone that lpips needs, if it is in the torch hub cache."""
    import torch

    ckpt = Path(torch.hub.get_dir(), "checkpoints")
    hits = sorted(ckpt.glob("vgg16-*.pth")) if ckpt.is_dir() else []
    return hits[0] if hits else None


class PerceptualLoss(torch.nn.Module):
    """LPIPS-VGG at up to 256^2 when the VGG16 weights are in the torch hub cache, else MS-SSIM + L1;
    kind "l2" is zero (the caller's pixel term alone)."""

    def __init__(self, kind: str = "auto"):
        super().__init__()
        self.kind = kind
        self.lpips = None
        if kind in ("auto", "lpips"):
            if lpips_weights_path() is not None:
                import lpips

                self.lpips = lpips.LPIPS(net="vgg", verbose=False).eval().requires_grad_(False)
                self.kind = "lpips"
            elif kind == "lpips":
                raise FileNotFoundError("LPIPS needs VGG16 weights in $TORCH_HOME/hub/checkpoints "
                                        "(vgg16-397923af.pth); see `stylerelight doctor`")
            else:
                _say_once("VGG16 weights for LPIPS not found offline; inversion uses the fallback loss "
                          "(multi-scale SSIM + L1). See `stylerelight doctor`.")
                self.kind = "msssim"

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        if self.kind == "l2":
            return a.new_zeros(a.shape[0])
        if self.lpips is not None:
            if a.shape[-1] > 256:
                a, b = F.interpolate(a, size=256, mode="area"), F.interpolate(b, size=256, mode="area")
            elif a.shape[-1] < 64:
                a, b = (F.interpolate(x, size=64, mode="bilinear", align_corners=False) for x in (a, b))
            return self.lpips(a, b).reshape(-1)
        return ms_ssim_l1(a, b)
