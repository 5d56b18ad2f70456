"""W+ inversion: optimisation (encoders can seed it through `init`)."""

from .losses import PerceptualLoss, ms_ssim_l1, ssim
from .optimize import invert, psnr, w_stats

__all__ = ["PerceptualLoss", "invert", "ms_ssim_l1", "psnr", "ssim", "w_stats"]
