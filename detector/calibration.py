"""Scores that mean something: per-class Platt scaling (a temperature and a bias on the score's
logit) fitted on the validation set, and the validation-F1 threshold on the calibrated scores.

Design choices:

* A monotone map with two parameters per class, not isotonic regression. A validation set of
  a team's own data holds a few dozen boxes per class; two parameters cannot overfit them,
  while isotonic regression fits a step function that merges scores into ties (ranking and
  AP change) and jumps wherever a handful of boxes happen to fall. The map is strictly
  increasing, so the order of a class's detections, its AP and its ROC AUC are exactly those
  of the raw scores.
* The calibrated score is ``sigmoid(logit(s) / T_class + b_class)``. ``T`` and ``b`` minimise
  the negative log-likelihood of "this detection is a true positive", where true means matched
  one-to-one (greedy by score, IoU >= 0.5, same class: :func:`detector.metrics.match_detections`);
  detections that only match a crowd box are left out. ``T`` > 1 softens over-confident
  scores; ``b`` < 0 lowers scores that are too high everywhere. A temperature alone cannot
  do the latter, which is how this detector's scores err: on a 500-image BUSI run (90
  validation images, 171 detections) the temperature raised the expected calibration error
  from 0.140 to 0.144, the bias brought it to 0.056 (0.095 and 0.078 on each half of the
  detections, fitted on the other half, against 0.176 and 0.144 for the temperature).
* Only detections scoring at least ``min_score`` (the app's floor, 0.05) are fitted: below it
  thousands of near-zero false positives would decide the fit for scores nobody sees.
* A class with fewer than ``MIN_CLASS_DETECTIONS`` such detections, or without both a true
  and a false positive, gets the map fitted on all classes pooled; when even the pool lacks
  either kind, nothing is fitted and scores stay raw (the record says why).
* Expected calibration error: 10 equal-width score bins, ``sum_b n_b / n * |hit rate_b -
  mean score_b|``, on the fitted detections. It is measured on the data the map was fitted
  on, so the "after" figure is optimistic by a little (two parameters per class).
* Records of earlier runs (``method`` "temperature": a temperature per class, no bias) load
  as maps with a bias of 0, so a registered model keeps its scores.

The record (:meth:`Calibration.to_dict`) is stored in the run's ``model.pt`` (key
``calibration``) and in ``metrics.json``; :class:`detector.predict.Predictor` applies it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, logit

from detector.metrics import (IGNORED, TP, Detections, GroundTruth, category_names,
                              load_detections, load_gt, match_detections)
from detector.sensitivity import choose_threshold

METHOD = "platt"
METHODS = (METHOD, "temperature")  # "temperature": an earlier run's record, no bias
MIN_CLASS_DETECTIONS = 20
DEFAULT_MIN_SCORE = 0.05
ECE_BINS = 10
T_BOUNDS = (0.05, 20.0)
B_BOUNDS = (-10.0, 10.0)
_EPS = 1e-6


def _logits(scores: np.ndarray) -> np.ndarray:
    return logit(np.clip(np.asarray(scores, dtype=float), _EPS, 1.0 - _EPS))


def scale(scores: np.ndarray | float, temperature: float, bias: float = 0.0) -> np.ndarray:
    """``sigmoid(logit(scores) / temperature + bias)``."""
    return expit(_logits(np.asarray(scores, dtype=float)) / temperature + bias)


def fit_platt(scores: np.ndarray, hits: np.ndarray) -> tuple[float, float]:
    """The (temperature, bias) minimising the negative log-likelihood of ``hits`` (0/1) given
    ``sigmoid(logit(scores) / T + b)``; needs at least one hit and one miss."""
    z = _logits(scores)
    y = np.asarray(hits, dtype=float)

    def nll(params: np.ndarray) -> float:
        s = z / math.exp(params[0]) + params[1]
        # -log sigmoid(s) = logaddexp(0, -s), computed without overflow
        return float(np.sum(y * np.logaddexp(0.0, -s) + (1.0 - y) * np.logaddexp(0.0, s)))

    bounds = [tuple(math.log(t) for t in T_BOUNDS), B_BOUNDS]
    best = minimize(nll, np.zeros(2), method="L-BFGS-B", bounds=bounds)
    return float(math.exp(best.x[0])), float(best.x[1])


def expected_calibration_error(scores: np.ndarray, hits: np.ndarray, bins: int = ECE_BINS
                               ) -> float | None:
    """Equal-width-bin ECE of ``scores`` against 0/1 ``hits``; None without scores."""
    scores = np.asarray(scores, dtype=float)
    hits = np.asarray(hits, dtype=float)
    if scores.size == 0:
        return None
    which = np.minimum((scores * bins).astype(int), bins - 1)
    ece = 0.0
    for b in np.unique(which):
        inside = which == b
        ece += inside.sum() / scores.size * abs(hits[inside].mean() - scores[inside].mean())
    return float(ece)


@dataclass
class Calibration:
    """Per-class temperatures and biases (class name -> value) and the pooled ones for other
    classes; the identity when both maps are empty, ``default`` is 1 and ``default_bias`` 0."""

    temperatures: dict[str, float] = field(default_factory=dict)
    default: float = 1.0
    biases: dict[str, float] = field(default_factory=dict)
    default_bias: float = 0.0

    def temperature(self, category: str) -> float:
        return self.temperatures.get(category, self.default)

    def bias(self, category: str) -> float:
        return self.biases.get(category, self.default_bias)

    def score(self, score: float, category: str) -> float:
        return float(scale(score, self.temperature(category), self.bias(category)))

    def raw_floor(self, calibrated: float) -> float:
        """The lowest raw score that any class maps to ``calibrated`` or above, so a model
        asked for calibrated scores >= x can drop raw scores below this before calibrating."""
        if not 0.0 < calibrated < 1.0:
            return calibrated
        names = set(self.temperatures) | set(self.biases)
        maps = [(self.temperature(n), self.bias(n)) for n in names]
        maps.append((self.default, self.default_bias))
        return float(min(expit((logit(calibrated) - b) * t) for t, b in maps))

    def to_dict(self) -> dict[str, Any]:
        return {"method": METHOD, "temperatures": dict(self.temperatures),
                "default": self.default, "biases": dict(self.biases),
                "default_bias": self.default_bias}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> Calibration:
        """The calibration of a stored record (an earlier run's temperatures alone included);
        the identity for None or a record whose fit was skipped."""
        if not data or data.get("method") not in METHODS:
            return cls()
        return cls({str(k): float(v) for k, v in (data.get("temperatures") or {}).items()},
                   float(data.get("default", 1.0)),
                   {str(k): float(v) for k, v in (data.get("biases") or {}).items()},
                   float(data.get("default_bias", 0.0)))


def _labelled(gt: GroundTruth, dets: Detections, iou: float, min_score: float
              ) -> tuple[np.ndarray, np.ndarray, list[Any]]:
    """(scores, 0/1 hits, category ids) of the detections scoring >= ``min_score``."""
    matching = match_detections(gt, dets, iou)
    keep = [i for i, (d, s) in enumerate(zip(matching.dets, matching.det_status))
            if s != IGNORED and d["score"] >= min_score]
    scores = np.array([matching.dets[i]["score"] for i in keep], dtype=float)
    hits = np.array([matching.det_status[i] == TP for i in keep], dtype=float)
    cats = [matching.dets[i]["category_id"] for i in keep]
    return scores, hits, cats


def _both_kinds(hits: np.ndarray) -> bool:
    return bool(hits.size) and 0 < hits.sum() < hits.size


def apply_to_detections(dets: Detections, calibration: Calibration, names: dict[Any, str]
                        ) -> Detections:
    """COCO results with calibrated scores (``names``: category id -> name)."""
    return [{**d, "score": calibration.score(d["score"], names[d["category_id"]])} for d in dets]


def calibrate(gt: GroundTruth | str, detections: Detections | str, iou: float = 0.5,
              min_score: float = DEFAULT_MIN_SCORE) -> tuple[Calibration, dict[str, Any]]:
    """Fit the calibration on validation ``detections`` (raw scores) and choose the
    validation-F1 threshold on the calibrated ones.

    Returns the :class:`Calibration` and the record to store: ``{"method", "temperatures",
    "default", "biases", "default_bias", "min_score", "n_detections", "per_class": {name:
    {"n", "hits", "temperature", "bias", "pooled"}}, "ece_before", "ece_after", "threshold":
    {"value", "method", "n_images", "n_gt"}}``; ``method`` is ``"none"`` with a ``reason`` when
    nothing could be fitted, and ``threshold.value`` is None when no detection matches a box.
    """
    gt = load_gt(gt)
    dets = load_detections(detections, gt)
    names = category_names(gt)
    scores, hits, cats = _labelled(gt, dets, iou, min_score)
    record: dict[str, Any] = {"min_score": min_score, "iou": iou, "n_detections": int(scores.size),
                              "n_hits": int(hits.sum())}
    if not _both_kinds(hits):
        calibration = Calibration()
        record.update(method="none", reason="the validation detections need at least one true "
                                            "and one false positive", temperatures={}, default=1.0,
                      biases={}, default_bias=0.0)
    else:
        pooled_t, pooled_b = fit_platt(scores, hits)
        per_class, temperatures, biases = {}, {}, {}
        cat_arr = np.array(cats, dtype=object)
        for cat_id, name in names.items():
            inside = cat_arr == cat_id
            n, class_hits = int(inside.sum()), hits[inside]
            own = n >= MIN_CLASS_DETECTIONS and _both_kinds(class_hits)
            if own:
                temperatures[name], biases[name] = fit_platt(scores[inside], class_hits)
            per_class[name] = {"n": n, "hits": int(class_hits.sum()),
                               "temperature": temperatures.get(name, pooled_t),
                               "bias": biases.get(name, pooled_b), "pooled": not own}
        calibration = Calibration(temperatures, pooled_t, biases, pooled_b)
        record.update(calibration.to_dict(), per_class=per_class)
    calibrated = np.array([calibration.score(s, names[c]) for s, c in zip(scores, cats)])
    record["ece_before"] = expected_calibration_error(scores, hits)
    record["ece_after"] = expected_calibration_error(calibrated, hits)
    threshold: dict[str, Any] = {"method": "validation-f1", "n_images": len(gt["images"]),
                                 "n_gt": sum(1 for a in gt["annotations"] if not a.get("iscrowd"))}
    try:
        threshold["value"] = choose_threshold(gt, apply_to_detections(dets, calibration, names),
                                              method="f1", iou=iou)
    except ValueError as exc:
        threshold.update(value=None, reason=str(exc))
    record["threshold"] = threshold
    return calibration, record


__all__ = ["Calibration", "calibrate", "fit_platt", "expected_calibration_error",
           "apply_to_detections", "scale"]
