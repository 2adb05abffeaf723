"""Import a video or DICOM cine: decode once, find the ROI, crop and de-identify, store, split.

One decode pass does everything. The first ~2 s of frames are buffered to find the ROI
(:mod:`.roi`); from then on each decoded frame goes to a thread pool that crops it (grey frames
from their luma, see :mod:`.video_reader`), masks it, encodes a PNG (:mod:`.png`) and hashes and writes
it (:mod:`.frames`), while the main thread keeps decoding (FFmpeg, ISA-L, NumPy and OpenCV
release the GIL). The workers also make the small copy that cut detection
(:mod:`.cut_detection`) reads, fed in frame order as results come back. Frame rows are bulk-inserted at the end, in
the same transaction as the video and its scenes.

Failure at any point rolls the transaction back, waits for the workers, and, when no other
import is in flight, deletes the frame files this import created that no committed row
references, so a refused import leaves nothing; otherwise they stay for the orphan sweep (the
rule is in :class:`.frames.FrameStore`). Frames the decoder rejected (damaged packets) are
skipped and listed on the video (``skipped_frames``).
"""
from __future__ import annotations

import bisect
import os
import re
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
from flask import current_app
from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError

from ..db import db
from ..models import Frame, Patient, Scene, User, Video
from . import ImportRefused
from .cut_detection import CutDetector, SceneMode, parse_scene_mode, scene_ranges
from .frames import FrameStore, data_dir, file_sha256
from .input_checks import shown
from .media import open_media, sniff_container
from .media_reader import MediaReader, Picture
from .png import encode_png
from .roi import Roi, find_roi

PATIENT_CODE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,63}")
ROI_SECONDS = 2.0
ROI_MIN_FRAMES, ROI_MAX_FRAMES = 8, 120
ROI_MAX_BUFFER_BYTES = 512 << 20
# One encoder per core beside the decoder's threads (2 measured best on 2 cores; 3 contends).
WORKERS = max(2, min(8, os.cpu_count() or 2))
QUEUE_PER_WORKER = 3


@dataclass
class ImportResult:
    video: Video
    created: bool
    frames: int
    scenes: int
    roi: list[int] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)  # see skipped_frames()

    def as_json(self) -> dict[str, Any]:
        return {"video_id": self.video.id, "frames": self.frames, "scenes": self.scenes,
                "roi": self.roi, "skipped_frames": self.skipped}


def validate_patient_code(code: str) -> str:
    """1-64 letters, digits, '-', '_', '.', not starting with '.' (it becomes part of paths)."""
    if not isinstance(code, str) or not PATIENT_CODE.fullmatch(code):
        raise ImportRefused(
            f"patient code {shown(code, 64)} is invalid: use 1-64 letters, digits, '-', '_' or "
            "'.', not starting with '.'")
    return code


