"""What every media reader gives the import: the header facts (:class:`MediaInfo`) and each
decoded frame as a :class:`Picture`, which the import stores grey unless it holds colour.

Design choices:
- Frames come out in the decoder's order, numbered from 0, exactly as ``cv2.VideoCapture`` (or
  pydicom) gives them to training code reading the same file.
- A picture converts to BGR or grey only when asked: the import finds the ROI on ``grey()``
  and stores ``crop()``, so grey B-mode never pays for a colour conversion it does not need.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import cv2
import numpy as np

# A BGR frame whose channels differ by at most this is grey (the rounding of a decoder's
# YUV->BGR conversion of a grey picture).
GREY_TOLERANCE = 3


@dataclass
class MediaInfo:
    container: str
    codec: str
    fps: float
    width: int
    height: int
    frame_count: int  # from the header; the decoded count is what gets stored


class Picture:
    """One decoded frame. The import finds the ROI on ``grey()`` and stores ``crop()``."""

    width: int
    height: int

    def grey(self) -> np.ndarray:
        """The whole frame as 8-bit luma (H, W)."""
        raise NotImplementedError

    def crop(self, x: int, y: int, w: int, h: int, grey_out: np.ndarray) -> np.ndarray:
        """The rectangle as it is stored: its luma, written into ``grey_out`` (h, w), when it
        holds no colour, else a new BGR array (h, w, 3)."""
        raise NotImplementedError


class ArrayPicture(Picture):
    """A frame already in memory: grey (H, W) or BGR (H, W, 3) ``uint8``."""

    def __init__(self, image: np.ndarray):
        self._image = image
        self.height, self.width = image.shape[:2]

    @property
    def image(self) -> np.ndarray:
        return self._image

    def grey(self) -> np.ndarray:
        image = self.image
        return image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)

    def crop(self, x: int, y: int, w: int, h: int, grey_out: np.ndarray) -> np.ndarray:
        part = self.image[y:y + h, x:x + w]
        if part.ndim == 2:
            grey_out[...] = part
            return grey_out
        b, g, r = cv2.split(part[::2])  # every other row: colour (Doppler) spans many rows
        if max(cv2.norm(b, g, cv2.NORM_INF), cv2.norm(g, r, cv2.NORM_INF)) <= GREY_TOLERANCE:
            return cv2.cvtColor(part, cv2.COLOR_BGR2GRAY, dst=grey_out)
        return part.copy()


class MediaReader:
    """Header facts in ``info``; ``frames()`` yields ``(index, timestamp_ms, picture)`` once.
    ``skipped``, once the frames are read: the times (ms, None where unknown) of frames the
    decoder refused as damaged and left out."""

    info: MediaInfo
    skipped: tuple[float | None, ...] = ()

    def frames(self) -> Iterator[tuple[int, float, Picture]]:
        raise NotImplementedError

    def close(self) -> None:
        pass
