"""A track (one object within a scene, ``Box.track_id``) propagated through its scene from
its keyframes (the boxes an annotator drew or corrected, or the pending pre-label it was
started from).

Design choices:
- Each step is :func:`.propagate.move_box` (median flow in the box, divergence scaling,
  forward-backward confidence) on flows from :mod:`.flow_cache`, so a scene's flows are
  computed once however often its tracks are re-propagated.
- Between keyframes ``a < b`` the box is carried forward from ``a`` and backward from ``b``;
  frame ``i`` gets the two boxes blended with weight ``(b - i) / (b - a)`` on the forward one.
  Each direction drifts the further it gets from its keyframe, so the blend trusts the nearer
  one and meets both keyframes exactly; unlike interpolating corners it follows motion that is
  not linear in time. Before the first and after the last keyframe propagation is one-sided.
- A chain stops at the first step whose confidence is under ``STOP_CONFIDENCE`` (a new
  view, the probe lifted), whose box no longer resembles the box on its keyframe (the
  correlation of the two, smoothed and shrunk to ``PATCH`` x ``PATCH``, under
  ``SAME_OBJECT``), or whose box has lost the object's own contrast against the tissue
  around it (:func:`_left_plane`): when an object leaves the plane the tissue around it
  goes on moving consistently, so the flow's confidence alone carries boxes on over plain
  tissue, and speckle moving with the plane keeps some resemblance to the keyframe's box;
  an object's darkness or brightness against its ring does not survive its leaving.
  ``bench/propagate_speed.py`` counts the boxes carried over tissue where the phantom has no
  object, those on the object and the object's boxes lost. The thresholds were chosen on
  the chains of phantom sweeps 3-5 (boxes over tissue / on the object: confidence alone
  764 / 2016, with the correlation at 0.25 67 / 1677, now 41 / 1687) and checked on
  sweeps 6-7 (62 / 1135 before, 57 / 1136 now; 54 of those 57 are one in-plane vessel
  box lying half on its vessel). The frame where a chain
  stopped is marked "needs a look" and the chain gives no box there or beyond. Where only
  one direction reached a frame, its box is used.
- A box's confidence (stored as its score) is the weakest step of its chain, not the product
  of the steps as for key P: a long chain of sure steps stays sure, one doubtful step shows.
- A corrected or new keyframe re-propagates only the spans it bounds (from the keyframe
  before it to the one after it); only frames whose box changed are rewritten.
- A pending pre-label of the track's class overlapping a propagated box (IoU >= 0.5) is
  offered as a fused box: the detector's edges with the track's identity
  (:mod:`.track_fuse`). Nothing is written for it: accepting it is the annotator's decision.
- Before that, the same pre-label steers the propagated box (:func:`.track_fuse.steer`): the
  box stored is the mean of the flow's box and the detector's, when the pre-label is shown at
  the workspace's threshold and its "Pre-labels steer tracks" is ticked. The flow's box drifts
  where an object changes its cross-section faster than the tissue moves (an oblique vessel
  slides through the plane as it sweeps), and the detector's edges are off by their own
  errors; with tight pre-labels the two are largely independent and their mean is nearer the
  object than either (``bench/labeling_effort.py``; with loose ones it is not, hence the
  option). Only the stored box changes: the chain that carries the track on is the flow's
  alone, so a wrong pre-label moves one frame's box, never the rest.
- A track can start from a pending pre-label (key T on it): the pre-label gets a new track id
  and stays pending (the detector's box, not yet the annotator's) as the track's keyframe;
  accepting the track accepts it as a pre-label. The id is given with an ``update`` event
  in the propagation's transaction, so one undo leaves the pre-label as it was.
- Propagated boxes are suggestions (source ``propagated``), never ground truth; keyframes
  and other tracks' boxes are never touched. One transaction, with label events, like key P.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import cv2
import numpy as np
from ..db import db
from ..models import Box, BoxSource, Frame, Scene, User
from .boxes import clip_box, iou, plain
from .event_log import record_event
from .input_checks import is_db_int, shown
from .propagate import FlowPair, PropagationRefused, frame_flow, move_box
from .track_fuse import offers as fused_offers, scene_box, shown_prelabels, steer
from .tracks import next_track_id
from .workflow import Change, check_editable, commit, start_editing

STOP_CONFIDENCE = 0.3
SAME_OBJECT = 0.2
PATCH = 8
# The object's own contrast: its box's mean against a ring around it (the box grown by RING
# on each side), in units of the ring's spread. A keyframe object with at least
# MIN_CONTRAST that keeps under KEPT_CONTRAST of it (or turns to the other sign) has left.
RING = 0.5
MIN_CONTRAST = 0.4
KEPT_CONTRAST = 0.2
# A re-propagated box overlapping the box the annotator already saw there at least this much
# looks the same on screen; only frames under it are marked "look again" on the track's lane.
SEEN_IOU = 0.9
GEOMETRY = ("x", "y", "w", "h")
# A track's keyframes: the annotator's boxes, and a pending pre-label a track was started from
# (key T on it): the detector's box is the only one the track has until it is accepted.
KEY_SOURCES = (BoxSource.manual, BoxSource.model)

FlowAt = Callable[[int, int], FlowPair]
"""Flow from position ``i`` of the scene to the adjacent position ``j`` (either direction)."""


# --- the algorithm (positions 0..n-1 of a scene; no database) ----------------------------------

@dataclass
class TrackBoxes:
    """The track's box per position (keyframes included, flagged ``keyframe``) and the
    positions where a chain stopped ("needs a look"), over the positions ``covered``."""

    boxes: dict[int, dict[str, Any]] = field(default_factory=dict)
    needs_look: set[int] = field(default_factory=set)
    covered: range = range(0)


def _patch(image: np.ndarray, box: dict[str, float], scale: float) -> np.ndarray | None:
    """The box's pixels on the flow grid, smoothed and resized to a small square, with zero
    mean and unit norm (so a dot product is their correlation); None when it is too small."""
    x0, y0 = max(0, int(box["x"] * scale)), max(0, int(box["y"] * scale))
    x1, y1 = int(np.ceil((box["x"] + box["w"]) * scale)), int(np.ceil((box["y"] + box["h"]) * scale))
    crop = image[y0:y1, x0:x1]
    if crop.shape[0] < 3 or crop.shape[1] < 3:
        return None
    small = cv2.resize(cv2.GaussianBlur(crop, (0, 0), 1.5), (PATCH, PATCH),
                       interpolation=cv2.INTER_AREA).astype(np.float32).ravel()
    small -= small.mean()
    norm = float(np.linalg.norm(small))
    return small / norm if norm > 1e-6 else None


def _contrast(image: np.ndarray, box: dict[str, float], scale: float) -> float | None:
    """(mean inside the box - mean of the ring around it) / the ring's standard deviation,
    on the flow grid; None when the box or its ring is too small to say."""
    gh, gw = image.shape[:2]
    x, y, w, h = (box[k] * scale for k in GEOMETRY)
    x0, y0 = int(max(0.0, x)), int(max(0.0, y))
    x1, y1 = int(min(gw, np.ceil(x + w))), int(min(gh, np.ceil(y + h)))
    X0, Y0 = int(max(0.0, x - RING * w)), int(max(0.0, y - RING * h))
    X1, Y1 = int(min(gw, np.ceil(x + w + RING * w))), int(min(gh, np.ceil(y + h + RING * h)))
    inner = image[y0:y1, x0:x1].astype(np.float32)
    outer = image[Y0:Y1, X0:X1].astype(np.float32)
    n_in, n_ring = inner.size, outer.size - inner.size
    if n_in < 4 or n_ring < 4:
        return None
    s_in, s_out = float(inner.sum()), float(outer.sum())
    ring_mean = (s_out - s_in) / n_ring
    ring_sq = (float(np.square(outer).sum()) - float(np.square(inner).sum())) / n_ring
    ring_sd = float(np.sqrt(max(ring_sq - ring_mean ** 2, 0.0)))
    return (s_in / n_in - ring_mean) / (ring_sd + 1e-3)


def _left_plane(key_contrast: float | None, contrast: float | None) -> bool:
    """The object had a contrast of its own on its keyframe and has lost most of it."""
    if key_contrast is None or contrast is None or abs(key_contrast) < MIN_CONTRAST:
        return False
    return contrast / key_contrast < KEPT_CONTRAST


def _chain(box: dict[str, float], start: int, end: int, step: int,
           flow_at: FlowAt) -> tuple[dict[int, dict[str, Any]], int | None]:
    """``box`` carried from ``start`` one frame at a time up to ``end`` (exclusive); the boxes
    by position and the position where the chain stopped (None if it did not)."""
    out: dict[int, dict[str, Any]] = {}
    current, weakest = {k: box[k] for k in GEOMETRY}, 1.0
    template = key_contrast = None
    for i in range(start + step, end, step):
        flow = flow_at(i - step, i)
        if i == start + step:
            template = _patch(flow.previous, current, flow.scale)
            key_contrast = _contrast(flow.previous, current, flow.scale)
        moved = move_box(current, flow)
        if moved is None or moved[1] < STOP_CONFIDENCE:
            return out, i
        current, weakest = moved[0], min(weakest, moved[1])
        seen = _patch(flow.following, current, flow.scale)
        if template is not None and seen is not None and float(template @ seen) < SAME_OBJECT:
            return out, i
        if key_contrast is not None and abs(key_contrast) >= MIN_CONTRAST \
                and _left_plane(key_contrast, _contrast(flow.following, current, flow.scale)):
            return out, i
        out[i] = {**current, "confidence": weakest}
    return out, None


def blend(forward: dict[str, Any] | None, backward: dict[str, Any] | None,
          weight: float) -> dict[str, Any] | None:
    """``weight`` of ``forward`` and ``1 - weight`` of ``backward`` (either may be missing)."""
    if forward is None or backward is None:
        return forward or backward
    return {k: weight * forward[k] + (1 - weight) * backward[k] for k in (*GEOMETRY, "confidence")}


def bounding_keyframes(keys: list[int], position: int) -> tuple[int | None, int | None]:
    """The keyframes just before and just after ``position`` (None: no such keyframe)."""
    before = [k for k in keys if k < position]
    after = [k for k in keys if k > position]
    return (before[-1] if before else None), (after[0] if after else None)


def propagate_track(n: int, keyframes: dict[int, dict[str, float]], flow_at: FlowAt,
                    around: int | None = None) -> TrackBoxes:
    """The track over a scene of ``n`` frames from its ``keyframes`` (position -> box
    ``{x, y, w, h}``); with ``around``, only the spans bounded by that position (a keyframe
    just set, moved or removed) are computed."""
    keys = sorted(keyframes)
    if not keys or keys[0] < 0 or keys[-1] >= n:
        raise ValueError(f"keyframes must be within 0..{n - 1}: {keys}")
    lo, hi = 0, n
    if around is not None:
        before, after = bounding_keyframes(keys, around)
        lo = 0 if before is None else before + 1
        hi = n if after is None else after
    out = TrackBoxes(covered=range(lo, hi))
    inner = [k for k in keys if lo <= k < hi]
    for k in inner:
        out.boxes[k] = {**{g: keyframes[k][g] for g in GEOMETRY}, "confidence": 1.0, "keyframe": True}
    # The keyframes bounding the computed positions (None: the scene's start or end).
    edges = [lo - 1 if lo > 0 else None, *inner, hi if hi < n else None]
    for a, b in zip(edges, edges[1:]):
        forward: dict[int, dict[str, Any]] = {}
        backward: dict[int, dict[str, Any]] = {}
        if a is not None:
            forward, stop = _chain(keyframes[a], a, n if b is None else b, 1, flow_at)
            out.needs_look.update([stop] if stop is not None else [])
        if b is not None:
            backward, stop = _chain(keyframes[b], b, -1 if a is None else a, -1, flow_at)
            out.needs_look.update([stop] if stop is not None else [])
        for i in range(0 if a is None else a + 1, n if b is None else b):
            weight = 1.0 if b is None else 0.0 if a is None else (b - i) / (b - a)
            box = blend(forward.get(i), backward.get(i), weight)
            if box is not None:
                out.boxes[i] = box
    return out


def _differing(before: TrackBoxes, after: TrackBoxes, same: Callable[[dict, dict], bool]) -> list[int]:
    """Positions of ``after.covered`` whose box appeared, disappeared or is not ``same``."""
    return [i for i in after.covered
            if (before.boxes.get(i) is None) != (after.boxes.get(i) is None)
            or (i in after.boxes and not same(before.boxes[i], after.boxes[i]))]


def changed_positions(before: TrackBoxes, after: TrackBoxes, tolerance: float = 0.1) -> list[int]:
    """Positions whose box appeared, disappeared or moved (by more than ``tolerance`` px:
    stored boxes are rounded to 0.1 px): the boxes a propagation rewrites."""
    return _differing(before, after, lambda p, q: all(abs(p[k] - q[k]) <= tolerance for k in GEOMETRY))


def look_again(before: TrackBoxes, after: TrackBoxes) -> list[int]:
    """Positions whose box appeared, disappeared or moved so that it overlaps the box before
    at IoU < ``SEEN_IOU``: what a re-propagation asks the annotator to look at again (a frame
    already checked whose box moved a pixel needs no second look)."""
    return _differing(before, after, lambda p, q: iou(p, q) >= SEEN_IOU)


# --- stored frames and boxes -------------------------------------------------------------------

@dataclass
class TrackPropagation:
    """What a track propagation wrote: the frame indexes whose box changed, those whose box
    changed enough to look at again (:func:`look_again`), those where a chain stopped ("needs
    a look"), fused boxes offered, the events (for undo)."""

    track_id: int
    changed: list[int]
    look_again: list[int]
    needs_look: list[int]
    offers: list[dict[str, Any]]
    event_ids: list[int]
    undo_ids: list[int]
    scene_data: dict[str, Any] | None
    started_from: int | None = None  # the pre-label a new track was started from

    def as_dict(self) -> dict[str, Any]:
        return {"track_id": self.track_id, "changed_frames": self.changed, "look_again": self.look_again,
                "needs_look": self.needs_look, "fused": self.offers, "events": self.event_ids,
                "undo": self.undo_ids, "scene": self.scene_data, "started_from": self.started_from}


def _keyframes(frames: list[Frame], track_id: int) -> tuple[dict[int, dict[str, float]], int]:
    """The track's keyframes by position: its manual boxes and its pending pre-labels (the
    detector's box a track was started from, until the annotator accepts or rejects it)."""
    keyframes: dict[int, dict[str, float]] = {}
    classes = set()
    for i, frame in enumerate(frames):
        keys = [b for b in frame.boxes if b.track_id == track_id and b.source in KEY_SOURCES]
        if len(keys) > 1:
            raise PropagationRefused(f"Track {track_id} has {len(keys)} boxes to start from on frame "
                                     f"{frame.frame_index} (drawn boxes or the pre-label it was "
                                     "started from): keep one, or split the track.",
                                     frame=frame.frame_index)
        if keys:
            keyframes[i] = plain(keys[0])
            classes.add(keys[0].class_id)
    if not keyframes:
        raise PropagationRefused(f"Track {track_id} has no drawn box (nor a pre-label it was started "
                                 "from) in this scene: draw or accept a box first.")
    if len(classes) > 1:
        raise PropagationRefused(f"Track {track_id} has boxes of {len(classes)} classes: give the "
                                 "track one class first.")
    return keyframes, classes.pop()


def _stored(frames: list[Frame], track_id: int) -> TrackBoxes:
    out = TrackBoxes(covered=range(len(frames)))
    for i, frame in enumerate(frames):
        for b in frame.boxes:
            if b.track_id == track_id and b.source == BoxSource.propagated:
                out.boxes[i] = plain(b)
    return out


def seed_prelabel(scene: Scene, payload: dict[str, Any]) -> tuple[int | None, Box | None]:
    """The track a propagate request names and, when its ``box_id`` is a pending pre-label
    without a track, that pre-label (the track is then new: None). A box of a track stands
    for its track."""
    track_id, box_id = payload.get("track_id"), payload.get("box_id")
    if track_id is not None and not is_db_int(track_id, minimum=1):
        raise PropagationRefused(f"'track_id' must be a track id, not {shown(track_id)}.")
    if box_id is None:
        if track_id is None:
            raise PropagationRefused("Name the track ('track_id') or the pre-label to start one "
                                     "from ('box_id').")
        return track_id, None
    box = scene_box(payload, "box_id", scene)
    if box.track_id is None and box.source != BoxSource.model:
        raise PropagationRefused(f"Box {box_id} is not a pending pre-label: only a pre-label "
                                 "starts a track this way.", status=409)
    if track_id is not None and box.track_id != track_id:
        raise PropagationRefused(f"Box {box_id} is not in track {track_id}.", status=409)
    return (box.track_id, None) if box.track_id is not None else (None, box)


def propagate_stored_track(scene: Scene, track_id: int | None, user: User | None,
                           changed: Frame | None = None, seed: Box | None = None,
                           threshold: float | None = None) -> TrackPropagation:
    """Propagate a track through ``scene`` (only the spans bounded by ``changed``, when
    given) and store the boxes that changed, in one transaction. With ``seed`` (a pending
    pre-label without a track) a new track is started from it: the pre-label gets the track's
    id (an ``update`` event, so undo takes it back) and stays pending. With ``threshold`` (the
    workspace's score slider), the pending pre-labels shown at it steer the boxes
    (:func:`.track_fuse.steer`)."""
    check_editable(scene, user)  # before the flow: a refusal should not wait for it
    frames = list(scene.frames)
    try:
        if seed is not None:
            snapshot, track_id = seed.as_dict(), next_track_id(scene.id)
            seed.track_id = track_id
            db.session.flush()
        keyframes, class_id = _keyframes(frames, track_id)
        around = None
        if changed is not None:
            around = next((i for i, f in enumerate(frames) if f.id == changed.id), None)
            if around is None:
                raise PropagationRefused(f"Frame {changed.id} is not in scene {scene.id}.")
        result = propagate_track(len(frames), keyframes,
                                 lambda i, j: frame_flow(frames[i], frames[j]), around)
        if threshold is not None:
            result.boxes = steer(result.boxes, shown_prelabels(frames, class_id, threshold))
        before = _stored(frames, track_id)
        # A keyframe drawn where the track had a propagated box supersedes that box.
        positions = sorted({i for i in changed_positions(before, result) if i not in keyframes}
                           | {i for i in result.covered if i in keyframes and i in before.boxes})
        events = start_editing(changed or (seed.frame if seed else frames[min(keyframes)]), user)
        if seed is not None:
            events.append(record_event(user, "update", "model", frame=seed.frame, box_id=seed.id,
                                       before=snapshot, after=seed.as_dict()))
        for i in positions:
            box = None if i in keyframes else result.boxes.get(i)
            events += _rewrite(frames[i], track_id, class_id, box, user)
        change = commit(Change(None, events, scene))
    except BaseException:
        db.session.rollback()
        raise
    # A first propagation is all new: the lane shows its boxes as suggestions to check anyway.
    again = [frames[i].frame_index for i in look_again(before, result)
             if i not in keyframes] if before.boxes else []
    return TrackPropagation(track_id, [frames[i].frame_index for i in positions], again,
                            sorted(frames[i].frame_index for i in result.needs_look),
                            fused_offers(scene.id, track_id), change.event_ids, change.undo_ids,
                            change.scene_data, seed.id if seed is not None else None)


def _rewrite(frame: Frame, track_id: int, class_id: int, box: dict[str, Any] | None,
             user: User | None) -> list:
    events = []
    for old in [b for b in frame.boxes if b.track_id == track_id and b.source == BoxSource.propagated]:
        events.append(record_event(user, "replace", "propagated", frame=frame, before=old.as_dict()))
        db.session.delete(old)
    geometry = None if box is None else clip_box(box["x"], box["y"], box["w"], box["h"],
                                                 frame.width, frame.height, decimals=1)
    if geometry is not None:
        new = Box(frame=frame, class_id=class_id, source=BoxSource.propagated, track_id=track_id,
                  score=round(box["confidence"], 4), author_id=user.id if user else None, **geometry)
        db.session.add(new)
        db.session.flush()
        events.append(record_event(user, "propagate", "propagated", frame=frame, box_id=new.id,
                                   after=new.as_dict()))
    return events
