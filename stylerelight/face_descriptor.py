"""dlib's face descriptor network (ResNet-29, 128-D) in torch, read from dlib's own weight file.

Why: dlib computes the descriptor but is not differentiable from torch, so it can measure
identity (`stylerelight.identity`) but not train against it. This is the same network with the
same weights, so an identity loss sees what the measure sees.

The file (`dlib_face_recognition_resnet_model_v1.dat`, shipped by `face-recognition-models`) is
dlib's binary serialisation of the network. Only data is read from it: layer records (a version
string and integers) and float32 tensors, in the order dlib writes them (input first). The layer
sequence must be dlib's published ResNet (a 7x7 stem, max pool, residual blocks, global average
pool, 128-D linear), else the file is refused.

dlib's conventions kept here: a convolution with stride 2 has no padding; input is RGB in
[0, 255] minus dlib's per-channel mean, divided by 256; a residual sum of tensors of different
sizes is zero-padded at the end of each axis (channels, rows, columns).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

CHIP_SIZE = 150  # dlib's face chips: 150^2, 25 % padding around the landmark template


class DescriptorFileError(ValueError):
    """The file is not dlib's face descriptor network (or not one this reader knows)."""


class _Reader:
    def __init__(self, data: bytes):
        self.b, self.i = data, 0

    def int(self) -> int:
        """dlib's packed integer: a control byte (size | 0x80 if negative), then little-endian bytes."""
        c = self.b[self.i]
        n = c & 0x0F
        v = int.from_bytes(self.b[self.i + 1: self.i + 1 + n], "little")
        self.i += 1 + n
        return -v if c & 0x80 else v

    def float(self) -> float:
        """dlib's portable float: mantissa and exponent as packed integers."""
        m = self.int()
        e = self.int()
        return float(np.ldexp(float(m), e))

    def string(self) -> str:
        n = self.int()
        s = self.b[self.i: self.i + n].decode("ascii")
        self.i += n
        return s

    def tensor(self) -> np.ndarray:
        if self.int() != 2:
            raise DescriptorFileError("unexpected tensor version")
        shape = [self.int() for _ in range(4)]
        n = int(np.prod(shape))
        a = np.frombuffer(self.b, "<f4", n, self.i).reshape(shape).copy()
        self.i += 4 * n
        return a


_RECORD = re.compile(rb"\x01[\x01-\x7f](con_\d|affine_\d?|fc_\d|relu_\d?|max_pool_\d|avg_pool_\d|add_prev_|"
                     rb"input_rgb_image_sized)")


