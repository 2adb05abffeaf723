"""The label event log: how a change is written, and how the log is read back.

Every change to boxes, "no findings" marks and scene workflow appends :class:`LabelEvent` rows
(:func:`record_event`) in the transaction of the change, with full before/after snapshots of
the box (``Box.as_dict()``). ``source`` says where the changed label came from: ``manual``
for drawn boxes, ``model``/``propagated`` when a pre-label is accepted, edited or rejected,
``undo`` for reverts, ``workflow`` for scene status changes and assignments, ``import`` for
label files, ``classes`` for changes to the label classes (no scene, frame or box).

Reading it back, one interpreter (:func:`decisions`) walks a scope's box events and keeps
the decisions on pre-labels in force:
- an accept is a snapshot going from a model or propagated box to a manual one (editing a
  pre-label accepts it too); a reject is a model box going to nothing, unless the action is
  ``replace`` (a pre-label replaced by a newer one or by a carried box was not rejected);
- a revert that lands on the state before a box's latest change undoes that change, one that
  lands on an undone change's result redoes it; so undo and redo cancel out without extra
  tables. A decision keeps the model's box as it was before the decision.
Model feedback (counts per model version) and review notes (per box, for the reviewer) are
both derived from those decisions.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, LabelEvent, User
from .boxes import iou

# What two snapshots must share to be the same state of a box (not its version or author).
STATE_FIELDS = ("class_id", "x", "y", "w", "h", "source")
# A pre-label accepted with at least this overlap and its class is "accepted", else "edited".
UNCHANGED_IOU = 0.99


def record_event(user: User | None, action: str, source: str, *, frame: Frame | None = None,
                 scene_id: int | None = None, box_id: int | None = None,
                 before: dict | None = None, after: dict | None = None) -> LabelEvent:
    """Add one event to the session (the caller commits it with the change it describes);
    ``scene_id`` defaults to the frame's scene."""
    ev = LabelEvent(user_id=user.id if user else None, action=action, source=source,
                    frame_id=frame.id if frame else None,
                    scene_id=scene_id if scene_id is not None else (frame.scene_id if frame else None),
                    box_id=box_id, before=before, after=after)
    db.session.add(ev)
    return ev


def is_mark_event(ev: LabelEvent) -> bool:
    """A change of a frame's "no findings" mark (set, cleared, or either reverted)."""
    return ev.box_id is None and ev.frame_id is not None and isinstance(ev.after, dict) \
        and "reviewed_empty" in ev.after


@dataclass
class Decision:
    """An accept or reject of a pre-label, in force; ``model_box`` is the pre-label's snapshot."""

    box_id: int
    frame_id: int | None
    kind: str  # "accepted" | "rejected"
    model_box: dict[str, Any]


@dataclass
class _Change:
    kind: str  # "accepted", "rejected" or "other"
    frame_id: int | None
    before: dict | None
    after: dict | None
    made: int  # the id of the event that made it, or redid it last


def _is_model(snap: dict | None) -> bool:
    return bool(snap) and snap.get("source") != BoxSource.manual.value


def _kind(action: str, before: dict | None, after: dict | None) -> str:
    if _is_model(before) and after and not _is_model(after):
        return "accepted"
    if _is_model(before) and after is None and action != "replace":
        return "rejected"
    return "other"


def _same(a: dict | None, b: dict | None) -> bool:
    return (a is None) == (b is None) and (a is None or all(a.get(k) == b.get(k) for k in STATE_FIELDS))


