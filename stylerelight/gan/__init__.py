"""StyleGAN2 networks and checkpoint IO (own format, rosinality .pt, NVlabs .pkl)."""

from .io import CheckpointError, load_generator, save_generator
from .networks import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    style_mix,
)

__all__ = ["CheckpointError", "Discriminator", "DiscriminatorConfig", "Generator",
           "GeneratorConfig", "load_generator", "save_generator", "style_mix"]
