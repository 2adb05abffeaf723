"""DICOM cines through pydicom.

Design choices:
- A frame is a grey (H, W) or BGR array (:class:`ArrayPicture`).
- Timestamps come from the header's frame timing: FrameTimeVector, FrameTime, CineRate,
  RecommendedDisplayFrameRate, in that order; 30 fps when none is present.
- MONOCHROME1 is inverted so that bright means echo everywhere; YBR is converted to RGB by
  pydicom; samples wider than 8 bits are scaled to 8 bits.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from . import ImportRefused
from .media_reader import ArrayPicture, MediaInfo, MediaReader, Picture


def _dicom_fps(ds: object) -> tuple[float, list[float] | None]:
    """Frames per second and, where the header has one, per-frame time increments (ms)."""
    vector = getattr(ds, "FrameTimeVector", None)
    if vector is not None:
        values = [float(v) for v in (vector if isinstance(vector, (list, tuple)) or
                                     hasattr(vector, "__iter__") else [vector])]
        steps = [v for v in values[1:] if v > 0]
        fps = 1000.0 / (sum(steps) / len(steps)) if steps else 30.0
        return fps, values
    frame_time = getattr(ds, "FrameTime", None)
    if frame_time is not None and float(frame_time) > 0:
        return 1000.0 / float(frame_time), None
    for key in ("CineRate", "RecommendedDisplayFrameRate"):
        value = getattr(ds, key, None)
        if value is not None and float(value) > 0:
            return float(value), None
    return 30.0, None


class DicomReader(MediaReader):
    def __init__(self, path: Path):
        import pydicom
        from pydicom.errors import InvalidDicomError

        self.path = path
        try:
            # Pixel data stays on disk (deferred) and is decoded frame by frame later.
            ds = pydicom.dcmread(path, defer_size="1 KB")
        except (InvalidDicomError, EOFError, OSError, ValueError, KeyError) as exc:
            raise ImportRefused(f"{path.name} is not a readable DICOM file: {exc}") from None
        self.ds = ds
        if not any(k in ds for k in ("PixelData", "FloatPixelData", "DoubleFloatPixelData")):
            raise ImportRefused(f"{path.name} is a DICOM file without pixel data (no image to import)")
        try:
            rows, cols = int(ds.Rows), int(ds.Columns)
            self.photometric = str(ds.PhotometricInterpretation).upper()
            self.bits = int(getattr(ds, "BitsStored", 8) or 8)
        except (AttributeError, ValueError, TypeError):
            raise ImportRefused(f"{path.name}: DICOM image attributes (Rows/Columns/Photometric"
                                " Interpretation) are missing") from None
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        codec = (syntax.name if syntax is not None and syntax.name else str(syntax or "dicom"))
        fps, self.time_vector = _dicom_fps(ds)
        self.info = MediaInfo(container="dicom", codec=codec[:32], fps=fps, width=cols, height=rows,
                              frame_count=int(getattr(ds, "NumberOfFrames", 1) or 1))

    def _to_uint8(self, arr: np.ndarray) -> np.ndarray:
        if arr.dtype != np.uint8:
            if self.bits > 8:
                arr = (arr.astype(np.int64) >> (self.bits - 8)).clip(0, 255)
            arr = arr.clip(0, 255).astype(np.uint8)
        if self.photometric == "MONOCHROME1":
            arr = 255 - arr
        if arr.ndim == 3:
            arr = cv2.cvtColor(np.ascontiguousarray(arr[..., :3]), cv2.COLOR_RGB2BGR)
        return np.ascontiguousarray(arr)

    def frames(self) -> Iterator[tuple[int, float, Picture]]:
        from pydicom.pixels import iter_pixels

        if self.photometric not in ("MONOCHROME1", "MONOCHROME2", "RGB", "YBR_FULL",
                                    "YBR_FULL_422", "YBR_RCT", "YBR_ICT", "YBR_PARTIAL_420",
                                    "PALETTE COLOR"):
            raise ImportRefused(
                f"{self.path.name}: photometric interpretation {self.photometric} is not supported", 415)
        vector, fps = self.time_vector, self.info.fps
        elapsed, index = 0.0, 0
        try:
            iterator = iter_pixels(self.path, as_rgb=True)
            for arr in iterator:
                if vector is not None and index < len(vector):
                    # FrameTimeVector holds the time since the previous frame (first is 0).
                    elapsed += vector[index] if index > 0 else 0.0
                    ts = elapsed
                else:
                    ts = index * 1000.0 / fps
                yield index, ts, ArrayPicture(self._to_uint8(arr))
                index += 1
        except ImportRefused:
            raise
        except (NotImplementedError, RuntimeError, ValueError, KeyError, AttributeError) as exc:
            if index == 0:
                raise ImportRefused(
                    f"{self.path.name}: DICOM pixel data ({self.info.codec}) cannot be decoded: {exc}",
                    415) from None
            raise ImportRefused(
                f"{self.path.name} is truncated or damaged after frame {index}: {exc}") from None
        if index == 0:
            raise ImportRefused(f"{self.path.name}: DICOM pixel data holds no frame")
