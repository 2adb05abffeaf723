"""How a frame's imported boxes meet the boxes it holds: created, moved, deleted or unchanged
(:func:`append_frame`, :func:`sync_frame`), and those changes written with their label events
(:func:`write_diffs`: ``import`` for an added box, ``update``/``accept``/``delete`` under the
import's source, e.g. ``labelstudio``).

Two ways, chosen by the format:
- append (COCO files): a box equal to one the frame holds (same class and source, geometry
  within :data:`DUPLICATE_PX`) is already present, any other is created; nothing is moved or
  deleted, so importing a file twice adds nothing.
- sync (Label Studio): the file's annotation is the truth for its frame. A region that names
  a stored box of the frame (``box_id``) is that box; one without (drawn in Label Studio) is
  matched by class and IoU >= :data:`MATCH_IOU` to a box not named by another region, and
  created when none fits. A matched box whose class or geometry differs by more than
  :data:`TOLERANCE_PX` is moved; a pre-label held by the annotation becomes manual (accepted),
  as editing it in the workspace would. Manual boxes the file was sent with (``sent``; for a
  video track its propagated boxes too) and whose region is gone from the frame's annotation
  are deleted; pre-labels are never deleted. A box the other tool interpolated between
  keyframes (``interpolated``) stays a suggestion: it updates or stands for a propagated box
  only, and is never accepted.
  Predictions only meet pre-labels (model boxes): one naming a pre-label decided here since the
  export (accepted, or removed on record: rejected, replaced) is left out, one naming a box
  gone without a record (labels lost) is matched or created like an unnamed one, and one the
  frame's annotation already holds is not added again.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, LabelEvent, User
from .boxes import greedy_match, iou
from .coco_export import chunks
from .event_log import record_event

TOLERANCE_PX = 1e-3  # float noise of a percent round trip is far below; any real move is above
MATCH_IOU = 0.9
DUPLICATE_PX = 0.5
GEOMETRY = ("x", "y", "w", "h")
# A box read from a file: a :class:`.label_import.ImportedBox` (that module imports this one).
Planned = Any


@dataclass
class FrameDiff:
    create: list[Planned] = field(default_factory=list)  # the planned boxes to add
    update: list[tuple[Box, dict[str, Any]]] = field(default_factory=list)  # box, its changes
    delete: list[Box] = field(default_factory=list)
    unchanged: int = 0
    decided: int = 0  # predictions of pre-labels accepted or rejected here since the export

    def counts(self) -> dict[str, int]:
        return {"added": len(self.create), "moved": len(self.update),
                "deleted": len(self.delete), "unchanged": self.unchanged}


def _plain(b: Any) -> dict[str, Any]:
    return {"class_id": b.class_id, "x": b.x, "y": b.y, "w": b.w, "h": b.h}


def append_frame(planned: list[Planned], boxes: list[Box]) -> FrameDiff:
    """The append way: create what the frame does not hold yet."""
    diff = FrameDiff()
    held = [(b.class_id, b.source, b.x, b.y, b.w, b.h) for b in boxes]
    for p in planned:
        key = (p.class_id, p.source, p.x, p.y, p.w, p.h)
        if any(key[:2] == other[:2] and all(abs(a - b) <= DUPLICATE_PX
                                            for a, b in zip(key[2:], other[2:]))
               for other in held):
            diff.unchanged += 1
            continue
        held.append(key)
        diff.create.append(p)
    return diff


def sync_frame(planned: list[Planned], boxes: list[Box], sent: set[int], truth: bool,
               removed: set[int]) -> FrameDiff:
    """The sync way; ``truth``: the frame's task has an annotation, so sent boxes (manual, or
    a video track's propagated ones) missing from it were deleted in the other tool;
    ``removed``: ids of boxes whose last label event removed them."""
    diff = FrameDiff()
    by_id = {b.id: b for b in boxes}
    claimed: dict[int, Planned] = {}
    pairs: list[tuple[Planned, Box]] = []

    def pair_up(regions: list[Planned], free: list[Box]) -> list[Planned]:
        """Pair regions by IoU with the free boxes; the regions left over."""
        matched = greedy_match([_plain(p) for p in regions], [_plain(b) for b in free], MATCH_IOU)
        for _, i, j in matched:
            claimed[free[j].id] = regions[i]
            pairs.append((regions[i], free[j]))
        taken = {i for _, i, _ in matched}
        return [p for i, p in enumerate(regions) if i not in taken]

    annotation = [p for p in planned if p.source != BoxSource.model]
    predictions = [p for p in planned if p.source == BoxSource.model]
    unnamed = []
    for p in annotation:
        box = by_id.get(p.box_id) if p.box_id is not None else None
        if box is None or box.id in claimed:
            unnamed.append(p)
            continue
        claimed[box.id] = p
        pairs.append((p, box))
    # A box another tool interpolated is only ever a suggestion: it may stand for a propagated
    # box, never take over a drawn box or a pre-label.
    new = pair_up([p for p in unnamed if not _interpolated(p)],
                  [b for b in boxes if b.id not in claimed])
    new += pair_up([p for p in unnamed if _interpolated(p)],
                   [b for b in boxes if b.id not in claimed and b.source == BoxSource.propagated])
    diff.create.extend(new)
    # What the annotation holds: a prediction of it was taken into it, not left pending.
    held = [_plain(b) for b in boxes if b.id in claimed] + [_plain(p) for p in new]
    unnamed = []
    for p in predictions:
        if p.box_id is None:
            unnamed.append(p)
            continue
        box = by_id.get(p.box_id)
        if box is None and p.box_id not in removed:
            unnamed.append(p)
            continue
        if box is not None and box.id in claimed:
            diff.unchanged += 1
            continue
        if box is None or box.source != BoxSource.model:
            diff.decided += 1
            continue
        claimed[box.id] = p
        pairs.append((p, box))
    left = pair_up(unnamed, [b for b in boxes if b.id not in claimed
                             and b.source == BoxSource.model])
    for p in left:
        if any(h["class_id"] == p.class_id and iou(h, _plain(p)) >= MATCH_IOU for h in held):
            diff.unchanged += 1
        else:
            diff.create.append(p)
    for p, box in pairs:
        changes = _changes(p, box)
        if changes:
            diff.update.append((box, changes))
        else:
            diff.unchanged += 1
    if truth:
        diff.delete = [by_id[i] for i in sorted(sent) if i in by_id and i not in claimed
                       and by_id[i].source != BoxSource.model]
    return diff


def _interpolated(p: Planned) -> bool:
    return bool(getattr(p, "interpolated", False))


def _changes(p: Planned, box: Box) -> dict[str, Any]:
    """What the region changes on its box: class, geometry, and acceptance of a pre-label
    (never for an interpolated box, nor on a box accepted here since the export)."""
    if _interpolated(p) and box.source == BoxSource.manual:
        return {}
    changes: dict[str, Any] = {}
    if p.class_id != box.class_id:
        changes["class_id"] = p.class_id
    if any(abs(getattr(p, k) - getattr(box, k)) > TOLERANCE_PX for k in GEOMETRY):
        changes.update({k: getattr(p, k) for k in GEOMETRY})
    in_annotation = p.source != BoxSource.model and not _interpolated(p)
    if box.source != BoxSource.manual and in_annotation and (
            changes or p.source == BoxSource.manual):
        changes["source"] = BoxSource.manual
    return changes


def diff_frames(video_id: int, planned: list[Planned], frame_ids: set[int],
                sent: dict[int, set[int]] | None, truth: set[int]
                ) -> tuple[dict[int, FrameDiff], dict[int, list[Box]]]:
    """The diff of each frame in ``frame_ids`` (synced when ``sent`` is given, else appended)
    and the boxes every frame of the video holds, by frame id."""
    held: dict[int, list[Box]] = defaultdict(list)
    for box in db.session.scalars(sa.select(Box).join(Frame, Box.frame_id == Frame.id)
                                  .where(Frame.video_id == video_id).order_by(Box.id)):
        held[box.frame_id].append(box)
    by_frame: dict[int, list[Planned]] = defaultdict(list)
    for p in planned:
        by_frame[p.frame_id].append(p)
    if sent is None:
        return {fid: append_frame(by_frame[fid], held[fid]) for fid in sorted(frame_ids)}, held
    removed = _removed_on_record({p.box_id for p in planned if p.box_id is not None}
                                 - {box.id for rows in held.values() for box in rows})
    return {fid: sync_frame(by_frame[fid], held[fid], sent.get(fid, set()), fid in truth, removed)
            for fid in sorted(frame_ids)}, held


def _removed_on_record(gone: set[int]) -> set[int]:
    """Of the ids of boxes gone from the database, those whose last label event removed them
    (rejected, replaced, deleted, undone): decided here, not lost."""
    last: dict[int, Any] = {}
    for part in chunks(sorted(gone)):
        for box_id, after in db.session.execute(
                sa.select(LabelEvent.box_id, LabelEvent.after)
                .where(LabelEvent.box_id.in_(part)).order_by(LabelEvent.id)):
            last[box_id] = after
    return {box_id for box_id, after in last.items() if after is None}


def write_diffs(diffs: dict[int, FrameDiff], frames: dict[int, Frame], user: User | None,
                source: str) -> list[Box]:
    """Carry out the frames' diffs with their label events; the boxes added."""
    added: list[Box] = []
    for fid, diff in diffs.items():
        for b in diff.create:
            box = Box(frame_id=fid, class_id=b.class_id, x=b.x, y=b.y, w=b.w, h=b.h,
                      source=b.source, score=b.score, model_version=b.model_version,
                      track_id=b.track_id, author_id=None)
            db.session.add(box)
            added.append(box)
        for box, changes in diff.update:
            before = box.as_dict()
            for key, value in changes.items():
                setattr(box, key, value)
            accepted = changes.get("source") == BoxSource.manual
            if accepted and user is not None:
                box.author_id = user.id
            db.session.flush()
            record_event(user, "accept" if accepted else "update", source, frame=frames[fid],
                         box_id=box.id, before=before, after=box.as_dict())
        for box in diff.delete:
            record_event(user, "delete", source, frame=frames[fid], box_id=box.id,
                         before=box.as_dict())
            db.session.delete(box)
    db.session.flush()
    for box in added:
        record_event(user, "import", box.source.value, frame=frames[box.frame_id], box_id=box.id,
                     after=box.as_dict())
    return added
