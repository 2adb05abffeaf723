"""Tracks: one object within a scene (``Box.track_id``), listed and changed as a whole.

Design choices:
- Track ids are per scene: a box drawn without a track starts the next one (the scene's
  largest id plus one), a box carried by flow keeps its source's id.
- A track has at most one box per frame; a merge that would give a frame two boxes of one
  track is refused, naming the frames.
- Every operation is one transaction through :func:`.workflow.start_editing` (locks and
  assignment) with one label event per box it changes, so the audit shows each frame and
  undo (:mod:`.undo`) restores each box; an accept also writes one ``accept_track`` event on
  the scene listing the accepted frames, for the reviewer.
- Accepting turns the track's propagated boxes in a span into manual boxes with ``accept``
  events of source ``propagated``, exactly as accepting them one by one would: model feedback
  and the review gate count them the same way. Pending pre-labels without a track that are
  one object with an accepted track's box (:func:`.boxes.same_object`, as for fused boxes) are
  retired in the same transaction with ``replace`` events, so the gate does not keep them
  as undecided and model feedback does not count them as rejected; one undo restores all.
- Frames are named by their ``frame_index`` (the decoder's numbering the workspace shows).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, LabelClass, LabelEvent, Scene, User
from .boxes import plain, same_object
from .event_log import record_event
from .input_checks import is_db_int, shown
from .review_gate import spans
from .workflow import Change, LabelRefused, atomic, commit, start_editing


def next_track_id(scene_id: int | None) -> int:
    """The id a new track of the scene gets: one more than any track it has had. The audit log
    counts too, so a deleted track's number is not given again (Label Studio regions and old
    events name tracks by number)."""
    if scene_id is None:
        return 1
    on_boxes = db.session.scalar(sa.select(sa.func.max(Box.track_id))
                                 .join(Frame, Frame.id == Box.frame_id).where(Frame.scene_id == scene_id))
    in_log = db.session.execute(
        sa.select(sa.func.max(LabelEvent.before["track_id"].as_integer()),
                  sa.func.max(LabelEvent.after["track_id"].as_integer()))
        .where(LabelEvent.scene_id == scene_id)).one()
    return max((n for n in (on_boxes, *in_log) if n is not None), default=0) + 1


def track_for_new_box(frame: Frame, value: Any) -> int:
    """The track of a box drawn on ``frame``: ``value`` (an existing track of the scene with
    no drawn box on this frame) or, when None, a new track."""
    if value is None:
        return next_track_id(frame.scene_id)
    if not is_db_int(value, minimum=1):
        raise LabelRefused(f"'track_id' must be a track id, not {shown(value)}.")
    boxes = _track_boxes(frame.scene_id, value) if frame.scene_id is not None else []
    if not boxes:
        raise LabelRefused(f"Scene {frame.scene_id} has no track {value} ('track_id'): leave it "
                           "out to start a new track.")
    if any(b.frame_id == frame.id and b.source == BoxSource.manual for b in boxes):
        raise LabelRefused(f"Track {value} already has a drawn box on frame {frame.frame_index}: "
                           "move it rather than drawing a second one.")
    return value


def _scene(scene_id: int) -> Scene:
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise LabelRefused(f"No scene {scene_id}.", status=404)
    return scene


def _track_boxes(scene_id: int, track_id: int) -> list[Box]:
    return list(db.session.scalars(
        sa.select(Box).join(Frame, Frame.id == Box.frame_id)
        .where(Frame.scene_id == scene_id, Box.track_id == track_id).order_by(Frame.frame_index)))


def _track_id(payload: dict[str, Any], key: str = "track_id") -> int:
    value = payload.get(key)
    if not is_db_int(value, minimum=1):
        raise LabelRefused(f"'{key}' must be a track id, not {shown(value)}.")
    return value


def _existing(scene: Scene, payload: dict[str, Any], key: str = "track_id") -> list[Box]:
    track_id = _track_id(payload, key)
    boxes = _track_boxes(scene.id, track_id)
    if not boxes:
        raise LabelRefused(f"Scene {scene.id} has no track {track_id} ('{key}').", status=404)
    return boxes


def _frame_index(payload: dict[str, Any], key: str, default: int | None = None) -> int:
    value = payload.get(key, default)
    if not is_db_int(value):
        raise LabelRefused(f"'{key}' must be a frame number, not {shown(value)}.")
    return value


def _accepted_frames(scene_id: int) -> dict[int, set[int]]:
    """Per track, the frame indexes accepted as a whole track (``accept_track`` events)."""
    out: dict[int, set[int]] = defaultdict(set)
    for after in db.session.scalars(sa.select(LabelEvent.after).where(
            LabelEvent.scene_id == scene_id, LabelEvent.action == "accept_track")):
        if isinstance(after, dict):
            out[after.get("track_id")].update(after.get("frames", []))
    return out


def list_tracks(scene_id: int) -> list[dict[str, Any]]:
    """The scene's tracks: class, frames covered, keyframes (drawn boxes), frames still
    suggested (propagated or pre-labelled) and frames accepted as part of the track."""
    scene = _scene(scene_id)
    by_track: dict[int, list[tuple[int, Box]]] = defaultdict(list)
    for frame in scene.frames:
        for box in frame.boxes:
            if box.track_id is not None:
                by_track[box.track_id].append((frame.frame_index, box))
    accepted_events = _accepted_frames(scene.id)
    tracks = []
    for track_id in sorted(by_track):
        rows = by_track[track_id]
        manual = sorted({i for i, b in rows if b.source == BoxSource.manual})
        accepted = sorted(set(manual) & accepted_events.get(track_id, set()))
        pending = sorted({i for i, b in rows if b.source != BoxSource.manual})
        classes = sorted({b.class_id for _, b in rows})
        tracks.append({"track_id": track_id, "class_id": classes[0] if len(classes) == 1 else None,
                       "class_ids": classes, "frames": sorted({i for i, _ in rows}),
                       "keyframes": [i for i in manual if i not in accepted],
                       "pending": pending, "accepted": accepted,
                       "state": "suggestions pending" if pending else "accepted"})
    return tracks


def _update(box: Box, user: User, changes: dict[str, Any]) -> LabelEvent:
    before = box.as_dict()
    for key, value in changes.items():
        setattr(box, key, value)
    db.session.flush()
    return record_event(user, "update", box.source.value, frame=box.frame, box_id=box.id,
                        before=before, after=box.as_dict())


def _start(boxes: list[Box], user: User) -> list[LabelEvent]:
    return start_editing(boxes[0].frame, user)  # locks and assignment: refused before any change


@atomic
def set_class(scene_id: int, payload: dict[str, Any], user: User) -> Change:
    """Give every box of the track the class ``class_id``."""
    scene = _scene(scene_id)
    boxes = _existing(scene, payload)
    class_id = payload.get("class_id")
    if not is_db_int(class_id) or db.session.get(LabelClass, class_id) is None:
        raise LabelRefused(f"Unknown class {shown(class_id)} in 'class_id'.")
    events = _start(boxes, user)
    events += [_update(b, user, {"class_id": class_id}) for b in boxes if b.class_id != class_id]
    return commit(Change(None, events, scene))


@atomic
def accept(scene_id: int, payload: dict[str, Any], user: User) -> tuple[Change, int]:
    """Accept the track's suggestions (propagated boxes and pre-labels) on frames
    ``from_frame..to_frame`` (default: the whole scene) as manual boxes, and retire the
    pending pre-labels without a track that are the detector's view of the track's box there;
    the change and how many pre-labels were retired."""
    scene = _scene(scene_id)
    boxes = _existing(scene, payload)
    first = _frame_index(payload, "from_frame", scene.first_frame)
    last = _frame_index(payload, "to_frame", scene.last_frame)
    if first > last:
        raise LabelRefused(f"'from_frame' {first} is after 'to_frame' {last}.")
    in_span = [b for b in boxes if first <= b.frame.frame_index <= last]
    chosen = [b for b in in_span if b.source != BoxSource.manual]
    if not chosen:
        raise LabelRefused(f"Track {boxes[0].track_id} has no suggestion to accept on frames "
                           f"{first}-{last}.", status=409)
    events = _start(boxes, user)
    frames = []
    for box in chosen:
        before, source = box.as_dict(), box.source.value
        box.source, box.author_id = BoxSource.manual, user.id
        db.session.flush()
        events.append(record_event(user, "accept", source, frame=box.frame, box_id=box.id,
                                   before=before, after=box.as_dict()))
        frames.append(box.frame.frame_index)
    retired = _retire_duplicates(in_span, user)
    events += retired
    events.append(record_event(user, "accept_track", "propagated", scene_id=scene.id, after={
        "track_id": boxes[0].track_id, "frames": frames, "spans": spans(frames)}))
    return commit(Change(None, events, scene)), len(retired)


def _retire_duplicates(track_boxes: list[Box], user: User) -> list[LabelEvent]:
    """Remove the pending pre-labels without a track of each box's class that are one object
    with it (:func:`.boxes.same_object`): once the track is accepted they would only be
    counted as undecided. A ``replace`` event each, as for a carried box on key P: undoable,
    and not a rejection in model feedback (the detector found the object)."""
    events = []
    for box in track_boxes:
        for pre in [p for p in box.frame.boxes if p.source == BoxSource.model and p.track_id is None
                    and p.class_id == box.class_id and same_object(plain(box), plain(p))]:
            events.append(record_event(user, "replace", pre.source.value, frame=pre.frame,
                                       box_id=pre.id, before=pre.as_dict()))
            db.session.delete(pre)
    db.session.flush()
    return events


@atomic
def split(scene_id: int, payload: dict[str, Any], user: User) -> tuple[Change, int]:
    """Move the track's boxes from frame ``frame_index`` on to a new track; the change and
    the new track's id."""
    scene = _scene(scene_id)
    boxes = _existing(scene, payload)
    at = _frame_index(payload, "frame_index")
    later = [b for b in boxes if b.frame.frame_index >= at]
    if not later or len(later) == len(boxes):
        raise LabelRefused(f"Track {boxes[0].track_id} has no boxes on both sides of frame {at} "
                           f"(it covers {spans([b.frame.frame_index for b in boxes])}): nothing "
                           "to split.")
    new_id = next_track_id(scene.id)
    events = _start(boxes, user)
    events += [_update(b, user, {"track_id": new_id}) for b in later]
    return commit(Change(None, events, scene)), new_id


@atomic
def merge(scene_id: int, payload: dict[str, Any], user: User) -> Change:
    """Give the boxes of track ``other`` the id ``track_id``; refused where both have a box
    on one frame, or their classes differ."""
    scene = _scene(scene_id)
    keep = _existing(scene, payload)
    other = _existing(scene, payload, "other")
    if keep[0].track_id == other[0].track_id:
        raise LabelRefused("'track_id' and 'other' are the same track.")
    both = sorted({b.frame.frame_index for b in keep} & {b.frame.frame_index for b in other})
    if both:
        raise LabelRefused(f"Tracks {keep[0].track_id} and {other[0].track_id} both have a box on "
                           f"frames {spans(both)}: delete or split one of them there first.",
                           status=409, frames=both)
    if {b.class_id for b in keep} != {b.class_id for b in other}:
        raise LabelRefused(f"Tracks {keep[0].track_id} and {other[0].track_id} have different "
                           "classes: give them one class first.", status=409)
    events = _start(keep, user)
    events += [_update(b, user, {"track_id": keep[0].track_id}) for b in other]
    return commit(Change(None, events, scene))
