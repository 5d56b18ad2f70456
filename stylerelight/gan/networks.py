"""StyleGAN2 generator and discriminator (config F, skip generator, residual discriminator).

Numerically the same network as NVlabs' stylegan2-ada-pytorch and rosinality's
stylegan2-pytorch: the same weights and ws give the same image (see tests/test_reference.py and
docs/checkpoints.md).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn

import stylegan2_ops as ops

from .layers import Conv2d, FullyConnected, SynthesisLayer, ToRGB, normalize_2nd_moment


@dataclass
class GeneratorConfig:
    z_dim: int = 512
    w_dim: int = 512
    img_resolution: int = 1024
    img_channels: int = 3
    mapping_layers: int = 8
    mapping_lr_multiplier: float = 0.01
    channel_base: int = 32768
    channel_max: int = 512
    channels: dict[int, int] | None = None  # explicit {resolution: channels}, else base/max rule
    conv_clamp: float | None = None
    w_avg_beta: float = 0.995
    resample_filter: list[float] = field(default_factory=lambda: [1, 3, 3, 1])

    def __post_init__(self):
        r = self.img_resolution
        if r < 4 or r & (r - 1):
            raise ValueError(f"img_resolution must be a power of two >= 4, got {r}")
        if self.channels is not None:
            self.channels = {int(k): int(v) for k, v in self.channels.items()}

    def channels_at(self, res: int) -> int:
        if self.channels is not None:
            return self.channels[res]
        return min(self.channel_base // res, self.channel_max)

    def to_dict(self) -> dict:
        d = asdict(self)
        if d["channels"] is not None:
            d["channels"] = {str(k): v for k, v in d["channels"].items()}
        return d


def block_resolutions(img_resolution: int) -> list[int]:
    return [2**i for i in range(2, int(math.log2(img_resolution)) + 1)]


class MappingNetwork(nn.Module):
    """z -> w through an MLP (lr multiplier 0.01); broadcasts to num_ws; truncation toward w_avg."""

    def __init__(self, z_dim, w_dim, num_ws, num_layers=8, lr_multiplier=0.01, w_avg_beta=0.995):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        features = [z_dim] + [w_dim] * num_layers
        for i in range(num_layers):
            setattr(self, f"fc{i}", FullyConnected(features[i], features[i + 1], activation="lrelu",
                                                   lr_multiplier=lr_multiplier))
        self.register_buffer("w_avg", torch.zeros([w_dim]))

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None,
                update_w_avg=False):
        if z.ndim != 2 or z.shape[1] != self.z_dim:
            raise ValueError(f"z must be [N, {self.z_dim}], got {list(z.shape)}")
        x = normalize_2nd_moment(z.to(torch.float32))
        for i in range(self.num_layers):
            x = getattr(self, f"fc{i}")(x)
        if update_w_avg:
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        x = x.unsqueeze(1).repeat([1, self.num_ws, 1])
        if truncation_psi != 1:
            cut = self.num_ws if truncation_cutoff is None else truncation_cutoff
            x = torch.cat([self.w_avg.lerp(x[:, :cut], truncation_psi), x[:, cut:]], dim=1)
        return x


class SynthesisBlock(nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, conv_clamp,
                 resample_filter):
        super().__init__()
        self.in_channels, self.resolution = in_channels, resolution
        self.register_buffer("resample_filter", resample_filter, persistent=False)
        kw = dict(w_dim=w_dim, conv_clamp=conv_clamp, resample_filter=resample_filter)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, resolution=resolution, up=2, **kw)
        self.conv1 = SynthesisLayer(out_channels, out_channels, resolution=resolution, **kw)
        self.torgb = ToRGB(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_conv = 1 if in_channels == 0 else 2

    def forward(self, x, img, ws, noise_mode="const", noise=None):
        w = ws.unbind(dim=1)
        noise = noise or {}
        if self.in_channels == 0:
            x = self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1])
            x = self.conv1(x, w[0], noise_mode=noise_mode, noise_input=noise.get("conv1"))
        else:
            x = self.conv0(x, w[0], noise_mode=noise_mode, noise_input=noise.get("conv0"))
            x = self.conv1(x, w[1], noise_mode=noise_mode, noise_input=noise.get("conv1"))
        if img is not None:
            img = ops.upsample2d(img, self.resample_filter)
        y = self.torgb(x, w[self.num_conv])
        return x, (img + y if img is not None else y)


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> image [N, C, H, W] in about [-1, 1]."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = cfg.w_dim, cfg.img_resolution, cfg.img_channels
        self.block_resolutions = block_resolutions(cfg.img_resolution)
        f = ops.setup_filter(cfg.resample_filter)
        self.num_ws = 0
        for res in self.block_resolutions:
            cin = cfg.channels_at(res // 2) if res > 4 else 0
            block = SynthesisBlock(cin, cfg.channels_at(res), cfg.w_dim, res, cfg.img_channels,
                                   cfg.conv_clamp, f)
            self.num_ws += block.num_conv
            setattr(self, f"b{res}", block)
        self.num_ws += 1  # the last block's ToRGB

    def noise_shapes(self) -> dict[str, tuple[int, int]]:
        """{'b8.conv0': (8, 8), ...}: the per-layer noise inputs `forward(noise=...)` accepts."""
        out = {}
        for res in self.block_resolutions:
            for name in ("conv0", "conv1") if res > 4 else ("conv1",):
                out[f"b{res}.{name}"] = (res, res)
        return out

    def forward(self, ws, noise_mode="const", noise: dict | None = None):
        """noise: optional {'b<res>.conv<k>': [N, 1, res, res]} overriding noise_mode per layer."""
        if noise_mode not in ("const", "random", "none"):
            raise ValueError(f"noise_mode must be 'const', 'random' or 'none', got {noise_mode!r}")
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        ws = ws.to(torch.float32)
        x = img = None
        idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f"b{res}")
            block_noise = {k.split(".")[1]: v for k, v in (noise or {}).items() if k.startswith(f"b{res}.")}
            x, img = block(x, img, ws.narrow(1, idx, block.num_conv + 1), noise_mode=noise_mode, noise=block_noise)
            idx += block.num_conv
        return img


class Generator(nn.Module):
    """StyleGAN2 generator: `mapping` (z -> ws) then `synthesis` (ws -> image)."""

    def __init__(self, cfg: GeneratorConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or GeneratorConfig(**kwargs)
        self.cfg = cfg
        self.z_dim, self.w_dim = cfg.z_dim, cfg.w_dim
        self.img_resolution, self.img_channels = cfg.img_resolution, cfg.img_channels
        self.synthesis = SynthesisNetwork(cfg)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(cfg.z_dim, cfg.w_dim, self.num_ws, cfg.mapping_layers,
                                      cfg.mapping_lr_multiplier, cfg.w_avg_beta)

    def forward(self, z, c=None, truncation_psi=1.0, truncation_cutoff=None, noise_mode="const"):
        ws = self.mapping(z, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff)
        return self.synthesis(ws, noise_mode=noise_mode)

    def z_from_seed(self, seed: int, device="cpu") -> torch.Tensor:
        """The z NVlabs' generate.py draws for a seed (numpy RandomState), as [1, z_dim]."""
        z = np.random.RandomState(seed).randn(1, self.z_dim)
        return torch.from_numpy(z).to(device=device, dtype=torch.float32)


