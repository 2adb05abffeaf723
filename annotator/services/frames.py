"""Frame files: the data directory, the content-addressed frame store, reading a frame, hashing.

A frame's file is ``frames/<h[:2]>/<h>.png`` under the data directory, where ``h`` is the
SHA-256 of the PNG bytes, so a file never changes once written, identical frames share one
file, and ``sha256sum`` checks it. Files appear atomically (written beside, then renamed) so a
reader never sees half a PNG, and an import that fails can remove exactly the files it created.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import threading
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Iterable

from flask import current_app

from ..db import db
from . import ServiceError

if TYPE_CHECKING:
    import numpy as np

    from ..models import Frame


class FrameMissing(ServiceError):
    """A frame row whose image file is gone from the data directory."""

    status = 500


def data_dir() -> Path:
    """The data directory of the running app (frames, datasets, models, uploads)."""
    return Path(current_app.config["SONOLABEL_DATA_DIR"])


def frame_relpath(sha256: str) -> str:
    """Where a frame's PNG lies under the data directory (derived from the hash, never user text)."""
    return f"frames/{sha256[:2]}/{sha256}.png"


def file_sha256(path: Path) -> str:
    """SHA-256 of a file, read in 1 MiB blocks (videos and model weights do not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def commit_or_remove(folder: Path) -> None:
    """Commit the session whose rows describe ``folder``; if the commit fails, remove the folder
    too, so no files are left that no row knows."""
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        shutil.rmtree(folder, ignore_errors=True)
        raise


def read_frame(frame: Frame) -> np.ndarray:
    """A stored frame as a grey uint8 image (what the detector and optical flow take)."""
    image = FrameStore(data_dir()).read(frame.sha256)
    if image is None:
        raise FrameMissing(f"The image of frame {frame.frame_index} is missing.")
    return image


class FrameStore:
    """The frame PNGs under one data directory; remembers what it wrote, for clean-up."""

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.root = Path(data_dir)
        self._lock = threading.Lock()
        self.created: set[str] = set()  # hashes whose file this store wrote (for clean-up)
        self._created_dirs: set[Path] = set()

    def path(self, sha256: str) -> Path:
        return self.root / frame_relpath(sha256)

    def read(self, sha256: str) -> np.ndarray | None:
        """The frame as a grey uint8 image; None when its file is missing or unreadable."""
        import cv2  # not at module level: the models import this module for the path alone

        return cv2.imread(str(self.path(sha256)), cv2.IMREAD_GRAYSCALE)

    def put(self, png: bytes) -> str:
        """Store ``png`` unless a file with its hash exists; returns the hash. Thread-safe."""
        sha = hashlib.sha256(png).hexdigest()
        target = self.path(sha)
        if target.exists():
            return sha
        folder = target.parent
        if not folder.is_dir():
            try:
                folder.mkdir(parents=True)
                with self._lock:
                    self._created_dirs.add(folder)
            except FileExistsError:
                pass
        tmp = folder / f".{sha}.{uuid.uuid4().hex}.tmp"
        try:
            with open(tmp, "wb") as fh:
                fh.write(png)
            # Another import may have written the same content meanwhile; then we did not create it.
            if target.exists():
                return sha
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()
        with self._lock:
            self.created.add(sha)
        return sha

    def remove(self, hashes: Iterable[str]) -> int:
        """Delete the files of ``hashes`` (and shard folders this store made that are now empty)."""
        removed = 0
        for sha in hashes:
            try:
                self.path(sha).unlink()
                removed += 1
            except FileNotFoundError:
                pass
        for folder in sorted(self._created_dirs, reverse=True):
            try:
                folder.rmdir()
            except OSError:
                pass  # not empty: another frame lives there
        frames_dir = self.root / "frames"
        try:
            frames_dir.rmdir()
        except OSError:
            pass
        return removed
