"""stylerelight: relight portraits and turn the head by editing StyleGAN2's W+ latent space.

Public entry points (see README): `load_generator`, `save_generator`, and the stage
sub-packages (`gan`, `lighting`, `synth`, `align`, `invert`, ...).
"""

from .gan import CheckpointError, Generator, load_generator, save_generator

__version__ = "0.1.0"
__all__ = ["CheckpointError", "Generator", "load_generator", "save_generator"]
