"""Box edits: draw, move, resize, re-class, delete; accept or reject pre-labels; "no findings".

Each edit is one transaction with its label events (:mod:`.event_log`), names the
``row_version`` the client last saw (:mod:`.workflow` on optimistic locking), and starts the
scene when it is the first edit of a new or returned scene.

Design choices:
- Editing a pre-label (move, resize, class) accepts it: it becomes a manual box and counts as
  accepted, with the event keeping the model's original box for the reviewer's comparison.
- Removing a pre-label is its rejection; marking a frame as having no findings rejects the
  pre-labels left on it, and drawing a box on it clears the mark.
- Once a scene's objects are labelled, the pre-labels no track holds are the detector's false
  positives, shown or hidden by the score threshold; the review gate counts every one as
  undecided. :func:`reject_pending` rejects them all in one change (one undo) for the count
  the person confirmed, so pre-labels that arrived since are never rejected unseen.
- A drawn box must lie in the frame, with half a pixel of slack that is then cut off (the
  browser rounds to display pixels at some zoom levels): :func:`.boxes.clip_box`.
"""
from __future__ import annotations

from typing import Any

from sqlalchemy.orm import joinedload

from ..db import db
from ..models import Box, BoxSource, Frame, LabelClass, LabelEvent, Scene, User
from .boxes import MIN_INPUT_SIZE, OutsideFrame, clip_box
from .event_log import record_event
from .input_checks import finite_number, is_db_int, shown
from .review_gate import spans
from .tracks import next_track_id, track_for_new_box
from .workflow import Change, Conflict, LabelRefused, atomic, check_editable, commit, start_editing

DRAWN_SLACK = 0.5  # px


def _geometry(payload: dict[str, Any], frame: Frame) -> dict[str, float]:
    x, y, w, h = (finite_number(payload.get(k), k) for k in ("x", "y", "w", "h"))
    try:
        geometry = clip_box(x, y, w, h, frame.width, frame.height, slack=DRAWN_SLACK)
    except OutsideFrame as err:
        raise LabelRefused(f"{err} {_outside(x, y, w, h, frame)}") from None
    if geometry is None:
        raise LabelRefused(f"A box needs a width and height ('w', 'h') of at least {MIN_INPUT_SIZE} px "
                           "inside the frame.")
    return geometry


def _outside(x: float, y: float, w: float, h: float, frame: Frame) -> str:
    """Which fields put the box outside the frame, for the message."""
    s = DRAWN_SLACK
    sides = [text for bad, text in (
        (x < -s, "'x' is left of it"), (y < -s, "'y' is above it"),
        (x + w > frame.width + s, f"'x' + 'w' reaches past its width {frame.width}"),
        (y + h > frame.height + s, f"'y' + 'h' reaches below its height {frame.height}")) if bad]
    return "; ".join(sides) + "."


def _class_id(value: Any) -> int:
    if not is_db_int(value) or db.session.get(LabelClass, value) is None:
        raise LabelRefused(f"Unknown class {shown(value)} in 'class_id'.")
    return value


def _row_version(payload: dict[str, Any]) -> int:
    value = payload.get("row_version")
    if not is_db_int(value):
        raise LabelRefused("'row_version' (the version you last saw, a whole number) is required.")
    return value


def check_version(box: Box, expected: int) -> None:
    """Refuse a change made on another version of the box than the saved one."""
    if box.row_version != expected:
        who = box.author.username if box.author else "someone"
        raise Conflict(f"Box {box.id} was changed by {who} since you loaded it "
                       f"(version {box.row_version}, yours {expected}).", box=box.as_dict())


def _box(box_id: int) -> Box:
    # One query for the box, its frame and its scene: every edit needs all three.
    box = db.session.get(Box, box_id, options=[joinedload(Box.frame).joinedload(Frame.scene)])
    if box is None:
        raise LabelRefused(f"Box {box_id} does not exist (it may have been deleted).", status=404)
    return box


