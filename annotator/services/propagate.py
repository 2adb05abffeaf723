"""Flow propagation: boxes of one frame carried to the next frame(s) by optical flow.

Design choices:
- Flow is OpenCV DIS (MEDIUM preset, :mod:`detector.flow`) between the two frames, forward
  (frame t -> t+1) and backward, at most ``FLOW_SIDE`` pixels on the longest side; boxes are
  mapped into that grid and back. MEDIUM follows speckle better than FAST. Stored frames'
  flows come from :mod:`.flow_cache` (computed once per pair of frames and process).
- Each box moves by the median flow inside it (robust to the tissue around a lesion moving
  differently at the box edge) and is rescaled about its centre by ``1 + div / 2``, where
  ``div`` is the median divergence of the flow inside it (a uniform zoom by ``s`` has
  divergence ``2 (s - 1)``), clipped to [0.8, 1.25] per frame.
- Confidence is forward-backward consistency: the share of the box's pixels whose forward
  flow, followed by the backward flow from where it lands, returns within
  ``1 px + 5 %`` of the displacement, times the correlation (clipped at 0) between the box's
  pixels and the pixels they flow to. DIS fills a frame it cannot match (a new view, the
  probe lifted) with smooth, near-zero flow that is consistent both ways; the correlation
  catches that. A box chained from a propagated box multiplies the
  confidences, so they decay along a chain. The confidence is the stored box's ``score``:
  the workspace's threshold slider and "accept all" treat it like a model's score.
- Stored boxes have source ``propagated``. Manual boxes are never changed: a propagated box
  is not added where a manual box of its class already overlaps it (IoU >= 0.5). Where a
  pending model pre-label of its class overlaps it, the propagated box takes the pre-label's
  place: it descends from a box a person checked on the previous frame, and the labelling
  effort bench measured carried boxes needing far fewer adjustments than fresh detections;
  pre-labels elsewhere (objects entering the plane) stay. Re-propagating replaces only the
  target frame's unreviewed propagated boxes.
- The source of a step is the frame's manual boxes plus its propagated boxes (pre-labels are
  propagated once accepted). Over a scene, each frame's result is the next frame's source.
- Every created box writes a ``propagate`` label event with the box id (so undo removes it);
  a replaced propagated box writes a ``replace`` event without a box id, so review notes do
  not count it as a rejection by the annotator.
- A box that leaves the image (less than 30 % of it inside) or is left with less than
  :data:`~.boxes.MIN_SIZE` inside it is dropped (the clip rule of :mod:`.boxes`).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

import cv2
import numpy as np
import sqlalchemy as sa

from detector.flow import dis_flow, shrink_pair

from ..db import db
from ..models import Box, BoxSource, Frame, Role, Scene, User
from . import ServiceError
from .boxes import clip_box, plain, same_object
from .event_log import record_event
from .flow_cache import FLOWS
from .frames import read_frame
from .job_spec import JobContext, Param, integer, kind
from .workflow import Change, LabelRefused, check_editable, commit, start_editing

FLOW_SIDE = 512
MIN_SCALE, MAX_SCALE = 0.8, 1.25
MIN_INSIDE = 0.3
MIN_SCORE = 0.02
MAX_SAMPLES = 2500


class PropagationRefused(ServiceError):
    """Propagation that cannot be done (no boxes, last frame, locked scene)."""


# --- the algorithm (no database) -------------------------------------------------------------

@dataclass
class FlowPair:
    """Forward (t -> t+1) and backward flow on a grid ``scale`` times the image size."""

    forward: np.ndarray
    backward: np.ndarray
    scale: float
    image_size: tuple[int, int]  # (h, w) of the frames
    previous: np.ndarray  # both frames on the flow's grid
    following: np.ndarray
    divergence: np.ndarray = field(init=False)

    def __post_init__(self) -> None:
        self.divergence = (np.gradient(self.forward[..., 0], axis=1)
                           + np.gradient(self.forward[..., 1], axis=0))


def flow_pair(previous: np.ndarray, following: np.ndarray, max_side: int = FLOW_SIDE) -> FlowPair:
    """DIS flow both ways between two frames of equal size (grey or RGB uint8)."""
    h, w = previous.shape[:2]
    a, b = shrink_pair(previous, following, max_side)
    # dis_flow(I0, I1) gives I0(p) ~ I1(p + flow(p)): (t, t+1) is the forward flow.
    forward = dis_flow(a, b, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    backward = dis_flow(b, a, cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    return FlowPair(forward, backward, a.shape[1] / w, (h, w), a, b)


def reversed_pair(flow: FlowPair) -> FlowPair:
    """The same pair of frames the other way round, without computing flow again."""
    return FlowPair(flow.backward, flow.forward, flow.scale, flow.image_size, flow.following,
                    flow.previous)


def frame_flow(previous: Frame, following: Frame) -> FlowPair:
    """Flow between two stored frames from the process's flow cache (:mod:`.flow_cache`);
    DIS runs once per pair, in the scene's order, and the other direction reuses it."""
    if previous.frame_index > following.frame_index:
        return FLOWS.get((previous.sha256, following.sha256, FLOW_SIDE),
                         lambda: reversed_pair(frame_flow(following, previous)))
    return FLOWS.get((previous.sha256, following.sha256, FLOW_SIDE),
                     lambda: flow_pair(read_frame(previous), read_frame(following)))


