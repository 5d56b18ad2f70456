"""The virtual light stage: procedural heads ray-traced with Mitsuba 3."""

from .camera import Camera, default_rig
from .envmaps import sample_envmap
from .head_model import HeadModel
from .render import render_envmap, render_olat, render_portrait
from .subject import Subject, sample_subject

__all__ = ["Camera", "HeadModel", "Subject", "default_rig", "render_envmap", "render_olat",
           "render_portrait", "sample_envmap", "sample_subject"]
