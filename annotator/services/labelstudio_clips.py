"""Scene clips for Label Studio's video tasks: a run of a video's stored frames as a
constant-frame-rate H.264 MP4 that browsers play.

Design choices:
- Encoded with PyAV's bundled libx264 (the FFmpeg inside opencv-python-headless has no H.264
  encoder, only VP8/VP9 and AV1; PyAV is already the import's decoder, so nothing is added):
  yuv420p, High profile, CRF 17, a key frame every second for quick seeking, and
  ``+faststart`` so a browser starts playing before the whole file has arrived. Label Studio
  recommends MP4/H.264 at a constant frame rate, which every browser plays.
- One stored frame is one clip frame at a constant rate: Label Studio's frame n (counted from
  1) is the n-th stored frame of the range, whatever gaps (skipped damaged packets) the
  decoder order has; tasks list the frame indexes so an import maps them back exactly.
- yuv420p needs even sides: an odd width or height gets one black column or row at the right
  or bottom, and percent coordinates are taken against the clip's size (``clip_size``).
- Clips are cached as ``<data dir>/clips/<sha256 of the frames' hashes, rate and encoder
  settings>.mp4``, written beside and renamed, so a reader never sees half a file. Deleting
  the folder loses nothing: a clip is encoded again when next asked for.
"""
from __future__ import annotations

import hashlib
import math
import os
import uuid
from fractions import Fraction
from pathlib import Path

import sqlalchemy as sa

from ..db import db
from ..models import Frame
from . import ServiceError
from .frames import data_dir, frame_relpath

ENCODER = "libx264 yuv420p crf17 high g1s faststart v1"  # in the cache key: change it with the settings
DEFAULT_FPS = (25, 1)
ClipFrame = tuple[int, str, int, int]  # frame index, sha256, width, height


class ClipRefused(ServiceError):
    """A clip that cannot be made."""


def fps_fraction(fps: float | None) -> tuple[int, int]:
    """A video's frame rate as a small fraction (29.97 -> 30000/1001); 25 when unknown."""
    if fps is None or not math.isfinite(fps) or not 0.5 <= fps <= 1000:
        return DEFAULT_FPS
    rate = Fraction(fps).limit_denominator(1001)
    return rate.numerator, rate.denominator


def clip_size(width: int, height: int) -> tuple[int, int]:
    """The clip's sides for frames of ``width`` x ``height``: rounded up to even numbers."""
    return width + width % 2, height + height % 2


def range_frames(video_id: int, first: int, last: int) -> list[ClipFrame]:
    """The stored frames of video ``video_id`` with an index in ``first..last``, in order."""
    rows = db.session.execute(
        sa.select(Frame.frame_index, Frame.sha256, Frame.width, Frame.height)
        .where(Frame.video_id == video_id, Frame.frame_index >= first,
               Frame.frame_index <= last).order_by(Frame.frame_index)).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def clip_path(frames: list[ClipFrame], fps: tuple[int, int]) -> Path:
    digest = hashlib.sha256(f"{ENCODER}|{fps[0]}/{fps[1]}|".encode())
    for index, sha, width, height in frames:
        digest.update(f"{index}:{sha}:{width}x{height};".encode())
    return data_dir() / "clips" / f"{digest.hexdigest()}.mp4"


def ensure_clip(frames: list[ClipFrame], fps: tuple[int, int]) -> Path:
    """The clip of ``frames`` at ``fps``, encoded now unless it is cached."""
    if not frames:
        raise ClipRefused("No stored frames to make a clip of.", status=404)
    path = clip_path(frames, fps)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{uuid.uuid4().hex[:8]}.partial.mp4")
    try:
        encode_clip([data_dir() / frame_relpath(sha) for _, sha, _, _ in frames], fps, tmp)
        os.replace(tmp, path)  # two requests encoding at once both write the same content
    finally:
        tmp.unlink(missing_ok=True)
    return path


def encode_clip(paths: list[Path], fps: tuple[int, int], out: Path) -> None:
    """Encode the PNG files ``paths`` (one size) as an H.264 MP4 at ``fps``."""
    import av
    import cv2
    import numpy as np

    rate = Fraction(*fps)
    with av.open(str(out), mode="w", format="mp4", options={"movflags": "+faststart"}) as box:
        stream = box.add_stream("libx264", rate=rate, options={
            "crf": "17", "preset": "medium", "profile": "high",
            "g": str(max(1, round(float(rate)))), "bf": "0"})
        stream.pix_fmt = "yuv420p"
        size = None
        for i, path in enumerate(paths):
            image = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if image is None:
                raise ClipRefused(f"The image file {path.name} is missing or unreadable.", status=500)
            h, w = image.shape[:2]
            if size is None:
                size = (w, h)
                stream.width, stream.height = clip_size(w, h)
            elif size != (w, h):
                raise ClipRefused(f"Frames of one clip differ in size ({size[0]}x{size[1]} and "
                                  f"{w}x{h}).", status=409)
            padded = np.zeros((stream.height, stream.width, 3), np.uint8)
            padded[:h, :w] = image
            frame = av.VideoFrame.from_ndarray(padded, format="bgr24")
            frame.pts = i
            frame.time_base = 1 / rate
            for packet in stream.encode(frame):
                box.mux(packet)
        for packet in stream.encode():
            box.mux(packet)
