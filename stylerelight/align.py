"""FFHQ alignment: the crop recipe of NVlabs' ffhq-dataset, from 68 landmarks, and its inverse.

`align_from_landmarks` is shared by photos (`align_face`, landmarks from dlib) and by the
virtual light stage (`synth.render_portrait`, landmarks projected from the head model), so
both live in exactly the same crop.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

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
    faces_found: int = 1  # how many faces the detector saw (the largest was taken unless told)

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


# ---------------------------------------------------------------------------------------------
# photos: reading, detection, landmarks, and the way back


def load_image(image) -> np.ndarray:
    """Path, PIL image or array -> uint8 RGB [H, W, 3]; honours EXIF orientation and converts
    grayscale, RGBA (over white), 16-bit, palette and CMYK inputs."""
    from PIL import ImageOps, UnidentifiedImageError

    if isinstance(image, np.ndarray):
        a = image
        if a.dtype == np.uint16:
            a = (a / 257.0).round().astype(np.uint8)
        elif a.dtype != np.uint8:
            a = np.clip(np.asarray(a, np.float64) * (255 if a.max() <= 1.0 else 1), 0, 255).round().astype(np.uint8)
        if a.ndim == 2:
            a = np.repeat(a[..., None], 3, axis=2)
        if a.ndim != 3 or a.shape[2] not in (3, 4):
            raise AlignError(f"image must be [H, W, 3] (or gray/RGBA), got shape {list(image.shape)}")
        if a.shape[2] == 4:
            alpha = a[..., 3:4].astype(np.float64) / 255
            a = (a[..., :3] * alpha + 255 * (1 - alpha)).round().astype(np.uint8)
        return np.ascontiguousarray(a)
    try:
        img = image if isinstance(image, Image.Image) else Image.open(image)
        img = ImageOps.exif_transpose(img)
    except (FileNotFoundError, IsADirectoryError):
        raise AlignError(f"{image}: no such image file") from None
    except (UnidentifiedImageError, OSError) as e:
        raise AlignError(f"{image}: unreadable image ({type(e).__name__}); use a JPEG or PNG photo") from None
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        return load_image(np.asarray(img).astype(np.uint16) if img.mode != "I" else
                          (np.asarray(img, np.float64) / max(1, np.asarray(img).max()) * 255).astype(np.uint8))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        return load_image(np.asarray(img.convert("RGBA")))
    return np.ascontiguousarray(np.asarray(img.convert("RGB")))


def landmark_model_path() -> Path | None:
    """dlib's 68-landmark model inside face-recognition-models, found without importing it."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        return None
    for root in spec.submodule_search_locations:
        p = Path(root, "models", "shape_predictor_68_face_landmarks.dat")
        if p.is_file():
            return p
    return None


@lru_cache(maxsize=2)
def _dlib_models(detector: str):
    import dlib

    path = landmark_model_path()
    if path is None:
        raise AlignError("dlib's 68-landmark model not found: pip install face-recognition-models")
    if detector == "cnn":
        det = dlib.cnn_face_detection_model_v1(str(path.with_name("mmod_human_face_detector.dat")))
    elif detector == "hog":
        det = dlib.get_frontal_face_detector()
    else:
        raise AlignError(f"unknown detector {detector!r}; use 'hog' or 'cnn'")
    return det, dlib.shape_predictor(str(path))


def detect_landmarks(image: np.ndarray, face_index: int | None = None, detector: str = "hog") -> np.ndarray:
    """68 iBUG landmarks [68, 2] of one face: the largest (ties: the most confident) unless face_index."""
    return _detect_landmarks(image, face_index, detector)[0]


