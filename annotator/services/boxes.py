"""Boxes as data: the shapes a box takes, the clip rule, the minimum size, IoU and matching.

A box takes three shapes in the services:
- the stored row, :class:`~annotator.models.Box`;
- its record, ``Box.as_dict()``: every column, what label events keep as before/after
  snapshots and what the JSON API sends (plus the author's name);
- a plain box, :func:`plain`: ``class_id, x, y, w, h, score``, what the algorithms (IoU,
  flow propagation, scene ranking) take and return.
COCO annotations and Label Studio regions are file formats, converted where those files are
read and written. All coordinates are pixels of the stored (cropped) frame, ``x, y`` the
top-left corner.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..models import Box

# A box a machine made (a model's detection, a box carried by flow) that keeps less than a
# pixel on a side inside the frame marks nothing a person could check: it is dropped.
MIN_SIZE = 1.0  # px
# A box from a person or a file narrower than half a pixel covers no pixel anyone can see: far
# below the smallest box the editor lets one draw (3 px) and below a whole-pixel box another
# tool sends back with float noise (1 px as 0.9999998 px), so nothing meant is lost.
MIN_INPUT_SIZE = 0.5  # px


class OutsideFrame(ValueError):
    """A box said to lie in the frame reaches further out than the slack allows."""


def plain(box: Box, score: bool = True) -> dict[str, Any]:
    """The plain shape of a stored box; ``score=False`` leaves its score out (None)."""
    return {"class_id": box.class_id, "x": box.x, "y": box.y, "w": box.w, "h": box.h,
            "score": box.score if score else None}


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int, *,
             slack: float | None = None, decimals: int | None = None) -> dict[str, float] | None:
    """The part of the box inside the ``width`` x ``height`` frame as ``{x, y, w, h}``, or None
    when too little of it is inside. The one clip rule; callers differ only in ``slack``:

    - None, for machine output that may overshoot the frame (model detections, boxes carried by
      flow): whatever lies outside is cut off, and a box left with less than :data:`MIN_SIZE`
      on a side is None.
    - a number, for input said to lie in the frame (drawn in the browser, read from a label
      file): reaching more than ``slack`` px outside raises :class:`OutsideFrame`, so a
      misplaced box is refused rather than silently cut; the slack is cut off, and the box is
      None when less than :data:`MIN_INPUT_SIZE` is left on a side (a person's thin box is
      theirs to draw, and a 1 px box that comes back from another tool as 0.9999998 px must
      still import, but a 1e-300 px box is noise). ``math.inf`` keeps any part inside (boxes
      drawn on a larger picture than the frame).

    A coordinate that is not finite (NaN from a diverged model, an integer past float range)
    gives None for machine output and :class:`OutsideFrame` for input.

    ``decimals`` rounds the result, for machine output (a model's float noise means nothing);
    input is kept as given, so an exported box imports back exactly.
    """
    try:
        x, y, w, h = float(x), float(y), float(w), float(h)
    except OverflowError:
        x = math.inf
    if not all(math.isfinite(v) for v in (x, y, w, h, x + w, y + h)):
        if slack is None:
            return None
        raise OutsideFrame(f"The box lies outside the {width}x{height} frame.")
    if slack is not None and (x < -slack or y < -slack or x + w > width + slack
                              or y + h > height + slack):
        raise OutsideFrame(f"The box lies outside the {width}x{height} frame.")
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(width), x + w), min(float(height), y + h)
    least = MIN_SIZE if slack is None else MIN_INPUT_SIZE
    if x1 - x0 < least or y1 - y0 < least:
        return None
    out = {"x": x0, "y": y0, "w": x1 - x0, "h": y1 - y0}
    if decimals is not None:
        out = {k: round(v, decimals) for k, v in out.items()}
    return out


def iou(a: dict[str, float], b: dict[str, float]) -> float:
    ix = max(0.0, min(a["x"] + a["w"], b["x"] + b["w"]) - max(a["x"], b["x"]))
    iy = max(0.0, min(a["y"] + a["h"], b["y"] + b["h"]) - max(a["y"], b["y"]))
    inter = ix * iy
    union = a["w"] * a["h"] + b["w"] * b["h"] - inter
    return inter / union if union > 0 else 0.0


# Two boxes of one class overlapping at least this much are one object seen twice: a carried
# box supersedes such a pre-label (key P), a track's accept retires it, U fuses it into a track.
SAME_OBJECT_IOU = 0.5


def same_object(a: dict[str, float], b: dict[str, float]) -> bool:
    """``a`` and ``b`` (of one class: checked by the caller) are one object, IoU >= 0.5."""
    return iou(a, b) >= SAME_OBJECT_IOU


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
