"""Fused StyleGAN2 ops: bias + activation, and upfirdn2d.

Each op has a readable pure-PyTorch reference (`impl="ref"`) and a compiled twin built from
one kernel source for CPU (C++/OpenMP) and CUDA (`impl="compiled"`). `impl=None` uses the
compiled one when it builds, else the reference with one warning. `STYLEGAN2_OPS=ref` forces
the reference.
"""

from ._build import status
from .bias_act import activation_funcs, bias_act
from .upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = ["activation_funcs", "bias_act", "downsample2d", "filter2d", "setup_filter",
           "status", "upfirdn2d", "upsample2d"]
