"""``sonolabel check``: is every frame row's file there and intact, and what was left behind?

What it finds (a problem makes the check fail):

- frame rows whose file is missing, or damaged (unreadable, or its SHA-256 is not its name).
  Never repaired here: the file must come back from a backup of the data directory (any copy
  with that hash is right, frames being content-addressed);
- orphan files: files under ``frames/`` that no row references, untouched for
  :data:`.frames.ORPHAN_AGE_S`. Younger ones are listed but are no problem: an import in
  flight may be about to reference them (the rule is in :class:`.frames.FrameStore`);
- stale uploads (:mod:`.uploads`) and stale jobs (running, their worker gone:
  :func:`.job_runner.stale_jobs`).

``repair`` removes what may go: old orphans (holding the frame store's lock alone, each
checked once more against the committed rows just before it goes), stale uploads, and marks
stale jobs failed (:func:`.job_runner.recover_stale`). It never deletes a frame row or a file
a row references.
"""
from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, TypeVar

import sqlalchemy as sa

from ..db import db
from ..models import Frame
from .frames import LOCK_NAME, ORPHAN_AGE_S, FrameStore, data_dir, file_sha256, frame_relpath
from .job_runner import recover_stale, stale_jobs
from .uploads import remove_stale, stale_uploads, tmp_dir

T = TypeVar("T")
# Wraps an iterable to show progress: (iterable, description, total) -> the same items.
Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
LOCK_WAIT_S = 30.0  # how long the repair waits for imports in flight to end
_CHUNK = 500  # hashes per IN (...) query


def _no_progress(items: Iterable[T], desc: str, total: int) -> Iterable[T]:
    return items


def referenced_hashes(hashes: Iterable[str]) -> set[str]:
    """Which of ``hashes`` frame rows reference."""
    found: set[str] = set()
    for chunk in _chunks(list(hashes), _CHUNK):
        found.update(db.session.scalars(
            sa.select(Frame.sha256).where(Frame.sha256.in_(chunk)).distinct()))
    return found


@dataclass
class _Orphan:
    path: Path
    sha256: str | None  # None: not a frame file's name (a write cut short, a stray file)
    age_s: float

    def as_json(self, root: Path) -> dict[str, Any]:
        return {"path": self.path.relative_to(root).as_posix(), "age_h": round(self.age_s / 3600, 1)}


@dataclass
class CheckReport:
    root: Path
    frame_rows: int = 0
    files: int = 0  # distinct files the rows reference
    missing: list[dict[str, Any]] = field(default_factory=list)
    damaged: list[dict[str, Any]] = field(default_factory=list)
    orphans: list[_Orphan] = field(default_factory=list)  # old enough to be swept
    recent_orphans: list[_Orphan] = field(default_factory=list)
    stale_uploads: list[Path] = field(default_factory=list)
    stale_jobs: list[dict[str, Any]] = field(default_factory=list)
    repaired: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def problems(self) -> int:
        return (len(self.missing) + len(self.damaged) + len(self.orphans)
                + len(self.stale_uploads) + len(self.stale_jobs))

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.problems == 0, "problems": self.problems, "frame_rows": self.frame_rows,
            "files": self.files, "missing": self.missing, "damaged": self.damaged,
            "orphans": [o.as_json(self.root) for o in self.orphans],
            "recent_orphans": [o.as_json(self.root) for o in self.recent_orphans],
            "stale_uploads": [p.relative_to(self.root).as_posix() for p in self.stale_uploads],
            "stale_jobs": self.stale_jobs, "repaired": self.repaired, "notes": self.notes}

    def summary(self) -> str:
        counts = [f"{len(self.missing)} missing", f"{len(self.damaged)} damaged",
                  f"{len(self.orphans)} orphan files"
                  + (f" (+{len(self.recent_orphans)} recent)" if self.recent_orphans else ""),
                  f"{len(self.stale_uploads)} stale uploads", f"{len(self.stale_jobs)} stale jobs"]
        if self.repaired is not None:
            counts.append("repaired: " + ", ".join(
                f"{k} {len(v) if isinstance(v, list) else v}" for k, v in self.repaired.items()))
        verdict = "clean" if self.problems == 0 else f"{self.problems} problems"
        return (f"checked {self.frame_rows} frame rows ({self.files} files): "
                + ", ".join(counts) + f": {verdict}")


def run_check(repair: bool = False, progress: Progress = _no_progress) -> CheckReport:
    """Check the frame store, uploads and jobs; with ``repair``, fix what may be fixed."""
    root = data_dir()
    report = CheckReport(root)
    counts = dict(db.session.execute(sa.select(Frame.sha256, sa.func.count()).group_by(Frame.sha256)).all())
    report.frame_rows, report.files = sum(counts.values()), len(counts)
    _check_files(report, sorted(counts), progress)
    _find_orphans(report, set(counts), progress)
    report.stale_uploads = stale_uploads(tmp_dir())
    report.stale_jobs = [{"id": j.id, "kind": j.kind, "worker": j.worker} for j in stale_jobs()]
    db.session.rollback()  # no transaction stays open through the repair's wait for the lock
    if repair:
        _repair(report)
    return report


