"""StyleGAN2 building blocks with equalized learning rate.

Weights are stored unscaled (N(0, 1) at init) and multiplied by their He gain at run time, as in
the original StyleGAN2; the parameter names match NVlabs' so their state dicts map one to one.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

import stylegan2_ops as ops


def normalize_2nd_moment(x: torch.Tensor, dim: int = 1, eps: float = 1e-8) -> torch.Tensor:
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


class FullyConnected(nn.Module):
    def __init__(self, in_features, out_features, bias=True, activation="linear",
                 lr_multiplier=1.0, bias_init=0.0):
        super().__init__()
        self.activation = activation
        self.weight = nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = nn.Parameter(torch.full([out_features], float(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / math.sqrt(in_features)
        self.bias_gain = lr_multiplier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        w = self.weight * self.weight_gain
        b = self.bias * self.bias_gain if self.bias is not None else None
        if self.activation == "linear" and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return ops.bias_act(x.matmul(w.t()), b, act=self.activation)


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1):
    """Correlate x with w (3x3 or 1x1), upsampling or downsampling through FIR filter f.

    up=2: a stride-2 transposed convolution followed by the filter (the zero-inserting
    upsample and the convolution fused); down=2: filter, then a stride-2 convolution.
    """
    kh, kw = w.shape[-2:]
    if up > 1:
        fw = f.shape[-1]
        p = padding + (fw + up - 1) // 2 - (kw - 1), padding + (fw - up) // 2 - (kw - up)
        if groups == 1:
            wt = w.transpose(0, 1)
        else:
            o, i = w.shape[:2]
            wt = w.reshape(groups, o // groups, i, kh, kw).transpose(1, 2).reshape(-1, o // groups, kh, kw)
        x = F.conv_transpose2d(x, wt, stride=up, groups=groups)
        return ops.upfirdn2d(x, f, padding=[p[0], p[1], p[0], p[1]], gain=up * up)
    if down > 1:
        fw = f.shape[-1]
        p0, p1 = padding + (fw - down + 1) // 2, padding + (fw - down) // 2
        if kw == 1:  # 1x1: downsample first, then the cheap convolution
            x = ops.upfirdn2d(x, f, down=down, padding=[p0, p1, p0, p1])
            return F.conv2d(x, w, groups=groups)
        x = ops.upfirdn2d(x, f, padding=[p0, p1, p0, p1])
        return F.conv2d(x, w, stride=down, groups=groups)
    return F.conv2d(x, w, padding=padding, groups=groups)


def modulated_conv2d(x, weight, styles, noise=None, up=1, padding=0, resample_filter=None,
                     demodulate=True, fused=None):
    """Modulate the weight by per-sample styles, demodulate, convolve.

    fused=True builds one weight per sample and runs a grouped convolution (as the originals do
    at inference); fused=False scales activations before and after one shared convolution,
    which is the same function and cheaper to differentiate (training). None: fused unless
    gradients are being recorded.
    """
    n, cin = x.shape[:2]
    if fused is None:
        fused = not torch.is_grad_enabled()
    w = None
    if demodulate or fused:
        w = weight.unsqueeze(0) * styles.reshape(n, 1, -1, 1, 1)
    dcoefs = (w.square().sum(dim=[2, 3, 4]) + 1e-8).rsqrt() if demodulate else None
    if fused:
        if demodulate:
            w = w * dcoefs.reshape(n, -1, 1, 1, 1)
        x = conv2d_resample(x.reshape(1, -1, *x.shape[2:]), w.reshape(-1, cin, *w.shape[3:]),
                            f=resample_filter, up=up, padding=padding, groups=n)
        x = x.reshape(n, -1, *x.shape[2:])
    else:
        x = x * styles.reshape(n, -1, 1, 1)
        x = conv2d_resample(x, weight, f=resample_filter, up=up, padding=padding)
        if demodulate:
            x = x * dcoefs.reshape(n, -1, 1, 1)
    if noise is not None:
        x = x + noise
    return x


class SynthesisLayer(nn.Module):
    """Modulated 3x3 conv (optionally upsampling x2), noise, bias, leaky ReLU."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, up=1, conv_clamp=None,
                 resample_filter=None):
        super().__init__()
        self.resolution, self.up, self.conv_clamp = resolution, up, conv_clamp
        self.register_buffer("resample_filter", resample_filter, persistent=False)
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.register_buffer("noise_const", torch.randn([resolution, resolution]))
        self.noise_strength = nn.Parameter(torch.zeros([]))

    def forward(self, x, w, noise_mode="const", gain=1.0, noise_input=None):
        """noise_input [N, 1, res, res], when given, replaces the noise that noise_mode picks."""
        styles = self.affine(w)
        noise = None
        if noise_input is not None:
            noise = noise_input * self.noise_strength
        elif noise_mode == "random":
            noise = torch.randn([x.shape[0], 1, self.resolution, self.resolution],
                                device=x.device, dtype=x.dtype) * self.noise_strength
        elif noise_mode == "const":
            noise = self.noise_const * self.noise_strength
        x = modulated_conv2d(x, self.weight, styles, noise=noise, up=self.up, padding=1,
                             resample_filter=self.resample_filter)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, act="lrelu", gain=math.sqrt(2) * gain, clamp=clamp)


class ToRGB(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = FullyConnected(w_dim, in_channels, bias_init=1)
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, 1, 1]))
        self.bias = nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / math.sqrt(in_channels)

    def forward(self, x, w):
        styles = self.affine(w) * self.weight_gain
        x = modulated_conv2d(x, self.weight, styles, demodulate=False)
        return ops.bias_act(x, self.bias, clamp=self.conv_clamp)


class Conv2d(nn.Module):
    """Equalized-lr convolution with optional FIR down/upsampling and fused bias_act."""

    def __init__(self, in_channels, out_channels, kernel_size, bias=True, activation="linear",
                 up=1, down=1, conv_clamp=None, resample_filter=None):
        super().__init__()
        self.activation, self.up, self.down, self.conv_clamp = activation, up, down, conv_clamp
        self.register_buffer("resample_filter", resample_filter, persistent=False)
        self.padding = kernel_size // 2
        self.weight_gain = 1 / math.sqrt(in_channels * kernel_size**2)
        self.act_gain = ops.activation_funcs[activation].def_gain
        self.weight = nn.Parameter(torch.randn([out_channels, in_channels, kernel_size, kernel_size]))
        self.bias = nn.Parameter(torch.zeros([out_channels])) if bias else None

    def forward(self, x, gain=1.0):
        x = conv2d_resample(x, self.weight * self.weight_gain, f=self.resample_filter, up=self.up,
                            down=self.down, padding=self.padding)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return ops.bias_act(x, self.bias, act=self.activation, gain=self.act_gain * gain,
                            clamp=clamp)
