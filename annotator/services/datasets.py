"""Dataset versions: select scenes, split them without leakage, freeze COCO files and a hash.

Design choices:
- Selection is by scene: status (default reviewed), video, patient code and class. A class
  filter keeps the scenes with at least one box of those classes and exports only those
  classes' boxes (the categories keep their ids), so a "tumour only" version has vessels as
  background. Every stored frame of a selected scene is exported (see ``coco_export``).
- Ground truth is the manual boxes: a pre-label or propagated box nobody accepted is a
  suggestion, not a label, and is left out (accepting one makes it manual).
- The split is by group: a patient (default) or a video. Groups are sorted by key (patient
  code or video id), shuffled with ``random.Random(seed)``, then one group goes to each
  non-empty part (smallest ratio first, so small parts are never starved), and every other
  group to the part furthest below its share of images. Same selection and seed, same split.
- A ratio of 0 drops that part. A part with a positive ratio that would get no image is
  refused, as is a group, or a frame content (SHA-256), found in two parts: the error names
  what leaks. The guard checks the finished assignment, independent of how it was made.
- A version is immutable: its row and its scene rows are never updated (a mapper hook
  refuses), and its files are written to a temporary folder and renamed to
  ``<data dir>/datasets/<version id>/`` only once the database row exists; if the commit
  fails the folder is removed. Paths come from ids, never from the user's version name.
- Images are hard-linked from the content-addressed frame store (a copy when linking fails);
  the JSON files are made read-only.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
import uuid
import zipfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import sqlalchemy as sa
from flask import current_app

from ..db import db
from ..models import (
    Box,
    DatasetScene,
    DatasetVersion,
    Frame,
    LabelClass,
    LabelEvent,
    Patient,
    Scene,
    SceneStatus,
    User,
    Video,
    utcnow,
)
from . import ServiceError
from .coco_export import FrameRow, build_coco, chunks, dump, frame_relpath, frames_of_scenes, split_hash

SPLITS = ("train", "val", "test")
# What a version freezes as ground truth: manual boxes (an accepted pre-label is manual).
GROUND_TRUTH = ("manual",)
SPLIT_BY = ("patient", "video")
NAME_RE = re.compile(r"^[A-Za-z0-9_-][A-Za-z0-9_.-]{0,63}$")
MAX_LISTED = 5


class DatasetRefused(ServiceError):
    """A dataset request that cannot be carried out; the message says why."""


@dataclass(frozen=True)
class Selection:
    statuses: tuple[str, ...] = ("reviewed",)
    video_ids: tuple[int, ...] = ()
    patient_codes: tuple[str, ...] = ()
    class_names: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {"statuses": list(self.statuses), "video_ids": list(self.video_ids),
                "patient_codes": list(self.patient_codes), "class_names": list(self.class_names)}


@dataclass(frozen=True)
class SplitSpec:
    by: str = "patient"
    ratios: tuple[float, float, float] = (0.7, 0.15, 0.15)
    seed: int = 0


@dataclass(frozen=True)
class SceneRow:
    id: int
    video_id: int
    patient_id: int
    patient_code: str
    status: str


@dataclass
class Plan:
    """What a version would freeze: the scenes, their parts and the frames of each part."""

    scenes: list[SceneRow]
    assignment: dict[int, str]  # scene id -> split
    frames: dict[str, list[FrameRow]] = field(default_factory=dict)
    class_ids: list[int] | None = None


def validate_name(name: str) -> str:
    if not NAME_RE.match(name or ""):
        raise DatasetRefused("A version name is 1-64 letters, digits, '_', '-' or '.', "
                             "and does not start with '.'.")
    return name


def parse_ratios(text: str) -> tuple[float, float, float]:
    """``"0.7,0.15,0.15"`` -> three non-negative shares (train, val, test) summing to 1."""
    try:
        values = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise DatasetRefused(f"Ratios must be three numbers such as 0.7,0.15,0.15, not {text!r}.")
    if len(values) != 3 or any(not 0 <= v <= 1 for v in values) or abs(sum(values) - 1) > 1e-6:
        raise DatasetRefused(f"Ratios must be three shares (train, val, test) between 0 and 1 "
                             f"that sum to 1, not {text!r}.")
    if values[0] == 0:
        raise DatasetRefused("The train part needs a ratio above 0.")
    return values  # type: ignore[return-value]


def data_dir() -> Path:
    return Path(current_app.config["SONOLABEL_DATA_DIR"])


def version_dir(version_id: int) -> Path:
    return data_dir() / "datasets" / str(int(version_id))


def zip_path(version_id: int) -> Path:
    return data_dir() / "datasets" / f"{int(version_id)}.zip"


# --- selection -------------------------------------------------------------------------------

def select_scenes(selection: Selection) -> tuple[list[SceneRow], list[int] | None]:
    """The scenes the selection names, and the class ids to keep (None: all classes)."""
    statuses = []
    for s in selection.statuses:
        try:
            statuses.append(SceneStatus(s))
        except ValueError:
            raise DatasetRefused(f"Unknown scene status {s!r}; one of "
                                 f"{', '.join(m.value for m in SceneStatus)}.")
    query = (sa.select(Scene.id, Scene.video_id, Video.patient_id, Patient.code, Scene.status)
             .join(Video, Scene.video_id == Video.id).join(Patient, Video.patient_id == Patient.id)
             .order_by(Scene.id))
    if statuses:
        query = query.where(Scene.status.in_(statuses))
    if selection.video_ids:
        found = set(db.session.scalars(sa.select(Video.id).where(Video.id.in_(selection.video_ids))))
        missing = sorted(set(selection.video_ids) - found)
        if missing:
            raise DatasetRefused(f"No video {', '.join(map(str, missing))}.")
        query = query.where(Scene.video_id.in_(selection.video_ids))
    if selection.patient_codes:
        found = set(db.session.scalars(sa.select(Patient.code)
                                       .where(Patient.code.in_(selection.patient_codes))))
        missing = sorted(set(selection.patient_codes) - found)
        if missing:
            raise DatasetRefused(f"No patient {', '.join(missing)}.")
        query = query.where(Patient.code.in_(selection.patient_codes))
    class_ids = None
    if selection.class_names:
        by_name = dict(db.session.execute(sa.select(LabelClass.name, LabelClass.id)).all())
        missing = [n for n in selection.class_names if n not in by_name]
        if missing:
            raise DatasetRefused(f"Unknown class {', '.join(missing)}; the classes are "
                                 f"{', '.join(sorted(by_name))}.")
        class_ids = sorted(by_name[n] for n in set(selection.class_names))
        has_class = (sa.select(Box.id).join(Frame, Box.frame_id == Frame.id)
                     .where(Frame.scene_id == Scene.id, Box.class_id.in_(class_ids)).exists())
        query = query.where(has_class)
    rows = [SceneRow(sid, vid, pid, code, status.value if isinstance(status, SceneStatus) else status)
            for sid, vid, pid, code, status in db.session.execute(query)]
    if not rows:
        raise DatasetRefused("No scene matches the selection (" + describe(selection) + ").")
    return rows, class_ids


def describe(selection: Selection) -> str:
    parts = [f"status {', '.join(selection.statuses) or 'any'}"]
    if selection.video_ids:
        parts.append(f"videos {', '.join(map(str, selection.video_ids))}")
    if selection.patient_codes:
        parts.append(f"patients {', '.join(selection.patient_codes)}")
    if selection.class_names:
        parts.append(f"classes {', '.join(selection.class_names)}")
    return "; ".join(parts)


# --- split and leakage guard -----------------------------------------------------------------

def group_key(scene: SceneRow, by: str) -> Any:
    return scene.patient_code if by == "patient" else scene.video_id


def group_label(key: Any, by: str) -> str:
    return f"patient {key}" if by == "patient" else f"video {key}"


def assign_splits(scenes: list[SceneRow], weights: dict[int, int], spec: SplitSpec
                  ) -> dict[int, str]:
    """scene id -> part; ``weights`` is the number of images of each scene."""
    if spec.by not in SPLIT_BY:
        raise DatasetRefused(f"Split by 'patient' or 'video', not {spec.by!r}.")
    sizes: dict[Any, int] = defaultdict(int)
    for s in scenes:
        sizes[group_key(s, spec.by)] += weights.get(s.id, 0)
    keys = sorted(sizes)
    random.Random(spec.seed).shuffle(keys)
    ratio = dict(zip(SPLITS, spec.ratios))
    parts = [p for p in SPLITS if ratio[p] > 0]
    if len(keys) < len(parts):
        named = ", ".join(str(k) for k in sorted(sizes))
        raise DatasetRefused(
            f"A split by {spec.by} into {len(parts)} parts ({', '.join(parts)}) needs at least "
            f"{len(parts)} {spec.by}s; the selection has {len(keys)} ({named}), so a part "
            "would be empty. Select more, or set a part's ratio to 0.")
    total = sum(sizes.values())
    part_of: dict[Any, str] = {}
    filled = dict.fromkeys(parts, 0)
    for part, key in zip(sorted(parts, key=lambda p: (ratio[p], SPLITS.index(p))), keys):
        part_of[key] = part
        filled[part] += sizes[key]
    for key in keys[len(parts):]:
        part = max(parts, key=lambda p: (ratio[p] * total - filled[p], -SPLITS.index(p)))
        part_of[key] = part
        filled[part] += sizes[key]
    return {s.id: part_of[group_key(s, spec.by)] for s in scenes}


def check_leakage(scenes: list[SceneRow], assignment: dict[int, str],
                  frames: dict[str, list[FrameRow]], by: str, ratios: Iterable[float]) -> None:
    """Refuse a group or a frame content in two parts, and a wanted part without images."""
    parts_of: dict[Any, set[str]] = defaultdict(set)
    for s in scenes:
        parts_of[group_key(s, by)].add(assignment[s.id])
    leaks = [f"{group_label(k, by)} is in {' and '.join(p for p in SPLITS if p in ps)}"
             for k, ps in sorted(parts_of.items(), key=lambda kv: str(kv[0])) if len(ps) > 1]
    if leaks:
        raise DatasetRefused("Leakage between parts: " + _listed(leaks) + ".")
    seen: dict[str, tuple[str, FrameRow]] = {}
    dupes: list[str] = []
    for part in SPLITS:
        for f in frames.get(part, ()):
            first = seen.setdefault(f.sha256, (part, f))
            if first[0] != part:
                g = first[1]
                dupes.append(f"frame content {f.sha256[:12]} is in {first[0]} (video {g.video_id} "
                             f"frame {g.frame_index}) and {part} (video {f.video_id} frame {f.frame_index})")
    if dupes:
        raise DatasetRefused("Near-duplicate frames across parts: " + _listed(dupes) + ".")
    for part, r in zip(SPLITS, ratios):
        if r > 0 and not frames.get(part):
            raise DatasetRefused(f"The {part} part would be empty; select more {by}s or set its "
                                 "ratio to 0.")


def _listed(items: list[str]) -> str:
    more = len(items) - MAX_LISTED
    return "; ".join(items[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")


def plan_version(selection: Selection, spec: SplitSpec) -> Plan:
    """Select, split and check; raises :class:`DatasetRefused` with what is wrong."""
    if len(spec.ratios) != 3:
        raise DatasetRefused("Ratios are three shares: train, val, test.")
    scenes, class_ids = select_scenes(selection)
    all_frames = frames_of_scenes(s.id for s in scenes)
    weights: dict[int, int] = defaultdict(int)
    for f in all_frames:
        weights[f.scene_id] += 1
    assignment = assign_splits(scenes, weights, spec)
    by_part: dict[str, list[FrameRow]] = defaultdict(list)
    for f in all_frames:
        by_part[assignment[f.scene_id]].append(f)
    check_leakage(scenes, assignment, by_part, spec.by, spec.ratios)
    parts = [p for p, r in zip(SPLITS, spec.ratios) if r > 0]
    return Plan(scenes, assignment, {p: by_part[p] for p in parts}, class_ids)


# --- freezing --------------------------------------------------------------------------------

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
    try:
        db.session.commit()
    except BaseException:
        db.session.rollback()
        shutil.rmtree(final, ignore_errors=True)
        raise
    return version


def _check_files(docs: dict[str, dict[str, Any]]) -> None:
    root = data_dir()
    missing = sorted({f"video {img['video_id']} frame {img['frame_index']}"
                      for doc in docs.values() for img in doc["images"] + doc["context_images"]
                      if not (root / frame_relpath(img["sha256"])).is_file()})
    if missing:
        raise DatasetRefused("Image files missing from the data directory: " + _listed(missing) + ".")


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
    bar = _bar(sum(len(d["images"]) + len(d["context_images"]) for d in docs.values()),
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


def _bar(total: int, unit: str, progress: bool) -> Any:
    from tqdm import tqdm

    # disable=None: only on a terminal, so piped --json output stays clean.
    return tqdm(total=total, unit=unit, disable=None if progress else True, leave=False)


def link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system, or links not allowed: a copy is as good
        shutil.copyfile(src, dst)


def describe_version(version: DatasetVersion) -> dict[str, Any]:
    """What ``--json`` prints and ``version.json`` holds."""
    return {"version": version.name, "id": version.id, "hash": version.content_hash,
            "split_by": version.split_by, "ratios": version.ratios, "seed": version.seed,
            "filters": version.filters, "last_event_id": version.last_event_id,
            "splits": version.summary,
            "scenes": [{"scene_id": s.scene_id, "video_id": s.video_id, "split": s.split,
                        "status": s.status, "frames": s.frame_count, "boxes": s.box_count,
                        "last_event_id": s.last_event_id} for s in version.scenes]}


# --- reading a version back ------------------------------------------------------------------

def get_version(name: str) -> DatasetVersion:
    version = db.session.scalar(sa.select(DatasetVersion).where(DatasetVersion.name == name))
    if version is None:
        raise DatasetRefused(f"No dataset version named {name!r}.", status=404)
    return version


def split_files(version: DatasetVersion) -> dict[str, Path]:
    """part -> its frozen annotations.json, after checking the files match the stored hash."""
    from .coco_export import body_hash

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


def export_coco(version: DatasetVersion, out: Path, progress: bool = False) -> dict[str, Path]:
    """Copy (hard-link) the frozen parts into ``out/<part>/``; ``out`` must be new or empty."""
    files = split_files(version)
    bar = _bar(version.image_count + sum(s.get("context_images", 0) for s in version.summary.values()),
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


def load_parts(version: DatasetVersion) -> dict[str, dict[str, Any]]:
    """Every part's frozen COCO document, after the hash check."""
    return {part: json.loads(path.read_text()) for part, path in split_files(version).items()}


def delete_version(version: DatasetVersion) -> None:
    """Delete a version that nothing was trained or evaluated on, nor waits to be: its rows,
    files and zip. A version in use is refused (409), so a model keeps the data it came from.
    """
    from ..models import EvaluationReport, Job, JobStatus, ModelVersion

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
