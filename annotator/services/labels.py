"""Box edits, pre-label review and scene workflow, each change written to ``label_events``.

Design choices:
- Optimistic locking: every edit names the ``row_version`` the client last saw. A mismatch,
  or a concurrent commit caught by SQLAlchemy's ``version_id_col`` (``StaleDataError``), is a
  ``Conflict`` (HTTP 409) and the transaction is rolled back, so a saved box is never
  overwritten by a stale client.
- Every change appends one ``LabelEvent`` in the same transaction as the change, with full
  before/after snapshots of the box. ``source`` says where the changed label came from:
  ``manual`` for drawn boxes, ``model``/``propagated`` when a pre-label is accepted, edited or
  rejected, ``undo`` for reverts, ``workflow`` for scene status changes and assignments.
- Undo/redo is server-side: ``revert_events`` restores the ``before`` snapshot of recorded
  events (a box's, or a frame's "no findings" mark), only if the box or mark is still as the
  event left it. Clients therefore cannot forge model boxes, and a redo is simply the revert of
  a revert.
- Model usefulness (accepted/rejected per model version) is derived from the before/after
  snapshots of events, so reverts of accepts and rejects cancel out without extra tables.
- Editing a pre-label (move, resize, class) accepts it: it becomes a manual box and counts as
  accepted, with the event keeping the model's original box for the reviewer's comparison.
"""
from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from functools import wraps
from typing import Any, Callable, Iterable

import sqlalchemy as sa
from sqlalchemy.orm import joinedload
from sqlalchemy.orm.exc import StaleDataError

from ..db import db
from . import ServiceError
from ..models import Box, BoxSource, Frame, LabelClass, LabelEvent, Role, Scene, SceneStatus, User

EDITABLE = {SceneStatus.new, SceneStatus.in_progress, SceneStatus.returned}
EDITOR_ROLES = {Role.admin, Role.annotator}
REVIEWER_ROLES = {Role.admin, Role.reviewer}
BOX_FIELDS = ("class_id", "x", "y", "w", "h")
# What a revert restores: the box's content and provenance, never its id or timestamps.
RESTORED_FIELDS = ("frame_id", "class_id", "x", "y", "w", "h", "source", "score", "model_version",
                   "track_id", "author_id")

# (from, to) -> roles that may make the move.
TRANSITIONS: dict[tuple[SceneStatus, SceneStatus], set[Role]] = {
    (SceneStatus.new, SceneStatus.in_progress): EDITOR_ROLES,
    (SceneStatus.returned, SceneStatus.in_progress): EDITOR_ROLES,
    (SceneStatus.in_progress, SceneStatus.submitted): EDITOR_ROLES,
    (SceneStatus.returned, SceneStatus.submitted): EDITOR_ROLES,
    (SceneStatus.submitted, SceneStatus.reviewed): REVIEWER_ROLES,
    (SceneStatus.submitted, SceneStatus.returned): REVIEWER_ROLES,
    (SceneStatus.reviewed, SceneStatus.returned): REVIEWER_ROLES,
}


class LabelRefused(ServiceError):
    """A refused edit; ``status`` is the HTTP code, ``str()`` the message for the user,
    ``detail`` extra JSON for the client (the saved box of a conflict)."""

    def __init__(self, message: str, status: int | None = None, **detail: Any):
        super().__init__(message, status)
        self.detail = detail


class Conflict(LabelRefused):
    status = 409


@dataclass
class Change:
    """The outcome of one edit: the box as saved (None when removed), the events written, and
    the scene; ``box_data``/``scene_data`` are taken before the commit expires the objects, so
    answering needs no further queries."""

    box: Box | None
    events: list[LabelEvent]
    scene: Scene | None
    box_data: dict[str, Any] | None = None
    scene_data: dict[str, Any] | None = None
    event_ids: list[int] = field(default_factory=list)
    # The box and mark events of this change: what ``revert_events`` takes to undo it.
    undo_ids: list[int] = field(default_factory=list)


def snapshot(box: Box) -> dict[str, Any]:
    return box.as_dict()


