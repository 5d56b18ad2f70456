"""Upsample, FIR-filter, downsample (upfirdn2d) and its helpers.

Same semantics as NVlabs' op of the same name. `_upfirdn2d_ref` is the readable twin of the
polyphase kernel in `csrc/`: it inserts zeros and runs a full convolution, which the kernel
never does (it skips the zero taps and the outputs that downsampling drops).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _build


def _parse_scaling(scaling) -> tuple[int, int]:
    if isinstance(scaling, int):
        scaling = [scaling, scaling]
    sx, sy = (int(s) for s in scaling)
    if sx < 1 or sy < 1:
        raise ValueError(f"up/down factors must be >= 1, got {scaling}")
    return sx, sy


def _parse_padding(padding) -> tuple[int, int, int, int]:
    if isinstance(padding, int):
        padding = [padding, padding]
    padding = [int(p) for p in padding]
    if len(padding) == 2:
        px, py = padding
        padding = [px, px, py, py]
    if len(padding) != 4:
        raise ValueError(f"padding must be an int, [x, y] or [x0, x1, y0, y1], got {padding}")
    return tuple(padding)


def _get_filter_size(f) -> tuple[int, int]:
    if f is None:
        return 1, 1
    if f.ndim not in (1, 2):
        raise ValueError("filter must be 1-D (separable) or 2-D")
    return f.shape[-1], f.shape[0]


def setup_filter(f, device=torch.device("cpu"), normalize=True, flip_filter=False, gain=1,
                 separable=None) -> torch.Tensor:
    """Turn a list of taps into the float32 filter tensor the ops expect.

    1-D filters shorter than 8 taps become their 2-D outer product (faster than two passes).
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    if f.ndim == 0:
        f = f[None]
    if f.ndim not in (1, 2) or f.numel() == 0:
        raise ValueError("filter must be a non-empty scalar, 1-D or 2-D")
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    if f.ndim != (1 if separable else 2):
        raise ValueError("a 2-D filter cannot be separable")
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


