"""Fused bias + activation + gain + clamp.

`bias_act` has the semantics of NVlabs' op of the same name, so code written for it runs
unchanged. `_bias_act_ref` is the readable twin of the compiled kernel in `csrc/`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from . import _build


@dataclass(frozen=True)
class ActSpec:
    func: object
    def_alpha: float
    def_gain: float
    cuda_idx: int  # index understood by the compiled kernel (csrc/ops_math.h)


_SQRT2 = math.sqrt(2.0)

activation_funcs: dict[str, ActSpec] = {
    "linear": ActSpec(lambda x, alpha: x, 0.0, 1.0, 1),
    "relu": ActSpec(lambda x, alpha: F.relu(x), 0.0, _SQRT2, 2),
    "lrelu": ActSpec(lambda x, alpha: F.leaky_relu(x, alpha), 0.2, _SQRT2, 3),
    "tanh": ActSpec(lambda x, alpha: torch.tanh(x), 0.0, 1.0, 4),
    "sigmoid": ActSpec(lambda x, alpha: torch.sigmoid(x), 0.0, 1.0, 5),
    "elu": ActSpec(lambda x, alpha: F.elu(x), 0.0, 1.0, 6),
    "selu": ActSpec(lambda x, alpha: F.selu(x), 0.0, 1.0, 7),
    "softplus": ActSpec(lambda x, alpha: F.softplus(x), 0.0, 1.0, 8),
    "swish": ActSpec(lambda x, alpha: torch.sigmoid(x) * x, 0.0, _SQRT2, 9),
}


def _resolve(act: str, alpha, gain, clamp) -> tuple[ActSpec, float, float, float]:
    if act not in activation_funcs:
        raise ValueError(f"unknown activation {act!r}; expected one of {sorted(activation_funcs)}")
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    clamp = float(clamp if clamp is not None else -1)
    return spec, alpha, gain, clamp


def bias_act(
    x: torch.Tensor,
    b: torch.Tensor | None = None,
    dim: int = 1,
    act: str = "linear",
    alpha: float | None = None,
    gain: float | None = None,
    clamp: float | None = None,
    impl: str | None = None,
) -> torch.Tensor:
    """y = clamp(act(x + b) * gain, -clamp, clamp), with `b` broadcast along `dim`.

    impl: "ref" (pure PyTorch), "compiled" (C++/CUDA kernel), None (compiled if it builds).
    """
    if b is not None:
        if b.ndim != 1 or b.shape[0] != x.shape[dim]:
            raise ValueError(f"bias must have shape [{x.shape[dim]}], got {list(b.shape)}")
    if _build.choose_impl(impl, x) == "compiled":
        return _bias_act_compiled(x, b, dim, act, alpha, gain, clamp)
    return _bias_act_ref(x, b, dim, act, alpha, gain, clamp)


def _bias_act_ref(x, b=None, dim=1, act="linear", alpha=None, gain=None, clamp=None):
    """Readable twin of the kernel: add bias, activate, scale, clamp."""
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    if b is not None:
        shape = [1] * x.ndim
        shape[dim] = -1
        x = x + b.reshape(shape)
    x = spec.func(x, alpha)
    if gain != 1:
        x = x * gain
    if clamp >= 0:
        x = x.clamp(-clamp, clamp)
    return x


# ---------------------------------------------------------------------------------------------
# Compiled path. Three kernel modes share one source: 0 = forward, 1 = dx from dy, 2 = the
# derivative of mode 1 with respect to x (for double backward: R1, path-length regularisation).


def _bias_act_compiled(x, b, dim, act, alpha, gain, clamp):
    spec, alpha, gain, clamp = _resolve(act, alpha, gain, clamp)
    dim = dim % x.ndim
    b = torch.empty([0], device=x.device) if b is None else b
    b = b.to(dtype=x.dtype)
    cfg = (dim, spec.cuda_idx, alpha, gain, clamp)
    if not (torch.is_grad_enabled() and (x.requires_grad or b.requires_grad)):
        x = x.contiguous(memory_format=_memory_format(x))
        empty = x.new_empty([0])
        return _kernel(0, x, b.contiguous(), empty, empty, cfg)
    return _BiasAct.apply(x, b, cfg)


def _kernel(mode, x, b, dy, y, cfg):
    dim, act_idx, alpha, gain, clamp = cfg
    ext = _build.load_extension()
    return ext.bias_act(x, b, dy, y, mode, dim, act_idx, alpha, gain, clamp)


def _reduce_bias(dx, b, dim):
    if b.numel() == 0:
        return None
    dims = [i for i in range(dx.ndim) if i != dim]
    return dx.sum(dims) if dims else dx


class _BiasAct(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg):
        x = x.contiguous(memory_format=_memory_format(x))
        b = b.contiguous()
        empty = x.new_empty([0])
        y = _kernel(0, x, b, empty, empty, cfg)
        ctx.cfg = cfg
        ctx.save_for_backward(x, b, y if cfg[4] >= 0 else empty)
        return y

    @staticmethod
    def backward(ctx, dy):
        x, b, y = ctx.saved_tensors
        dx = _BiasActGrad.apply(dy, x, b, y, ctx.cfg)
        db = _reduce_bias(dx, b, ctx.cfg[0]) if ctx.needs_input_grad[1] else None
        return dx, db, None


class _BiasActGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx, dy, x, b, y, cfg):
        dy = dy.contiguous(memory_format=_memory_format(x))
        dx = _kernel(1, x, b, dy, y, cfg)
        ctx.cfg = cfg
        ctx.save_for_backward(dy, x, b, y)
        return dx

    @staticmethod
    def backward(ctx, d_dx):
        dy, x, b, y = ctx.saved_tensors
        cfg = ctx.cfg
        d_dy = _BiasActGrad.apply(d_dx, x, b, y, cfg) if ctx.needs_input_grad[0] else None
        d_x = d_b = None
        if ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            d_x = _kernel(2, x, b, d_dx.contiguous(memory_format=_memory_format(x)) * dy, y, cfg)
            d_b = _reduce_bias(d_x, b, cfg[0]) if ctx.needs_input_grad[2] else None
        return d_dy, d_x, d_b, None, None


def _memory_format(x):
    if x.ndim == 4 and x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format
