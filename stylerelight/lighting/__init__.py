"""Lighting: env maps, the light stage, OLAT captures and the display transform."""

from .display import (
    FACE_BACKGROUND,
    auto_exposure,
    envmap_preview,
    face_display,
    face_exposure,
    srgb_decode,
    srgb_encode,
    to_display,
)
from .envmap import (
           EnvMap,
           direction_to_pixel,
           disk_light,
           latlong_directions,
           latlong_solid_angles,
           load_envmap,
           save_envmap,
)
from .hdr_io import EnvMapError
from .olat import OLATCapture
from .stage import LightStage

__all__ = ["FACE_BACKGROUND", "EnvMap", "EnvMapError", "LightStage", "OLATCapture", "auto_exposure",
           "direction_to_pixel", "disk_light", "envmap_preview", "face_display", "face_exposure",
           "latlong_directions", "latlong_solid_angles", "load_envmap", "save_envmap", "srgb_decode",
           "srgb_encode", "to_display"]
