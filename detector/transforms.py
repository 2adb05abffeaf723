"""Augmentation of a (current, previous) frame pair with its boxes, on grey uint8 arrays.

Every geometric change draws its parameters once and applies them to both frames, so the
flow computed afterwards between them is the true motion. Chosen for B-mode ultrasound:

* horizontal flip only: left/right depends on how the probe is held, but depth (top to
  bottom) has a fixed meaning, so no vertical flip or rotation;
* scale jitter: zoom in or out about a random centre on the same canvas (depth setting);
* gain and contrast, drawn once for the pair (the scanner's settings change slowly);
* multiplicative speckle noise, drawn per frame (speckle decorrelates between frames);
* random erasing of a rectangle that overlaps no box, dark like an acoustic shadow, in the
  same place on both frames.

Off by default, switched on by the ``ultrasound`` set (``--augment-set``, :data:`AUGMENT_SETS`):

* a time-gain-compensation curve: a smooth gain over depth (rows), as the TGC sliders give,
  through ``tgc_points`` control depths with log-gains drawn in ``±tgc``, for the pair;
* gamma (log-uniform in ``gamma``), for the pair: the scanner's grey map;
* depth crop (probability ``depth_crop``): the image below a depth drawn in ``depth_keep``
  (a fraction of the height) is cut off, as a shallower depth setting shows; the frames keep
  the top rows, their width and their scale.

Boxes are ``xyxy`` float arrays in pixels. One rule for every geometric change that cuts the
canvas (zoom, depth crop; :func:`clip_boxes`): a box is clipped to the canvas and kept while
at least ``min_visible`` of its area and 2 px on each side remain, else dropped with its label.
Photometric changes (gain, contrast, TGC, gamma, speckle) never touch the boxes.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


@dataclass
class Augment:
    hflip: float = 0.5
    scale: tuple[float, float] = (0.8, 1.25)
    gain: tuple[float, float] = (0.75, 1.3)
    contrast: tuple[float, float] = (0.8, 1.25)
    speckle: tuple[float, float] = (0.0, 0.15)
    erase: float = 0.3
    erase_size: tuple[float, float] = (0.05, 0.3)  # side as a fraction of the image side
    min_visible: float = 0.4
    tgc: float = 0.0  # log-gain amplitude of the depth curve; 0: off
    tgc_points: int = 4
    gamma: tuple[float, float] = (1.0, 1.0)
    depth_crop: float = 0.0  # probability
    depth_keep: tuple[float, float] = (0.6, 1.0)


AUGMENT_SETS: dict[str, Augment | None] = {
    "none": None,
    "default": Augment(),
    "ultrasound": Augment(tgc=0.35, gamma=(0.7, 1.4), depth_crop=0.3),
}


def augment_set(name: str) -> Augment | None:
    """The augmentation of a named set (None: no augmentation)."""
    if name not in AUGMENT_SETS:
        raise ValueError(f"unknown augment set {name!r}; choose from {', '.join(AUGMENT_SETS)}")
    return AUGMENT_SETS[name]


def shrunk_size(h: int, w: int, size: int) -> tuple[int, int]:
    """(h, w) scaled so the longest side is at most ``size`` (never enlarged)."""
    scale = size / max(h, w)
    if scale >= 1:
        return h, w
    return max(1, round(h * scale)), max(1, round(w * scale))


def shrink(image: np.ndarray, size: int) -> np.ndarray:
    """``image`` with its longest side at most ``size``, by area averaging."""
    h, w = shrunk_size(*image.shape[:2], size)
    if (h, w) == image.shape[:2]:
        return image
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA)


def resize_pair(cur: np.ndarray, prev: np.ndarray, boxes: np.ndarray, size: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shrink (never enlarge) both frames so the longest side is at most ``size``."""
    h, w = cur.shape[:2]
    nh, nw = shrunk_size(h, w, size)
    if (nh, nw) == (h, w):
        return cur, prev, boxes
    scale = np.array([nw / w, nh / h, nw / w, nh / h], np.float32)
    small = shrink(cur, size)
    return small, (small if prev is cur else shrink(prev, size)), boxes * scale


