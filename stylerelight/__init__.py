"""stylerelight: relight portraits and turn the head by editing StyleGAN2's W+ latent space.

    import stylerelight as sr
    G = sr.load_generator(path); ws = sr.invert(G, images)
    E = sr.load_encoder(path); ws = sr.invert(G, images, encoder=E, steps=20)
    ed = sr.Editor.from_pretrained(); ed.edit("photo.jpg", light="env.hdr", yaw=20).image
    sr.lighting.load_envmap(...), sr.synth.render_olat(...), sr.align.align_face(...)
"""

import importlib

from . import invert  # the stage, callable as the function: sr.invert(G, images, ...)
from .gan import CheckpointError, Generator, load_generator, save_generator
from .invert import load_encoder

__version__ = "0.1.0"
__all__ = ["CheckpointError", "Editor", "Generator", "align", "imageio", "invert", "lighting", "load_encoder",
           "load_generator", "mapper", "recon", "reconstruct", "save_generator", "synth"]

_LAZY = {"align", "imageio", "lighting", "synth", "gan", "recon", "mapper", "edit", "web"}


def __getattr__(name):
    """Stages load on first use (`sr.synth` pulls in Mitsuba only when rendering)."""
    if name in _LAZY:
        return importlib.import_module(f".{name}", __name__)
    if name in ("Editor", "EditResult"):
        return getattr(importlib.import_module(".edit", __name__), name)
    if name in ("reconstruct", "Reconstruction"):
        return getattr(importlib.import_module(".recon", __name__), name)
    raise AttributeError(f"module 'stylerelight' has no attribute {name!r}")
