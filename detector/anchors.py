"""Anchors fitted to the training boxes (``--fit-anchors``).

The default anchors (:class:`detector.model.ModelConfig`: sizes 16-320 px, two per pyramid
level, aspect ratios 0.5 / 1 / 2) are sized for general objects. A team's boxes (tumours,
vessels at one input size) span a narrower range; anchors near them give the RPN more
positive matches from the first iteration.

Fit: the training boxes as the model sees them (shrunk with their frame to the input size),
1-D k-means on log(sqrt(w * h)) for ``2 x levels`` sizes (sorted, two per level, smallest on
the finest level) and 1-D k-means on log(h / w) for three aspect ratios (torchvision's
``aspect_ratios`` are h / w). Log space, because a box twice as big is as far off as one
half as big. Deterministic: k-means starts from quantiles. The fitted anchors are stored in
the run's model config, so prediction uses them.
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

ASPECT_CLUSTERS = 3


def kmeans_1d(values: np.ndarray, k: int, iterations: int = 50) -> np.ndarray:
    """``k`` sorted centres of 1-D ``values`` (Lloyd's algorithm from the quantiles)."""
    values = np.sort(np.asarray(values, dtype=float))
    if values.size == 0:
        raise ValueError("no values to cluster")
    centres = np.quantile(values, (np.arange(k) + 0.5) / k)
    for _ in range(iterations):
        nearest = np.abs(values[:, None] - centres[None, :]).argmin(axis=1)
        moved = np.array([values[nearest == j].mean() if np.any(nearest == j) else centres[j]
                          for j in range(k)])
        if np.allclose(moved, centres):
            break
        centres = moved
    return np.sort(centres)


def fit_anchors(wh: Iterable[tuple[float, float]], levels: int = 4, per_level: int = 2,
                min_size: float = 4.0) -> tuple[list[list[int]], list[float]]:
    """``(anchor_sizes, aspect_ratios)`` for :class:`detector.model.ModelConfig` from box
    widths and heights in input pixels. Needs at least one box of 1 px or more a side."""
    wh = np.array([(w, h) for w, h in wh if w >= 1 and h >= 1], dtype=float).reshape(-1, 2)
    if len(wh) == 0:
        raise ValueError("no training boxes to fit anchors to")
    sizes = np.exp(kmeans_1d(np.log(np.sqrt(wh[:, 0] * wh[:, 1])), levels * per_level))
    sizes = np.maximum(min_size, np.round(sizes)).astype(int)
    for i in range(1, len(sizes)):  # strictly increasing, as a pyramid's anchors are
        sizes[i] = max(sizes[i], sizes[i - 1] + 1)
    ratios = np.exp(kmeans_1d(np.log(wh[:, 1] / wh[:, 0]), ASPECT_CLUSTERS))
    anchor_sizes = [sizes[i * per_level:(i + 1) * per_level].tolist() for i in range(levels)]
    return anchor_sizes, [round(float(r), 3) for r in ratios]
