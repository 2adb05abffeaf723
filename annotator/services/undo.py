"""Undo and redo, on the server: a revert restores what recorded events changed.

Design choices:
- :func:`revert_events` restores the ``before`` snapshot of box events (a box's content and
  provenance) and of "no findings" mark events, only if the box or mark is still as the event
  left it; so clients cannot forge model boxes, and a redo is simply the revert of a revert.
- A removed box comes back under its old id and version, so older events stay revertible.
- Reverts are events too (action ``revert``, source ``undo``); the event log's interpreter
  (:mod:`.event_log`) reads them to keep accept and reject counts net.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, LabelClass, LabelEvent, Scene, User
from .box_edits import check_version, get_frame, unmark_empty
from .event_log import is_mark_event, record_event
from .input_checks import id_list
from .workflow import Change, Conflict, LabelRefused, atomic, commit, start_editing

# Events in one revert: most undo steps are a handful, but rejecting a scene's remaining
# pre-labels (up to prelabel.MAX_PER_FRAME a frame) is one step too.
MAX_REVERT = 20_000
# What a revert restores: the box's content and provenance, never its id or timestamps.
RESTORED_FIELDS = ("frame_id", "class_id", "x", "y", "w", "h", "source", "score", "model_version",
                   "track_id", "author_id")


@atomic
def revert_events(event_ids: Any, user: User) -> Change:
    """Undo recorded box and mark events (newest first), all or none; a redo reverts the revert.
    ``event_ids`` is what the client sent, checked here: a non-empty list of event ids."""
    ids = id_list(event_ids, "event_ids", limit=MAX_REVERT, what="event ids")
    events: list[LabelEvent] = []
    box: Box | None = None
    scene: Scene | None = None
    for event_id in sorted(ids, reverse=True):
        ev = db.session.get(LabelEvent, event_id)
        if ev is None or (ev.box_id is None and not is_mark_event(ev)):
            raise LabelRefused(f"Event {event_id} in 'event_ids' is not a box or mark change that "
                               "can be undone.")
        if ev.box_id is not None:
            box, new_events = _revert_box(ev, user)
        else:
            box, new_events = None, _revert_mark(ev, user)
        events += new_events
        scene = db.session.get(Scene, ev.scene_id) if ev.scene_id else None
    return commit(Change(box if len(ids) == 1 else None, events, scene))


def _revert_box(ev: LabelEvent, user: User) -> tuple[Box | None, list[LabelEvent]]:
    before, after = ev.before, ev.after
    frame = get_frame((after or before)["frame_id"])
    if before is not None and db.session.get(LabelClass, before["class_id"]) is None:
        raise Conflict(f"Class {before['class_id']} was deleted since; the change cannot be undone.")
    if after is None:  # the box was removed: bring it back under its old id and version
        if db.session.get(Box, before["id"]) is not None:
            raise Conflict(f"Box {before['id']} cannot be restored: its id is in use.")
        events = start_editing(frame, user)
        fields = {k: before[k] for k in RESTORED_FIELDS}
        box = Box(id=before["id"], **{**fields, "source": BoxSource(fields["source"])})
        db.session.add(box)
        events += unmark_empty(frame, user)
        db.session.flush()
        # The mapper always inserts version 1; the old version makes older events revertible.
        db.session.execute(sa.update(Box).where(Box.id == box.id)
                           .values(row_version=before["row_version"])
                           .execution_options(synchronize_session="fetch"))
        db.session.refresh(box)
        events.append(record_event(user, "revert", "undo", frame=frame, box_id=box.id,
                                   after=box.as_dict()))
        return box, events
    box = db.session.get(Box, after["id"])
    if box is None:
        raise Conflict(f"Box {after['id']} was deleted since; the change cannot be undone.")
    check_version(box, after["row_version"])
    events = start_editing(frame, user)
    current = box.as_dict()
    if before is None:  # the box was created: remove it
        events.append(record_event(user, "revert", "undo", frame=frame, box_id=box.id, before=current))
        db.session.delete(box)
        return None, events
    for key in RESTORED_FIELDS:
        value = before[key]
        setattr(box, key, BoxSource(value) if key == "source" else value)
    db.session.flush()
    events.append(record_event(user, "revert", "undo", frame=frame, box_id=box.id, before=current,
                               after=box.as_dict()))
    return box, events


def _revert_mark(ev: LabelEvent, user: User) -> list[LabelEvent]:
    frame = get_frame(ev.frame_id)
    was, now = bool(ev.before["reviewed_empty"]), bool(ev.after["reviewed_empty"])
    if frame.reviewed_empty != now:
        raise Conflict(f"The \"no findings\" mark of frame {frame.frame_index} changed since; "
                       "the change cannot be undone.")
    db.session.flush()  # boxes a newer event of the same revert removed are gone from the count
    if was and db.session.scalar(sa.select(sa.func.count()).select_from(Box)
                                 .where(Box.frame_id == frame.id)):
        raise Conflict(f"Frame {frame.frame_index} has boxes now; it cannot be marked as having "
                       "no findings again.")
    events = start_editing(frame, user)
    frame.reviewed_empty = was
    events.append(record_event(user, "revert", "undo", frame=frame, before={"reviewed_empty": now},
                               after={"reviewed_empty": was}))
    return events
