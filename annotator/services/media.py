"""Recognise and decode ultrasound media: MP4/AVI/MOV through PyAV (FFmpeg), DICOM cines
through pydicom.

Design choices:
- The container is recognised from its first bytes, never from the file name, so a text file
  named ``.mp4`` is refused as what it is.
- Frames come out in the decoder's order, numbered from 0, exactly as ``cv2.VideoCapture`` (or
  pydicom) gives them to training code reading the same file. Each is a :class:`Picture`: a
  video's planar YUV frame stays undecoded to BGR unless its crop holds colour, so grey B-mode
  is stored from its luma plane (the range expanded as the BGR conversion would); a DICOM frame
  is a grey (H, W) or BGR array. Timestamps are the decoder's position (video) or
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

import av
import cv2
import numpy as np

from . import ImportRefused

CONTAINERS = ("mp4", "mov", "avi", "dicom")
_QUICKTIME_ATOMS = (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot")
# A BGR frame whose channels differ by at most this is grey (the rounding of a decoder's
# YUV->BGR conversion of a grey picture); a YUV frame is grey when its chroma is this close to neutral.
GREY_TOLERANCE = 3
CHROMA_TOLERANCE = 2


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
    """Header facts in ``info``; ``frames()`` yields ``(index, timestamp_ms, picture)`` once."""

    info: MediaInfo

    def frames(self) -> Iterator[tuple[int, float, Picture]]:
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


# ---------------------------------------------------------------- video (PyAV / FFmpeg)


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


# Planar 8-bit YUV layouts whose luma plane is stored as is (after range expansion).
_PLANAR_YUV = {"yuv420p", "yuv422p", "yuv444p", "yuv411p", "yuv410p", "yuv440p",
               "yuvj420p", "yuvj422p", "yuvj444p", "yuvj440p", "yuvj411p"}
# Limited ("TV") range luma 16..235 to 0..255 exactly as FFmpeg's YUV->BGR conversion (which
# cv2.VideoCapture uses) maps a grey pixel: truncated, not rounded.
_TV_TO_FULL = np.clip(np.floor((np.arange(256) - 16) * 255 / 219), 0, 255).astype(np.uint8)
_JPEG_RANGE = 2  # AVColorRange AVCOL_RANGE_JPEG


def _plane(plane: av.video.plane.VideoPlane) -> np.ndarray:
    return np.frombuffer(plane, np.uint8).reshape(plane.height, plane.line_size)


class YuvPicture(Picture):
    """A decoded planar YUV frame. A crop without colour is stored from the luma plane alone, so
    grey ultrasound never pays for a colour conversion; chroma further than ``CHROMA_TOLERANCE``
    from neutral anywhere in the crop (Doppler, coloured marks) makes it a BGR crop."""

    def __init__(self, frame: av.VideoFrame):
        self.frame = frame
        self.width, self.height = frame.width, frame.height
        planes = frame.planes
        self._luma = _plane(planes[0])[:, :frame.width]
        self._chroma = [_plane(p)[:, :p.width] for p in planes[1:3]]
        self._step = (-(-frame.width // planes[1].width), -(-frame.height // planes[1].height))
        full = frame.format.name.startswith("yuvj") or frame.color_range == _JPEG_RANGE
        self._lut = None if full else _TV_TO_FULL

    def grey(self) -> np.ndarray:
        return self._luma.copy() if self._lut is None else cv2.LUT(self._luma, self._lut)

    def crop(self, x: int, y: int, w: int, h: int, grey_out: np.ndarray) -> np.ndarray:
        sx, sy = self._step
        window = (slice(y // sy, -(-(y + h) // sy)), slice(x // sx, -(-(x + w) // sx)))
        for chroma in self._chroma:
            low, high, _, _ = cv2.minMaxLoc(chroma[window])
            if low < 128 - CHROMA_TOLERANCE or high > 128 + CHROMA_TOLERANCE:
                return self.frame.to_ndarray(format="bgr24")[y:y + h, x:x + w].copy()
        luma = self._luma[y:y + h, x:x + w]
        if self._lut is None:
            grey_out[...] = luma
            return grey_out
        return cv2.LUT(luma, self._lut, dst=grey_out)


class ConvertedPicture(ArrayPicture):
    """A frame in any other pixel format, or one the container says to display turned, as BGR
    (turned upright, as ``cv2.VideoCapture`` shows it), converted when first needed."""

    def __init__(self, frame: av.VideoFrame, turns: int = 0):
        self.frame, self.turns = frame, turns  # quarter turns counterclockwise
        self.width, self.height = frame.width, frame.height
        if turns % 2:
            self.width, self.height = self.height, self.width
        self._image: np.ndarray | None = None

    @property
    def image(self) -> np.ndarray:
        if self._image is None:
            image = self.frame.to_ndarray(format="bgr24")
            self._image = np.ascontiguousarray(np.rot90(image, self.turns)) if self.turns else image
        return self._image


def _picture(frame: av.VideoFrame) -> Picture:
    turns = round(frame.rotation / 90) % 4  # the display matrix's counterclockwise rotation
    if turns or frame.format.name not in _PLANAR_YUV:
        return ConvertedPicture(frame, turns)
    return YuvPicture(frame)


class VideoReader(MediaReader):
    """MP4/MOV/AVI through PyAV (FFmpeg), decoding on several threads. Frames come out in the
    decoder's order, as ``cv2.VideoCapture`` gives them; a timestamp is the frame's presentation
    time from the stream's start, as ``CAP_PROP_POS_MSEC`` reports it."""

    def __init__(self, path: Path, container: str):
        self.path = path
        name = path.name
        try:
            self.container = av.open(str(path), metadata_errors="ignore")
        except av.FFmpegError:
            if container in ("mp4", "mov") and not _has_atom(path, b"moov"):
                raise ImportRefused(f"{name} is truncated or damaged: no movie header (moov)") from None
            raise ImportRefused(
                f"{name} cannot be opened: truncated or damaged {container.upper()}") from None
        if not self.container.streams.video:
            self.container.close()
            raise ImportRefused(f"{name} holds no video stream", 415)
        self.stream = stream = self.container.streams.video[0]
        context = stream.codec_context
        if context is None:  # FFmpeg knows no decoder for the declared codec
            self.container.close()
            declared = _declared_codec(path, container) or "unknown"
            raise ImportRefused(f"{name}: codec {declared!r} is not supported by the decoder", 415)
        context.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate
        fps = float(rate) if rate else 30.0
        frames = stream.frames or 0
        if not frames and stream.duration and stream.time_base:
            frames = round(float(stream.duration * stream.time_base) * fps)
        codec = (context.codec_tag or context.name or "").strip("\x00 ")
        self.info = MediaInfo(container=container, codec=codec, fps=fps, width=context.width,
                              height=context.height, frame_count=frames)

    def frames(self) -> Iterator[tuple[int, float, Picture]]:
        stream, fps, name = self.stream, self.info.fps, self.path.name
        start, time_base = stream.start_time or 0, float(stream.time_base or 0)
        index, last_ts = 0, -1.0
        try:
            for packet in self.container.demux(stream):
                try:
                    decoded = packet.decode()
                except (av.InvalidDataError, av.PatchWelcomeError):
                    continue  # a damaged packet: skipped, as OpenCV's reader skips it
                for frame in decoded:
                    ts = -1.0 if frame.pts is None else (frame.pts - start) * time_base * 1000.0
                    if ts <= last_ts:
                        ts = index * 1000.0 / fps  # the container gave no usable time: derive it
                    last_ts = ts
                    picture = _picture(frame)
                    if index == 0:  # a turned video's size is the size it is shown at
                        self.info.width, self.info.height = picture.width, picture.height
                    yield index, ts, picture
                    index += 1
        except av.FFmpegError as exc:
            if index == 0:
                raise ImportRefused(f"{name}: no frame could be decoded ({exc.strerror})", 415) from None
            # Reading stopped early (a cut-off file): the count below tells whether that matters.
        expected = self.info.frame_count
        if index == 0:
            codec = self.info.codec or "unknown"
            raise ImportRefused(
                f"{name}: no frame could be decoded (codec {codec!r} unsupported, "
                "or the file is truncated)", 415 if self.info.codec else 400)
        # Headers of MP4/MOV/AVI count frames exactly; a couple short is edit-list rounding.
        if expected and index < expected - max(2, expected // 100):
            raise ImportRefused(f"{name} is truncated or damaged: decoded {index} of {expected} frames")

    def close(self) -> None:
        self.container.close()


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


def file_sha256(path: Path) -> str:
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


