"""The review gate: a scene goes to review only when every frame has been decided.

A frame is decided when it has a box drawn or accepted by a person (``source`` manual) and no
undecided pre-label or propagated box left, or when it carries the "no findings" mark. Without
the gate a scene with 18 of 20 frames untouched went to review and was accepted, and the
untouched frames entered datasets as negatives nobody had looked at.

:func:`coverage` is what the reviewer and the workspace see per frame; :func:`check_submit`
refuses a submission (409, naming the frames, with the first one for the workspace to jump
to) unless an admin overrides with a reason, which the caller audits.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ..db import db
from ..models import Box, BoxSource, Frame, Scene
from . import ServiceError

# What a frame's coverage state means, for the reviewer (also the legend in the workspace).
STATES = {"boxes": "boxes, all decided", "empty": "marked no findings",
          "undecided": "pre-labels or propagated boxes to accept or reject",
          "missing": "no box and no \"no findings\" mark"}


def frame_state(manual: int, undecided: int, empty: bool) -> str:
    if undecided:
        return "undecided"
    if manual:
        return "boxes"
    return "empty" if empty else "missing"


def coverage(frames: Iterable[Frame], boxes: Iterable[Box]) -> list[dict[str, Any]]:
    """Per frame (in scene order): its id, index, manual box count, undecided box count (and
    of those, pre-labels and propagated boxes), the "no findings" mark and its state (see
    :data:`STATES`)."""
    by_frame: dict[int, list[Box]] = {}
    for box in boxes:
        by_frame.setdefault(box.frame_id, []).append(box)
    rows = []
    for frame in frames:
        mine = by_frame.get(frame.id, [])
        manual = sum(b.source == BoxSource.manual for b in mine)
        carried = sum(b.source == BoxSource.propagated for b in mine)
        undecided = len(mine) - manual
        rows.append({"frame_id": frame.id, "index": frame.frame_index, "boxes": manual,
                     "undecided": undecided, "pre_labels": undecided - carried,
                     "propagated": carried, "empty": bool(frame.reviewed_empty),
                     "state": frame_state(manual, undecided, bool(frame.reviewed_empty))})
    return rows


def scene_coverage(scene: Scene) -> list[dict[str, Any]]:
    frames = scene.frames
    boxes = db.session.scalars(db.select(Box).where(Box.frame_id.in_([f.id for f in frames])))
    return coverage(frames, boxes)


def spans(indices: list[int]) -> str:
    """``[3, 4, 7, 8, 9]`` -> ``"3, 4, 7-9"`` (runs of three or more as ranges)."""
    parts: list[str] = []
    i = 0
    while i < len(indices):
        j = i
        while j + 1 < len(indices) and indices[j + 1] == indices[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{indices[i]}-{indices[j]}")
            i = j + 1
        else:
            parts.append(str(indices[i]))
            i += 1
    return ", ".join(parts)


def _frames_phrase(indices: list[int]) -> str:
    return f"{'Frames' if len(indices) > 1 else 'Frame'} {spans(indices)}"


def unfinished(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in rows if r["state"] in ("missing", "undecided")]


def gate_message(rows: list[dict[str, Any]]) -> str:
    """Why the scene cannot go to review yet, naming the frames (by video frame number)."""
    missing = [r["index"] for r in rows if r["state"] == "missing"]
    undecided = [r for r in rows if r["state"] == "undecided"]
    parts = []
    if missing:
        parts.append(f"{_frames_phrase(missing)} {'have' if len(missing) > 1 else 'has'} no box "
                     "and no \"no findings\" mark")
    for row in undecided[:10]:
        what = [f"{n} {one if n == 1 else many}" for n, one, many in (
            (row["pre_labels"], "pre-label", "pre-labels"),
            (row["propagated"], "propagated box", "propagated boxes")) if n]
        parts.append(f"frame {row['index']} has {' and '.join(what)} undecided")
    if len(undecided) > 10:
        parts.append(f"{len(undecided) - 10} more frames have undecided boxes")
    text = "; ".join(parts)
    rest = (" Pre-labels outside tracks can be rejected all at once (Shift+N)."
            if any(r["pre_labels"] for r in undecided) else "")
    return (text[0].upper() + text[1:] + ". Draw or accept the boxes, or mark the frame "
            "\"no findings\" (E), before submitting." + rest)


def check_submit(scene: Scene) -> list[dict[str, Any]]:
    """Refuse submitting ``scene`` while a frame is undecided (409 with ``unfinished_frames``
    and ``first_unfinished_frame_id`` for the client). Returns the coverage rows."""
    rows = scene_coverage(scene)
    todo = unfinished(rows)
    if todo:
        raise ServiceError(f"Scene {scene.id} cannot be submitted yet. {gate_message(rows)}", status=409,
                       unfinished_frames=[r["index"] for r in todo],
                       first_unfinished_frame_id=todo[0]["frame_id"], coverage=rows)
    return rows
