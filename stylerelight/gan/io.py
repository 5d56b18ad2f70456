"""Generator checkpoints: the own format, rosinality `.pt`, NVlabs `.pkl`; detected by content.

Loading never runs code from the file. Own and rosinality files go through
`torch.load(weights_only=True)`; NVlabs pickles through `_RestrictedUnpickler`, which turns each
persistent object into its recorded `meta` dict (its embedded `module_src` is never executed) and
resolves only the globals that tensors and plain containers need.
"""

from __future__ import annotations

import argparse
import collections
import io
import os
import pickle
import re
import warnings
import zipfile
from pathlib import Path

import torch

from ..runs import atomic_torch_save
from .networks import Generator, GeneratorConfig, block_resolutions

OWN_FORMAT = "stylerelight-generator"
_LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19."


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded; the message is one line for the user."""


# ---------------------------------------------------------------------------------------------
# public API


def load_generator(path: str | os.PathLike, device: str | torch.device = "cpu") -> Generator:
    """Load a generator from the own format, a rosinality `.pt` or an NVlabs `.pkl`.

    Returns it in eval mode with gradients off for its parameters (inversion optimises ws).
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected a StyleGAN2 checkpoint (.pt or .pkl)")
    try:
        G = _load_any(path)
    except CheckpointError:
        raise
    except (KeyError, AssertionError, MemoryError, IndexError, TypeError, ValueError, AttributeError, RuntimeError,
            OverflowError, EOFError, OSError) as e:  # damaged files that got past the format checks
        raise CheckpointError(f"{path}: damaged or truncated checkpoint ({type(e).__name__}); expected a "
                              "StyleGAN2 checkpoint (.pt or .pkl)") from None
    return G.to(device).eval().requires_grad_(False)


def _load_any(path: Path) -> Generator:
    kind = _sniff(path)
    if kind == "pickle":
        G = _from_nvlabs(_load_nvlabs_pickle(path), path)
    else:
        obj = _torch_load(path)
        if isinstance(obj, dict) and obj.get("format") == OWN_FORMAT:
            G = _from_own(obj, path)
        elif isinstance(obj, dict) and "g_ema" in obj:
            G = _from_rosinality(obj, path)
        elif isinstance(obj, dict) and _psp_decoder(obj) is not None:
            G = _from_rosinality(_psp_decoder(obj), path)
        else:
            raise CheckpointError(
                f"{path}: holds no generator; expected a stylerelight, rosinality (g_ema) or "
                "NVlabs (G_ema) checkpoint")
    return G