def move_box(box: dict[str, float], flow: FlowPair) -> tuple[dict[str, float], float] | None:
    """The box ``{x, y, w, h}`` (image pixels) one frame on, and its confidence in [0, 1];
    None when it left the image."""
    s = flow.scale
    gh, gw = flow.forward.shape[:2]
    x0 = int(np.clip(np.floor(box["x"] * s), 0, gw - 1))
    y0 = int(np.clip(np.floor(box["y"] * s), 0, gh - 1))
    x1 = int(np.clip(np.ceil((box["x"] + box["w"]) * s), x0 + 1, gw))
    y1 = int(np.clip(np.ceil((box["y"] + box["h"]) * s), y0 + 1, gh))
    # A large box is read on a regular grid of at most about MAX_SAMPLES pixels: its medians
    # and shares barely change, and a track of large boxes stays fast.
    step = max(1, int(np.sqrt((y1 - y0) * (x1 - x0) / MAX_SAMPLES)))
    rows, cols = slice(y0, y1, step), slice(x0, x1, step)
    fwd = flow.forward[rows, cols].reshape(-1, 2)
    dx, dy = (float(v) / s for v in np.median(fwd, axis=0))
    inner = flow.divergence[y0:y1, x0:x1]
    if inner.shape[0] > 2 and inner.shape[1] > 2:
        inner = inner[1:-1, 1:-1]  # the edge rows mix in the motion of the surroundings
    zoom = float(np.clip(1.0 + float(np.median(inner[::step, ::step])) / 2.0, MIN_SCALE, MAX_SCALE))

    # Forward-backward check: follow the flow out, sample the backward flow where it lands.
    ys, xs = np.mgrid[rows, cols].astype(np.float32)
    fx, fy = flow.forward[rows, cols, 0], flow.forward[rows, cols, 1]
    tx, ty = xs + fx, ys + fy
    back = cv2.remap(flow.backward, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                     borderValue=(np.nan, np.nan))
    err = np.hypot(fx + back[..., 0], fy + back[..., 1]) / s
    magnitude = np.hypot(fx, fy) / s
    inside = (tx >= 0) & (ty >= 0) & (tx <= gw - 1) & (ty <= gh - 1)
    consistent = inside & np.isfinite(err) & (err <= 1.0 + 0.05 * magnitude)
    confidence = float(consistent.mean()) if consistent.size else 0.0
    if confidence > 0:
        landed = cv2.remap(flow.following, tx, ty, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        confidence *= max(0.0, _correlation(flow.previous[rows, cols][consistent],
                                            landed[consistent]))

    cx, cy = box["x"] + box["w"] / 2 + dx, box["y"] + box["h"] / 2 + dy
    w, h = box["w"] * zoom, box["h"] * zoom
    ih, iw = flow.image_size
    moved = clip_box(cx - w / 2, cy - h / 2, w, h, iw, ih)
    if moved is None or moved["w"] * moved["h"] < MIN_INSIDE * w * h:
        return None
    return moved, confidence


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float32).ravel(), b.astype(np.float32).ravel()
    if a.size < 4:
        return 0.0
    a, b = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 1e-6 else 1.0


def propagate_boxes(previous: np.ndarray, following: np.ndarray, boxes: Iterable[dict[str, Any]],
                    flow: FlowPair | None = None) -> list[dict[str, Any]]:
    """Each box of ``previous`` carried to ``following``: a copy of the box dict with new
    ``x, y, w, h`` and ``confidence``; boxes that left the image are dropped."""
    flow = flow or flow_pair(previous, following)
    out = []
    for box in boxes:
        moved = move_box(box, flow)
        if moved is not None:
            geometry, confidence = moved
            out.append({**box, **geometry, "confidence": confidence})
    return out


# --- stored frames and boxes -----------------------------------------------------------------

@dataclass
class Propagation:
    """What a propagation wrote: per target frame id its new boxes, the events to undo it."""

    created: dict[int, list[Box]]
    replaced: int
    event_ids: list[int]
    undo_ids: list[int]
    scene: Scene
    scene_data: dict[str, Any] | None = None


def _source_boxes(frame: Frame) -> list[dict[str, Any]]:
    # A carried box keeps its source's track: one object, one track, across the scene.
    return [{**plain(b, score=b.source == BoxSource.propagated), "track_id": b.track_id}
            for b in frame.boxes if b.source in (BoxSource.manual, BoxSource.propagated)]


def _chained_score(b: dict[str, Any]) -> float:
    """A carried box's confidence times its source's (a drawn box counts as certain)."""
    return b["confidence"] * (b["score"] if b["score"] is not None else 1.0)