def _check_files(report: CheckReport, hashes: list[str], progress: Progress) -> None:
    store = FrameStore(report.root)

    def verdict(sha: str) -> str | None:
        try:
            return None if file_sha256(store.path(sha)) == sha else "damaged"
        except FileNotFoundError:
            return "missing"
        except OSError:
            return "damaged"  # unreadable: as lost to its frames as a changed file

    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 2)) as pool:
        # A few hundred files at a time: a pool holds every task it is given at once.
        verdicts = ((sha, v) for chunk in _chunks(hashes, 256)
                    for sha, v in zip(chunk, pool.map(verdict, chunk)))
        bad.update((sha, v) for sha, v in progress(verdicts, "hashing frame files", len(hashes))
                   if v)
    for sha, frames in _frames_of(sorted(bad)).items():
        (report.missing if bad[sha] == "missing" else report.damaged).append({
            "path": frame_relpath(sha), "sha256": sha, "frames": frames,
            "fix": "restore this file from a backup of the data directory (any copy whose "
                   "SHA-256 is its name is right); until then its frames show no image, or a "
                   "wrong one"})


def _chunks(items: list[T], size: int) -> Iterator[list[T]]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


def _frames_of(hashes: list[str]) -> dict[str, list[dict[str, int]]]:
    """The frames (video id, frame number, frame id) of each hash, in order."""
    out: dict[str, list[dict[str, int]]] = {sha: [] for sha in hashes}
    for chunk in _chunks(hashes, _CHUNK):
        rows = db.session.execute(
            sa.select(Frame.sha256, Frame.video_id, Frame.frame_index, Frame.id)
            .where(Frame.sha256.in_(chunk)).order_by(Frame.video_id, Frame.frame_index))
        for sha, video_id, index, frame_id in rows:
            out[sha].append({"video_id": video_id, "frame_index": index, "frame_id": frame_id})
    return out


def _find_orphans(report: CheckReport, referenced: set[str], progress: Progress) -> None:
    frames_dir = report.root / "frames"
    if not frames_dir.is_dir():
        return
    now = time.time()
    entries = sorted(os.scandir(frames_dir), key=lambda e: e.name)
    for top in progress(entries, "looking for orphan files", len(entries)):
        inner = list(os.scandir(top.path)) if top.is_dir(follow_symlinks=False) else [top]
        for entry in inner:
            if entry.name == LOCK_NAME or not entry.is_file(follow_symlinks=False):
                continue
            name, _, ext = entry.name.partition(".")
            sha = name if ext == "png" and len(name) == 64 and top.name == name[:2] else None
            if sha is not None and sha in referenced:
                continue
            orphan = _Orphan(Path(entry.path), sha, now - entry.stat().st_mtime)
            (report.orphans if orphan.age_s > ORPHAN_AGE_S else report.recent_orphans).append(orphan)


def _repair(report: CheckReport) -> None:
    removed_uploads = remove_stale(tmp_dir())
    report.stale_uploads = [p for p in report.stale_uploads if p not in removed_uploads]
    jobs = recover_stale(found_by="sonolabel check --repair") if report.stale_jobs else []
    report.stale_jobs = [j for j in report.stale_jobs if j["id"] not in jobs]
    removed = 0
    if report.orphans:
        with FrameStore(report.root).exclusive(wait_s=LOCK_WAIT_S) as alone:
            if alone:
                removed = _remove_orphans(report)
            else:
                report.notes.append(f"imports stayed in flight for {LOCK_WAIT_S:.0f} s: orphan "
                                    "files were left; run the repair again later")
    report.repaired = {"orphan_files": removed, "uploads": len(removed_uploads), "jobs": jobs}


def _remove_orphans(report: CheckReport) -> int:
    """Holding the store's lock alone: nothing is in flight, so the committed rows are all
    there is; a file referenced since the scan, or touched since, is kept."""
    used = referenced_hashes(o.sha256 for o in report.orphans if o.sha256)
    db.session.rollback()
    now, removed, left = time.time(), 0, []
    for orphan in report.orphans:
        try:
            if orphan.sha256 in used or now - orphan.path.stat().st_mtime <= ORPHAN_AGE_S:
                continue  # no longer an orphan, or no longer old: not a problem either way
            orphan.path.unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as err:
            report.notes.append(f"could not remove {orphan.path}: {err.strerror}")
            left.append(orphan)
    report.orphans = left
    return removed