def style_mix(ws: torch.Tensor, ws2: torch.Tensor, prob: float, generator=None) -> torch.Tensor:
    """With probability `prob` per sample, replace ws from a random cutoff on with ws2."""
    n, num_ws, _ = ws.shape
    dev = ws.device
    cutoff = torch.randint(1, num_ws, [n], device=dev, generator=generator)
    use = torch.rand([n], device=dev, generator=generator) < prob
    cutoff = torch.where(use, cutoff, torch.full_like(cutoff, num_ws))
    mask = torch.arange(num_ws, device=dev)[None, :] >= cutoff[:, None]
    return torch.where(mask[:, :, None], ws2, ws)


@dataclass
class DiscriminatorConfig:
    img_resolution: int = 1024
    img_channels: int = 3
    channel_base: int = 32768
    channel_max: int = 512
    mbstd_group_size: int = 4
    conv_clamp: float | None = None
    resample_filter: list[float] = field(default_factory=lambda: [1, 3, 3, 1])

    def channels_at(self, res: int) -> int:
        return min(self.channel_base // res, self.channel_max)


class DiscriminatorBlock(nn.Module):
    def __init__(self, in_channels, tmp_channels, out_channels, img_channels, conv_clamp, f):
        super().__init__()
        self.in_channels = in_channels
        kw = dict(conv_clamp=conv_clamp)
        if in_channels == 0:
            self.fromrgb = Conv2d(img_channels, tmp_channels, 1, activation="lrelu", **kw)
        self.conv0 = Conv2d(tmp_channels, tmp_channels, 3, activation="lrelu", **kw)
        self.conv1 = Conv2d(tmp_channels, out_channels, 3, activation="lrelu", down=2,
                            resample_filter=f, **kw)
        self.skip = Conv2d(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=f)

    def forward(self, x, img):
        if self.in_channels == 0:
            x = self.fromrgb(img)
        y = self.skip(x, gain=math.sqrt(0.5))
        x = self.conv1(self.conv0(x), gain=math.sqrt(0.5))
        return y + x


def minibatch_stddev(x: torch.Tensor, group_size: int) -> torch.Tensor:
    """Append the mean standard deviation over groups of samples as one extra channel."""
    n, c, h, w = x.shape
    g = min(group_size, n) if group_size else n
    if n % g:
        g = 1
    y = x.reshape(g, -1, c, h, w)
    y = (y - y.mean(dim=0)).square().mean(dim=0).add(1e-8).sqrt()
    y = y.mean(dim=[1, 2, 3]).reshape(-1, 1, 1, 1).repeat(g, 1, h, w)
    return torch.cat([x, y], dim=1)


class Discriminator(nn.Module):
    """Residual discriminator with minibatch standard deviation and FIR downsampling."""

    def __init__(self, cfg: DiscriminatorConfig | None = None, **kwargs):
        super().__init__()
        cfg = cfg or DiscriminatorConfig(**kwargs)
        self.cfg = cfg
        self.img_resolution = cfg.img_resolution
        f = ops.setup_filter(cfg.resample_filter)
        self.block_resolutions = block_resolutions(cfg.img_resolution)[::-1][:-1]
        for res in self.block_resolutions:
            cin = 0 if res == cfg.img_resolution else cfg.channels_at(res)
            setattr(self, f"b{res}", DiscriminatorBlock(cin, cfg.channels_at(res),
                                                        cfg.channels_at(res // 2),
                                                        cfg.img_channels, cfg.conv_clamp, f))
        c4 = cfg.channels_at(4)
        if cfg.img_resolution == 4:
            self.fromrgb = Conv2d(cfg.img_channels, c4, 1, activation="lrelu")
        self.conv = Conv2d(c4 + 1, c4, 3, activation="lrelu", conv_clamp=cfg.conv_clamp)
        self.fc = FullyConnected(c4 * 16, c4, activation="lrelu")
        self.out = FullyConnected(c4, 1)

    def forward(self, img: torch.Tensor, c=None) -> torch.Tensor:
        x = self.fromrgb(img) if self.img_resolution == 4 else None
        for res in self.block_resolutions:
            x = getattr(self, f"b{res}")(x, img)
        x = minibatch_stddev(x, self.cfg.mbstd_group_size)
        x = self.fc(self.conv(x).flatten(1))
        return self.out(x)
