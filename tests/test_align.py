"""FFHQ alignment of real photos, its inverse (paste-back), and the input formats it accepts."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
from PIL import Image

from stylerelight.align import AlignError, align_face, align_from_landmarks, face_mask, load_image, paste_back


def _ffhq_reference_quad(lm):
    """The quad of NVlabs' ffhq-dataset recipe, written out independently here."""
    lm = np.asarray(lm, np.float64)
    eye_l, eye_r = lm[36:42].mean(axis=0), lm[42:48].mean(axis=0)
    eye_avg, eye_to_eye = (eye_l + eye_r) / 2, eye_r - eye_l
    mouth_avg = (lm[48] + lm[54]) / 2
    eye_to_mouth = mouth_avg - eye_avg
    x = eye_to_eye - np.array([-eye_to_mouth[1], eye_to_mouth[0]])
    x = x / np.linalg.norm(x) * max(np.linalg.norm(eye_to_eye) * 2.0, np.linalg.norm(eye_to_mouth) * 1.8)
    y = np.array([-x[1], x[0]])
    c = eye_avg + eye_to_mouth * 0.1
    return np.array([c - x - y, c - x + y, c + x + y, c + x - y])


@pytest.fixture(scope="module")
def astronaut():
    img = skimage.data.astronaut()
    return img, align_face(img, output_size=128)


def test_astronaut_face_found_and_quad_is_ffhq(astronaut):
    img, a = astronaut
    assert a.image.shape == (128, 128, 3) and a.image.dtype == np.uint8
    assert a.landmarks.shape == (68, 2)
    # the face of the astronaut is in the upper middle of the photo
    assert 150 < a.landmarks[:, 0].mean() < 300 and 60 < a.landmarks[:, 1].mean() < 200
    assert np.abs(a.quad - _ffhq_reference_quad(a.landmarks)).max() < 0.5


def test_paste_back_unchanged_face(astronaut):
    img, a = astronaut
    out = paste_back(img, a, a.image)
    mask = face_mask(128)
    changed = np.any(out != img, axis=-1)
    # outside the (warped) mask the photo is reproduced exactly
    import cv2

    m = np.diag([1.0, 1.0, 1.0])
    to_face = np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1.0]]) @ a.quad_to_output() @ m
    warped = cv2.warpPerspective(mask, to_face, img.shape[1::-1], flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert not changed[warped <= 0].any()
    assert changed.sum() > 1000  # the face region was really replaced
    # no seam: in the feather band the result stays close to the photo (only resampling blur)
    band = (warped > 0.05) & (warped < 0.95)
    diff = np.abs(out.astype(float) - img)[band].mean()
    assert diff < 6.0, diff


def test_paste_back_is_geometrically_aligned():
    """A smooth photo pasted with its own crop: the error is smallest at zero shift."""
    import scipy.ndimage as nd

    img, a = skimage.data.astronaut(), None
    smooth = np.clip(nd.gaussian_filter(img.astype(float), [4, 4, 0]), 0, 255).astype(np.uint8)
    a = align_face(img, output_size=128)
    al = align_from_landmarks(smooth, a.landmarks, 128)
    errs = {}
    for dx in (-1.0, 0.0, 1.0):
        shifted = np.clip(nd.shift(smooth.astype(float), [0, dx, 0], order=1), 0, 255).astype(np.uint8)
        out = paste_back(shifted, al, al.image)
        d = np.abs(out.astype(float) - shifted).max(-1)
        errs[dx] = d[d > 0].mean()
    assert errs[0.0] < errs[-1.0] and errs[0.0] < errs[1.0]


def test_no_face_and_unreadable(tmp_path):
    with pytest.raises(AlignError, match="no face"):
        align_face(np.full((200, 200, 3), 128, np.uint8))
    (tmp_path / "x.jpg").write_bytes(b"not a jpeg")
    with pytest.raises(AlignError, match="unreadable"):
        align_face(tmp_path / "x.jpg")
    with pytest.raises(AlignError, match="no such"):
        align_face(tmp_path / "missing.jpg")


def test_image_formats(tmp_path, astronaut):
    img, a = astronaut
    ref = load_image(img)
    Image.fromarray(img).convert("L").save(tmp_path / "g.png")
    assert load_image(tmp_path / "g.png").shape == img.shape
    Image.fromarray(img).convert("CMYK").save(tmp_path / "c.jpg")
    assert np.abs(load_image(tmp_path / "c.jpg").astype(int) - ref).mean() < 12
    rgba = np.concatenate([img, np.full(img.shape[:2] + (1,), 255, np.uint8)], -1)
    Image.fromarray(rgba).save(tmp_path / "a.png")
    assert np.array_equal(load_image(tmp_path / "a.png"), ref)
    assert np.array_equal(load_image(img.astype(np.uint16) * 257), ref)
    Image.fromarray(img[..., 1].astype(np.uint16) * 257).save(tmp_path / "g16.png")  # 16-bit grey file
    g16 = load_image(tmp_path / "g16.png")
    assert g16.shape == img.shape and np.array_equal(g16[..., 0], img[..., 1])
    # EXIF orientation 6 (rotate 90 CW on display): the loader returns the upright image
    pil = Image.fromarray(np.ascontiguousarray(np.rot90(img, 1)))  # stored rotated
    exif = pil.getexif()
    exif[0x0112] = 6
    pil.save(tmp_path / "r.jpg", exif=exif, quality=95)
    up = load_image(tmp_path / "r.jpg")
    assert up.shape == img.shape and np.abs(up.astype(int) - ref).mean() < 8
    b = align_face(tmp_path / "r.jpg", output_size=128)
    assert np.abs(b.quad - a.quad).max() < 3.0


def test_face_index_and_largest():
    img = skimage.data.astronaut()
    big = np.full((600, 1100, 3), 200, np.uint8)
    big[:512, :512] = img
    small = np.asarray(Image.fromarray(img).resize((256, 256), Image.LANCZOS))
    big[300:556, 700:956] = small
    a = align_face(big, 64)  # the largest face is the full-size one on the left
    assert a.landmarks[:, 0].mean() < 512
    b = align_face(big, 64, face_index=1)
    assert b.landmarks[:, 0].mean() > 650
    with pytest.raises(AlignError, match="out of range"):
        align_face(big, 64, face_index=5)


def test_face_found_rate_separates_faces_from_blanks():
    from stylerelight.align import face_found_rate

    face = np.asarray(Image.fromarray(skimage.data.astronaut()[:300, 100:400]).resize((64, 64)))
    blank = np.full((64, 64, 3), 128, np.uint8)
    assert face_found_rate(np.stack([face, face])) == 1.0
    assert face_found_rate(np.stack([blank, face, blank, blank])) == 0.25
