"""Uploads in flight: a browser upload waits in a folder of its own, ``tmp/<random>.upload/``,
while it is imported.

The process receiving an upload holds a lock (``flock``) on that folder for as long as it
needs it and removes the folder at the end; a process killed mid-way (a worker timeout, an
OOM kill) leaves it behind, unlocked. Such an upload is stale, and so is any upload older than
a day (``MAX_AGE_S``): each new upload and ``sonolabel check --repair`` remove stale ones
(``*.upload`` files left by earlier versions too). An upload is left alone for its first
minute (``GRACE_S``), the gap between creating and locking it.
"""
from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from .frames import data_dir

SUFFIX = ".upload"
GRACE_S = 60.0
MAX_AGE_S = 24 * 3600.0


def tmp_dir() -> Path:
    """Uploads in progress and checked label files, on the data directory's file system."""
    folder = data_dir() / "tmp"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def upload_file(name: str) -> Iterator[Path]:
    """Where to save an upload called ``name`` (a safe file name) and import it from: in a new
    locked folder, removed on leaving. Sweeps stale uploads first."""
    folder = tmp_dir()
    remove_stale(folder)
    own = Path(tempfile.mkdtemp(dir=folder, suffix=SUFFIX))
    fd = os.open(own, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)  # shared: a read-only descriptor may take it everywhere
        yield own / name
    finally:
        shutil.rmtree(own, ignore_errors=True)
        os.close(fd)


def _writer_gone(path: Path) -> bool:
    """Whether nobody holds ``path``'s lock (False when the file system cannot say)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False  # held by its writer, or no locks here: the age decides
    finally:
        os.close(fd)


def stale_uploads(folder: Path) -> list[Path]:
    """The stale uploads in ``folder`` (see the module's docstring)."""
    if not folder.is_dir():
        return []
    now = time.time()
    stale = []
    for path in folder.glob(f"*{SUFFIX}"):
        try:
            age = now - path.stat().st_mtime
        except FileNotFoundError:
            continue
        if age > MAX_AGE_S or (age > GRACE_S and _writer_gone(path)):
            stale.append(path)
    return sorted(stale)


def remove_stale(folder: Path) -> list[Path]:
    """Remove the stale uploads in ``folder``; returns them."""
    for path in (stale := stale_uploads(folder)):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
    return stale