def upfirdn2d(x: torch.Tensor, f: torch.Tensor | None, up=1, down=1, padding=0,
              flip_filter: bool = False, gain: float = 1, impl: str | None = None) -> torch.Tensor:
    """Pad, upsample by zero insertion, convolve with `f`, keep every `down`-th pixel.

    x: [N, C, H, W]; f: 1-D (separable) or 2-D, from `setup_filter`; padding is in upsampled
    pixels and may be negative (a crop).
    """
    if x.ndim != 4:
        raise ValueError(f"x must be [N, C, H, W], got shape {list(x.shape)}")
    if f is None:
        f = torch.ones([1, 1], dtype=torch.float32, device=x.device)
    if _build.choose_impl(impl, x) == "compiled":
        return _upfirdn2d_compiled(x, f, up, down, padding, flip_filter, gain)
    return _upfirdn2d_ref(x, f, up, down, padding, flip_filter, gain)


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1):
    """Readable twin: zero insertion, pad/crop, depthwise convolution, decimation."""
    n, c, h, w = x.shape
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)

    if upx > 1 or upy > 1:
        z = x.new_zeros([n, c, h * upy, w * upx])
        z[:, :, ::upy, ::upx] = x
        x = z
    x = F.pad(x, [max(px0, 0), max(px1, 0), max(py0, 0), max(py1, 0)])
    x = x[:, :, max(-py0, 0): x.shape[2] - max(-py1, 0), max(-px0, 0): x.shape[3] - max(-px1, 0)]

    f = (f * (gain ** (f.ndim / 2))).to(x.dtype)
    if not flip_filter:  # conv2d correlates; flipping the filter makes it a convolution
        f = f.flip(list(range(f.ndim)))
    if f.ndim == 2:
        x = F.conv2d(x, f[None, None].expand(c, 1, *f.shape), groups=c)
    else:
        x = F.conv2d(x, f[None, None, None, :].expand(c, 1, 1, -1), groups=c)
        x = F.conv2d(x, f[None, None, :, None].expand(c, 1, -1, 1), groups=c)
    return x[:, :, ::downy, ::downx]


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter with `f`, padding so that the output keeps the input size (for odd filters)."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Upsample by `up` with filter `f`; output size is `up` times the input's."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw + upx - 1) // 2, px1 + (fw - upx) // 2,
         py0 + (fh + upy - 1) // 2, py1 + (fh - upy) // 2]
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy,
                     impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl=None):
    """Filter with `f` and downsample by `down`."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + (fw - downx + 1) // 2, px1 + (fw - downx) // 2,
         py0 + (fh - downy + 1) // 2, py1 + (fh - downy) // 2]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ---------------------------------------------------------------------------------------------
# Compiled path. upfirdn2d is linear in x, so its gradient is another upfirdn2d (up and down
# swapped, filter flipped); the backward of that is again an upfirdn2d: any order works.


def _upfirdn2d_compiled(x, f, up, down, padding, flip_filter, gain):
    upx, upy = _parse_scaling(up)
    downx, downy = _parse_scaling(down)
    pad = _parse_padding(padding)
    f = f.to(device=x.device, dtype=torch.float64 if x.dtype == torch.float64 else torch.float32)
    if f.ndim == 2:
        f = _as_separable(f)
    if isinstance(f, tuple) or f.ndim == 1:  # separable: a horizontal pass, then a vertical one
        fy, fx = f if isinstance(f, tuple) else (f, f)
        g = gain ** 0.5
        x = _apply(x, fx[None, :] * g, (upx, 1, downx, 1, pad[0], pad[1], 0, 0, flip_filter))
        return _apply(x, fy[:, None] * g, (1, upy, 1, downy, 0, 0, pad[2], pad[3], flip_filter))
    return _apply(x, f * gain, (upx, upy, downx, downy, *pad, flip_filter))


_separable_cache: dict = {}


def _as_separable(f: torch.Tensor):
    """(column, row) if the 2-D filter is an outer product (as [1,3,3,1] from setup_filter is),
    else f. Two 1-D passes cost fh + fw taps per output instead of fh * fw. Cached per tensor
    version, since networks pass the same filter buffer on every call."""
    if min(f.shape) == 1:
        return f
    key = (f.data_ptr(), f._version, tuple(f.shape), f.dtype, f.device)
    hit = _separable_cache.get(key)
    if hit is not None and hit[0] is f:
        return hit[1]
    out = _split(f)
    if len(_separable_cache) > 256:
        _separable_cache.clear()
    _separable_cache[key] = (f, out)
    return out


def _split(f: torch.Tensor):
    f64 = f.double()
    i, j = divmod(int(f64.abs().argmax()), f.shape[1])
    col, row = f64[:, j], f64[i, :] / f64[i, j]
    if torch.equal(torch.outer(col, row).to(f.dtype), f):
        return col.to(f.dtype), row.to(f.dtype)
    return f


def _apply(x, f, cfg):
    """The kernel directly when no gradient is wanted, else through the autograd Function."""
    if torch.is_grad_enabled() and x.requires_grad:
        return _UpFirDn2d.apply(x, f, cfg)
    ext = _build.load_extension()
    return ext.upfirdn2d(x, f, *cfg)


class _UpFirDn2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, cfg):
        upx, upy, downx, downy, px0, px1, py0, py1, flip = cfg
        ctx.cfg = cfg
        ctx.in_shape = x.shape
        ctx.save_for_backward(f)
        ext = _build.load_extension()
        return ext.upfirdn2d(x, f, upx, upy, downx, downy, px0, px1, py0, py1, flip)

    @staticmethod
    def backward(ctx, dy):
        (f,) = ctx.saved_tensors
        upx, upy, downx, downy, px0, px1, py0, py1, flip = ctx.cfg
        _, _, ih, iw = ctx.in_shape
        _, _, oh, ow = dy.shape
        fh, fw = f.shape
        cfg = (downx, downy, upx, upy,
               fw - px0 - 1, iw * upx - ow * downx + px0 - upx + 1,
               fh - py0 - 1, ih * upy - oh * downy + py0 - upy + 1,
               not flip)
        return _UpFirDn2d.apply(dy, f, cfg), None, None
