"""StyleGAN2 networks and checkpoint IO (own format, rosinality .pt, NVlabs .pkl)."""

from .io import CheckpointError, generator_hash, load_generator, save_generator
from .networks import (
    Discriminator,
    DiscriminatorConfig,
    Generator,
    GeneratorConfig,
    style_mix,
)

__all__ = ["CheckpointError", "Discriminator", "DiscriminatorConfig", "Generator",
           "GeneratorConfig", "generator_hash", "load_generator", "save_generator", "style_mix"]