def _event(user: User | None, action: str, source: str, *, frame: Frame | None = None,
           scene_id: int | None = None, box_id: int | None = None,
           before: dict | None = None, after: dict | None = None) -> LabelEvent:
    ev = LabelEvent(user_id=user.id if user else None, action=action, source=source,
                    frame_id=frame.id if frame else None,
                    scene_id=scene_id if scene_id is not None else (frame.scene_id if frame else None),
                    box_id=box_id, before=before, after=after)
    db.session.add(ev)
    return ev


def _commit(change: Change) -> Change:
    db.session.flush()
    change.event_ids = [e.id for e in change.events]
    change.undo_ids = [e.id for e in change.events if e.box_id is not None or _is_mark(e)]
    if change.box is not None:
        change.box_data = snapshot(change.box)
    if change.scene is not None:
        sc = change.scene
        change.scene_data = {"id": sc.id, "status": sc.status.value, "assignee_id": sc.assignee_id,
                             "review_comment": sc.review_comment or ""}
    db.session.commit()
    return change


def _atomic(fn: Callable[..., Change]) -> Callable[..., Change]:
    """All of an edit or none of it: a refusal or a lost race rolls the session back."""

    @wraps(fn)
    def wrapped(*args: Any, **kwargs: Any) -> Change:
        try:
            return fn(*args, **kwargs)
        except StaleDataError:
            db.session.rollback()
            raise Conflict("Someone else saved this box a moment ago; your change was not applied.")
        except Exception:
            db.session.rollback()
            raise

    return wrapped


