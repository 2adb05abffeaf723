"""Which scenes a dataset version takes and which part (train, val, test) each goes to.

Design choices:
- Selection is by scene: status (default reviewed), video, patient code and class. A class
  filter keeps the scenes with at least one box of those classes and exports only those
  classes' boxes (the categories keep their ids), so a "tumour only" version has vessels as
  background. Every stored frame of a selected scene is exported (see ``coco_export``).
- The split is by group: a patient (default) or a video. Groups are sorted by key (patient
  code or video id), shuffled with ``random.Random(seed)``, then one group goes to each
  non-empty part (smallest ratio first, so small parts are never starved), and every other
  group to the part furthest below its share of images. Same selection and seed, same split.
- A ratio of 0 drops that part. A part with a positive ratio that would get no image is
  refused, as is a group, or a frame content (SHA-256), found in two parts: the error names
  what leaks. The guard checks the finished assignment, independent of how it was made.
"""
from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable

import sqlalchemy as sa

from ..db import db
from ..models import Box, Frame, LabelClass, Patient, Scene, SceneStatus, Video
from . import ServiceError
from .coco_export import FrameRow, frames_of_scenes
from .input_checks import DB_INT_MAX, is_db_int

SPLITS = ("train", "val", "test")
SPLIT_BY = ("patient", "video")
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


def listed(items: list[str]) -> str:
    """The first few of ``items`` for an error message, and how many more there are."""
    more = len(items) - MAX_LISTED
    return "; ".join(items[:MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")


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
        in_range = [v for v in selection.video_ids if is_db_int(v, 1)]  # others exist nowhere
        found = set(db.session.scalars(sa.select(Video.id).where(Video.id.in_(in_range))))
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
        raise DatasetRefused("Leakage between parts: " + listed(leaks) + ".")
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
        raise DatasetRefused("Near-duplicate frames across parts: " + listed(dupes) + ".")
    for part, r in zip(SPLITS, ratios):
        if r > 0 and not frames.get(part):
            raise DatasetRefused(f"The {part} part would be empty; select more {by}s or set its "
                                 "ratio to 0.")


def plan_version(selection: Selection, spec: SplitSpec) -> Plan:
    """Select, split and check; raises :class:`DatasetRefused` with what is wrong."""
    if len(spec.ratios) != 3:
        raise DatasetRefused("Ratios are three shares: train, val, test.")
    if not is_db_int(spec.seed, 0):  # the version row keeps it
        raise DatasetRefused(f"The seed is a whole number from 0 to {DB_INT_MAX}.")
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
