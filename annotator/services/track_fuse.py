"""Fused boxes: where a track's propagated box and a pending pre-label of its class overlap,
the annotator is offered the detector's edges with the track's identity.

Design choices:
- The offer rule is :func:`fused_box` (:func:`.boxes.same_object`, the best overlap wins); it is
  computed from the boxes as stored (:func:`offers`), so the workspace gets the same offers
  after a reload, an undo or another annotator's change, and nothing is stored for an offer.
- The flow carries a box well from frame to frame but its edges drift; a detector sees the
  edges of the object on the frame itself. Fusing keeps what each does best.
- Accepting an offer (:func:`fuse`) is one transaction: the pre-label is accepted as a manual
  box of the track (an ``accept`` event of source ``model``, so model feedback and the
  reviewer count it as an accepted pre-label) and the propagated box it supersedes is
  removed with a ``replace`` event (not a rejection). Both events carry box ids, so one undo
  restores both boxes as they were. The fused box is the annotator's decision: a manual box,
  hence a keyframe of the track the next time it is propagated.
- The same rule steers a propagation when the workspace asks (:func:`steer`, its "Pre-labels
  steer tracks"): the propagated box stored is the mean of the flow's box and the pre-label's;
  :mod:`.track_propagation` says why.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, Scene, User
from .boxes import SAME_OBJECT_IOU, iou, plain, same_object
from .event_log import record_event
from .input_checks import is_db_int, shown
from .workflow import Change, Conflict, LabelRefused, atomic, commit, start_editing

GEOMETRY = ("x", "y", "w", "h")
# How far a pre-label steers the propagated box it is one object with (see steer): halfway,
# the mean of two estimates of one box trusted alike
STEER = 0.5


def fused_box(box: dict[str, float], prelabels: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The pre-label (same class, already filtered) overlapping ``box`` most, at IoU >= 0.5."""
    best = max(prelabels, key=lambda p: iou(box, p), default=None)
    return best if best is not None and same_object(box, best) else None


def steer(boxes: dict[int, dict[str, Any]], prelabels: dict[int, list[dict[str, Any]]]
          ) -> dict[int, dict[str, Any]]:
    """``boxes`` (a track's, by position) with each propagated one (not flagged ``keyframe``)
    moved ``STEER`` of the way to the pre-label of ``prelabels`` (by position; the track's
    class, shown) that :func:`fused_box` offers for it."""
    out = dict(boxes)
    for i, box in boxes.items():
        best = None if box.get("keyframe") else fused_box(box, prelabels.get(i, []))
        if best is not None:
            out[i] = {**box, **{k: (1 - STEER) * box[k] + STEER * best[k] for k in GEOMETRY}}
    return out


def shown_prelabels(frames: list[Frame], class_id: int, threshold: float
                    ) -> dict[int, list[dict[str, Any]]]:
    """The pending pre-labels of ``class_id`` that no track holds, scoring at least
    ``threshold``, by position in ``frames``."""
    return {i: [plain(b) for b in frame.boxes
                if b.source == BoxSource.model and b.track_id is None
                and b.class_id == class_id and (b.score or 0.0) >= threshold]
            for i, frame in enumerate(frames)}


def _offer(frame: Frame, box: Box, prelabel: Box) -> dict[str, Any]:
    return {"frame_id": frame.id, "frame_index": frame.frame_index, "box_id": box.id,
            "prelabel_id": prelabel.id, "track_id": box.track_id, "class_id": box.class_id,
            "score": prelabel.score, **{k: getattr(prelabel, k) for k in GEOMETRY}}


def offers(scene_id: int, track_id: int | None = None) -> list[dict[str, Any]]:
    """The scene's fused-box offers (for one track, or every track), in frame order."""
    rows = db.session.execute(
        sa.select(Box, Frame).join(Frame, Frame.id == Box.frame_id)
        .where(Frame.scene_id == scene_id, Box.source.in_((BoxSource.propagated, BoxSource.model)))
        .order_by(Frame.frame_index, Box.id)).all()
    by_frame: dict[int, tuple[Frame, list[Box]]] = {}
    for box, frame in rows:
        by_frame.setdefault(frame.id, (frame, []))[1].append(box)
    out = []
    for frame, boxes in by_frame.values():
        for box in boxes:
            if box.source != BoxSource.propagated or box.track_id is None:
                continue
            if track_id is not None and box.track_id != track_id:
                continue
            pending = [{**plain(p), "box": p} for p in boxes
                       if p.source == BoxSource.model and p.class_id == box.class_id]
            best = fused_box(plain(box), pending)
            if best is not None:
                out.append(_offer(frame, box, best["box"]))
    return out


def scene_box(payload: dict[str, Any], key: str, scene: Scene) -> Box:
    """The box whose id is ``payload[key]``, refused unless it is a box of ``scene``."""
    value = payload.get(key)
    if not is_db_int(value, minimum=1):
        raise LabelRefused(f"'{key}' must be a box id, not {shown(value)}.")
    box = db.session.get(Box, value)
    if box is None or box.frame.scene_id != scene.id:
        raise LabelRefused(f"Box {value} ('{key}') is not in scene {scene.id} (it may have been "
                           "deleted).", status=404)
    return box


@atomic
def fuse(scene_id: int, payload: dict[str, Any], user: User) -> Change:
    """Accept the offer of pre-label ``prelabel_id`` for propagated box ``box_id``: the
    track's box on that frame takes the pre-label's edges and becomes the annotator's."""
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise LabelRefused(f"No scene {scene_id}.", status=404)
    carried, prelabel = scene_box(payload, "box_id", scene), scene_box(payload, "prelabel_id", scene)
    if carried.source != BoxSource.propagated or carried.track_id is None:
        raise Conflict(f"Box {carried.id} is not a propagated box of a track (any more): there is "
                       "nothing to fuse.")
    if prelabel.source != BoxSource.model:
        raise Conflict(f"Box {prelabel.id} is not a pending pre-label (any more): there is "
                       "nothing to fuse.")
    if prelabel.frame_id != carried.frame_id or prelabel.class_id != carried.class_id \
            or not same_object(plain(carried), plain(prelabel)):
        raise Conflict(f"Pre-label {prelabel.id} and box {carried.id} are not one object (same "
                       f"frame, same class, overlap of at least {SAME_OBJECT_IOU:.0%}).")
    frame = carried.frame
    events = start_editing(frame, user)
    events.append(record_event(user, "replace", carried.source.value, frame=frame,
                               box_id=carried.id, before=carried.as_dict()))
    track_id = carried.track_id
    db.session.delete(carried)
    db.session.flush()
    before = prelabel.as_dict()
    prelabel.source, prelabel.author_id, prelabel.track_id = BoxSource.manual, user.id, track_id
    db.session.flush()
    events.append(record_event(user, "accept", before["source"], frame=frame, box_id=prelabel.id,
                               before=before, after=prelabel.as_dict()))
    return commit(Change(prelabel, events, scene))