def weights_hash(module: torch.nn.Module, *extra: torch.Tensor) -> str:
    """A short content hash of a network's weights (and any `extra` tensors), not of its file."""
    import hashlib

    h = hashlib.sha256()
    for k, v in sorted(module.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    for v in extra:
        h.update(v.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def generator_hash(G: Generator) -> str:
    """A short content hash of a generator's weights (not of its file): the same network read
    from an NVlabs, rosinality or own file hashes alike. Encoders, latents and mappers record it."""
    return weights_hash(G)


def _psp_decoder(obj: dict) -> dict | None:
    """pSp/e4e checkpoints hold a rosinality generator under state_dict['decoder.*']."""
    sd = obj.get("state_dict")
    if not isinstance(sd, dict):
        return None
    g = {k[len("decoder."):]: v for k, v in sd.items() if isinstance(k, str) and k.startswith("decoder.")}
    if not g:
        return None
    avg = obj.get("latent_avg")
    if isinstance(avg, torch.Tensor) and avg.ndim == 2:
        avg = avg[0]  # pSp stores it repeated once per w
    return {"g_ema": g, **({"latent_avg": avg} if isinstance(avg, torch.Tensor) else {})}


def save_generator(G: Generator, path: str | os.PathLike) -> None:
    """Write the own format (config + state dict) atomically; loadable with weights_only=True."""
    state = {k: v.detach().cpu().clone() for k, v in G.state_dict().items()}
    obj = {"format": OWN_FORMAT, "version": 1, "config": G.cfg.to_dict(), "state_dict": state}
    atomic_torch_save(obj, path)


def rosinality_state_dict(G: Generator) -> dict:
    """G's weights as a rosinality checkpoint (`{"g_ema": ..., "latent_avg": ...}`)."""
    sd = G.state_dict()
    out = {}
    for i in range(G.mapping.num_layers):
        out[f"style.{i + 1}.weight"] = sd[f"mapping.fc{i}.weight"]
        out[f"style.{i + 1}.bias"] = sd[f"mapping.fc{i}.bias"]
    for ours, theirs in _rosinality_layer_names(G.img_resolution):
        p = f"synthesis.{ours}."
        if theirs.startswith("to_rgb"):
            out[f"{theirs}.conv.weight"] = sd[p + "weight"].unsqueeze(0)
            out[f"{theirs}.conv.modulation.weight"] = sd[p + "affine.weight"]
            out[f"{theirs}.conv.modulation.bias"] = sd[p + "affine.bias"]
            out[f"{theirs}.bias"] = sd[p + "bias"].reshape(1, -1, 1, 1)
        else:
            name, noise = theirs.split("|")
            out[f"{name}.conv.weight"] = sd[p + "weight"].unsqueeze(0)
            out[f"{name}.conv.modulation.weight"] = sd[p + "affine.weight"]
            out[f"{name}.conv.modulation.bias"] = sd[p + "affine.bias"]
            out[f"{name}.noise.weight"] = sd[p + "noise_strength"].reshape(1)
            out[f"{name}.activate.bias"] = sd[p + "bias"]
            out[f"noises.{noise}"] = sd[p + "noise_const"][None, None]
    out["input.input"] = sd["synthesis.b4.const"].unsqueeze(0)
    return {"g_ema": {k: v.clone() for k, v in out.items()},
            "latent_avg": sd["mapping.w_avg"].clone()}


# ---------------------------------------------------------------------------------------------
# format detection and safe reading


def _sniff(path: Path) -> str:
    with open(path, "rb") as f:
        head = f.read(len(_LEGACY_TORCH_MAGIC))
    if head.startswith(b"PK\x03\x04") or head == _LEGACY_TORCH_MAGIC:
        return "torch"
    if head[:1] == b"\x80":
        return "pickle"
    raise CheckpointError(
        f"{path}: unknown format; expected a StyleGAN2 checkpoint (.pt from torch.save, or an "
        "NVlabs .pkl)")


def read_torch_file(path: str | os.PathLike, expected: str):
    """The contents of a torch file, weights only; a missing or non-torch file is a one-line
    CheckpointError saying what was `expected` (e.g. "an encoder checkpoint (.pt)")."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file; expected {expected}")
    if _sniff(path) != "torch":
        raise CheckpointError(f"{path}: not a torch file; expected {expected}")
    return _torch_load(path)


def _torch_load(path: Path):
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        raise CheckpointError(f"refusing to load {path}: {_refusal(e)}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError, ValueError, AssertionError, MemoryError, KeyError,
            OverflowError, IndexError, TypeError) as e:
        raise CheckpointError(
            f"{path}: truncated or corrupt file ({type(e).__name__}); expected a StyleGAN2 "
            "checkpoint (.pt or .pkl)") from None


def _refusal(e: Exception) -> str:
    m = re.search(r"(?:GLOBAL|global) ([\w.]+)", str(e))
    what = f" ({m.group(1)})" if m else ""
    return f"it references code{what}; only tensors and plain containers are allowed"


class _EasyDict(dict):
    """Stand-in for dnnlib.EasyDict: a plain dict that accepts pickle's BUILD step."""

    def __setstate__(self, state):
        if state:
            self.update(state)


def _persistent_meta(meta):
    """Stand-in for torch_utils.persistence._reconstruct_persistent_obj: keep the data only."""
    return dict(meta)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad=False, hooks=None,
                       metadata=None):
    t = torch.empty([0], dtype=_storage_dtype(storage))
    t.set_(_untyped(storage), offset, size, stride)
    return t


def _rebuild_parameter(data, requires_grad=False, hooks=None, state=None):
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if func not in (_rebuild_tensor_v2, _rebuild_parameter):
        raise pickle.UnpicklingError("tensor rebuilt through an unexpected function")
    return func(*args)


def _load_storage_from_bytes(b: bytes):
    return torch.load(io.BytesIO(b), map_location="cpu", weights_only=True)


def _storage_dtype(storage):
    return storage.dtype if hasattr(storage, "dtype") else torch.float32


def _untyped(storage):
    if isinstance(storage, torch.UntypedStorage):
        return storage
    with warnings.catch_warnings():  # TypedStorage, as old pickles hold it, is deprecated
        warnings.simplefilter("ignore")
        return storage.untyped()


_ALLOWED = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): _persistent_meta,
    ("dnnlib.util", "EasyDict"): _EasyDict,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
    ("builtins", "frozenset"): frozenset,
    ("builtins", "slice"): slice,
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch.storage", "_load_from_bytes"): _load_storage_from_bytes,
    ("torch", "Size"): torch.Size,
    ("torch.nn.parameter", "Parameter"): torch.nn.Parameter,
    ("torch", "Tensor"): torch.Tensor,
}


