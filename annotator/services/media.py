"""Recognise an ultrasound file from its bytes and open the reader for it: MP4/AVI/MOV through
PyAV (``video_reader``), DICOM cines through pydicom (``dicom_reader``).

Design choices:
- The container is recognised from its first bytes, never from the file name, so a text file
  named ``.mp4`` is refused as what it is.
- Frame size is checked against the configured pixel limit before anything is decoded.
"""
from __future__ import annotations

from pathlib import Path

from . import ImportRefused
from .dicom_reader import DicomReader
from .media_reader import MediaReader
from .video_reader import VideoReader

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
