"""W+ inversion: optimisation, feed-forward encoders (pSp, e4e, compact), and both together.

The module is callable: `sr.invert(G, images, ...)` is `sr.invert.invert(G, images, ...)`, so the
function and the stage share one name without one hiding the other.
"""

import sys
import types

from .encoder_io import check_encoder_for, encoder_hash, load_encoder, save_encoder
from .encoders import CompactEncoder, Encoder, PSPEncoder
from .losses import PerceptualLoss, ms_ssim_l1, ssim
from .optimize import invert, psnr, w_stats

__all__ = ["CompactEncoder", "Encoder", "PSPEncoder", "PerceptualLoss", "check_encoder_for", "encoder_hash", "invert",
           "load_encoder", "ms_ssim_l1", "psnr", "save_encoder", "ssim", "w_stats"]


class _CallableStage(types.ModuleType):
    def __call__(self, *args, **kwargs):
        return invert(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableStage
