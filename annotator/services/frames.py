"""Frame files: the data directory, the content-addressed frame store, reading a frame, hashing.

A frame's file is ``frames/<h[:2]>/<h>.png`` under the data directory, where ``h`` is the
SHA-256 of the PNG bytes, so a file never changes once written, identical frames share one
file, and ``sha256sum`` checks it. Files appear atomically (written beside, then renamed) so a
reader never sees half a PNG.
"""
from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Iterator

from flask import current_app

from ..db import db
from . import ServiceError

if TYPE_CHECKING:
    import numpy as np

    from ..models import Frame

LOCK_NAME = ".lock"  # in frames/: the lock every writer shares and every deleter holds alone
# A file no row references is swept only when untouched this long: longer than any import.
ORPHAN_AGE_S = 24 * 3600.0


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
    """The frame PNGs under one data directory; remembers what it wrote, for clean-up.

    When a file may be deleted (the rule that keeps concurrent imports from losing frames): an
    import reuses a file the moment it exists, long before it commits the rows that reference
    it, and no other process can see those rows until then. So:

    - Every writer holds the store's lock shared (:meth:`writing`: ``flock`` on
      ``frames/.lock``, which holds between the threads and processes of a host) from before its
      first :meth:`put` until its transaction has ended. Deleting takes the lock alone
      (:meth:`exclusive`), that is only while no import is in flight.
    - A failing import removes what it created only if it gets the lock alone at once
      (:meth:`discard_created`), and then only files no committed row references: imported
      alone, a refused file leaves nothing. With another import in flight it removes nothing;
      its files stay as orphans.
    - Orphans (files no row references) are removed by ``sonolabel check --repair`` alone,
      holding the lock alone, and only when untouched for :data:`ORPHAN_AGE_S`. Writing or
      reusing a file refreshes its mtime, so the age also guards writers the lock does not
      reach (a network file system without working locks).

    Nothing else deletes frame files.
    """

    def __init__(self, data_dir: str | os.PathLike[str]):
        self.root = Path(data_dir)
        self.frames_dir = self.root / "frames"
        self._lock = threading.Lock()
        self.created: set[str] = set()  # hashes whose file this store wrote (for clean-up)
        self._created_dirs: set[Path] = set()

    def path(self, sha256: str) -> Path:
        return self.root / frame_relpath(sha256)

    def read(self, sha256: str) -> np.ndarray | None:
        """The frame as a grey uint8 image; None when its file is missing or unreadable."""
        import cv2  # not at module level: the models import this module for the path alone

        return cv2.imread(str(self.path(sha256)), cv2.IMREAD_GRAYSCALE)

    # --- the lock ------------------------------------------------------------------------------

    def _open_lock(self) -> int:
        self.frames_dir.mkdir(parents=True, exist_ok=True)
        return os.open(self.frames_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Hold the lock shared: frames put meanwhile are never deleted under the writer."""
        fd = self._open_lock()
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    @contextmanager
    def exclusive(self, wait_s: float = 0.0) -> Iterator[bool]:
        """Try for ``wait_s`` seconds to hold the lock alone; yields whether it is held (no
        writer in flight). Never called while this thread holds :meth:`writing`."""
        fd = self._open_lock()
        deadline = time.monotonic() + wait_s
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    held = True
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        held = False
                        break
                    time.sleep(0.1)
            yield held
        finally:
            os.close(fd)

    # --- writing and removing ------------------------------------------------------------------

    def put(self, png: bytes) -> str:
        """Store ``png`` unless a file with its hash exists; returns the hash. Thread-safe; the
        caller holds :meth:`writing`."""
        sha = hashlib.sha256(png).hexdigest()
        target = self.path(sha)
        try:
            os.utime(target)  # reused: its fresh mtime keeps the orphan sweep away
            return sha
        except FileNotFoundError:
            pass
        except OSError:
            return sha  # exists, but another user owns it: reuse it as it is
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

    def discard_created(self, referenced: Callable[[list[str]], set[str]]) -> int:
        """After a failed import (its :meth:`writing` released): remove the files this store
        created that no committed row references, if no other writer is in flight; else remove
        nothing. ``referenced`` answers which of the given hashes committed rows use."""
        if not self.created:
            return 0
        with self.exclusive() as alone:
            if not alone:
                return 0
            created = sorted(self.created)
            try:
                used = referenced(created)
            except Exception:
                return 0  # the database cannot say what is used: keep everything
            return self.remove(h for h in created if h not in used)

    def remove(self, hashes: Iterable[str]) -> int:
        """Delete the files of ``hashes`` (and shard folders this store made that are now
        empty). The caller holds :meth:`exclusive`."""
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
        return removed