def get_frame(frame_id: int) -> Frame:
    frame = db.session.get(Frame, frame_id)
    if frame is None:
        raise LabelRefused(f"Frame {frame_id} does not exist.", status=404)
    return frame


def unmark_empty(frame: Frame, user: User) -> list[LabelEvent]:
    """Clear the frame's "no findings" mark, if set (a box is being added to it)."""
    if not frame.reviewed_empty:
        return []
    frame.reviewed_empty = False
    return [record_event(user, "unmark_empty", "manual", frame=frame,
                         before={"reviewed_empty": True}, after={"reviewed_empty": False})]


def _accept(box: Box, user: User, changes: dict[str, Any] | None = None) -> LabelEvent:
    """Make a pre-label a manual box of ``user`` (with ``changes`` applied), with its event."""
    before, source = box.as_dict(), box.source.value
    for key, value in (changes or {}).items():
        setattr(box, key, value)
    box.source, box.author_id = BoxSource.manual, user.id
    if box.track_id is None:  # an accepted pre-label is an object of its own, like a drawn box
        box.track_id = next_track_id(box.frame.scene_id)
    db.session.flush()
    return record_event(user, "accept", source, frame=box.frame, box_id=box.id, before=before,
                        after=box.as_dict())


@atomic
def create_box(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """A manual box drawn by ``user``, in track ``track_id`` or a new track; clears the
    frame's "no findings" mark."""
    frame = get_frame(frame_id)
    geometry = _geometry(payload, frame)
    class_id = _class_id(payload.get("class_id"))
    track_id = track_for_new_box(frame, payload.get("track_id"))
    events = start_editing(frame, user)
    box = Box(frame=frame, class_id=class_id, source=BoxSource.manual, author_id=user.id,
              track_id=track_id, **geometry)
    db.session.add(box)
    events += unmark_empty(frame, user)
    db.session.flush()
    events.append(record_event(user, "create", "manual", frame=frame, box_id=box.id,
                               after=box.as_dict()))
    return commit(Change(box, events, frame.scene))


@atomic
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
        raise LabelRefused("Nothing to change: send 'class_id' and/or 'x', 'y', 'w', 'h'.")
    check_version(box, expected)
    events = start_editing(box.frame, user)
    if box.source != BoxSource.manual:
        events.append(_accept(box, user, changes))
    else:
        before = box.as_dict()
        for key, value in changes.items():
            setattr(box, key, value)
        db.session.flush()
        events.append(record_event(user, "update", "manual", frame=box.frame, box_id=box.id,
                                   before=before, after=box.as_dict()))
    return commit(Change(box, events, box.frame.scene))


@atomic
def delete_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    """Remove a box; removing a pre-label is recorded as its rejection."""
    box = _box(box_id)
    check_version(box, _row_version(payload))
    frame = box.frame
    events = start_editing(frame, user)
    action = "delete" if box.source == BoxSource.manual else "reject"
    events.append(record_event(user, action, box.source.value, frame=frame, box_id=box.id,
                               before=box.as_dict()))
    db.session.delete(box)
    return commit(Change(None, events, frame.scene))


@atomic
def accept_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    """Turn a pre-label into a manual box, unchanged; the event keeps the model's version."""
    box = _box(box_id)
    check_version(box, _row_version(payload))
    if box.source == BoxSource.manual:
        raise Conflict(f"Box {box.id} is already a manual box.")
    events = start_editing(box.frame, user)
    events.append(_accept(box, user))
    return commit(Change(box, events, box.frame.scene))


@atomic
def reject_box(box_id: int, payload: dict[str, Any], user: User) -> Change:
    box = _box(box_id)
    if box.source == BoxSource.manual:
        raise Conflict(f"Box {box.id} is a manual box; delete it instead of rejecting it.")
    return delete_box(box_id, payload, user)


def _check_noop(frame: Frame, user: User) -> None:
    """Refuse an edit that changes nothing as the change itself would be refused: whether
    someone may edit a scene does not depend on the state of one of its frames."""
    if frame.scene is not None:
        check_editable(frame.scene, user)


def score_threshold(payload: dict[str, Any]) -> float:
    """The request's ``threshold``: the workspace's score slider, 0 to 1."""
    value = finite_number(payload.get("threshold"), "threshold")
    if not 0.0 <= value <= 1.0:
        raise LabelRefused("'threshold' must lie between 0 and 1.")
    return value


@atomic
def accept_above(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """Accept every pre-label of the frame scoring at least ``threshold``."""
    frame = get_frame(frame_id)
    threshold = score_threshold(payload)
    chosen = [b for b in frame.boxes
              if b.source != BoxSource.manual and (b.score if b.score is not None else 0.0) >= threshold]
    if not chosen:
        _check_noop(frame, user)
    events = start_editing(frame, user) if chosen else []
    events += [_accept(box, user) for box in chosen]
    return commit(Change(None, events, frame.scene))


@atomic
def set_no_findings(frame_id: int, payload: dict[str, Any], user: User) -> Change:
    """Mark a frame reviewed-empty (rejecting its remaining pre-labels) or clear the mark."""
    frame = get_frame(frame_id)
    empty = payload.get("empty")
    if not isinstance(empty, bool):
        raise LabelRefused("'empty' must be true (no findings) or false (clear the mark).")
    if empty == frame.reviewed_empty:
        _check_noop(frame, user)
        return Change(None, [], frame.scene)
    if empty:
        manual = [b for b in frame.boxes if b.source == BoxSource.manual]
        if manual:
            raise Conflict(f"Frame {frame.frame_index} has {len(manual)} box(es); delete them "
                           "before marking it as having no findings.")
    events = start_editing(frame, user)
    if empty:
        for box in list(frame.boxes):
            events.append(record_event(user, "reject", box.source.value, frame=frame, box_id=box.id,
                                       before=box.as_dict()))
            db.session.delete(box)
    frame.reviewed_empty = empty
    events.append(record_event(user, "mark_empty" if empty else "unmark_empty", "manual", frame=frame,
                               before={"reviewed_empty": not empty}, after={"reviewed_empty": empty}))
    return commit(Change(None, events, frame.scene))


def _pending_prelabels(scene_id: int) -> list[Box]:
    """The scene's pending pre-labels that no track holds, in frame order."""
    return list(db.session.scalars(
        db.select(Box).join(Frame, Frame.id == Box.frame_id).options(joinedload(Box.frame))
        .where(Frame.scene_id == scene_id, Box.source == BoxSource.model, Box.track_id.is_(None))
        .order_by(Frame.frame_index, Box.id)))


@atomic
def reject_pending(scene_id: int, payload: dict[str, Any], user: User) -> tuple[Change, list[int]]:
    """Reject every pending pre-label of the scene that no track holds; the change and the
    frames (``frame_index``) it touched. ``count`` is how many the person confirmed: refused
    (409) when the scene holds another number now."""
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise LabelRefused(f"No scene {scene_id}.", status=404)
    count = payload.get("count")
    if not is_db_int(count, minimum=0):
        raise LabelRefused("'count' (how many pending pre-labels you confirm rejecting, a whole "
                           "number) is required.")
    boxes = _pending_prelabels(scene.id)
    frames = sorted({b.frame.frame_index for b in boxes})
    if count != len(boxes):
        raise Conflict(f"Scene {scene.id} has {len(boxes)} pending pre-label(s) outside tracks"
                       + (f" (frames {spans(frames)})" if frames else "")
                       + f", not {count}: reload the scene and confirm again.", pending=len(boxes))
    if not boxes:
        check_editable(scene, user)
        return Change(None, [], scene), []
    events = start_editing(boxes[0].frame, user)
    for box in boxes:
        events.append(record_event(user, "reject", box.source.value, frame=box.frame, box_id=box.id,
                                   before=box.as_dict()))
        db.session.delete(box)
    return commit(Change(None, events, scene)), frames
