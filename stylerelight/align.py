"""FFHQ alignment: the crop recipe of NVlabs' ffhq-dataset, from 68 landmarks, and its inverse.

`align_from_landmarks` is shared by photos (`align_face`, landmarks from dlib) and by the
virtual light stage (`synth.render_portrait`, landmarks projected from the head model), so
both live in exactly the same crop.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image


class AlignError(ValueError):
    """No usable face; the message is one line for the user."""


@dataclass
class AlignedFace:
    image: np.ndarray  # uint8 [S, S, 3]
    quad: np.ndarray  # [4, 2] the crop quad in input pixel coordinates (top-left, bottom-left, bottom-right, top-right)
    landmarks: np.ndarray  # [68, 2] input pixel coordinates
    input_size: tuple[int, int]  # (H, W) of the input image

    @property
    def size(self) -> int:
        return self.image.shape[0]

    def quad_to_output(self) -> np.ndarray:
        """3x3 homography from input pixel coordinates to aligned-image pixel coordinates."""
        s = self.size
        dst = np.array([[0, 0], [0, s], [s, s], [s, 0]], np.float64)
        return _homography(self.quad.astype(np.float64), dst)


def ffhq_quad(landmarks: np.ndarray) -> tuple[np.ndarray, float]:
    """The FFHQ crop quad [4, 2] and its side length (qsize) from iBUG-68 landmarks."""
    lm = np.asarray(landmarks, np.float64)
    if lm.shape != (68, 2):
        raise AlignError(f"expected 68 landmarks, got shape {list(lm.shape)}")
    eye_left, eye_right = lm[36:42].mean(0), lm[42:48].mean(0)
    eye_avg = (eye_left + eye_right) * 0.5
    eye_to_eye = eye_right - eye_left
    mouth_avg = (lm[48] + lm[54]) * 0.5
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.flipud(eye_to_mouth) * [-1, 1]
    x /= np.hypot(*x)
    x *= max(np.hypot(*eye_to_eye) * 2.0, np.hypot(*eye_to_mouth) * 1.8)
    y = np.flipud(x) * [-1, 1]
    c = eye_avg + eye_to_mouth * 0.1
    quad = np.stack([c - x - y, c - x + y, c + x + y, c + x - y])
    return quad, float(np.hypot(*x) * 2)


def align_from_landmarks(image: np.ndarray, landmarks: np.ndarray, output_size: int = 256,
                         transform_size: int | None = None, enable_padding: bool = True) -> AlignedFace:
    """Crop `image` (uint8 [H, W, 3]) as FFHQ was cropped: shrink, crop with a border, reflect-pad
    with a blurred blend, warp the quad to a square, antialiased resize to output_size."""
    import scipy.ndimage

    img = Image.fromarray(np.asarray(image, np.uint8))
    H, W = img.size[1], img.size[0]
    quad0, qsize = ffhq_quad(landmarks)
    quad = quad0.copy()
    transform_size = transform_size or max(output_size, 4 * output_size if output_size < 1024 else output_size)
    shrink = int(np.floor(qsize / output_size * 0.5))
    if shrink > 1:
        rsize = (int(np.rint(float(img.size[0]) / shrink)), int(np.rint(float(img.size[1]) / shrink)))
        img = img.resize(rsize, Image.LANCZOS)
        quad /= shrink
        qsize /= shrink
    border = max(int(np.rint(qsize * 0.1)), 3)
    crop = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
            int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    crop = (max(crop[0] - border, 0), max(crop[1] - border, 0),
            min(crop[2] + border, img.size[0]), min(crop[3] + border, img.size[1]))
    if crop[2] - crop[0] < img.size[0] or crop[3] - crop[1] < img.size[1]:
        img = img.crop(crop)
        quad -= crop[0:2]
    pad = (int(np.floor(min(quad[:, 0]))), int(np.floor(min(quad[:, 1]))),
           int(np.ceil(max(quad[:, 0]))), int(np.ceil(max(quad[:, 1]))))
    pad = (max(-pad[0] + border, 0), max(-pad[1] + border, 0),
           max(pad[2] - img.size[0] + border, 0), max(pad[3] - img.size[1] + border, 0))
    if enable_padding and max(pad) > border - 4:
        pad = np.maximum(pad, int(np.rint(qsize * 0.3)))
        a = np.pad(np.float32(img), ((pad[1], pad[3]), (pad[0], pad[2]), (0, 0)), "reflect")
        h, w, _ = a.shape
        yy, xx, _ = np.ogrid[:h, :w, :1]
        mask = np.maximum(1.0 - np.minimum(np.float32(xx) / pad[0], np.float32(w - 1 - xx) / pad[2]),
                          1.0 - np.minimum(np.float32(yy) / pad[1], np.float32(h - 1 - yy) / pad[3]))
        blur = qsize * 0.02
        a += (scipy.ndimage.gaussian_filter(a, [blur, blur, 0]) - a) * np.clip(mask * 3.0 + 1.0, 0.0, 1.0)
        a += (np.median(a, axis=(0, 1)) - a) * np.clip(mask, 0.0, 1.0)
        img = Image.fromarray(np.uint8(np.clip(np.rint(a), 0, 255)), "RGB")
        quad += pad[:2]
    img = img.transform((transform_size, transform_size), Image.QUAD, (quad + 0.5).flatten(), Image.BILINEAR)
    if output_size < transform_size:
        img = img.resize((output_size, output_size), Image.LANCZOS)
    return AlignedFace(np.asarray(img), quad0, np.asarray(landmarks, np.float64), (H, W))


def _homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    A = []
    for (x, y), (u, v) in zip(src, dst, strict=True):
        A.append([x, y, 1, 0, 0, 0, -u * x, -u * y, -u])
        A.append([0, 0, 0, x, y, 1, -v * x, -v * y, -v])
    _, _, vt = np.linalg.svd(np.asarray(A))
    Hm = vt[-1].reshape(3, 3)
    return Hm / Hm[2, 2]
