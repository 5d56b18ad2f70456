"""Identity distance from dlib's face descriptor network (ResNet-29, 128-D; two photos of one
person are typically < 0.6 apart), shipped offline in `face-recognition-models`.

For aligned crops the landmarks are found once on the reference image and reused for the other,
so the distance measures appearance, not a difference in landmark fits. Small crops are upscaled
(bicubic) to 256^2 first: the network expects 150^2 face chips.

`IdentityLoss` is the same distance as a differentiable training loss: dlib's network run in torch
(`face_descriptor`), on chips cut bilinearly where dlib would cut them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .align import landmark_model_path
from .face_descriptor import CHIP_SIZE

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


def chip_transform(reference: np.ndarray) -> np.ndarray:
    """[2, 3] affine from dlib's 150^2 face-chip pixels (x, y, 1) to pixel coordinates of the
    aligned uint8 crop `reference` [H, W, 3], from its landmarks (found on the 256^2 upscale, as
    `identity_distance` finds them): the chip `dlib.get_face_chip` would cut."""
    import dlib

    predictor, _ = _models()
    up = _upscale(np.asarray(reference))
    d = dlib.get_face_chip_details(predictor(up, _aligned_rect(up.shape[0])), size=CHIP_SIZE, padding=0.25)
    r, a = d.rect, d.angle
    cx, cy = (r.left() + r.right()) / 2, (r.top() + r.bottom()) / 2
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    corners = np.array([[r.left(), r.top()], [r.right(), r.top()], [r.right(), r.bottom()]])
    img_pts = (corners - [cx, cy]) @ rot.T + [cx, cy]
    chip_pts = np.array([[0, 0, 1], [d.cols - 1, 0, 1], [d.cols - 1, d.rows - 1, 1]], np.float64)
    m = np.linalg.solve(chip_pts, img_pts).T  # chip (x, y, 1) -> upscaled image (x, y)
    s = reference.shape[0] / up.shape[0]  # to the crop's own pixels (pixel centres at integers)
    m *= s
    m[:, 2] += (s - 1) / 2
    return m


def cut_chips(images: torch.Tensor, transforms: torch.Tensor, size: int = CHIP_SIZE) -> torch.Tensor:
    """Face chips [N, 3, size, size] in [0, 255] cut (bilinear, differentiably) from images
    [N, 3, H, W] in [-1, 1] by chip -> image pixel affines [N, 2, 3] (`chip_transform`)."""
    n, _, h, w = images.shape
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    pts = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3).to(images.device)
    img = pts @ transforms.float().to(images.device).transpose(1, 2)  # [N, size*size, 2] pixels
    grid = torch.stack([2 * img[..., 0] / (w - 1) - 1, 2 * img[..., 1] / (h - 1) - 1], -1)
    chips = F.grid_sample(images.float(), grid.reshape(n, size, size, 2), mode="bilinear", padding_mode="border",
                          align_corners=True)
    return (chips + 1) * 127.5


class IdentityLoss(torch.nn.Module):
    """dlib's descriptor distance between generated aligned crops and their targets, differentiable
    in the generated ones (dlib's network in torch: `face_descriptor`). The chip is cut where dlib
    would cut it from the target (its landmarks), the same place in both images, so the loss
    measures appearance, as `identity_distance` does. Without the model files it raises
    FileNotFoundError; callers that make it optional say so once."""

    def __init__(self, net=None):
        super().__init__()
        from .face_descriptor import load_face_descriptor

        self.net = net if net is not None else load_face_descriptor()

    def forward(self, images: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """images, targets [N, 3, H, W] in [-1, 1] -> [N] descriptor distances."""
        from .imageio import gan_to_uint8

        ref = gan_to_uint8(targets.detach())
        tf = torch.from_numpy(np.stack([chip_transform(r) for r in ref])).float()
        with torch.no_grad():
            d_t = self.net(cut_chips(targets.detach(), tf))
        d_i = self.net(cut_chips(images, tf))
        return (d_i - d_t).square().sum(1).add(1e-8).sqrt()