def decisions(scene_id: int | None = None) -> list[Decision]:
    """The decisions on pre-labels in force in a scene (None: everywhere), in the order they
    were last made."""
    query = db.select(LabelEvent.id, LabelEvent.box_id, LabelEvent.frame_id, LabelEvent.action,
                      LabelEvent.before, LabelEvent.after).where(
        LabelEvent.box_id.is_not(None)).order_by(LabelEvent.id)
    if scene_id is not None:
        query = query.where(LabelEvent.scene_id == scene_id)
    # Per box, the changes in force and those undone, newest last.
    applied: dict[int, list[_Change]] = defaultdict(list)
    undone: dict[int, list[_Change]] = defaultdict(list)
    for event_id, box_id, frame_id, action, before, after in db.session.execute(query):
        if action != "revert":
            applied[box_id].append(_Change(_kind(action, before, after), frame_id, before, after,
                                           event_id))
            undone[box_id].clear()
        elif applied[box_id] and _same(after, applied[box_id][-1].before):
            undone[box_id].append(applied[box_id].pop())
        elif undone[box_id] and _same(after, undone[box_id][-1].after):
            change = undone[box_id].pop()
            change.made = event_id
            applied[box_id].append(change)
    in_force = sorted(((c, box_id) for box_id, changes in applied.items() for c in changes
                       if c.kind != "other"), key=lambda pair: pair[0].made)
    return [Decision(box_id, c.frame_id, c.kind, c.before) for c, box_id in in_force]


def model_feedback(scene_id: int | None = None) -> list[dict[str, Any]]:
    """Accepted, rejected and still pending pre-labels per model version."""
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0, "pending": 0})
    for d in decisions(scene_id):
        counts[d.model_box.get("model_version") or ""][d.kind] += 1
    pending = db.select(Box.model_version, sa.func.count()).where(Box.source != BoxSource.manual)
    if scene_id is not None:
        pending = pending.join(Frame, Frame.id == Box.frame_id).where(Frame.scene_id == scene_id)
    for model_version, n in db.session.execute(pending.group_by(Box.model_version)):
        counts[model_version or ""]["pending"] = n
    rows = []
    for name in sorted(counts):
        c = counts[name]
        decided = c["accepted"] + c["rejected"]
        rows.append({"model_version": name or None, **c,
                     "acceptance_rate": round(c["accepted"] / decided, 4) if decided else None})
    return rows


def review_notes(scene_id: int) -> dict[str, Any]:
    """For the reviewer: per box how it relates to the pre-labels, and the rejected pre-labels.

    ``origins[box_id]`` is ``pending`` (a pre-label), ``drawn``, ``accepted`` (IoU with the
    model's box >= 0.99, same class) or ``edited`` (with the IoU); ``rejected[frame_id]`` lists
    the model boxes the annotator removed.
    """
    model_box: dict[int, dict] = {}
    rejected: dict[int, list[dict]] = defaultdict(list)
    for d in decisions(scene_id):
        if d.kind == "accepted":
            model_box[d.box_id] = d.model_box
        else:
            rejected[d.frame_id].append(d.model_box)
    boxes = db.session.execute(
        db.select(Box).join(Frame, Frame.id == Box.frame_id).where(Frame.scene_id == scene_id)
    ).scalars().all()
    origins: dict[int, dict[str, Any]] = {}
    for box in boxes:
        if box.source != BoxSource.manual:
            origins[box.id] = {"kind": "pending"}
        elif box.id in model_box:
            original = model_box[box.id]
            overlap = iou(original, box.as_dict())
            same_class = original["class_id"] == box.class_id
            kind = "accepted" if overlap >= UNCHANGED_IOU and same_class else "edited"
            origins[box.id] = {"kind": kind, "iou": round(overlap, 3), "class_changed": not same_class,
                               "model_version": original.get("model_version"),
                               "score": original.get("score"), "model_box": original}
        else:
            origins[box.id] = {"kind": "drawn"}
    return {"origins": origins, "rejected": dict(rejected)}


def scene_events(scene_id: int | None = None, frame_id: int | None = None,
                 limit: int = 1000) -> list[LabelEvent]:
    """The audit trail, newest first, of a scene, of one frame, or of one frame of a scene."""
    query = db.select(LabelEvent)
    if frame_id is not None:
        query = query.where(LabelEvent.frame_id == frame_id)
    if scene_id is not None:
        query = query.where(LabelEvent.scene_id == scene_id)
    return list(db.session.scalars(query.order_by(LabelEvent.id.desc()).limit(limit)))