def _number(payload: dict[str, Any], key: str) -> float:
    value = payload.get(key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise LabelRefused(f"'{key}' must be a number.")
    return float(value)


def _geometry(payload: dict[str, Any], frame: Frame) -> dict[str, float]:
    x, y, w, h = (_number(payload, k) for k in ("x", "y", "w", "h"))
    if w <= 0 or h <= 0:
        raise LabelRefused("A box needs a width and height above zero.")
    # Half a pixel of slack: the browser rounds to display pixels at some zoom levels.
    if x < -0.5 or y < -0.5 or x + w > frame.width + 0.5 or y + h > frame.height + 0.5:
        raise LabelRefused(f"The box lies outside the {frame.width}x{frame.height} frame.")
    x, y = max(x, 0.0), max(y, 0.0)
    return {"x": x, "y": y, "w": min(w, frame.width - x), "h": min(h, frame.height - y)}


def _class_id(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or db.session.get(LabelClass, value) is None:
        raise LabelRefused(f"Unknown class {value!r}.")
    return value


def _row_version(payload: dict[str, Any]) -> int:
    value = payload.get("row_version")
    if isinstance(value, bool) or not isinstance(value, int):
        raise LabelRefused("'row_version' (the version you last saw) is required.")
    return value


def _check_version(box: Box, expected: int) -> None:
    if box.row_version != expected:
        who = box.author.username if box.author else "someone"
        raise Conflict(f"Box {box.id} was changed by {who} since you loaded it "
                       f"(version {box.row_version}, yours {expected}).", box=snapshot(box))


def _editable(frame: Frame, user: User) -> list[LabelEvent]:
    """Refuse edits to locked scenes; the first edit of a new or returned scene starts it."""
    scene = frame.scene
    if scene is None:
        return []
    if scene.status not in EDITABLE:
        raise Conflict(f"Scene {scene.id} is {scene.status.value.replace('_', ' ')}: "
                       "it cannot be edited until a reviewer returns it.")
    if scene.status != SceneStatus.in_progress:
        return [_move_scene(scene, SceneStatus.in_progress, user, "")]
    return []


def _move_scene(scene: Scene, to: SceneStatus, user: User, comment: str) -> LabelEvent:
    before = {"status": scene.status.value}
    scene.status = to
    if to == SceneStatus.in_progress and scene.assignee_id is None:
        scene.assignee_id = user.id
    if to == SceneStatus.returned:
        scene.review_comment = comment
    return _event(user, "status", "workflow", scene_id=scene.id, before=before,
                  after={"status": to.value, "comment": comment})


def _box(box_id: int) -> Box:
    # One query for the box, its frame and its scene: every edit needs all three.
    box = db.session.get(Box, box_id, options=[joinedload(Box.frame).joinedload(Frame.scene)])
    if box is None:
        raise LabelRefused(f"Box {box_id} does not exist (it may have been deleted).", status=404)
    return box


def _frame(frame_id: int) -> Frame:
    frame = db.session.get(Frame, frame_id)
    if frame is None:
        raise LabelRefused(f"Frame {frame_id} does not exist.", status=404)
    return frame


def _is_mark(ev: LabelEvent) -> bool:
    """A change of a frame's "no findings" mark (set, cleared, or either reverted)."""
    return ev.box_id is None and ev.frame_id is not None and isinstance(ev.after, dict) \
        and "reviewed_empty" in ev.after


def _unmark_empty(frame: Frame, user: User) -> list[LabelEvent]:
    if not frame.reviewed_empty:
        return []
    frame.reviewed_empty = False
    return [_event(user, "unmark_empty", "manual", frame=frame,
                   before={"reviewed_empty": True}, after={"reviewed_empty": False})]


@_atomic
def create_box(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """A manual box drawn by ``user``; clears the frame's "no findings" mark."""
    frame = _frame(frame_id)
    geometry = _geometry(payload, frame)
    class_id = _class_id(payload.get("class_id"))
    events = _editable(frame, user)
    box = Box(frame=frame, class_id=class_id, source=BoxSource.manual, author_id=user.id, **geometry)
    db.session.add(box)
    events += _unmark_empty(frame, user)
    db.session.flush()
    events.append(_event(user, "create", "manual", frame=frame, box_id=box.id, after=snapshot(box)))
    return _commit(Change(box, events, frame.scene))


@_atomic
def update_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    """Move, resize or re-class a box. Editing a pre-label accepts it as a manual box."""
    box = _box(box_id)
    expected = _row_version(payload)
    changes: dict[str, Any] = {}
    if "class_id" in payload:
        changes["class_id"] = _class_id(payload["class_id"])
    if any(k in payload for k in ("x", "y", "w", "h")):
        merged = {k: payload.get(k, getattr(box, k)) for k in ("x", "y", "w", "h")}
        changes.update(_geometry(merged, box.frame))
    if not changes:
        raise LabelRefused("Nothing to change: send class_id and/or x, y, w, h.")
    _check_version(box, expected)
    events = _editable(box.frame, user)
    before = snapshot(box)
    source = box.source.value
    for key, value in changes.items():
        setattr(box, key, value)
    action = "update"
    if box.source != BoxSource.manual:
        box.source, box.author_id, action = BoxSource.manual, user.id, "accept"
    db.session.flush()
    events.append(_event(user, action, source, frame=box.frame, box_id=box.id, before=before,
                         after=snapshot(box)))
    return _commit(Change(box, events, box.frame.scene))


@_atomic
def delete_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    """Remove a box; removing a pre-label is recorded as its rejection."""
    box = _box(box_id)
    _check_version(box, _row_version(payload))
    frame = box.frame
    events = _editable(frame, user)
    action = "delete" if box.source == BoxSource.manual else "reject"
    events.append(_event(user, action, box.source.value, frame=frame, box_id=box.id,
                         before=snapshot(box)))
    db.session.delete(box)
    return _commit(Change(None, events, frame.scene))


@_atomic
def accept_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    """Turn a pre-label into a manual box, unchanged; the event keeps the model's version."""
    box = _box(box_id)
    _check_version(box, _row_version(payload))
    if box.source == BoxSource.manual:
        raise Conflict(f"Box {box.id} is already a manual box.")
    events = _editable(box.frame, user)
    before, source = snapshot(box), box.source.value
    box.source, box.author_id = BoxSource.manual, user.id
    db.session.flush()
    events.append(_event(user, "accept", source, frame=box.frame, box_id=box.id, before=before,
                         after=snapshot(box)))
    return _commit(Change(box, events, box.frame.scene))


@_atomic
def reject_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    box = _box(box_id)
    if box.source == BoxSource.manual:
        raise Conflict(f"Box {box.id} is a manual box; delete it instead of rejecting it.")
    return delete_box(box_id, payload, user)


def _threshold(payload: dict[str, Any]) -> float:
    value = _number(payload, "threshold")
    if not 0.0 <= value <= 1.0:
        raise LabelRefused("'threshold' must lie between 0 and 1.")
    return value


@_atomic
def accept_above(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """Accept every pre-label of the frame scoring at least ``threshold``."""
    frame = _frame(frame_id)
    threshold = _threshold(payload)
    chosen = [b for b in frame.boxes
              if b.source != BoxSource.manual and (b.score if b.score is not None else 0.0) >= threshold]
    events = _editable(frame, user) if chosen else []
    for box in chosen:
        before, source = snapshot(box), box.source.value
        box.source, box.author_id = BoxSource.manual, user.id
        db.session.flush()
        events.append(_event(user, "accept", source, frame=frame, box_id=box.id, before=before,
                             after=snapshot(box)))
    return _commit(Change(None, events, frame.scene))


@_atomic
def set_no_findings(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """Mark a frame reviewed-empty (rejecting its remaining pre-labels) or clear the mark."""
    frame = _frame(frame_id)
    empty = payload.get("empty")
    if not isinstance(empty, bool):
        raise LabelRefused("'empty' must be true (no findings) or false (clear the mark).")
    if empty == frame.reviewed_empty:
        return Change(None, [], frame.scene)
    if empty:
        manual = [b for b in frame.boxes if b.source == BoxSource.manual]
        if manual:
            raise Conflict(f"Frame {frame.frame_index} has {len(manual)} box(es); delete them "
                           "before marking it as having no findings.")
    events = _editable(frame, user)
    if empty:
        for box in list(frame.boxes):
            events.append(_event(user, "reject", box.source.value, frame=frame, box_id=box.id,
                                 before=snapshot(box)))
            db.session.delete(box)
    frame.reviewed_empty = empty
    events.append(_event(user, "mark_empty" if empty else "unmark_empty", "manual", frame=frame,
                         before={"reviewed_empty": not empty}, after={"reviewed_empty": empty}))
    return _commit(Change(None, events, frame.scene))


@_atomic
def revert_events(event_ids: Iterable[int], user: User) -> Change:
    """Undo recorded box and mark events (newest first), all or none; a redo reverts the revert."""
    ids = list(event_ids)
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise LabelRefused("'event_ids' must be a non-empty list of event ids.")
    events: list[LabelEvent] = []
    box: Box | None = None
    scene: Scene | None = None
    for event_id in sorted(ids, reverse=True):
        ev = db.session.get(LabelEvent, event_id)
        if ev is None or (ev.box_id is None and not _is_mark(ev)):
            raise LabelRefused(f"Event {event_id} is not a box or mark change that can be undone.")
        if ev.box_id is not None:
            box, new_events = _revert_one(ev, user)
        else:
            box, new_events = None, _revert_mark(ev, user)
        events += new_events
        scene = db.session.get(Scene, ev.scene_id) if ev.scene_id else None
    return _commit(Change(box if len(ids) == 1 else None, events, scene))


def _revert_one(ev: LabelEvent, user: User) -> tuple[Box | None, list[LabelEvent]]:
    before, after = ev.before, ev.after
    frame = _frame((after or before)["frame_id"])
    if after is None:  # the box was removed: bring it back under its old id and version
        if db.session.get(Box, before["id"]) is not None:
            raise Conflict(f"Box {before['id']} cannot be restored: its id is in use.")
        events = _editable(frame, user)
        fields = {k: before[k] for k in RESTORED_FIELDS}
        box = Box(id=before["id"], **{**fields, "source": BoxSource(fields["source"])})
        db.session.add(box)
        events += _unmark_empty(frame, user)
        db.session.flush()
        # The mapper always inserts version 1; the old version makes older events revertible.
        db.session.execute(sa.update(Box).where(Box.id == box.id)
                           .values(row_version=before["row_version"])
                           .execution_options(synchronize_session="fetch"))
        db.session.refresh(box)
        events.append(_event(user, "revert", "undo", frame=frame, box_id=box.id, after=snapshot(box)))
        return box, events
    box = db.session.get(Box, after["id"])
    if box is None:
        raise Conflict(f"Box {after['id']} was deleted since; the change cannot be undone.")
    _check_version(box, after["row_version"])
    events = _editable(frame, user)
    current = snapshot(box)
    if before is None:  # the box was created: remove it
        events.append(_event(user, "revert", "undo", frame=frame, box_id=box.id, before=current))
        db.session.delete(box)
        return None, events
    for key in RESTORED_FIELDS:
        value = before[key]
        setattr(box, key, BoxSource(value) if key == "source" else value)
    db.session.flush()
    events.append(_event(user, "revert", "undo", frame=frame, box_id=box.id, before=current,
                         after=snapshot(box)))
    return box, events


def _revert_mark(ev: LabelEvent, user: User) -> list[LabelEvent]:
    frame = _frame(ev.frame_id)
    was, now = bool(ev.before["reviewed_empty"]), bool(ev.after["reviewed_empty"])
    if frame.reviewed_empty != now:
        raise Conflict(f"The \"no findings\" mark of frame {frame.frame_index} changed since; "
                       "the change cannot be undone.")
    db.session.flush()  # boxes a newer event of the same revert removed are gone from the count
    if was and db.session.scalar(sa.select(sa.func.count()).select_from(Box)
                                 .where(Box.frame_id == frame.id)):
        raise Conflict(f"Frame {frame.frame_index} has boxes now; it cannot be marked as having "
                       "no findings again.")
    events = _editable(frame, user)
    frame.reviewed_empty = was
    events.append(_event(user, "revert", "undo", frame=frame, before={"reviewed_empty": now},
                         after={"reviewed_empty": was}))
    return events


@_atomic
def change_status(scene_id: int, payload: dict[str, Any], user: User) -> Change:
    """Move a scene along new -> in_progress -> submitted -> reviewed | returned."""
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise LabelRefused(f"Scene {scene_id} does not exist.", status=404)
    try:
        to = SceneStatus(payload.get("status"))
    except ValueError:
        raise LabelRefused(f"Unknown status {payload.get('status')!r}; one of "
                           + ", ".join(s.value for s in SceneStatus) + ".")
    comment = payload.get("comment", "")
    if not isinstance(comment, str):
        raise LabelRefused("'comment' must be text.")
    comment = comment.strip()
    roles = TRANSITIONS.get((scene.status, to))
    if roles is None:
        raise Conflict(f"Scene {scene.id} is {scene.status.value}; it cannot move to {to.value}.")
    if user.role not in roles:
        raise LabelRefused(f"A {user.role.value.replace('_', ' ')} may not move a scene from "
                           f"{scene.status.value} to {to.value}.", status=403)
    if to == SceneStatus.returned and not comment:
        raise LabelRefused("Say what to fix: returning a scene needs a comment.")
    if len(comment) > 5000:
        raise LabelRefused("The comment is too long (5000 characters at most).")
    event = _move_scene(scene, to, user, comment)
    return _commit(Change(None, [event], scene))


ASSIGNABLE = (Role.annotator, Role.admin)  # the roles that edit boxes
MAX_ASSIGN = 10_000


def assignable_users() -> list[User]:
    """Active annotators, then admins, by name."""
    users = db.session.scalars(db.select(User).where(User.role.in_(ASSIGNABLE), User.active))
    return sorted(users, key=lambda u: (u.role != Role.annotator, u.username))


@_atomic
def assign_scenes(scene_ids: Iterable[int], assignee: str | None, user: User) -> list[Scene]:
    """Give scenes to an annotator (``assignee`` a user name) or to nobody (None); all or none.

    Each scene whose assignee changes gets an ``assign`` event. The scene's status is kept: a
    scene in progress goes on where its previous annotator left it.
    """
    ids = list(scene_ids) if isinstance(scene_ids, (list, tuple)) else None
    if not ids or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
        raise LabelRefused("'scene_ids' must be a non-empty list of scene ids.")
    if len(ids) > MAX_ASSIGN:
        raise LabelRefused(f"At most {MAX_ASSIGN} scenes at a time.")
    target: User | None = None
    if assignee is not None:
        if not isinstance(assignee, str):
            raise LabelRefused("'assignee' must be a user name, or null to unassign.")
        target = db.session.scalar(db.select(User).where(User.username == assignee))
        if target is None or not target.active:
            raise LabelRefused(f"There is no active user {assignee!r}.")
        if target.role not in ASSIGNABLE:
            raise LabelRefused(f"{assignee} is a {target.role.value.replace('_', ' ')}: scenes go "
                               "to annotators (or admins), who draw the boxes.")
    scenes = {s.id: s for s in db.session.scalars(db.select(Scene).where(Scene.id.in_(set(ids))))}
    missing = sorted(set(ids) - set(scenes))
    if missing:
        raise LabelRefused(f"No scene {', '.join(map(str, missing[:20]))}.", status=404)
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    events = []
    for scene in (scenes[i] for i in sorted(scenes)):
        new_id = target.id if target is not None else None
        if scene.assignee_id == new_id:
            continue
        events.append(_event(user, "assign", "workflow", scene_id=scene.id,
                             before={"assignee": names.get(scene.assignee_id)},
                             after={"assignee": target.username if target else None}))
        scene.assignee_id = new_id
    _commit(Change(None, events, None))
    return [scenes[i] for i in sorted(scenes)]


def model_feedback(scene_id: int | None = None) -> list[dict[str, Any]]:
    """Accepted, rejected and still pending pre-labels per model version.

    An accept is a snapshot going from a model/propagated box to a manual one, a reject from a
    model box to nothing (a pre-label replaced by a carried box is not rejected); undoing one
    subtracts and redoing adds again, so counts stay net.
    """
    query = db.select(LabelEvent.box_id, LabelEvent.action, LabelEvent.before, LabelEvent.after).where(
        LabelEvent.box_id.is_not(None)).order_by(LabelEvent.id)
    if scene_id is not None:
        query = query.where(LabelEvent.scene_id == scene_id)
    counts: dict[str, dict[str, int]] = defaultdict(lambda: {"accepted": 0, "rejected": 0, "pending": 0})

    def version(snap: dict) -> str:
        return snap.get("model_version") or ""

    def is_model(snap: dict | None) -> bool:
        return bool(snap) and snap.get("source") != BoxSource.manual.value

    def kind_of(action: str, before: dict | None, after: dict | None) -> str:
        if is_model(before) and after and not is_model(after):
            return "accepted"
        if is_model(before) and after is None and action != "replace":  # replaced is not rejected
            return "rejected"
        return "other"

    def same(a: dict | None, b: dict | None) -> bool:
        keys = ("class_id", "x", "y", "w", "h", "source")
        return (a is None) == (b is None) and (a is None or all(a.get(k) == b.get(k) for k in keys))

    # Per box, the changes in force and those undone: a revert that lands on the state before
    # the latest change undoes it, one that lands on an undone change's result redoes it.
    applied: dict[int, list[tuple[str, dict | None, dict | None]]] = defaultdict(list)
    undone: dict[int, list[tuple[str, dict | None, dict | None]]] = defaultdict(list)
    for box_id, action, before, after in db.session.execute(query):
        if action != "revert":
            change = (kind_of(action, before, after), before, after)
            applied[box_id].append(change)
            undone[box_id].clear()
            sign = 1
        elif applied[box_id] and same(after, applied[box_id][-1][1]):
            change = applied[box_id].pop()
            undone[box_id].append(change)
            sign = -1
        elif undone[box_id] and same(after, undone[box_id][-1][2]):
            change = undone[box_id].pop()
            applied[box_id].append(change)
            sign = 1
        else:
            continue
        kind, snap = change[0], change[1]
        if kind != "other":
            counts[version(snap)][kind] += sign
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


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    ix = max(0.0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    iy = max(0.0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    inter = ix * iy
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


def greedy_match(a: list[dict[str, Any]], b: list[dict[str, Any]], min_iou: float
                 ) -> list[tuple[float, int, int]]:
    """One-to-one pairs ``(iou, i, j)`` of boxes ``a[i]``, ``b[j]`` of the same class with IoU
    >= ``min_iou``, taken greedily from the largest overlap."""
    pairs = sorted(((iou(x, y), i, j) for i, x in enumerate(a) for j, y in enumerate(b)
                    if x["class_id"] == y["class_id"]), reverse=True)
    used_a: set[int] = set()
    used_b: set[int] = set()
    matched = []
    for overlap, i, j in pairs:
        if overlap < min_iou:
            break
        if i not in used_a and j not in used_b:
            used_a.add(i)
            used_b.add(j)
            matched.append((overlap, i, j))
    return matched


def review_notes(scene_id: int) -> dict[str, Any]:
    """For the reviewer: per box how it relates to the pre-labels, and the rejected pre-labels.

    ``origins[box_id]`` is ``drawn``, ``accepted`` (IoU with the model's box >= 0.99) or
    ``edited`` (with the IoU); ``rejected[frame_id]`` lists model boxes the annotator removed.
    """
    rows = db.session.execute(
        db.select(LabelEvent.box_id, LabelEvent.frame_id, LabelEvent.action, LabelEvent.before,
                  LabelEvent.after)
        .where(LabelEvent.scene_id == scene_id, LabelEvent.box_id.is_not(None))
        .order_by(LabelEvent.id)).all()
    model_box: dict[int, dict] = {}
    rejected: dict[int, dict[int, dict]] = defaultdict(dict)
    for box_id, frame_id, action, before, after in rows:
        if before and before.get("source") != BoxSource.manual.value and after and \
                after.get("source") == BoxSource.manual.value:
            model_box[box_id] = before
        elif before and before.get("source") != BoxSource.manual.value and after is None:
            if action != "replace":  # a pre-label replaced by a carried box was not rejected
                rejected[frame_id][box_id] = before
        elif before is None and after and after.get("source") != BoxSource.manual.value:
            rejected[frame_id].pop(box_id, None)  # an undone reject
        elif after and after.get("source") != BoxSource.manual.value:
            model_box.pop(box_id, None)  # an undone accept
    boxes = db.session.execute(
        db.select(Box).join(Frame, Frame.id == Box.frame_id).where(Frame.scene_id == scene_id)
    ).scalars().all()
    origins: dict[int, dict[str, Any]] = {}
    for box in boxes:
        if box.source != BoxSource.manual:
            origins[box.id] = {"kind": "pending"}
        elif box.id in model_box:
            original = model_box[box.id]
            overlap = iou(original, snapshot(box))
            same_class = original["class_id"] == box.class_id
            kind = "accepted" if overlap >= 0.99 and same_class else "edited"
            origins[box.id] = {"kind": kind, "iou": round(overlap, 3), "class_changed": not same_class,
                               "model_version": original.get("model_version"),
                               "score": original.get("score"), "model_box": original}
        else:
            origins[box.id] = {"kind": "drawn"}
    return {"origins": origins,
            "rejected": {fid: list(v.values()) for fid, v in rejected.items() if v}}


def find_scenes(status: str = "", video_id: int | None = None, patient: str = "",
                assignee: str = "") -> list[Scene]:
    """Scenes filtered by status, video, patient code and assignee user name ("-" = nobody)."""
    from ..models import Patient, Video

    query = db.select(Scene).join(Video, Video.id == Scene.video_id).join(Patient)
    if status:
        try:
            query = query.where(Scene.status == SceneStatus(status))
        except ValueError:
            raise LabelRefused(f"Unknown status {status!r}.")
    if video_id is not None:
        query = query.where(Scene.video_id == video_id)
    if patient:
        query = query.where(Patient.code == patient)
    if assignee == "-":
        query = query.where(Scene.assignee_id.is_(None))
    elif assignee:
        query = query.join(User, User.id == Scene.assignee_id).where(User.username == assignee)
    return list(db.session.scalars(query.order_by(Scene.updated_at.desc(), Scene.id.desc())))


def scene_events(scene_id: int | None = None, frame_id: int | None = None,
                 limit: int = 1000) -> list[LabelEvent]:
    """The audit trail, newest first, of a scene or of one frame."""
    query = db.select(LabelEvent)
    if frame_id is not None:
        query = query.where(LabelEvent.frame_id == frame_id)
    elif scene_id is not None:
        query = query.where(LabelEvent.scene_id == scene_id)
    return list(db.session.scalars(query.order_by(LabelEvent.id.desc()).limit(limit)))
