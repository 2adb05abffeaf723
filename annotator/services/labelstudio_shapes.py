"""Label Studio's regions: their percent coordinates, their one label, and what the other
region types hold, to say in one line why a region SonoLabel cannot hold is refused
(SonoLabel keeps labelled, axis-aligned boxes)."""
from __future__ import annotations

from typing import Any

from .classes import add_hint
from .input_checks import shown
from .label_import import ImportPlan

SHAPES = {"polygonlabels": "a polygon", "polygon": "a polygon", "keypointlabels": "a keypoint",
          "keypoint": "a keypoint", "brushlabels": "a brush mask", "brush": "a brush mask",
          "ellipselabels": "an ellipse", "ellipse": "an ellipse",
          "rectangle": "a box without a label", "labels": "a label without a shape",
          "choices": "a classification", "taxonomy": "a classification",
          "textarea": "a text answer", "relation": "a relation between regions",
          "rating": "a rating", "timelinelabels": "a video timeline segment",
          "magicwand": "a magic-wand mask", "rectanglelabels": "a box on one image",
          "videorectangle": "a video track"}


def unsupported(kind: Any, video: bool = False) -> str:
    """Why a region of type ``kind`` is refused in an image task (or a ``video`` task)."""
    wanted = "videorectangle tracks in video tasks" if video else "rectanglelabels boxes in image tasks"
    if isinstance(kind, str) and kind in SHAPES:
        return f"{SHAPES[kind]} ({kind}) cannot be imported: SonoLabel takes {wanted}"
    return f"type {shown(kind)} is not supported: SonoLabel takes {wanted}"


def to_percent(x: float, y: float, w: float, h: float, width: float, height: float
               ) -> dict[str, float]:
    """A box in pixels as Label Studio's region geometry: percent of the image (or clip) size."""
    return {"x": 100.0 * x / width, "y": 100.0 * y / height,
            "width": 100.0 * w / width, "height": 100.0 * h / height}


def from_percent(value: dict[str, Any], width: float, height: float
                 ) -> tuple[float, float, float, float]:
    """A region's geometry (percent) as x, y, w, h in pixels; floats, never rounded."""
    return (value["x"] * width / 100.0, value["y"] * height / 100.0,
            value["width"] * width / 100.0, value["height"] * height / 100.0)


def region_class(labels: Any, field: str, classes: dict[str, int], at: str, plan: ImportPlan
                 ) -> int | None:
    """The class id of a region's one label (``field`` names where it was), or None with a problem."""
    if not isinstance(labels, list) or len(labels) != 1 or not isinstance(labels[0], str):
        plan.problem(f"{at}: needs exactly one label in {field}, got {shown(labels)}")
        return None
    class_id = classes.get(labels[0].strip().lower())
    if class_id is None:
        plan.problem(f"{at}: unknown class {shown(labels[0])}; the classes are "
                     f"{', '.join(sorted(classes))}; {add_hint(labels[0].strip())}")
    return class_id