def _numpy_allowed(module: str, name: str):
    import numpy as np

    if module in ("numpy.core.multiarray", "numpy._core.multiarray") and name in ("_reconstruct", "scalar"):
        return getattr(np.core.multiarray if hasattr(np, "core") else np._core.multiarray, name)
    if module == "numpy" and name in ("ndarray", "dtype"):
        return getattr(np, name)
    if module.startswith("numpy") and name.endswith("DType") and name[0].isupper():
        return type(np.dtype(name[:-5].lower()))
    return None


class _RestrictedUnpickler(pickle.Unpickler):
    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module.startswith("numpy"):
            obj = _numpy_allowed(module, name)
            if obj is not None:
                return obj
        if module.startswith("dnnlib.tflib"):
            raise pickle.UnpicklingError(
                f"TensorFlow StyleGAN2 pickle (global {module}.{name}); convert it to PyTorch "
                "first (NVlabs stylegan2-ada-pytorch legacy.py or rosinality convert_weight.py)")
        raise pickle.UnpicklingError(f"global {module}.{name}")


def _load_nvlabs_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return _RestrictedUnpickler(f).load()
    except pickle.UnpicklingError as e:
        if "TensorFlow" in str(e):
            raise CheckpointError(f"{path}: {e}") from None
        raise CheckpointError(f"refusing to load {path}: {_refusal(e)}") from None
    except (EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError, RuntimeError,
            OSError, AssertionError, MemoryError, OverflowError) as e:
        raise CheckpointError(
            f"{path}: truncated or corrupt pickle ({type(e).__name__}); expected an NVlabs "
            "StyleGAN2 .pkl") from None


# ---------------------------------------------------------------------------------------------
# conversion into our Generator


def _load_state(G: Generator, sd: dict, path: Path) -> Generator:
    try:
        G.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the inferred network ({first})") from None
    return G


def _from_own(obj: dict, path: Path) -> Generator:
    try:
        cfg = GeneratorConfig(**obj["config"])
        sd = obj["state_dict"]
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{path}: damaged stylerelight checkpoint ({e})") from None
    return _load_state(Generator(cfg), sd, path)


def _rosinality_layer_names(resolution: int):
    """(our synthesis module path, rosinality name|noise buffer) in forward order."""
    yield "b4.conv1", "conv1|noise_0"
    yield "b4.torgb", "to_rgb1"
    for i, res in enumerate(block_resolutions(resolution)[1:]):
        yield f"b{res}.conv0", f"convs.{2 * i}|noise_{2 * i + 1}"
        yield f"b{res}.conv1", f"convs.{2 * i + 1}|noise_{2 * i + 2}"
        yield f"b{res}.torgb", f"to_rgbs.{i}"


def _from_rosinality(obj: dict, path: Path) -> Generator:
    g = obj["g_ema"]
    if not isinstance(g, dict):
        raise CheckpointError(f"{path}: 'g_ema' is not a state dict")
    try:
        n_mlp = len([k for k in g if re.fullmatch(r"style\.\d+\.weight", k)])
        w_dim = g["style.1.weight"].shape[0]
        n_rgb = len([k for k in g if re.fullmatch(r"to_rgbs\.\d+\.conv\.weight", k)])
        resolution = 2 ** (n_rgb + 2)
        channels = {4: g["conv1.conv.weight"].shape[1]}
        for i, res in enumerate(block_resolutions(resolution)[1:]):
            channels[res] = g[f"convs.{2 * i}.conv.weight"].shape[1]
        img_channels = g["to_rgb1.conv.weight"].shape[1]
    except (KeyError, AttributeError, IndexError) as e:
        raise CheckpointError(f"{path}: 'g_ema' lacks rosinality generator weights ({e})") from None
    args = obj.get("args")
    lr_mlp = float(getattr(args, "lr_mlp", 0.01)) if args is not None else 0.01
    cfg = GeneratorConfig(z_dim=w_dim, w_dim=w_dim, img_resolution=resolution,
                          img_channels=img_channels, mapping_layers=n_mlp,
                          mapping_lr_multiplier=lr_mlp, channels=channels)
    G = Generator(cfg)
    sd = {}
    for i in range(n_mlp):
        sd[f"mapping.fc{i}.weight"] = g[f"style.{i + 1}.weight"]
        sd[f"mapping.fc{i}.bias"] = g[f"style.{i + 1}.bias"]
    sd["synthesis.b4.const"] = g["input.input"][0]
    try:
        for ours, theirs in _rosinality_layer_names(resolution):
            p = f"synthesis.{ours}."
            name, _, noise = theirs.partition("|")
            sd[p + "weight"] = g[f"{name}.conv.weight"][0]
            sd[p + "affine.weight"] = g[f"{name}.conv.modulation.weight"]
            sd[p + "affine.bias"] = g[f"{name}.conv.modulation.bias"]
            if noise:
                sd[p + "bias"] = g[f"{name}.activate.bias"]
                sd[p + "noise_strength"] = g[f"{name}.noise.weight"].reshape([])
                sd[p + "noise_const"] = g[f"noises.{noise}"][0, 0]
            else:
                sd[p + "bias"] = g[f"{name}.bias"].reshape(-1)
    except KeyError as e:
        raise CheckpointError(f"{path}: 'g_ema' lacks rosinality weight {e}") from None
    latent_avg = obj.get("latent_avg")
    if latent_avg is None:
        latent_avg = _estimate_w_avg(G, sd)
    sd["mapping.w_avg"] = latent_avg.reshape(-1)
    return _load_state(G, sd, path)


