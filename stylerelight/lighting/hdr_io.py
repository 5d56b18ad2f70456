"""Radiance RGBE (.hdr) files: read flat and run-length-encoded scanlines, write RLE."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np


class EnvMapError(ValueError):
    """An env map file or array that cannot be used; the message is one line for the user."""


def _rgbe_to_float(rgbe: np.ndarray) -> np.ndarray:
    e = rgbe[..., 3].astype(np.int32)
    scale = np.where(e > 0, np.ldexp(1.0, e - 136), 0.0).astype(np.float32)  # 2^(e-128) / 256
    return (rgbe[..., :3].astype(np.float32) + 0.5) * scale[..., None] * (e[..., None] > 0)


def _float_to_rgbe(rgb: np.ndarray) -> np.ndarray:
    v = rgb.max(axis=-1)
    mant, exp = np.frexp(v)
    scale = np.where(v > 1e-32, mant * 256.0 / np.maximum(v, 1e-32), 0.0)
    out = np.zeros(rgb.shape[:-1] + (4,), np.uint8)
    out[..., :3] = np.clip(np.floor(rgb * scale[..., None]), 0, 255).astype(np.uint8)
    out[..., 3] = np.where(v > 1e-32, exp + 128, 0).astype(np.uint8)
    return out


def read_hdr(path: str | Path) -> np.ndarray:
    """float32 [H, W, 3] linear RGB from a Radiance file (flat or RLE scanlines)."""
    data = Path(path).read_bytes()
    if not (data.startswith(b"#?RADIANCE") or data.startswith(b"#?RGBE")):
        raise EnvMapError(f"{path}: not a Radiance .hdr file (missing #?RADIANCE header)")
    end = data.find(b"\n\n")
    if end < 0:
        raise EnvMapError(f"{path}: truncated .hdr header")
    header = data[:end].decode("latin-1")
    if "FORMAT=" in header and "32-bit_rle_rgbe" not in header:
        raise EnvMapError(f"{path}: only 32-bit_rle_rgbe .hdr files are supported (not XYZE)")
    nl = data.find(b"\n", end + 2)
    m = re.fullmatch(r"([-+])Y (\d+) ([-+])X (\d+)", data[end + 2:nl].decode("latin-1").strip())
    if not m:
        raise EnvMapError(f"{path}: unsupported .hdr resolution line (expected '-Y H +X W')")
    h, w = int(m.group(2)), int(m.group(4))
    buf = np.frombuffer(data, np.uint8, offset=nl + 1)
    rgbe = np.empty((h, w, 4), np.uint8)
    pos = 0
    try:
        for y in range(h):
            if w < 8 or w > 0x7FFF or buf[pos] != 2 or buf[pos + 1] != 2 or buf[pos + 2] & 0x80:
                rgbe[y:] = buf[pos: pos + (h - y) * w * 4].reshape(h - y, w, 4)  # flat rest
                pos += (h - y) * w * 4
                break
            if (int(buf[pos + 2]) << 8 | int(buf[pos + 3])) != w:
                raise EnvMapError(f"{path}: corrupt RLE scanline {y}")
            pos += 4
            for c in range(4):
                x = 0
                while x < w:
                    count = int(buf[pos])
                    pos += 1
                    if count > 128:
                        count -= 128
                        rgbe[y, x: x + count, c] = buf[pos]
                        pos += 1
                    else:
                        if count == 0:
                            raise EnvMapError(f"{path}: corrupt RLE scanline {y}")
                        rgbe[y, x: x + count, c] = buf[pos: pos + count]
                        pos += count
                    x += count
    except (IndexError, ValueError) as e:
        if isinstance(e, EnvMapError):
            raise
        raise EnvMapError(f"{path}: truncated .hdr pixel data") from None
    img = _rgbe_to_float(rgbe)
    if m.group(1) == "+":
        img = img[::-1]
    if m.group(3) == "-":
        img = img[:, ::-1]
    return np.ascontiguousarray(img)


def write_hdr(path: str | Path, rgb: np.ndarray, rle: bool = True) -> None:
    """Write float [H, W, 3] as Radiance RGBE; RLE scanlines when `rle` (and 8 <= W < 32768)."""
    h, w, _ = rgb.shape
    rgbe = _float_to_rgbe(np.asarray(rgb, np.float32))
    out = bytearray(b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n" + f"-Y {h} +X {w}\n".encode())
    if not rle or w < 8 or w > 0x7FFF:
        out += rgbe.tobytes()
    else:
        for y in range(h):
            out += bytes([2, 2, w >> 8, w & 0xFF])
            for c in range(4):
                out += _rle_encode(rgbe[y, :, c])
    Path(path).write_bytes(bytes(out))


def _rle_encode(row: np.ndarray) -> bytes:
    out = bytearray()
    n, i = len(row), 0
    while i < n:
        j = i + 1  # a run of equal bytes starting at i
        while j < n and j - i < 127 and row[j] == row[i]:
            j += 1
        if j - i >= 4:
            out += bytes([128 + (j - i), int(row[i])])
            i = j
            continue
        k = i  # literal bytes until the next run of >= 4 (or 128 bytes)
        while k < n and k - i < 128:
            if k + 3 < n and row[k] == row[k + 1] == row[k + 2] == row[k + 3]:
                break
            k += 1
        out += bytes([k - i]) + row[i:k].tobytes()
        i = k
    return bytes(out)
