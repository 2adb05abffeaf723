"""The frame PNG encoder: standard files that OpenCV and Pillow read back pixel for pixel."""
from __future__ import annotations

import io

import cv2
import numpy as np
import pytest
from PIL import Image

from annotator.services.png import encode_png


def decode(data: bytes) -> np.ndarray:
    return cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("shape", [(1, 1), (7, 13), (574, 716), (3, 5, 3), (120, 161, 3)])
def test_round_trip_is_exact(shape):
    image = np.random.default_rng(sum(shape)).integers(0, 256, shape, dtype=np.uint8)
    data = encode_png(image)
    assert np.array_equal(decode(data), image)
    pil = np.asarray(Image.open(io.BytesIO(data)))
    assert np.array_equal(pil, image if image.ndim == 2 else image[..., ::-1]), "BGR is stored as RGB"


def test_views_and_speckle_compress():
    rng = np.random.default_rng(1)
    screen = cv2.GaussianBlur(rng.integers(0, 256, (300, 400), dtype=np.uint8), (0, 0), 4)
    crop = screen[20:250, 35:390]  # a strided view, as the import's ROI crop is
    data = encode_png(crop)
    assert np.array_equal(decode(data), crop)
    assert len(data) < 0.6 * crop.size


def test_same_pixels_same_bytes():
    image = np.random.default_rng(2).integers(0, 256, (50, 60, 3), dtype=np.uint8)
    assert encode_png(image) == encode_png(image.copy())  # the store addresses files by their hash


@pytest.mark.parametrize("image", [np.zeros((4, 4), np.float32), np.zeros((4, 4, 4), np.uint8),
                                   np.zeros((0, 4), np.uint8), np.zeros(4, np.uint8)])
def test_refuses_what_it_cannot_encode(image):
    with pytest.raises(ValueError):
        encode_png(image)
