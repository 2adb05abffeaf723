"""Content-addressed store of frame PNGs under the data directory.

A frame's file is ``frames/<h[:2]>/<h>.png`` where ``h`` is the SHA-256 of the PNG bytes, so a
file never changes once written, identical frames share one file, and ``sha256sum`` checks it.
Files appear atomically (written beside, then renamed) so a reader never sees half a PNG, and an
import that fails can remove exactly the files it created.
"""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
from pathlib import Path
from typing import Iterable


def frame_relpath(sha256: str) -> str:
    return f"frames/{sha256[:2]}/{sha256}.png"


class FrameStore:
    def __init__(self, data_dir: str | os.PathLike[str]):
        self.root = Path(data_dir)
        self._lock = threading.Lock()
        self.created: set[str] = set()  # hashes whose file this store wrote (for clean-up)
        self._created_dirs: set[Path] = set()

    def path(self, sha256: str) -> Path:
        return self.root / frame_relpath(sha256)

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
