"""Identity distance from dlib's face descriptor network (ResNet-29, 128-D; two photos of one
person are typically < 0.6 apart), shipped offline in `face-recognition-models`.

For aligned crops the landmarks are found once on the reference image and reused for the other,
so the distance measures appearance, not a difference in landmark fits. Small crops are upscaled
(bicubic) to 256^2 first: the network expects 150^2 face chips.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np

from .align import landmark_model_path

DESCRIPTOR_FILE = "dlib_face_recognition_resnet_model_v1.dat"


def descriptor_model_path() -> Path | None:
    lm = landmark_model_path()
    p = lm.parent / DESCRIPTOR_FILE if lm is not None else None
    return p if p is not None and p.is_file() else None


@functools.lru_cache(maxsize=1)
def _models():
    import dlib

    lm, rec = landmark_model_path(), descriptor_model_path()
    if lm is None or rec is None:
        raise FileNotFoundError("dlib's landmark and face descriptor models were not found; "
                                "pip install face-recognition-models")
    return dlib.shape_predictor(str(lm)), dlib.face_recognition_model_v1(str(rec))


def _upscale(img: np.ndarray, size: int = 256) -> np.ndarray:
    from PIL import Image

    if img.shape[0] == size:
        return np.ascontiguousarray(img)
    return np.asarray(Image.fromarray(img).resize((size, size), Image.BICUBIC))


def _aligned_rect(size: int):
    """Where the face sits in an FFHQ-aligned crop (eyes near 0.4, mouth near 0.7 of the height)."""
    import dlib

    return dlib.rectangle(int(0.18 * size), int(0.22 * size), int(0.82 * size), int(0.86 * size))


def identity_distance(reference: np.ndarray, other: np.ndarray) -> np.ndarray:
    """Descriptor distance between aligned uint8 crops [N, H, W, 3] (or one [H, W, 3]); [N]."""
    reference, other = np.asarray(reference), np.asarray(other)
    if reference.ndim == 3:
        reference, other = reference[None], other[None]
    predictor, net = _models()
    out = np.empty(len(reference))
    for i, (a, b) in enumerate(zip(reference, other, strict=True)):
        a, b = _upscale(a), _upscale(b)
        shape = predictor(a, _aligned_rect(a.shape[0]))
        da = np.asarray(net.compute_face_descriptor(a, shape, 0))
        db = np.asarray(net.compute_face_descriptor(b, shape, 0))
        out[i] = float(np.linalg.norm(da - db))
    return out
