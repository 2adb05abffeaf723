"""Ground-truth boxes from the rendered label image.

The label image is the scan-converted (nearest-neighbour) map of which 3D object each beam-grid
sample lies in, i.e. the intersection of the image plane with every object, already clipped to
the visible sector and to the tissue actually shown (an object's part inside the abdominal wall
or beyond the diaphragm is not labelled). Boxes smaller than ``min_px`` in width or height are
dropped (the minimum visible size).

Tumours: one box per connected piece of each tumour's cut (an ellipsoid gives one piece).
Vessels: one box per connected region of the union of all vessel cuts, because where branches
meet (a bifurcation, or a parent and child sharing a joint) the frame shows one anechoic
region and a reader would draw one box; its ``track_id`` is the branch covering most of it.
"""
from __future__ import annotations

import cv2
import numpy as np
from scipy import ndimage

from .anatomy import TUMOR


def _box(obj: dict, x: int, y: int, w: int, h: int) -> dict:
    return {"bbox": [x, y, w, h], "area": w * h, "category_id": obj["category_id"],
            "local_id": obj["local_id"], "attributes": obj["attributes"]}


def boxes_from_labels(labels: np.ndarray, objects: list[dict], min_px: int) -> list[dict]:
    """Boxes ``{"bbox": [x, y, w, h], "area", "category_id", "local_id", "attributes"}``."""
    out: list[dict] = []
    if not labels.any():
        return out
    n_tumours = sum(1 for o in objects if o["category_id"] == TUMOR)
    for idx, sl in enumerate(ndimage.find_objects(labels, max_label=n_tumours)):
        if sl is None:
            continue
        crop = (labels[sl] == idx + 1).astype(np.uint8)
        n, _, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
        for comp in range(1, n):
            x, y, w, h, _ = (int(v) for v in stats[comp])
            if w >= min_px and h >= min_px:
                out.append(_box(objects[idx], x + sl[1].start, y + sl[0].start, w, h))
    vessels = (labels > n_tumours).astype(np.uint8)
    if vessels.any():
        n, comp_img, stats, _ = cv2.connectedComponentsWithStats(vessels, connectivity=8)
        for comp in range(1, n):
            x, y, w, h, _ = (int(v) for v in stats[comp])
            if w < min_px or h < min_px:
                continue
            window = labels[y:y + h, x:x + w][comp_img[y:y + h, x:x + w] == comp]
            dominant = int(np.bincount(window).argmax())
            out.append(_box(objects[dominant - 1], x, y, w, h))
    return out
