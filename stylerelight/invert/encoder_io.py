"""Encoder files: the own format and official pSp / e4e checkpoints, read with
`torch.load(weights_only=True)` (nothing in a file is executed).

Own format: {"format": "stylerelight-encoder", "version": 1, "kind": "compact"|"psp"|"e4e",
"config": {...}, "state_dict": {...}, "latent_avg": [num_ws|1, w_dim], "input_size": int,
"generator": {"hash", "img_resolution", "num_ws", "w_dim"}}.

Official pSp/e4e files are dicts with "state_dict" (encoder.* and decoder.*), "latent_avg" and
"opts"; the variant comes from opts["encoder_type"], the number of ws from the weights.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import torch

from ..gan.io import CheckpointError, generator_hash, read_torch_file
from ..runs import atomic_torch_save
from .encoders import CompactEncoder, Encoder, PSPEncoder, ir_units

OWN_FORMAT = "stylerelight-encoder"
_PSP_TYPES = {"GradualStyleEncoder": "psp", "Encoder4Editing": "e4e"}


def save_encoder(E: Encoder, path: str | os.PathLike, G=None) -> None:
    """Write the own format atomically; `G` (the generator it was trained for) is recorded by hash."""
    cfg = dict(E.meta.get("config", {}))
    gen = dict(E.meta.get("generator", {}))
    if G is not None:
        gen = {"hash": generator_hash(G), "img_resolution": G.img_resolution, "num_ws": G.num_ws,
               "w_dim": G.w_dim}
    obj = {"format": OWN_FORMAT, "version": 1, "kind": E.kind, "config": cfg,
           "state_dict": {k: v.detach().cpu().clone() for k, v in E.net.state_dict().items()},
           "latent_avg": E.latent_avg.detach().cpu().clone(), "input_size": E.input_size, "generator": gen}
    atomic_torch_save(obj, path)


def load_encoder(path: str | os.PathLike, device: str | torch.device = "cpu") -> Encoder:
    """An encoder from the own format or an official pSp/e4e checkpoint, in eval mode."""
    path = Path(path)
    obj = read_torch_file(path, "an encoder checkpoint (.pt)")
    if not isinstance(obj, dict):
        raise CheckpointError(f"{path}: holds no encoder; expected a stylerelight, pSp or e4e encoder checkpoint")
    try:
        if obj.get("format") == OWN_FORMAT:
            E = _from_own(obj, path)
        elif isinstance(obj.get("state_dict"), dict) and any(
                isinstance(k, str) and k.startswith("encoder.") for k in obj["state_dict"]):
            E = _from_psp(obj, path)
        else:
            raise CheckpointError(f"{path}: holds no encoder; expected a stylerelight, pSp or e4e encoder checkpoint")
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RuntimeError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise CheckpointError(f"{path}: damaged encoder checkpoint ({first})") from None
    E = E.to(device).eval().requires_grad_(False)
    if E._G:
        E.attach(E._G[0].to(device))
    return E


def encoder_hash(E: Encoder) -> str:
    """A short content hash of an encoder's weights and latent_avg: a latent bank and the mapper
    trained on it record the encoder whose codes they hold."""
    from ..gan.io import weights_hash

    return weights_hash(E.net, E.latent_avg)


def check_encoder_for(E: Encoder, G) -> None:
    """Refuse (one line) an encoder made for another generator: sizes always, weights by hash when
    recorded. An iterative encoder that fits gets G attached."""
    if E.num_ws != G.num_ws or E.w_dim != G.w_dim:
        raise CheckpointError(f"the encoder gives {E.num_ws} x {E.w_dim} ws but the generator takes "
                              f"{G.num_ws} x {G.w_dim}; use the encoder trained for this generator")
    want = E.meta.get("generator", {}).get("hash")
    if want:
        got = generator_hash(G)
        if got != want:
            raise CheckpointError(f"the encoder was trained for generator {want}, not this one ({got}); "
                                  "use the matching generator or encoder")
    if E.iterative:
        E.attach(G)


# ---------------------------------------------------------------------------------------------


def build_compact(config: dict) -> CompactEncoder:
    return CompactEncoder(n_styles=int(config["n_styles"]), w_dim=int(config["w_dim"]),
                          resolution=int(config["resolution"]), width=int(config.get("width", 32)),
                          input_nc=6 if int(config.get("iterations", 1)) > 1 else 3,
                          reduce_width=int(config.get("reduce_width", 32)),
                          head_width=int(config.get("head_width", 256)))


def _from_own(obj: dict, path: Path) -> Encoder:
    kind, cfg = obj["kind"], dict(obj["config"])
    if kind == "compact":
        net = build_compact(cfg)
    elif kind in ("psp", "e4e"):
        net = PSPEncoder(kind=kind, **cfg)
    else:
        raise CheckpointError(f"{path}: unknown encoder kind {kind!r}")
    _load(net, obj["state_dict"], path)
    avg = obj.get("latent_avg")
    E = Encoder(net, avg if isinstance(avg, torch.Tensor) and avg.numel() else None, int(obj["input_size"]),
                kind, meta={"config": cfg, "generator": dict(obj.get("generator") or {})},
                iterations=int(cfg.get("iterations", 1)))
    if E.iterative:
        _attach_bundled(E)
    return E


def _attach_bundled(E: Encoder) -> None:
    """An iterative encoder made for the bundled generator gets it attached (hash checked)."""
    from ..bundled import GENERATOR, bundled
    from ..gan.io import load_generator

    path = bundled(GENERATOR)
    if path is None or not E.meta.get("generator", {}).get("hash"):
        return
    G = load_generator(path)
    if generator_hash(G) == E.meta["generator"]["hash"]:
        E.attach(G)


def _load(net: torch.nn.Module, sd: dict, path: Path) -> None:
    try:
        net.load_state_dict(sd, strict=True)
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0]
        raise CheckpointError(f"{path}: weights do not fit the inferred encoder ({first})") from None


def _opt(opts, key, default=None):
    if isinstance(opts, dict):
        return opts.get(key, default)
    return getattr(opts, key, default)


def psp_config_from_weights(sd: dict) -> dict:
    """PSPEncoder arguments read off an encoder state dict with the official key layout."""
    n_styles = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"styles\.(\d+)\.", k)))
    n_units = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"body\.(\d+)\.", k)))
    layers = {sum(c): n for n, c in {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}.items()}
    if n_units not in layers:
        raise CheckpointError(f"encoder backbone has {n_units} units; expected IR-50/100/152 (24/49/50)")
    nl = layers[n_units]
    depth = [sd[f"body.{i}.res_layer.1.weight"].shape[0] for i in range(n_units)]
    starts = [u for u, (_, _, s) in enumerate(ir_units(nl)) if s == 2]
    widths = tuple(depth[u] for u in starts)
    return {"n_styles": n_styles, "input_nc": sd["input_layer.0.weight"].shape[1], "layers": nl,
            "widths": widths, "se": "body.0.res_layer.5.fc1.weight" in sd,
            "style_dim": sd["styles.0.linear.weight"].shape[0]}


def _from_psp(obj: dict, path: Path) -> Encoder:
    opts = obj.get("opts") or {}
    etype = _opt(opts, "encoder_type", "GradualStyleEncoder")
    if etype not in _PSP_TYPES:
        raise CheckpointError(f"{path}: encoder_type {etype!r} is not supported; "
                              f"expected one of {', '.join(_PSP_TYPES)}")
    sd = {k[len("encoder."):]: v for k, v in obj["state_dict"].items() if k.startswith("encoder.")}
    cfg = psp_config_from_weights(sd)
    kind = _PSP_TYPES[etype]
    net = PSPEncoder(kind=kind, **cfg)
    _load(net, sd, path)
    avg = obj.get("latent_avg") if _opt(opts, "start_from_latent_avg", True) else None
    if _opt(opts, "learn_in_w", False):
        raise CheckpointError(f"{path}: pSp trained with learn_in_w is not supported; expected W+ encoders")
    meta = {"config": {**cfg, "widths": list(cfg["widths"])},
            "generator": {"num_ws": cfg["n_styles"], "w_dim": cfg["style_dim"],
                          "img_resolution": int(_opt(opts, "output_size", _opt(opts, "stylegan_size", 0)) or 0)}}
    return Encoder(net, avg if isinstance(avg, torch.Tensor) else None, 256, kind, meta=meta)
