"""How an import splits a video into scenes (runs of frames labelled as a unit).

- ``auto``: PySceneDetect's ContentDetector finds cuts (fed small crops during the import's one
  decode pass), then runs longer than N frames are chopped into consecutive scenes of N (the
  last one of a run may be shorter).
- ``fixed:N``: no cut detection, consecutive scenes of N.
- ``none``: the whole video is one scene.

A scene made by hand from a range of frames is :mod:`.scene_edit`'s.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import cv2
import numpy as np

from . import ImportRefused
from .input_checks import shown

DETECT_WIDTH = 96  # a shot change shows at any size; at 160 px PySceneDetect costs 4x more per frame


@dataclass(frozen=True)
class SceneMode:
    kind: str  # "auto", "fixed" or "none"
    length: int | None = None  # N for "fixed"; for "auto" None means the configured default


def parse_scene_mode(text: str) -> SceneMode:
    """``auto``, ``auto:N``, ``fixed:N`` or ``none``; anything else is refused (ImportRefused)."""
    value = (text or "").strip().lower()
    if value in ("auto", "none"):
        return SceneMode(value)
    kind, sep, number = value.partition(":")
    # ASCII digits only ("²" is a digit to str.isdigit, not to int), and a length int() reads.
    if (sep and kind in ("auto", "fixed") and number.isascii() and number.isdigit()
            and len(number) <= 9 and int(number) >= 1):
        return SceneMode(kind, int(number))
    raise ImportRefused(f"scene mode {shown(text)} is not one of auto, fixed:N "
                        "(1 <= N <= 999999999) or none")


class CutDetector:
    """Feeds frames, in order, to PySceneDetect's ContentDetector; ``cuts`` are first frames."""

    def __init__(self, fps: float):
        self.detector = None  # made on the first frame, once it is known whether video is grey
        self.fps = float(fps) if fps > 0 else 30.0
        self.cuts: list[int] = []
        self.index = 0

    @staticmethod
    def small(image: np.ndarray) -> np.ndarray:
        """A small copy for the detector, grey or BGR like ``image`` (made in worker threads,
        whose buffers are reused for the next frame: always a new array)."""
        h, w = image.shape[:2]
        if w <= DETECT_WIDTH:
            return image.copy()
        scale = DETECT_WIDTH / w
        return cv2.resize(image, (DETECT_WIDTH, max(1, round(h * scale))),
                          interpolation=cv2.INTER_LINEAR)

    def feed(self, small: np.ndarray) -> None:
        from scenedetect import ContentDetector, FrameTimecode

        if self.detector is None:
            # Grey B-mode has no hue or saturation: with the default weights a total change of
            # brightness would score only a third and never reach the threshold.
            self.detector = _grey_content_detector()() if small.ndim == 2 else ContentDetector()
        for cut in self.detector.process_frame(FrameTimecode(self.index, self.fps), small):
            frame = cut.frame_num
            if 0 < frame and (not self.cuts or frame > self.cuts[-1]):
                self.cuts.append(frame)
        self.index += 1


@functools.cache
def _grey_content_detector() -> type:
    """PySceneDetect's luma-only ContentDetector, fed grey frames as they are.

    Luma-only, it scores a frame by the mean absolute difference of the V channel of HSV from
    the previous frame; V of a grey frame is its grey value, so the score is the mean absolute
    difference of the grey frames: one OpenCV call instead of a colour conversion, a split and
    three NumPy distances, on the import's decoding thread.
    Thresholding, the flash filter and the minimum scene length stay PySceneDetect's; a test
    checks the cuts equal those of the unmodified detector.
    """
    from scenedetect import ContentDetector

    class GreyContentDetector(ContentDetector):
        def __init__(self) -> None:
            super().__init__(luma_only=True)
            self._previous: np.ndarray | None = None

        def _calculate_frame_score(self, timecode: object, frame_img: np.ndarray) -> float:
            previous, self._previous = self._previous, frame_img
            if previous is None:
                return 0.0
            return cv2.norm(frame_img, previous, cv2.NORM_L1) / frame_img.size

    return GreyContentDetector


def scene_ranges(frame_count: int, cuts: list[int], length: int | None) -> list[tuple[int, int]]:
    """Inclusive ``(first, last)`` ranges: split at ``cuts``, then every ``length`` frames."""
    if frame_count <= 0:
        return []
    bounds = [0, *sorted(c for c in set(cuts) if 0 < c < frame_count), frame_count]
    ranges = []
    for start, stop in zip(bounds, bounds[1:]):
        step = length or (stop - start)
        for first in range(start, stop, step):
            ranges.append((first, min(first + step, stop) - 1))
    return ranges
