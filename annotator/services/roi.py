"""Find the ultrasound image (sector or rectangle) in a screen capture, and cut everything else.

The image is the part of the screen that changes over time; interface (text, scales, logos)
is static. From the first frames of a clip:
1. count, per pixel, the consecutive frame pairs in which it changed; pixels that changed in at
   least ``MIN_CHANGE_FRACTION`` of the pairs move (lossy-codec noise on static text changes in a
   few pairs only, around key frames);
2. open (drop isolated pixels), close over ~3 % of the frame (join speckle and stripes), keep the connected parts at least
   ``MIN_PART_FRACTION`` of the largest (a blinking clock or cursor is far smaller);
3. the convex hull of those parts, dilated by a few pixels, is the sector mask; its bounding
   rectangle is the ROI.
Stored frames are cropped to the ROI and zeroed outside the mask, so burned-in text outside the
sector, including in the rectangle's corners, never reaches the store. When nothing moves (a
single frame, a frozen clip) the whole frame is kept and the video is not marked de-identified.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import cv2
import numpy as np

MIN_CHANGE_FRACTION = 0.2
MIN_PART_FRACTION = 0.05
MIN_AREA_FRACTION = 0.002  # of the frame: smaller moving regions are not an ultrasound image


@dataclass
class Roi:
    x: int
    y: int
    w: int
    h: int
    mask: np.ndarray  # (h, w) uint8, 255 inside the sector
    found: bool
    method: str
    _mask3: np.ndarray | None = field(default=None, repr=False)

    @property
    def rect(self) -> list[int]:
        return [self.x, self.y, self.w, self.h]

    def mask_out(self, crop: np.ndarray) -> np.ndarray:
        """``crop`` (the ROI rectangle, grey or BGR) with everything outside the sector set to 0,
        in place; returns it."""
        # AND with a mask image: OpenCV's ``mask=`` argument is ~50x slower here.
        if crop.ndim == 2:
            return cv2.bitwise_and(crop, self.mask, dst=crop)
        if self._mask3 is None or self._mask3.shape[2] != crop.shape[2]:
            self._mask3 = cv2.merge([self.mask] * crop.shape[2])
        return cv2.bitwise_and(crop, self._mask3, dst=crop)


def whole_frame(width: int, height: int, reason: str) -> Roi:
    return Roi(0, 0, width, height, np.full((height, width), 255, np.uint8), False,
               f"none: {reason}; frames stored uncropped")


def find_roi(frames: Sequence[np.ndarray], lossless: bool = False) -> Roi:
    """The moving image region of ``frames`` (grey, all the same size).

    ``lossless``: the frames come from a source without codec noise (uncompressed or intra-only
    DICOM), where interface pixels never change, so a single change marks image.
    """
    height, width = frames[0].shape[:2]
    if len(frames) < 2:
        return whole_frame(width, height, "a single frame shows no moving image region")
    greys = frames[:256]  # counts are uint8
    counts = np.zeros((height, width), np.uint8)
    for a, b in zip(greys, greys[1:]):
        changed = cv2.compare(a, b, cv2.CMP_NE)  # 0 or 255
        np.bitwise_and(changed, 1, out=changed)
        cv2.add(counts, changed, dst=counts)
    pairs = len(greys) - 1
    min_pairs = 1 if lossless else max(1, int(np.ceil(MIN_CHANGE_FRACTION * pairs)))
    moving = (counts >= min_pairs).astype(np.uint8) * 255
    moving = cv2.morphologyEx(moving, cv2.MORPH_OPEN, np.ones((3, 3), np.uint8))
    # Joins the bands of a near field that changes in stripes, not a distant clock or cursor.
    close = 2 * round(0.015 * max(width, height)) + 1
    moving = cv2.morphologyEx(moving, cv2.MORPH_CLOSE, np.ones((close, close), np.uint8))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(moving, connectivity=8)
    if n <= 1:
        return whole_frame(width, height, f"no moving image region in {len(frames)} frames")
    areas = stats[1:, cv2.CC_STAT_AREA]
    largest = int(areas.max())
    if largest < MIN_AREA_FRACTION * width * height:
        return whole_frame(width, height, f"no moving image region in {len(frames)} frames")
    keep = np.zeros(n, np.uint8)
    keep[1:][areas >= MIN_PART_FRACTION * largest] = 255
    contours, _ = cv2.findContours(keep[labels], cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    hull = cv2.convexHull(np.concatenate(contours))
    mask = np.zeros((height, width), np.uint8)
    cv2.fillConvexPoly(mask, hull, 255)
    pad = max(2, round(0.005 * max(width, height)))
    mask = cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * pad + 1, 2 * pad + 1)))
    x, y, w, h = cv2.boundingRect(mask)
    rule = "any" if lossless else f">= {MIN_CHANGE_FRACTION:.0%} of"
    method = (f"roi-crop+sector-mask: convex hull of pixels changing in {rule} {pairs} frame "
              f"pairs, dilated {pad} px; pixels outside zeroed")
    return Roi(int(x), int(y), int(w), int(h), np.ascontiguousarray(mask[y:y + h, x:x + w]),
               True, method)