def hflip_pair(cur, prev, boxes):
    w = cur.shape[1]
    boxes = boxes.copy()
    boxes[:, [0, 2]] = w - boxes[:, [2, 0]]
    return cur[:, ::-1].copy(), prev[:, ::-1].copy(), boxes


def zoom_pair(cur, prev, boxes, labels, scale: float, centre: tuple[float, float],
              min_visible: float):
    """Scale both frames by ``scale`` about ``centre`` on the same canvas (zeros outside)."""
    h, w = cur.shape[:2]
    cx, cy = centre
    matrix = np.array([[scale, 0, cx - scale * cx], [0, scale, cy - scale * cy]], np.float32)
    out = [cv2.warpAffine(f, matrix, (w, h), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=0) for f in (cur, prev)]
    moved = boxes * scale + np.array([cx, cy, cx, cy], np.float32) * (1 - scale)
    kept, labels = clip_boxes(moved, labels, w, h, min_visible)
    return out[0], out[1], kept, labels


def clip_boxes(boxes: np.ndarray, labels: np.ndarray, w: float, h: float, min_visible: float
               ) -> tuple[np.ndarray, np.ndarray]:
    """The one rule for boxes on a cut canvas: clipped to ``w`` x ``h``, kept while at least
    ``min_visible`` of the area and 2 px on each side remain; the labels that stay with them."""
    clipped = boxes.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, h)
    area = lambda b: (b[:, 2] - b[:, 0]).clip(0) * (b[:, 3] - b[:, 1]).clip(0)  # noqa: E731
    keep = (area(clipped) >= min_visible * area(boxes)) & \
        (clipped[:, 2] - clipped[:, 0] >= 2) & (clipped[:, 3] - clipped[:, 1] >= 2)
    return clipped[keep], labels[keep]


def depth_crop_pair(cur, prev, boxes, labels, keep: float, min_visible: float):
    """Both frames without the rows below ``keep`` of the height (a shallower depth)."""
    h = cur.shape[0]
    rows = max(2, int(round(h * keep)))
    if rows >= h:
        return cur, prev, boxes, labels
    kept, labels = clip_boxes(boxes, labels, cur.shape[1], rows, min_visible)
    return cur[:rows].copy(), prev[:rows].copy(), kept, labels


def tgc_curve(h: int, amplitude: float, points: int, rng: np.random.Generator) -> np.ndarray:
    """A smooth gain per row (h x 1): log-gains drawn in ``±amplitude`` at ``points`` evenly
    spaced depths, interpolated by a cosine between them."""
    log_gain = rng.uniform(-amplitude, amplitude, max(2, points))
    depth = np.linspace(0, max(2, points) - 1, h)
    lo = np.floor(depth).astype(int).clip(0, len(log_gain) - 2)
    t = depth - lo
    t = (1 - np.cos(np.pi * t)) / 2
    curve = np.exp(log_gain[lo] * (1 - t) + log_gain[lo + 1] * t)
    return curve.astype(np.float32)[:, None]


def apply_gain_curve(image: np.ndarray, curve: np.ndarray) -> np.ndarray:
    return (image.astype(np.float32) * curve).clip(0, 255).astype(np.uint8)


def gamma_map(image: np.ndarray, gamma: float) -> np.ndarray:
    table = (255.0 * (np.arange(256) / 255.0) ** gamma).round().clip(0, 255).astype(np.uint8)
    return cv2.LUT(image, table)


def gain_contrast(image: np.ndarray, gain: float, contrast: float, mean: float) -> np.ndarray:
    out = (image.astype(np.float32) - mean) * contrast + mean * gain
    return out.clip(0, 255).astype(np.uint8)