def propagate(scene: Scene, start: Frame, steps: int | None, user: User | None,
              progress: Callable[[float], None] | None = None) -> Propagation:
    """Carry ``start``'s boxes forward ``steps`` frames (None: to the scene's end), chaining
    each result into the next step; writes everything in one transaction."""
    check_editable(scene, user)  # before the flow: a refusal should not wait for it
    frames = [f for f in scene.frames]
    index = next((i for i, f in enumerate(frames) if f.id == start.id), None)
    if index is None:
        raise LabelRefused(f"Frame {start.id} is not in scene {scene.id}.")
    targets = frames[index + 1:] if steps is None else frames[index + 1:index + 1 + steps]
    if not targets:
        raise PropagationRefused("This is the scene's last frame: there is no next frame.")
    source = _source_boxes(start)
    if not source:
        raise PropagationRefused("This frame has no drawn, accepted or propagated box to carry "
                                 "forward (accept pre-labels first).")
    # Flow first, nothing written yet: a long scene can be cancelled without a trace.
    plans: list[tuple[Frame, list[dict[str, Any]], list[Box]]] = []
    previous = start
    for n, target in enumerate(targets):
        flow = frame_flow(previous, target)
        moved = [b for b in propagate_boxes(flow.previous, flow.following, source, flow)
                 if _chained_score(b) >= MIN_SCORE]
        own_manual = [{**plain(b, score=False), "track_id": b.track_id}
                      for b in target.boxes if b.source == BoxSource.manual]
        kept = [b for b in moved
                if not any(m["class_id"] == b["class_id"] and same_object(m, b)
                           for m in own_manual)]
        superseded = [p for p in target.boxes if p.source == BoxSource.model and any(
            p.class_id == b["class_id"] and same_object(plain(p), b) for b in kept)]
        plans.append((target, kept, superseded))
        # The next step starts from this frame's manual boxes and what was just carried here.
        source = own_manual + [{**b, "score": _chained_score(b)} for b in kept]
        previous = target
        if progress is not None:
            progress(100.0 * (n + 1) / len(targets))
        if not source:
            break
    try:
        events = start_editing(start, user)
        created: dict[int, list[Box]] = {}
        replaced = 0
        for target, kept, superseded in plans:
            for old in [b for b in target.boxes if b.source == BoxSource.propagated] + superseded:
                # A superseded pre-label keeps its box id in the event, so undo brings it back.
                events.append(record_event(user, "replace", old.source.value, frame=target,
                                           box_id=old.id if old in superseded else None,
                                           before=old.as_dict()))
                db.session.delete(old)
                replaced += 1
            new = []
            for b in kept:
                geometry = clip_box(b["x"], b["y"], b["w"], b["h"], target.width, target.height,
                                    decimals=1)
                if geometry is None:
                    continue
                box = Box(frame=target, class_id=b["class_id"], source=BoxSource.propagated,
                          track_id=b.get("track_id"), score=round(_chained_score(b), 4), author_id=user.id if user else None,
                          **geometry)
                db.session.add(box)
                new.append(box)
            db.session.flush()
            for box in new:
                events.append(record_event(user, "propagate", "propagated", frame=target,
                                           box_id=box.id, after=box.as_dict()))
            created[target.id] = new
        change = commit(Change(None, events, scene))
    except BaseException:
        db.session.rollback()
        raise
    return Propagation(created, replaced, change.event_ids, change.undo_ids, scene, change.scene_data)


def frame_of(scene: Scene, frame_index: int) -> Frame:
    frame = db.session.scalar(sa.select(Frame).where(Frame.scene_id == scene.id,
                                                     Frame.frame_index == frame_index))
    if frame is None:
        raise PropagationRefused(f"Scene {scene.id} has no frame {frame_index} (it spans frames "
                                 f"{scene.first_frame}-{scene.last_frame}).")
    return frame


def get_scene(scene_id: int) -> Scene:
    scene = db.session.get(Scene, scene_id)
    if scene is None:
        raise PropagationRefused(f"No scene {scene_id}.", status=404)
    return scene


# --- the job ---------------------------------------------------------------------------------

def _check(params: dict[str, Any]) -> None:
    scene = get_scene(params["scene"])
    frame_of(scene, params.get("from_frame", scene.first_frame))


@kind("propagate", {
    "scene": Param(integer(1), required=True, help="scene id"),
    "from_frame": Param(integer(0), help="frame index to start from (default: the scene's first)"),
    "frames": Param(integer(1), help="how many frames on (default: to the scene's end)"),
}, (Role.admin, Role.annotator), "Carry a frame's boxes through the rest of a scene by optical flow.",
    check=_check)
def run_propagate(ctx: JobContext, params: dict[str, Any], user: User | None) -> dict[str, Any]:
    scene = get_scene(params["scene"])
    start = frame_of(scene, params.get("from_frame", scene.first_frame))
    ctx.progress(1, f"propagating from frame {start.frame_index} of scene {scene.id}")
    result = propagate(scene, start, params.get("frames"), user,
                       progress=lambda pct: ctx.progress(1 + 0.98 * pct))
    frames = sum(1 for boxes in result.created.values() if boxes)
    boxes = sum(len(v) for v in result.created.values())
    return {"scene": scene.id, "frames": frames, "boxes": boxes, "replaced": result.replaced}
