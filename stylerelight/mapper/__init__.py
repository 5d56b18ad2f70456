"""The latent mapper (PhotoApp): moves a portrait's W+ code to the same person under a target
light and view. Conditioning, networks, pairs from OLAT captures, training, file format."""

from .conditioning import Conditioner, Edit, ShadingProbe, light_code, normalise_light
from .model import FORMAT, Mapper, build_mapper, load_mapper, save_mapper

MAPPER_FILE = "lightstage_mapper.pt"

__all__ = ["FORMAT", "MAPPER_FILE", "Conditioner", "Edit", "Mapper", "ShadingProbe", "build_mapper", "light_code",
           "load_mapper", "normalise_light", "save_mapper"]