def _records(data: bytes) -> tuple[list[tuple], tuple[float, float, float]]:
    """[(kind, ...)] in dlib's order (input first) and the input's channel means."""
    r, out, means = _Reader(data), [], None
    while True:
        m = _RECORD.search(data, r.i)
        if m is None:
            break
        r.i = m.start()
        name = r.string()
        if name.startswith("con_"):
            params = r.tensor().ravel()
            nf, kh, kw, sy, sx, py, px = (r.int() for _ in range(7))
            shapes = []
            for _ in range(2):  # filters and biases as alias tensors: version, 4 sizes
                r.int()
                shapes.append([r.int() for _ in range(4)])
            nw = int(np.prod(shapes[0]))
            w = params[:nw].reshape(shapes[0])
            b = params[nw: nw + shapes[1][1]] if params.size > nw else np.zeros(nf, np.float32)
            if w.shape[0] != nf or w.shape[2:] != (kh, kw):
                raise DescriptorFileError("inconsistent convolution record")
            out.append(("con", w, b, (sy, sx), (py, px)))
        elif name.startswith("affine_"):
            p = r.tensor().ravel()
            out.append(("affine", p[: p.size // 2], p[p.size // 2:]))
        elif name.startswith("fc_"):
            n_out, n_in = r.int(), r.int()
            p = r.tensor().ravel()
            if p.size != n_in * n_out:
                raise DescriptorFileError("expected a linear layer without bias")
            out.append(("fc", p.reshape(n_in, n_out)))
        elif name.startswith(("max_pool_", "avg_pool_")):
            k = (r.int(), r.int())
            s = (r.int(), r.int())
            p = (r.int(), r.int())
            out.append((name.split("_")[0] + "_pool", k, s, p))
        elif name.startswith("relu_"):
            out.append(("relu",))
        elif name == "add_prev_":
            out.append(("add",))
        else:  # input_rgb_image_sized: version string read above; then the means and the size
            means = (r.float(), r.float(), r.float())
            out.append(("input",))
    if means is None:
        raise DescriptorFileError("no input layer record")
    return out, means


class _Block(nn.Module):
    """dlib's residual block: conv-affine-relu-conv-affine (+ the input, average pooled 2x2 when
    the block downsamples), relu."""

    def __init__(self, c1: nn.Conv2d, a1: tuple, c2: nn.Conv2d, a2: tuple, down: bool):
        super().__init__()
        self.conv1, self.conv2 = c1, c2
        for j, a in enumerate((a1, a2), 1):  # dlib's affine layers: per-channel scale and shift
            self.register_buffer(f"g{j}", torch.from_numpy(a[1]).view(1, -1, 1, 1))
            self.register_buffer(f"b{j}", torch.from_numpy(a[2]).view(1, -1, 1, 1))
        self.down = down

    def forward(self, x):
        y = F.relu(self.conv1(x) * self.g1 + self.b1)
        y = self.conv2(y) * self.g2 + self.b2
        skip = F.avg_pool2d(x, 2, 2) if self.down else x
        return F.relu(_padded_add(y, skip))


def _padded_add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's add of tensors of different sizes: the larger size, zeros where one has none."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape, strict=True)]

    def pad(t):
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class FaceDescriptor(nn.Module):
    """dlib's ResNet-29 face descriptor: face chips [N, 3, 150, 150] RGB in [0, 255] -> [N, 128].

    Differentiable; two photos of one person are typically < 0.6 apart (Euclidean)."""

    def __init__(self, records: list[tuple], means: tuple[float, float, float]):
        super().__init__()
        self.register_buffer("mean", torch.tensor(means, dtype=torch.float32).view(1, 3, 1, 1))
        kinds = [r[0] for r in records]
        expect = ["input", "con", "affine", "relu", "max_pool"]
        if kinds[:5] != expect or kinds[-1] != "fc":
            raise DescriptorFileError("not dlib's face descriptor network (unexpected layer sequence)")
        it = iter(records[1:])
        stem = next(it)
        self.stem = self._conv(stem)
        aff = next(it)
        self.register_buffer("stem_g", torch.from_numpy(aff[1]).view(1, -1, 1, 1))
        self.register_buffer("stem_b", torch.from_numpy(aff[2]).view(1, -1, 1, 1))
        next(it)  # relu
        pool = next(it)
        self.pool_k, self.pool_s = pool[1], pool[2]
        self.blocks = nn.ModuleList()
        rest = list(it)
        i = 0
        while i < len(rest) and rest[i][0] == "con":
            seq = [r[0] for r in rest[i: i + 8]]
            down = seq[:6] == ["con", "affine", "relu", "con", "affine", "avg_pool"]
            if not down and seq[:6] != ["con", "affine", "relu", "con", "affine", "add"]:
                raise DescriptorFileError("not dlib's face descriptor network (unexpected block)")
            c1, a1, _, c2, a2 = rest[i: i + 5]
            self.blocks.append(_Block(self._conv(c1), a1, self._conv(c2), a2, down))
            i += 8 if down else 7  # ... add, relu
        tail = [r for r in rest[i:] if r[0] == "fc"]
        if len(tail) != 1 or len(self.blocks) == 0:
            raise DescriptorFileError("not dlib's face descriptor network (no final linear layer)")
        self.register_buffer("fc", torch.from_numpy(tail[0][1]))
        self.requires_grad_(False).eval()

    @staticmethod
    def _conv(rec) -> nn.Conv2d:
        _, w, b, stride, padding = rec
        conv = nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], stride=stride, padding=padding)
        conv.weight.data.copy_(torch.from_numpy(w))
        conv.bias.data.copy_(torch.from_numpy(b))
        return conv

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.float() - self.mean) / 256.0
        x = F.relu(self.stem(x) * self.stem_g + self.stem_b)
        x = F.max_pool2d(x, self.pool_k, self.pool_s)
        for block in self.blocks:
            x = block(x)
        return x.mean(dim=[2, 3]) @ self.fc


def load_face_descriptor(path: str | Path | None = None) -> FaceDescriptor:
    """dlib's descriptor network from its `.dat` file (default: the one `face-recognition-models`
    ships). Raises FileNotFoundError / DescriptorFileError in one line."""
    if path is None:
        from .identity import descriptor_model_path

        path = descriptor_model_path()
        if path is None:
            raise FileNotFoundError("dlib's face descriptor model was not found; pip install face-recognition-models")
    try:
        records, means = _records(Path(path).read_bytes())
        return FaceDescriptor(records, means)
    except (IndexError, ValueError, StopIteration, RuntimeError) as e:  # truncated or another network
        if isinstance(e, DescriptorFileError):
            raise DescriptorFileError(f"{path}: {e}") from None
        raise DescriptorFileError(f"{path}: not dlib's face descriptor network ({type(e).__name__})") from None