def import_video(path: Path, patient_code: str, scenes: str = "auto", user: User | None = None,
                 source_name: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> ImportResult:
    """Import ``path`` for patient ``patient_code`` (created on first use); commits on success.

    Re-importing the same file (same SHA-256) returns the existing video with ``created=False``.
    Raises :class:`ImportRefused` for bad input, after leaving no rows and no files behind.
    """
    path = Path(path)
    code = validate_patient_code(patient_code)
    mode = parse_scene_mode(scenes)
    sniff_container(path)  # type and emptiness first: cheap, and clearer than a hash failure
    source_sha = file_sha256(path)
    existing = db.session.scalar(select(Video).where(Video.source_sha256 == source_sha))
    if existing is not None:
        return _existing(existing, code)

    config = current_app.config
    store = FrameStore(data_dir())
    reader = open_media(path, int(config["SONOLABEL_MAX_FRAME_PIXELS"]))
    try:
        with store.writing():  # held until the rows referencing the frames are committed
            length = mode.length or int(config["SONOLABEL_SCENE_LENGTH"])
            decoded = _decode_and_store(reader, store, mode, progress)
            ranges = scene_ranges(len(decoded.frames), decoded.cuts if mode.kind == "auto" else [],
                                  None if mode.kind == "none" else length)
            video = _write_rows(reader, decoded, ranges, code, source_sha,
                                (source_name or path.name)[:255], user)
            db.session.commit()
    except BaseException as exc:
        db.session.rollback()
        store.discard_created(_committed_use)
        if isinstance(exc, IntegrityError):
            # The same file or patient was created by a concurrent import meanwhile.
            raise ImportRefused("this file or patient was being imported at the same time; "
                                "try again", 409) from None
        raise
    finally:
        reader.close()
    return ImportResult(video, True, len(decoded.frames), len(ranges), decoded.roi.rect,
                        video.skipped_frames)


def _existing(video: Video, code: str) -> ImportResult:
    if video.patient.code != code:
        raise ImportRefused(
            f"this file was already imported as video {video.id} of another patient", 409)
    n_scenes = db.session.scalar(
        select(db.func.count()).select_from(Scene).where(Scene.video_id == video.id)) or 0
    return ImportResult(video, False, video.frame_count, n_scenes, video.roi, video.skipped_frames)


def skipped_frames(times: tuple[float | None, ...], stored: list[float]) -> list[dict[str, Any]]:
    """Each frame the decoder refused as damaged: its time (ms) and ``before_frame``, the number
    of the stored frame that follows the gap (the frame count when at the end); None where the
    file gives no time."""
    return [{"timestamp_ms": None, "before_frame": None} if t is None else
            {"timestamp_ms": round(t, 3), "before_frame": bisect.bisect_left(stored, t)}
            for t in times]


@dataclass
class _Decoded:
    roi: Roi
    frames: list[tuple[float, str, int, int]]  # per index: timestamp_ms, sha256, width, height
    cuts: list[int]


def _decode_and_store(reader: MediaReader, store: FrameStore, mode: SceneMode,
                      progress: Callable[[int, int], None] | None) -> _Decoded:
    info = reader.info
    detector = CutDetector(info.fps) if mode.kind == "auto" else None
    frame_bytes = max(1, info.width * info.height * 3)
    roi_frames = int(min(max(round(ROI_SECONDS * info.fps), ROI_MIN_FRAMES), ROI_MAX_FRAMES,
                         max(ROI_MIN_FRAMES, ROI_MAX_BUFFER_BYTES // frame_bytes)))
    total = info.frame_count
    frames: list[tuple[float, str, int, int]] = []
    pending: deque[tuple[float, Future]] = deque()
    buffer: list[tuple[float, Picture]] = []
    roi: Roi | None = None
    size: tuple[int, int] | None = None
    scratch = threading.local()  # each worker's grey crop buffer, reused frame after frame
    pool = ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="frame-store")

    def work(picture: Picture) -> tuple[str, int, int, np.ndarray | None]:
        assert roi is not None
        grey = getattr(scratch, "grey", None)
        if grey is None:
            grey = scratch.grey = np.empty((roi.h, roi.w), np.uint8)
        image = roi.mask_out(picture.crop(roi.x, roi.y, roi.w, roi.h, grey))
        sha = store.put(encode_png(image))
        return sha, roi.w, roi.h, (detector.small(image) if detector else None)

    def locate() -> Roi:
        return find_roi([p.grey() for _, p in buffer], lossless=info.container == "dicom")

    def collect(block_until: int) -> None:
        while pending and (len(pending) > block_until or pending[0][1].done()):
            ts, future = pending.popleft()
            sha, w, h, small = future.result()
            frames.append((ts, sha, w, h))
            if detector is not None:
                detector.feed(small)
            if progress is not None:
                progress(len(frames), max(total, len(frames)))

    try:
        for _index, ts, picture in reader.frames():
            if size is None:
                size = (picture.width, picture.height)
            elif (picture.width, picture.height) != size:
                raise ImportRefused("the frame size changes within the file; cannot import")
            if roi is None:
                buffer.append((ts, picture))
                if len(buffer) < roi_frames:
                    continue
                roi = locate()
                pending.extend((bts, pool.submit(work, bpicture)) for bts, bpicture in buffer)
                buffer = []
            else:
                pending.append((ts, pool.submit(work, picture)))
            collect(block_until=WORKERS * QUEUE_PER_WORKER)
        if roi is None:  # a clip shorter than the ROI window
            if not buffer:
                raise ImportRefused("no frame could be decoded")
            roi = locate()
            pending.extend((bts, pool.submit(work, bpicture)) for bts, bpicture in buffer)
            buffer = []
        collect(block_until=0)
    finally:
        # Workers must be finished before a failed import deletes what they wrote.
        pool.shutdown(wait=True, cancel_futures=True)
    return _Decoded(roi, frames, detector.cuts if detector else [])


def _write_rows(reader: MediaReader, decoded: _Decoded, ranges: list[tuple[int, int]],
                code: str, source_sha: str, source_name: str, user: User | None) -> Video:
    info, roi = reader.info, decoded.roi
    patient = db.session.scalar(select(Patient).where(Patient.code == code))
    if patient is None:
        patient = Patient(code=code)
        db.session.add(patient)
    video = Video(
        patient=patient, source_sha256=source_sha, source_name=source_name,
        container=info.container, codec=(info.codec or "unknown")[:32], fps=float(info.fps),
        frame_count=len(decoded.frames), width=info.width, height=info.height,
        roi_x=roi.x, roi_y=roi.y, roi_w=roi.w, roi_h=roi.h,
        deidentified=roi.found, deid_method=roi.method[:255],
        skipped_frames=skipped_frames(reader.skipped, [ts for ts, *_ in decoded.frames]),
        imported_by_id=user.id if user is not None else None)
    db.session.add(video)
    db.session.flush()
    scene_rows = [Scene(video_id=video.id, first_frame=a, last_frame=b) for a, b in ranges]
    db.session.add_all(scene_rows)
    db.session.flush()
    scene_of = np.empty(len(decoded.frames), np.int64)
    for scene in scene_rows:
        scene_of[scene.first_frame:scene.last_frame + 1] = scene.id
    rows = [
        {"video_id": video.id, "scene_id": int(scene_of[i]), "frame_index": i,
         "timestamp_ms": ts, "sha256": sha, "width": w, "height": h, "reviewed_empty": False}
        for i, (ts, sha, w, h) in enumerate(decoded.frames)]
    for start in range(0, len(rows), 5000):
        db.session.execute(insert(Frame), rows[start:start + 5000])
    return video


def _committed_use(hashes: list[str]) -> set[str]:
    from .integrity import referenced_hashes

    try:
        return referenced_hashes(hashes)
    finally:
        db.session.rollback()  # end the transaction the query opened
