"""Creating a dataset version: freeze the planned split (``dataset_split``) as COCO files,
images, rows and a content hash, all or nothing.

Design choices:
- Ground truth is the manual boxes: a pre-label or propagated box nobody accepted is a
  suggestion, not a label, and is left out (accepting one makes it manual).
- A version is immutable: its row and its scene rows are never updated (a mapper hook
  refuses), and its files are written to a temporary folder and renamed to
  ``<data dir>/datasets/<version id>/`` only once the database row exists; if the commit
  fails the folder is removed.
- Images are hard-linked from the content-addressed frame store (a copy when linking fails);
  the JSON files are made read-only.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa

from ..db import db
from ..models import DatasetScene, DatasetVersion, LabelEvent, User, utcnow
from .coco_export import build_coco, chunks, dump, split_hash
from .dataset_split import DatasetRefused, Plan, Selection, SplitSpec, listed, plan_version
from .dataset_versions import link_or_copy, progress_bar, version_dir, zip_path
from .frames import commit_or_remove, data_dir, frame_relpath

# What a version freezes as ground truth: manual boxes (an accepted pre-label is manual).
GROUND_TRUTH = ("manual",)
# A whole-string match: "$" would let "v1\n" through, a name that breaks download headers.
NAME_RE = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}")


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not NAME_RE.fullmatch(name):
        raise DatasetRefused("A version name is 1-64 letters, digits, '_', '-' or '.', "
                             "and does not start with '.'.")
    return name


def create_version(name: str, selection: Selection = Selection(), spec: SplitSpec = SplitSpec(),
                   user: User | None = None, progress: bool = False) -> DatasetVersion:
    """Freeze a new version: files under ``datasets/<id>/``, rows, hash; all or nothing.
    ``progress`` shows a bar over the image files on a terminal's stderr."""
    validate_name(name)
    if db.session.scalar(sa.select(DatasetVersion.id).where(DatasetVersion.name == name)):
        raise DatasetRefused(f"A version named {name!r} exists; versions never change, pick a new name.")
    plan = plan_version(selection, spec)
    docs = build_coco(plan.frames, plan.class_ids, sources=GROUND_TRUTH)
    _check_files(docs)
    last_events = _last_events(s.id for s in plan.scenes)
    last_event = db.session.scalar(sa.select(sa.func.max(LabelEvent.id)))

    root = data_dir() / "datasets"
    root.mkdir(parents=True, exist_ok=True)
    tmp = root / f".tmp-{uuid.uuid4().hex}"
    try:
        hashes, summary = _write_parts(tmp, docs, name, plan, progress)
        content_hash = split_hash(hashes)
        scene_boxes = _scene_box_counts(docs, plan)
        version = DatasetVersion(
            name=name, created_by_id=user.id if user is not None else None, split_by=spec.by,
            ratios=list(spec.ratios), seed=spec.seed, filters=selection.as_dict(),
            last_event_id=last_event, content_hash=content_hash,
            image_count=sum(len(d["images"]) for d in docs.values()),
            box_count=sum(len(d["annotations"]) for d in docs.values()), summary=summary)
        frame_counts: dict[int, int] = defaultdict(int)
        for rows in plan.frames.values():
            for f in rows:
                frame_counts[f.scene_id] += 1
        version.scenes = [
            DatasetScene(scene_id=s.id, video_id=s.video_id, patient_id=s.patient_id,
                         split=plan.assignment[s.id], status=s.status,
                         frame_count=frame_counts[s.id], box_count=scene_boxes.get(s.id, 0),
                         last_event_id=last_events.get(s.id))
            for s in plan.scenes]
        db.session.add(version)
        db.session.flush()
        (tmp / "version.json").write_text(json.dumps(describe_version(version), indent=2))
        final = version_dir(version.id)
        # Left by a version whose row is gone (SQLite may reuse its id): never serve its files.
        if final.exists():
            shutil.rmtree(final)
        zip_path(version.id).unlink(missing_ok=True)
        os.rename(tmp, final)
    except BaseException as err:
        db.session.rollback()
        shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(err, sa.exc.IntegrityError):  # the same name, created a moment ago
            raise DatasetRefused(f"A version named {name!r} exists; pick a new name.") from None
        raise
    commit_or_remove(final)
    return version


def _check_files(docs: dict[str, dict[str, Any]]) -> None:
    root = data_dir()
    missing = sorted({f"video {img['video_id']} frame {img['frame_index']}"
                      for doc in docs.values() for img in doc["images"] + doc["context_images"]
                      if not (root / frame_relpath(img["sha256"])).is_file()})
    if missing:
        raise DatasetRefused("Image files missing from the data directory: " + listed(missing) + ".")


def _last_events(scene_ids: Iterable[int]) -> dict[int, int]:
    out: dict[int, int] = {}
    for part in chunks(sorted(set(scene_ids))):
        out.update(db.session.execute(
            sa.select(LabelEvent.scene_id, sa.func.max(LabelEvent.id))
            .where(LabelEvent.scene_id.in_(part)).group_by(LabelEvent.scene_id)).all())
    return out


def _scene_box_counts(docs: dict[str, dict[str, Any]], plan: Plan) -> dict[int, int]:
    counts: dict[int, int] = defaultdict(int)
    for doc in docs.values():
        scene_of = {img["id"]: img["scene_id"] for img in doc["images"]}
        for ann in doc["annotations"]:
            counts[scene_of[ann["image_id"]]] += 1
    return counts


def _write_parts(tmp: Path, docs: dict[str, dict[str, Any]], name: str, plan: Plan,
                 progress: bool = False) -> tuple[dict[str, str], dict[str, Any]]:
    root = data_dir()
    bar = progress_bar(sum(len(d["images"]) + len(d["context_images"]) for d in docs.values()),
                       "images", progress)
    hashes: dict[str, str] = {}
    summary: dict[str, Any] = {}
    patients_of = {s.id: s.patient_code for s in plan.scenes}
    now = utcnow()
    for part, doc in docs.items():
        folder = tmp / part
        folder.mkdir(parents=True)
        info = {"description": f"SonoLabel dataset {name}, {part} part", "version": name,
                "split": part, "contributor": "SonoLabel", "url": "",
                "year": now.year, "date_created": now.isoformat(timespec="seconds")}
        data, hashes[part] = dump(doc, info)
        target = folder / "annotations.json"
        target.write_bytes(data)
        target.chmod(0o444)
        for img in doc["images"] + doc["context_images"]:
            link_or_copy(root / frame_relpath(img["sha256"]), folder / img["file_name"])
            bar.update()
        scene_ids = {img["scene_id"] for img in doc["images"]}
        summary[part] = {
            "images": len(doc["images"]), "boxes": len(doc["annotations"]),
            "patients": sorted({patients_of[s] for s in scene_ids}),
            "videos": sorted({img["video_id"] for img in doc["images"]}),
            "scenes": len(scene_ids), "context_images": len(doc["context_images"]),
        }
    bar.close()
    return hashes, summary


def describe_version(version: DatasetVersion) -> dict[str, Any]:
    """What ``--json`` prints and ``version.json`` holds."""
    return {"version": version.name, "id": version.id, "hash": version.content_hash,
            "split_by": version.split_by, "ratios": version.ratios, "seed": version.seed,
            "filters": version.filters, "last_event_id": version.last_event_id,
            "splits": version.summary,
            "scenes": [{"scene_id": s.scene_id, "video_id": s.video_id, "split": s.split,
                        "status": s.status, "frames": s.frame_count, "boxes": s.box_count,
                        "last_event_id": s.last_event_id} for s in version.scenes]}
