"""Recognise and decode ultrasound media: MP4/AVI/MOV through OpenCV, DICOM cines through pydicom.

Design choices:
- The container is recognised from its first bytes, never from the file name, so a text file
  named ``.mp4`` is refused as what it is.
- Frames come out in the decoder's order, numbered from 0, exactly as ``cv2.VideoCapture`` (or
  pydicom) gives them to training code reading the same file; a video yields BGR ``uint8``
  frames, a DICOM grey (H, W) or BGR frames. Timestamps are the decoder's position (video) or
  the header's frame timing (DICOM: FrameTimeVector, FrameTime, CineRate,
  RecommendedDisplayFrameRate, in that order; 30 fps when none is present).
- Frame size is checked against the configured pixel limit before anything is decoded.
- MONOCHROME1 is inverted so that bright means echo everywhere; YBR is converted to RGB by
  pydicom; samples wider than 8 bits are scaled to 8 bits.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from . import ImportRefused

CONTAINERS = ("mp4", "mov", "avi", "dicom")
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")


def sniff_container(path: Path) -> str:
    """``mp4``, ``mov``, ``avi`` or ``dicom`` from the file's first bytes, else ImportRefused."""
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ImportRefused(f"cannot read {path.name}: {exc.strerror}") from None
    if size == 0:
        raise ImportRefused(f"{path.name} is empty (0 bytes)")
    with open(path, "rb") as fh:
        head = fh.read(132)
    if len(head) >= 132 and head[128:132] == b"DICM":
        return "dicom"
    if head[4:8] == b"ftyp":
        return "mov" if head[8:12] == b"qt  " else "mp4"
    if head[4:8] in _QUICKTIME_ATOMS:
        return "mov"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    raise ImportRefused(
        f"{path.name} is not a supported video: expected MP4, AVI, MOV or DICOM content", 415)


@dataclass
class MediaInfo:
    container: str
    codec: str
    fps: float
    width: int
    height: int
    frame_count: int  # from the header; the decoded count is what gets stored


class MediaReader:
    """Header facts in ``info``; ``frames()`` yields ``(index, timestamp_ms, image)`` once."""

    info: MediaInfo

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        raise NotImplementedError

    def close(self) -> None:
        pass


def open_media(path: Path, max_frame_pixels: int) -> MediaReader:
    container = sniff_container(path)
    reader: MediaReader
    if container == "dicom":
        reader = DicomReader(path)
    else:
        reader = VideoReader(path, container)
    info = reader.info
    if info.width * info.height > max_frame_pixels:
        reader.close()
        raise ImportRefused(
            f"frames of {info.width}x{info.height} exceed the limit of {max_frame_pixels} pixels", 413)
    return reader


# ---------------------------------------------------------------- video (OpenCV / FFmpeg)


def _fourcc_text(value: float) -> str:
    code = int(value)
    text = "".join(chr((code >> (8 * i)) & 0xFF) for i in range(4))
    return text.strip("\x00 ") if text.isprintable() else ""


def _declared_codec(path: Path, container: str) -> str:
    """The codec tag the container declares (for messages when the decoder cannot open it)."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(4 << 20)
        if size > len(head):  # QuickTime's index is often at the end
            fh.seek(max(len(head), size - (4 << 20)))
            head += fh.read()
    if container == "avi":
        at = head.find(b"strh")
        if at >= 0 and head[at + 8:at + 12] == b"vids":
            return head[at + 12:at + 16].decode("latin-1").strip("\x00 ")
    else:
        at = head.find(b"stsd")
        if at >= 0:
            return head[at + 16:at + 20].decode("latin-1").strip("\x00 ")
    return ""


class VideoReader(MediaReader):
    def __init__(self, path: Path, container: str):
        self.path = path
        self.cap = cv2.VideoCapture(str(path), cv2.CAP_FFMPEG)
        if not self.cap.isOpened():
            self.cap.release()
            declared = _declared_codec(path, container)
            if container in ("mp4", "mov") and not _has_atom(path, b"moov"):
                raise ImportRefused(f"{path.name} is truncated or damaged: no movie header (moov)")
            if declared:
                raise ImportRefused(
                    f"{path.name}: codec {declared!r} is not supported by the decoder "
                    "(or the file is damaged)", 415)
            raise ImportRefused(f"{path.name} cannot be opened: truncated or damaged {container.upper()}")
        cap = self.cap
        self.info = MediaInfo(
            container=container,
            codec=_fourcc_text(cap.get(cv2.CAP_PROP_FOURCC)) or _declared_codec(path, container),
            fps=float(cap.get(cv2.CAP_PROP_FPS) or 0.0) or 30.0,
            width=int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
            height=int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            frame_count=max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT))),
        )

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
        cap, fps = self.cap, self.info.fps
        index, last_ts = 0, -1.0
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            ts = float(cap.get(cv2.CAP_PROP_POS_MSEC))
            if ts <= last_ts or (ts == 0.0 and index > 0):
                ts = index * 1000.0 / fps  # the container gave no usable time: derive it
            last_ts = ts
            yield index, ts, frame
            index += 1
        expected = self.info.frame_count
        if index == 0:
            codec = self.info.codec or "unknown"
            raise ImportRefused(
                f"{self.path.name}: no frame could be decoded (codec {codec!r} unsupported, "
                "or the file is truncated)", 415 if self.info.codec else 400)
        # Headers of MP4/MOV/AVI count frames exactly; a couple short is edit-list rounding.
        if expected and index < expected - max(2, expected // 100):
            raise ImportRefused(
                f"{self.path.name} is truncated or damaged: decoded {index} of {expected} frames")

    def close(self) -> None:
        self.cap.release()


def _has_atom(path: Path, atom: bytes) -> bool:
    """Walk the top-level QuickTime/MP4 boxes looking for ``atom``."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        pos = 0
        while pos + 8 <= size:
            fh.seek(pos)
            header = fh.read(16)
            length = int.from_bytes(header[:4], "big")
            if header[4:8] == atom:
                return pos + max(length, 8) <= size
            if length == 1 and len(header) >= 16:
                length = int.from_bytes(header[8:16], "big")
            elif length == 0:
                return False
            if length < 8:
                return False
            pos += length
    return False


# ---------------------------------------------------------------- DICOM (pydicom)


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

    def frames(self) -> Iterator[tuple[int, float, np.ndarray]]:
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
                yield index, ts, self._to_uint8(arr)
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


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