def speckle(image: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    if sigma <= 0:
        return image
    noise = rng.normal(1.0, sigma, image.shape).astype(np.float32)
    return (image.astype(np.float32) * noise).clip(0, 255).astype(np.uint8)


def erase_region(shape: tuple[int, int], boxes: np.ndarray, rng: np.random.Generator,
                 size_range: tuple[float, float], tries: int = 20
                 ) -> tuple[int, int, int, int] | None:
    """A rectangle (x0, y0, x1, y1) inside ``shape`` that overlaps none of ``boxes``, or None
    when none was found in ``tries`` draws."""
    h, w = shape
    for _ in range(tries):
        rw = max(1, int(w * rng.uniform(*size_range)))
        rh = max(1, int(h * rng.uniform(*size_range)))
        x0 = int(rng.integers(0, max(1, w - rw + 1)))
        y0 = int(rng.integers(0, max(1, h - rh + 1)))
        x1, y1 = x0 + rw, y0 + rh
        if len(boxes) == 0:
            return x0, y0, x1, y1
        # boxes cover pixels floor(x0)..ceil(x1); a rectangle touching none of them is safe
        bx0, by0 = np.floor(boxes[:, 0]), np.floor(boxes[:, 1])
        bx1, by1 = np.ceil(boxes[:, 2]), np.ceil(boxes[:, 3])
        overlap = (x0 < bx1) & (bx0 < x1) & (y0 < by1) & (by0 < y1)
        if not overlap.any():
            return x0, y0, x1, y1
    return None


def augment_pair(cur: np.ndarray, prev: np.ndarray, boxes: np.ndarray, labels: np.ndarray,
                 rng: np.random.Generator, aug: Augment | None = None):
    """Random augmentation of a grey uint8 pair; returns (cur, prev, boxes, labels)."""
    aug = aug or Augment()
    boxes = boxes.astype(np.float32).reshape(-1, 4)
    h, w = cur.shape[:2]
    if rng.random() < aug.hflip:
        cur, prev, boxes = hflip_pair(cur, prev, boxes)
    scale = float(np.exp(rng.uniform(np.log(aug.scale[0]), np.log(aug.scale[1]))))
    if abs(scale - 1) > 1e-3:
        centre = (rng.uniform(0, w), rng.uniform(0, h))
        cur, prev, boxes, labels = zoom_pair(cur, prev, boxes, labels, scale, centre,
                                             aug.min_visible)
    # the optional steps draw from rng only when on, so the default set stays as it was
    if aug.depth_crop > 0 and rng.random() < aug.depth_crop:
        cur, prev, boxes, labels = depth_crop_pair(cur, prev, boxes, labels,
                                                   rng.uniform(*aug.depth_keep), aug.min_visible)
    g, c = rng.uniform(*aug.gain), rng.uniform(*aug.contrast)
    mean = float(cur.mean())
    cur, prev = gain_contrast(cur, g, c, mean), gain_contrast(prev, g, c, mean)
    if aug.tgc > 0:
        curve = tgc_curve(cur.shape[0], aug.tgc, aug.tgc_points, rng)
        cur, prev = apply_gain_curve(cur, curve), apply_gain_curve(prev, curve)
    if aug.gamma != (1.0, 1.0):
        gamma = float(np.exp(rng.uniform(np.log(aug.gamma[0]), np.log(aug.gamma[1]))))
        cur, prev = gamma_map(cur, gamma), gamma_map(prev, gamma)
    cur = speckle(cur, rng.uniform(*aug.speckle), rng)
    prev = speckle(prev, rng.uniform(*aug.speckle), rng)
    if rng.random() < aug.erase:
        region = erase_region(cur.shape[:2], boxes, rng, aug.erase_size)
        if region is not None:
            x0, y0, x1, y1 = region
            level = int(rng.integers(0, 30))
            cur, prev = cur.copy(), prev.copy()
            cur[y0:y1, x0:x1] = level
            prev[y0:y1, x0:x1] = level
    return cur, prev, boxes, labels
