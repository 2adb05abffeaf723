"""What Label Studio's region types hold, to say in one line why a region SonoLabel cannot
hold is refused (SonoLabel keeps labelled, axis-aligned boxes)."""
from __future__ import annotations

from typing import Any

from .input_checks import shown

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
