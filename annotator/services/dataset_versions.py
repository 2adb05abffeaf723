"""Frozen dataset versions once made: where their files are, reading them back after the hash
check, exporting and zipping them, and deleting a version nothing uses.

Design choices:
- A version's files live in ``<data dir>/datasets/<version id>/`` and its zip next to them;
  paths come from ids, never from the user's version name.
- Every read checks the part files against the stored content hash first, so files changed on
  disk are refused rather than trained on.
- A version never changes, so its zip is built once and served from then on.
- A version a model was trained or evaluated on, or a queued job names, is kept, so a model
  keeps the data it came from.
"""
from __future__ import annotations

import json
import os
import shutil
import uuid
import zipfile
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import DatasetVersion, EvaluationReport, Job, JobStatus, ModelVersion
from .coco_export import body_hash, split_hash
from .dataset_split import SPLITS, DatasetRefused
from .frames import data_dir


def version_dir(version_id: int) -> Path:
    return data_dir() / "datasets" / str(int(version_id))


def zip_path(version_id: int) -> Path:
    return data_dir() / "datasets" / f"{int(version_id)}.zip"


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy is as good
        shutil.copyfile(src, dst)


def progress_bar(total: int, unit: str, progress: bool) -> Any:
    from tqdm import tqdm

    # disable=None: only on a terminal, so piped --json output stays clean.
    return tqdm(total=total, unit=unit, disable=None if progress else True, leave=False)


def get_version(name: str) -> DatasetVersion:
    version = db.session.scalar(sa.select(DatasetVersion).where(DatasetVersion.name == name))
    if version is None:
        raise DatasetRefused(f"No dataset version named {name!r}.", status=404)
    return version


def split_files(version: DatasetVersion) -> dict[str, Path]:
    """part -> its frozen annotations.json, after checking the files match the stored hash."""
    folder = version_dir(version.id)
    files = {part: folder / part / "annotations.json" for part in version.summary}
    missing = [str(p) for p in files.values() if not p.is_file()]
    if missing:
        raise DatasetRefused(f"The files of version {version.name!r} are missing ({missing[0]}).",
                             status=500)
    hashes = {part: body_hash(path.read_bytes()) for part, path in files.items()}
    if split_hash({p: hashes[p] for p in SPLITS if p in hashes}) != version.content_hash:
        raise DatasetRefused(f"The files of version {version.name!r} no longer match its hash; "
                             "they were changed on disk.", status=500)
    return files


def load_parts(version: DatasetVersion) -> dict[str, dict[str, Any]]:
    """Every part's frozen COCO document, after the hash check."""
    return {part: json.loads(path.read_text()) for part, path in split_files(version).items()}


def export_coco(version: DatasetVersion, out: Path, progress: bool = False) -> dict[str, Path]:
    """Copy (hard-link) the frozen parts into ``out/<part>/``; ``out`` must be new or empty."""
    files = split_files(version)
    bar = progress_bar(version.image_count
                       + sum(s.get("context_images", 0) for s in version.summary.values()),
                       "images", progress)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DatasetRefused(f"{out} exists and is not an empty folder.")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.partial-{uuid.uuid4().hex[:8]}"
    try:
        for part, ann in files.items():
            (tmp / part).mkdir(parents=True)
            for src in ann.parent.iterdir():
                dst = tmp / part / src.name
                if src.name == "annotations.json":
                    shutil.copyfile(src, dst)  # a writable copy the user owns
                else:
                    link_or_copy(src, dst)
                    bar.update()
        shutil.copyfile(version_dir(version.id) / "version.json", tmp / "version.json")
        if out.exists():
            out.rmdir()
        os.rename(tmp, out)
        bar.close()
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {part: out / part / "annotations.json" for part in files}


def ensure_zip(version: DatasetVersion) -> Path:
    """The version's zip (built once: a version never changes): ``<name>/<part>/...``."""
    path = zip_path(version.id)
    if path.is_file():
        return path
    files = split_files(version)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    try:
        with zipfile.ZipFile(tmp, "w") as zf:
            zf.write(version_dir(version.id) / "version.json", f"{version.name}/version.json",
                     compress_type=zipfile.ZIP_DEFLATED)
            for part, ann in files.items():
                for src in sorted(ann.parent.iterdir()):
                    # PNGs are compressed already; deflating them again only costs time.
                    kind = zipfile.ZIP_DEFLATED if src.suffix == ".json" else zipfile.ZIP_STORED
                    zf.write(src, f"{version.name}/{part}/{src.name}", compress_type=kind)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def delete_version(version: DatasetVersion) -> None:
    """Delete a version that nothing was trained or evaluated on, nor waits to be: its rows,
    files and zip. A version in use is refused (409), so a model keeps the data it came from.
    """
    models = db.session.scalars(sa.select(ModelVersion.name).where(
        ModelVersion.dataset_version_id == version.id)).all()
    reports = db.session.scalar(sa.select(sa.func.count()).select_from(EvaluationReport).where(
        EvaluationReport.dataset_version_id == version.id))
    waiting = [job.id for job in db.session.scalars(sa.select(Job).where(
        Job.status.in_([JobStatus.queued, JobStatus.running])))
        if str((job.params or {}).get("dataset")) in (version.name, str(version.id))]
    def several(word: str, n: int) -> str:
        return word if n == 1 else f"{word}s"

    uses = []
    if models:
        uses.append(f"{several('model version', len(models))} {', '.join(models)}")
    if reports:
        uses.append(f"{reports} {several('evaluation report', reports)}")
    if waiting:
        uses.append(f"{several('job', len(waiting))} {', '.join(map(str, waiting))}")
    if uses:
        raise DatasetRefused(f"Dataset version {version.name!r} is used by {' and '.join(uses)}; "
                             "it is kept.", status=409)
    folder, zipped = version_dir(version.id), zip_path(version.id)
    # Out of the way first, so a failed commit can put the files back as they were.
    trash = folder.with_name(f".deleting-{version.id}-{uuid.uuid4().hex[:8]}")
    if folder.exists():
        os.replace(folder, trash)
    try:
        db.session.delete(version)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        if trash.exists():
            os.replace(trash, folder)
        raise
    shutil.rmtree(trash, ignore_errors=True)
    zipped.unlink(missing_ok=True)
