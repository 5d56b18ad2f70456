"""Feed-forward W+ encoders: the pSp family as published (IR-SE-50 backbone with pSp's
GradualStyleEncoder or e4e's Encoder4Editing) and a compact encoder for small generators.

Parameter names follow the official checkpoints (`input_layer`, `body.N.res_layer`, `styles.N`,
`latlayer1/2`) so their state dicts load as they are; widths and depths are read from the
weights, so the same classes also hold narrower test-sized networks. `Encoder` wraps a network
with what the originals do around it: resize the input to the network's size and add `latent_avg`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# pSp/e4e split the 18 ws of a 1024^2 generator into coarse [0, 3), middle [3, 7), fine [7, n)
COARSE, MIDDLE = 3, 7


# ---------------------------------------------------------------------------------------------
# IR-SE backbone (ArcFace's improved residual units with squeeze-excitation)


def ir_units(layers: int = 50, widths=(64, 128, 256, 512)) -> list[tuple[int, int, int]]:
    """(in_channels, depth, stride) per residual unit; each stage starts with a stride-2 unit."""
    counts = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}[layers]
    units, c_in = [], widths[0]
    for n, depth in zip(counts, widths, strict=True):
        units += [(c_in, depth, 2)] + [(depth, depth, 1)] * (n - 1)
        c_in = depth
    return units


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x):
        s = torch.sigmoid(self.fc2(F.relu(self.fc1(x.mean(dim=(2, 3), keepdim=True)))))
        return x * s


class IRUnit(nn.Module):
    """BN-conv-PReLU-conv(stride)-BN[-SE] plus a shortcut (strided identity or 1x1 conv + BN)."""

    def __init__(self, c_in: int, depth: int, stride: int, se_hidden: int | None):
        super().__init__()
        self.stride = stride
        self.shortcut_layer = (None if c_in == depth else
                               nn.Sequential(nn.Conv2d(c_in, depth, 1, stride, bias=False), nn.BatchNorm2d(depth)))
        res = [nn.BatchNorm2d(c_in), nn.Conv2d(c_in, depth, 3, 1, 1, bias=False), nn.PReLU(depth),
               nn.Conv2d(depth, depth, 3, stride, 1, bias=False), nn.BatchNorm2d(depth)]
        if se_hidden:
            res.append(SqueezeExcite(depth, se_hidden))
        self.res_layer = nn.Sequential(*res)

    def forward(self, x):
        short = x[:, :, ::self.stride, ::self.stride] if self.shortcut_layer is None else self.shortcut_layer(x)
        return self.res_layer(x) + short


class EqualLinear(nn.Module):
    """Linear layer with the weight scaled at run time by 1/sqrt(fan_in) (StyleGAN's equalised lr)."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(c_out, c_in))
        self.bias = nn.Parameter(torch.zeros(c_out))

    def forward(self, x):
        return F.linear(x, self.weight / math.sqrt(self.weight.shape[1]), self.bias)


class StyleHead(nn.Module):
    """pSp's map2style: stride-2 3x3 convs (LeakyReLU 0.01) down to 1x1, then an equalised linear."""

    def __init__(self, c_in: int, c_out: int, spatial: int):
        super().__init__()
        mods: list[nn.Module] = []
        for i in range(int(math.log2(spatial))):
            mods += [nn.Conv2d(c_in if i == 0 else c_out, c_out, 3, 2, 1), nn.LeakyReLU(0.01)]
        self.convs = nn.Sequential(*mods)
        self.linear = EqualLinear(c_out, c_out)

    def forward(self, x):
        return self.linear(self.convs(x).flatten(1))


def _upsample_add(x, y):
    return F.interpolate(x, size=y.shape[-2:], mode="bilinear", align_corners=True) + y


class PSPEncoder(nn.Module):
    """pSp's GradualStyleEncoder (`kind="psp"`) or e4e's Encoder4Editing (`kind="e4e"`).

    Both tap the backbone at the ends of stages 2, 3 and 4 (c1, c2, c3) and build a feature
    pyramid; pSp predicts every w from its level, e4e predicts w0 from c3 and adds per-layer
    deltas. `stage` is e4e's progressive stage: deltas 1..stage are applied (all at inference).
    """

    def __init__(self, n_styles: int, kind: str = "psp", input_nc: int = 3, layers: int = 50,
                 widths=(64, 128, 256, 512), se: bool = True, style_dim: int | None = None):
        super().__init__()
        if kind not in ("psp", "e4e"):
            raise ValueError(f"kind must be 'psp' or 'e4e', not {kind!r}")
        self.kind, self.n_styles = kind, n_styles
        self.stage = n_styles  # e4e: all deltas
        w0 = widths[0]
        self.input_layer = nn.Sequential(nn.Conv2d(input_nc, w0, 3, 1, 1, bias=False), nn.BatchNorm2d(w0),
                                         nn.PReLU(w0))
        units = ir_units(layers, widths)
        self.body = nn.Sequential(*[IRUnit(i, d, s, d // 16 if se else None) for i, d, s in units])
        ends = [k for k in range(len(units)) if k + 1 == len(units) or units[k + 1][2] == 2]
        self.taps = ends[1:4]  # indices 6, 20, 23 for IR-50
        top = widths[3]
        dim = style_dim or top
        self.styles = nn.ModuleList(
            StyleHead(top, dim, 16 if i < COARSE else 32 if i < MIDDLE else 64) for i in range(n_styles))
        self.latlayer1 = nn.Conv2d(widths[2], top, 1)
        self.latlayer2 = nn.Conv2d(widths[1], top, 1)

    def features(self, x):
        x = self.input_layer(x)
        feats = []
        for i, unit in enumerate(self.body):
            x = unit(x)
            if i in self.taps:
                feats.append(x)
        return feats  # c1, c2, c3

    def forward(self, x):
        c1, c2, c3 = self.features(x)
        if self.kind == "psp":
            p2 = _upsample_add(c3, self.latlayer1(c2))
            p1 = _upsample_add(p2, self.latlayer2(c1))
            levels = [c3 if i < COARSE else p2 if i < MIDDLE else p1 for i in range(self.n_styles)]
            return torch.stack([head(f) for head, f in zip(self.styles, levels, strict=True)], dim=1)
        w0 = self.styles[0](c3)
        out = [w0]
        feats = c3
        for i in range(1, self.n_styles):
            if i == COARSE:
                feats = p2 = _upsample_add(c3, self.latlayer1(c2))
            elif i == MIDDLE:
                feats = _upsample_add(p2, self.latlayer2(c1))
            out.append(w0 + self.styles[i](feats) if i <= self.stage else w0)
        return torch.stack(out, dim=1)


# ---------------------------------------------------------------------------------------------
# compact encoder for small generators


class _ResDown(nn.Module):
    """Residual block that halves the resolution: two 3x3 convs (LeakyReLU 0.2) + 1x1 strided skip."""

    def __init__(self, c_in: int, c_out: int):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_in, 3, 1, 1)
        self.conv2 = nn.Conv2d(c_in, c_out, 3, 2, 1)
        self.skip = nn.Conv2d(c_in, c_out, 1, 2, 0, bias=False)

    def forward(self, x):
        y = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return (y + self.skip(x)) / math.sqrt(2)


class CompactEncoder(nn.Module):
    """A small pSp-style encoder for generators of 32^2-256^2 on a CPU (about 2.8M parameters at
    64^2 with width 32): a residual pyramid down to 4x4, an FPN top-down path, and one head per w
    (a 3x3 conv to `reduce_width` channels at 4x4, then two linear layers of `head_width`) fed by
    the pyramid level that matches the generator layer (coarse ws from 4x4, fine ws from 16x16).

    Its output is an offset from latent_avg; the last layer of every head starts at zero so an
    untrained encoder returns the average face.
    """

    def __init__(self, n_styles: int, w_dim: int, resolution: int = 64, width: int = 64, input_nc: int = 3,
                 reduce_width: int = 32, head_width: int = 256):
        super().__init__()
        self.n_styles, self.w_dim, self.resolution, self.input_nc = n_styles, w_dim, resolution, input_nc
        n_down = int(math.log2(resolution)) - 2  # down to 4x4
        chans = [min(width * 2**i, 4 * width) for i in range(n_down + 1)]
        self.stem = nn.Conv2d(input_nc, chans[0], 3, 1, 1)
        self.down = nn.ModuleList(_ResDown(chans[i], chans[i + 1]) for i in range(n_down))
        top = chans[-1]
        # lateral 1x1 convs for the 8x8 and 16x16 levels
        self.lateral = nn.ModuleList(nn.Conv2d(chans[-1 - k], top, 1) for k in (1, 2))
        self.level_of = [min(2, i * 3 // n_styles) for i in range(n_styles)]  # 0: 4x4, 1: 8x8, 2: 16x16
        self.reduce = nn.ModuleList(nn.Conv2d(top, reduce_width, 3, 1, 1) for _ in range(n_styles))
        self.heads = nn.ModuleList(nn.Sequential(nn.Linear(reduce_width * 16, head_width), nn.LeakyReLU(0.2),
                                                 nn.Linear(head_width, w_dim))
                                   for _ in range(n_styles))
        for h in self.heads:
            nn.init.zeros_(h[-1].weight)
            nn.init.zeros_(h[-1].bias)

    def forward(self, x):
        x = self.stem(x)
        feats = []
        for d in self.down:
            x = d(x)
            feats.append(x)
        p4 = feats[-1]
        p8 = F.interpolate(p4, scale_factor=2, mode="nearest") + self.lateral[0](feats[-2])
        p16 = F.interpolate(p8, scale_factor=2, mode="nearest") + self.lateral[1](feats[-3])
        levels = (p4, F.adaptive_avg_pool2d(p8, 4), F.adaptive_avg_pool2d(p16, 4))
        out = [head(F.leaky_relu(red(levels[lv]), 0.2).flatten(1))
               for head, red, lv in zip(self.heads, self.reduce, self.level_of, strict=True)]
        return torch.stack(out, dim=1)


# ---------------------------------------------------------------------------------------------
# the wrapper users call


class Encoder(nn.Module):
    """images [N, 3, H, W] in [-1, 1] -> ws [N, num_ws, w_dim].

    Resizes the input to `input_size` (area filter when shrinking, bilinear when enlarging; pSp's
    data loaders resize to 256^2), runs the network and adds `latent_avg` when the network
    predicts offsets from it (pSp's `start_from_latent_avg`).

    Iterative encoders (ReStyle, Alaluf et al. 2021; `iterations > 1`, a 6-channel network) see
    the target beside the generator's current reconstruction and add a correction each pass,
    starting from the average face; they need their generator (`attach(G)`; `sr.invert` and
    `load_encoder` for the bundled pair do it).
    """

    def __init__(self, net: nn.Module, latent_avg: torch.Tensor | None, input_size: int, kind: str,
                 meta: dict | None = None, iterations: int = 1):
        super().__init__()
        self.net, self.input_size, self.kind = net, int(input_size), kind
        if latent_avg is not None:  # [w_dim], [1, w_dim] or [num_ws, w_dim] (pSp repeats it per w)
            latent_avg = latent_avg.detach().float().reshape(-1, latent_avg.shape[-1])
        self.register_buffer("latent_avg", latent_avg if latent_avg is not None else torch.zeros(0))
        self.meta = dict(meta or {})
        self.iterations = int(iterations)
        self._G: list = []  # the attached generator, kept out of the module tree and the state dict

    @property
    def num_ws(self) -> int:
        return self.net.n_styles

    @property
    def w_dim(self) -> int:
        return self.net.w_dim if hasattr(self.net, "w_dim") else self.net.styles[0].linear.weight.shape[0]

    @property
    def iterative(self) -> bool:
        return self.iterations > 1 or getattr(self.net, "input_nc", 3) == 6

    def attach(self, G) -> Encoder:
        self._G[:] = [G]
        return self

    def prepare(self, images: torch.Tensor) -> torch.Tensor:
        if images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"encoder input must be [N, 3, H, W], got {list(images.shape)}")
        x = images.to(next(self.net.parameters()).device, torch.float32)
        if x.shape[-2:] != (self.input_size, self.input_size):
            shrink = x.shape[-1] > self.input_size
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="area" if shrink else "bilinear",
                              align_corners=None if shrink else False)
        return x

    def start(self, n: int) -> torch.Tensor:
        """The iterations' starting ws: latent_avg for every w."""
        return self.latent_avg.expand(n, self.num_ws, -1).clone()

    def step(self, x: torch.Tensor, ws: torch.Tensor, rec: torch.Tensor) -> torch.Tensor:
        """One iterative pass on prepared input: ws + correction."""
        if rec.shape[-1] != x.shape[-1]:
            rec = F.interpolate(rec, size=x.shape[-2:], mode="area")
        return ws + self.net(torch.cat([x, rec], 1))

    def forward(self, images: torch.Tensor, iterations: int | None = None) -> torch.Tensor:
        x = self.prepare(images)
        if not self.iterative:
            ws = self.net(x)
            return ws + self.latent_avg if self.latent_avg.numel() else ws
        if not self._G:
            raise ValueError("this iterative encoder needs its generator: E.attach(G) (or pass it to sr.invert)")
        G = self._G[0]
        ws = self.start(len(x))
        rec = G.synthesis(ws[:1], noise_mode="const").expand(len(x), -1, -1, -1)
        n = iterations or self.iterations
        for i in range(n):
            ws = self.step(x, ws, rec)
            if i + 1 < n:
                rec = G.synthesis(ws, noise_mode="const")
        return ws
