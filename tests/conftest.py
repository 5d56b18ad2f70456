"""Shared fixtures: tiny generators with non-trivial weights, tiny OLAT capture folders, and writers
for foreign formats."""

from __future__ import annotations

import pickle
import sys
import types

import pytest
import torch

from stylerelight.gan import Generator, GeneratorConfig


@pytest.fixture(autouse=True, scope="session")
def _private_cache(tmp_path_factory):
    """Derived per-generator data (the refinement's preconditioner) goes to a temporary cache, never
    the user's home; subprocesses inherit it."""
    import os

    old = os.environ.get("STYLERELIGHT_CACHE")
    os.environ["STYLERELIGHT_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("STYLERELIGHT_CACHE", None)
    else:
        os.environ["STYLERELIGHT_CACHE"] = old


def make_generator(res=32, z_dim=32, w_dim=32, seed=0, **kw) -> Generator:
    """A small generator whose noise strengths, biases and w_avg are non-zero (so tests see them)."""
    torch.manual_seed(seed)
    cfg = GeneratorConfig(z_dim=z_dim, w_dim=w_dim, img_resolution=res,
                          channel_base=kw.pop("channel_base", 16 * res),
                          channel_max=kw.pop("channel_max", 32), mapping_layers=kw.pop("mapping_layers", 4),
                          **kw)
    G = Generator(cfg)
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith("noise_strength"):
                p.copy_(torch.randn([]) * 0.3)
            elif name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
        G.mapping.w_avg.copy_(torch.randn(w_dim))
    return G.eval()


@pytest.fixture
def small_G():
    return make_generator()


def write_nvlabs_shaped_pickle(G: Generator, path, module_src: str = "") -> None:
    """Write G the way stylegan2-ada-pytorch pickles networks: persistent objects whose
    reconstructor is torch_utils.persistence._reconstruct_persistent_obj(meta)."""
    mod_name = "torch_utils.persistence"
    fake_pkg, fake = types.ModuleType("torch_utils"), types.ModuleType(mod_name)

    def _reconstruct_persistent_obj(meta):  # never called: only its name is pickled
        raise AssertionError

    _reconstruct_persistent_obj.__module__ = mod_name
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    fake._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fake_pkg.persistence = fake

    class Persistent:
        def __init__(self, meta):
            self.meta = meta

        def __reduce__(self):
            return (_reconstruct_persistent_obj, (self.meta,))

    def wrap(module: torch.nn.Module, attrs: dict) -> Persistent:
        children = {}
        for name, child in module.named_children():
            children[name] = wrap(child, _nv_attrs(child))
        params = {k: torch.nn.Parameter(v.detach().clone(), requires_grad=False)
                  for k, v in module.named_parameters(recurse=False)}
        bufs = {k: v.clone() for k, v in module.named_buffers(recurse=False) if k != "resample_filter"}
        state = dict(training=False, _parameters=params, _buffers=bufs, _modules=children, **attrs)
        return Persistent(dict(type="class", version=4, module_src=module_src,
                               class_name=type(module).__name__, state=state))

    root_attrs = dict(z_dim=G.z_dim, c_dim=0, w_dim=G.w_dim, img_resolution=G.img_resolution,
                      img_channels=G.img_channels, num_ws=G.num_ws)
    data = {"G": wrap(G, root_attrs), "D": None, "G_ema": wrap(G, root_attrs),
            "training_set_kwargs": {"resolution": G.img_resolution}, "augment_pipe": None}
    saved = {k: sys.modules.get(k) for k in ("torch_utils", mod_name)}
    sys.modules["torch_utils"], sys.modules[mod_name] = fake_pkg, fake
    try:
        with open(path, "wb") as f:
            pickle.dump(data, f, protocol=4)
    finally:
        for k, v in saved.items():
            if v is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = v


def _nv_attrs(m: torch.nn.Module) -> dict:
    """The plain attributes NVlabs modules carry that the loader reads."""
    out = {}
    for key in ("num_layers", "w_avg_beta", "weight_gain", "bias_gain", "conv_clamp", "activation"):
        if hasattr(m, key):
            out[key] = getattr(m, key)
    if type(m).__name__ == "SynthesisBlock":
        out["architecture"] = "skip"
    return out


def render_captures(directory, seeds, resolution: int):
    """Tiny aligned OLAT captures: one folder per subject seed, two cameras each, default stage."""
    from stylerelight.lighting import LightStage
    from stylerelight.synth import sample_subject
    from stylerelight.synth.olat_aligned import render_olat_aligned, sample_cameras

    stage = LightStage.default()
    for s in seeds:
        cap = render_olat_aligned(sample_subject(s), stage, sample_cameras(s)[::5][:2], resolution, seed=s)
        cap.save(directory / f"subject_{s:04d}")
    return directory


def run_torchrun(args: list[str], port: int, nproc: int = 2):
    """`torchrun --nproc_per_node N -m stylerelight ARGS` on CPU, one thread per process."""
    import os
    import subprocess
    from pathlib import Path

    torchrun = Path(sys.executable).with_name("torchrun")
    return subprocess.run([str(torchrun), "--nproc_per_node", str(nproc), "--master_port", str(port), "-m",
                           "stylerelight", *args], capture_output=True, text=True,
                          env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=300)
