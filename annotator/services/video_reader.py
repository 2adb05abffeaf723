"""MP4/MOV/AVI through PyAV (FFmpeg), and the pictures its decoded frames become.

Design choices:
- A planar YUV frame stays undecoded to BGR unless its crop holds colour, so grey B-mode is
  stored from its luma plane (the range expanded as the BGR conversion would); any other pixel
  format, and a video the container says to display turned, is converted to BGR.
- A timestamp is the decoder's position: the frame's presentation time from the stream's start.
- A packet the decoder refuses (damaged data) is skipped, as OpenCV's reader skips it, and the
  time of the frame lost is kept in ``skipped`` for the import to report.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterator

import av
import cv2
import numpy as np

from . import ImportRefused
from .media_reader import ArrayPicture, MediaInfo, MediaReader, Picture

# A YUV frame is grey when its chroma is this close to neutral.
CHROMA_TOLERANCE = 2


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
        sent: list[int] = []  # presentation times of the packets given to the decoder
        got: set[int] = set()  # and of the frames it gave back
        refused: list[int | None] = []
        try:
            for packet in self.container.demux(stream):
                if packet.size and packet.pts is not None and not packet.is_discard:
                    sent.append(packet.pts)
                try:
                    decoded = packet.decode()
                except (av.InvalidDataError, av.PatchWelcomeError):
                    refused.append(packet.pts)
                    continue
                for frame in decoded:
                    if frame.pts is not None:
                        got.add(frame.pts)
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
        if refused:
            # With frame threading a refusal surfaces some packets after the damaged one: the
            # frames lost are those whose packet went in and never came out, when that matches.
            lost = [pts for pts in sent if pts not in got]
            self.skipped = tuple(None if pts is None else (pts - start) * time_base * 1000.0
                                 for pts in (lost if len(lost) == len(refused) else refused))
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