def _detect_landmarks(image: np.ndarray, face_index: int | None, detector: str) -> tuple[np.ndarray, int]:
    import dlib

    det, predictor = _dlib_models(detector)
    if detector == "cnn":
        found = det(image, 1)
        boxes = [(d.rect, float(d.confidence)) for d in found]
    else:
        rects, scores, _ = det.run(image, 1, 0.0)
        boxes = list(zip(rects, scores, strict=True))
    if not boxes:
        raise AlignError("no face found in the image; use a photo with a clearly visible frontal face")
    if face_index is not None:
        if not 0 <= face_index < len(boxes):
            raise AlignError(f"face_index {face_index} out of range: {len(boxes)} face(s) found")
        boxes.sort(key=lambda b: (b[0].left(), b[0].top()))  # a stable left-to-right order
        rect = boxes[face_index][0]
    else:
        def area(b):
            return b[0].width() * b[0].height()

        biggest = max(area(b) for b in boxes)
        rect = max((b for b in boxes if area(b) >= 0.8 * biggest), key=lambda b: b[1])[0]
    shape = predictor(image, dlib.rectangle(rect.left(), rect.top(), rect.right(), rect.bottom()))
    return np.array([[shape.part(i).x, shape.part(i).y] for i in range(68)], np.float64), len(boxes)


def face_found_rate(images: np.ndarray, detector: str = "hog", size: int = 256, threshold: float = -0.5) -> float:
    """Fraction of uint8 images [N, H, W, 3] in which dlib finds a face after bicubic resizing
    to size^2: a model-free 'does it look like a face' score for generated heads, read beside
    the rate on real images (small, shaded or turned faces are missed even when real).
    threshold applies to the HOG detector's score; the CNN detector uses its own."""
    from PIL import Image

    det, _ = _dlib_models(detector)
    hits = 0
    for im in images:
        big = np.asarray(Image.fromarray(np.ascontiguousarray(im)).resize((size, size), Image.BICUBIC))
        found = det(big, 0) if detector == "cnn" else det.run(big, 0, threshold)[0]
        hits += len(found) > 0
    return hits / max(len(images), 1)


def align_face(image, output_size: int = 256, face_index: int | None = None, detector: str = "hog") -> AlignedFace:
    """Detect a face (dlib), find its 68 landmarks, and crop it as FFHQ was cropped."""
    img = load_image(image)
    lm, n = _detect_landmarks(img, face_index, detector)
    a = align_from_landmarks(img, lm, output_size)
    a.faces_found = n
    return a


def face_mask(size: int, feather: float = 0.12) -> np.ndarray:
    """Soft mask [S, S] in aligned coordinates: 1 over the central face, 0 at the crop's border."""
    y, x = (np.mgrid[0:size, 0:size] + 0.5) / size - 0.5
    r = np.sqrt((x / 0.40) ** 2 + (y / 0.46) ** 2)  # an ellipse a little inside the crop
    t = np.clip((1.0 - r) / feather + 0.5, 0, 1)
    return (t * t * (3 - 2 * t)).astype(np.float32)


def paste_back(photo, aligned: AlignedFace, edited_face: np.ndarray, feather: float = 0.12) -> np.ndarray:
    """Warp `edited_face` (aligned coordinates, any size) back into `photo` through the inverse
    of the crop and blend it with a feathered face mask; pixels outside the mask are untouched."""
    import cv2

    photo = load_image(photo)
    face = load_image(edited_face)
    s = face.shape[0]
    h, w = photo.shape[:2]
    # The crop maps the quad + 0.5 (continuous coordinates of the landmarks' pixel indices) to
    # the output square [0, S]; so photo pixel index p lands at continuous face coordinate
    # to_face(p), i.e. at face pixel index to_face(p) - 0.5.
    to_face = np.diag([s / aligned.size, s / aligned.size, 1.0]) @ aligned.quad_to_output()
    unshift = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]])
    m = unshift @ to_face  # photo pixel index -> face pixel index
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    warped = cv2.warpPerspective(face.astype(np.float32), m, (w, h), flags=flags, borderMode=cv2.BORDER_REPLICATE)
    mask = cv2.warpPerspective(face_mask(s, feather), m, (w, h), flags=flags, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=0)[..., None]
    out = photo.astype(np.float32) * (1 - mask) + warped * mask
    out = np.clip(np.rint(out), 0, 255).astype(np.uint8)
    out[mask[..., 0] <= 0] = photo[mask[..., 0] <= 0]  # exactly the photo outside the mask
    return out