def _estimate_w_avg(G: Generator, sd: dict) -> torch.Tensor:
    """Checkpoints from rosinality's train.py carry no latent_avg: average 10k mapped z (seeded)."""
    G.load_state_dict({**G.state_dict(), **sd})
    with torch.no_grad():
        z = torch.randn([10000, G.z_dim], generator=torch.Generator().manual_seed(0))
        return G.mapping(z)[:, 0].mean(0)


def _flatten_persistent(meta: dict, prefix: str = "") -> tuple[dict, dict]:
    """Walk a persistent-object meta tree into (state dict, {module path: attribute dict})."""
    state = meta.get("state") or {}
    tensors, attrs = {}, {prefix.rstrip("."): state}
    for group in ("_parameters", "_buffers"):
        for k, v in (state.get(group) or {}).items():
            if isinstance(v, torch.Tensor):
                tensors[prefix + k] = v
    for k, child in (state.get("_modules") or {}).items():
        if isinstance(child, dict) and "state" in child:
            t, a = _flatten_persistent(child, f"{prefix}{k}.")
            tensors.update(t)
            attrs.update(a)
    return tensors, attrs


def _from_nvlabs(data, path: Path) -> Generator:
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: holds no generator; expected a dict with G_ema")
    net = data.get("G_ema", data.get("G"))
    if not (isinstance(net, dict) and "state" in net):
        raise CheckpointError(f"{path}: holds no generator; expected an NVlabs pickle with G_ema")
    sd, attrs = _flatten_persistent(net)
    root = attrs[""]
    try:
        if root.get("c_dim", 0):
            raise CheckpointError(f"{path}: conditional generators (c_dim > 0) are not supported")
        res = int(root["img_resolution"])
        mapping = attrs["mapping"]
        n_layers = int(mapping["num_layers"])
        w_dim = int(root["w_dim"])
        fc0 = attrs["mapping.fc0"]
        lr_mul = float(fc0["bias_gain"])
        channels = {r: int(sd[f"synthesis.b{r}.conv1.weight"].shape[0])
                    for r in block_resolutions(res)}
        for r in block_resolutions(res):
            arch = attrs.get(f"synthesis.b{r}", {}).get("architecture", "skip")
            if arch != "skip":
                raise CheckpointError(f"{path}: generator architecture {arch!r} is not supported "
                                      "(only 'skip', as in config F)")
        clamp = attrs["synthesis.b4.conv1"].get("conv_clamp")
        w_avg_beta = mapping.get("w_avg_beta") or 0.995
        cfg = GeneratorConfig(z_dim=int(root["z_dim"]), w_dim=w_dim, img_resolution=res,
                              img_channels=int(root["img_channels"]), mapping_layers=n_layers,
                              mapping_lr_multiplier=lr_mul, channels=channels,
                              conv_clamp=None if clamp is None else float(clamp),
                              w_avg_beta=float(w_avg_beta))
    except (KeyError, TypeError, ValueError) as e:
        if isinstance(e, CheckpointError):
            raise
        raise CheckpointError(f"{path}: G_ema lacks StyleGAN2 fields ({e})") from None
    G = Generator(cfg)
    keep = set(G.state_dict())
    sd = {k: v for k, v in sd.items() if k in keep}
    for name, m in G.named_modules():  # layers built without noise input keep zero strength
        if hasattr(m, "noise_strength") and f"{name}.noise_const" not in sd:
            sd[f"{name}.noise_const"] = torch.zeros_like(m.noise_const)
            sd[f"{name}.noise_strength"] = torch.zeros([])
    return _load_state(G, sd, path)

