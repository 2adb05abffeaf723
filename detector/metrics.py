"""COCO AP and the one-to-one box matching that the other detector metrics build on.

Design choices:

* COCO AP comes from ``faster-coco-eval``: it reproduces pycocotools' ``COCOeval`` numbers
  (checked in the tests on hand-made and random cases, to 1e-12) several times faster.
  ``backend="pycocotools"`` runs the reference implementation instead.
* Ground truth is always cleaned on a deep copy (:func:`load_gt`): an ``info`` key is added,
  ``iscrowd``/``area`` get defaults, and annotation ids are renumbered from 1 when any is
  0, missing or repeated, because pycocotools never matches an annotation with id 0.
* Detections are checked before evaluation; one whose ``image_id`` or ``category_id`` is not
  in the ground truth is an error (pycocotools would assert or silently drop it).
* An empty detection list scores AP 0 for every class that has boxes, without calling
  ``loadRes`` (which raises on empty lists in pycocotools).
* :func:`match_detections` matches like COCOeval at one IoU: detections of one image and
  class in descending score order, each taking the unmatched box of highest IoU >= the
  threshold. Because the order is by score, the matches of the detections scoring >= t are
  the same for every threshold t, so one matching answers every threshold.
  ``iscrowd`` boxes are not counted as boxes; a detection that matches only a crowd box is
  neither a hit nor a false positive.
"""
from __future__ import annotations

import contextlib
import copy
import io
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

GroundTruth = dict[str, Any]
Detections = list[dict[str, Any]]


# --------------------------------------------------------------------------- loading

def _read_json(path: str | Path, what: str) -> Any:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path} does not exist")
    try:
        with path.open(encoding="utf-8") as fh:
            return json.load(fh)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{what} {path} is not valid JSON: {exc}") from None


def _finite(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)


def _check_box(box: Any, where: str) -> None:
    if not (isinstance(box, (list, tuple)) and len(box) == 4 and all(_finite(v) for v in box)):
        raise ValueError(f"{where}: bbox must be [x, y, w, h] of 4 numbers, got {box!r}")
    if box[2] < 0 or box[3] < 0:
        raise ValueError(f"{where}: bbox width and height must be >= 0, got {box!r}")


def load_gt(gt: GroundTruth | str | Path) -> GroundTruth:
    """A checked deep copy of a COCO ground truth (a dict or the path of a JSON file).

    Adds ``info`` when absent, ``iscrowd = 0`` and ``area = w * h`` when missing, and
    renumbers annotation ids 1..n when any id is 0, missing or repeated. Raises ValueError
    with a readable message on malformed input.
    """
    if isinstance(gt, (str, Path)):
        gt = _read_json(gt, "ground truth")
    if not isinstance(gt, dict):
        raise ValueError("ground truth must be a COCO object with images, annotations, categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(gt.get(key), list):
            raise ValueError(f"ground truth has no '{key}' list")
    gt = copy.deepcopy(gt)
    if not isinstance(gt.get("info"), dict):
        gt["info"] = {}
    image_ids: set = set()
    for i, img in enumerate(gt["images"]):
        if not isinstance(img, dict) or "id" not in img:
            raise ValueError(f"ground truth image {i} has no id")
        if img["id"] in image_ids:
            raise ValueError(f"ground truth image id {img['id']!r} is repeated")
        image_ids.add(img["id"])
    cat_ids: set = set()
    for i, cat in enumerate(gt["categories"]):
        if not isinstance(cat, dict) or "id" not in cat:
            raise ValueError(f"ground truth category {i} has no id")
        cat.setdefault("name", str(cat["id"]))
        cat_ids.add(cat["id"])
    ann_ids = []
    for i, ann in enumerate(gt["annotations"]):
        where = f"ground truth annotation {i}"
        if not isinstance(ann, dict):
            raise ValueError(f"{where} is not an object")
        if ann.get("image_id") not in image_ids:
            raise ValueError(f"{where}: image_id {ann.get('image_id')!r} is not in images")
        if ann.get("category_id") not in cat_ids:
            raise ValueError(f"{where}: category_id {ann.get('category_id')!r} is not in categories")
        _check_box(ann.get("bbox"), where)
        ann.setdefault("iscrowd", 0)
        ann.setdefault("area", float(ann["bbox"][2] * ann["bbox"][3]))
        ann_ids.append(ann.get("id"))
    if any(not isinstance(a, int) or a <= 0 for a in ann_ids) or len(set(ann_ids)) != len(ann_ids):
        # pycocotools marks "unmatched" with id 0, so an annotation with id 0 never matches
        for new_id, ann in enumerate(gt["annotations"], start=1):
            ann["id"] = new_id
    return gt


def load_detections(detections: Detections | str | Path, gt: GroundTruth) -> Detections:
    """A checked copy of COCO results; every image and category id must be in ``gt``.

    Accepts a list, a path to a JSON list, or an object with a ``detections`` /
    ``annotations`` list (as some tools write).
    """
    if isinstance(detections, (str, Path)):
        detections = _read_json(detections, "detections")
    if isinstance(detections, dict):
        detections = detections.get("detections", detections.get("annotations"))
    if not isinstance(detections, list):
        raise ValueError("detections must be a list of COCO results")
    image_ids = {img["id"] for img in gt["images"]}
    cat_ids = {cat["id"] for cat in gt["categories"]}
    out = []
    for i, det in enumerate(detections):
        where = f"detection {i}"
        if not isinstance(det, dict):
            raise ValueError(f"{where} is not an object")
        if det.get("image_id") not in image_ids:
            raise ValueError(f"{where}: image_id {det.get('image_id')!r} is not in the ground truth "
                             f"({len(image_ids)} images); were the detections made on another COCO file?")
        if det.get("category_id") not in cat_ids:
            raise ValueError(f"{where}: category_id {det.get('category_id')!r} is not a ground-truth "
                             f"category {sorted(cat_ids)}")
        _check_box(det.get("bbox"), where)
        if not _finite(det.get("score")):
            raise ValueError(f"{where}: score must be a number, got {det.get('score')!r}")
        out.append({"image_id": det["image_id"], "category_id": det["category_id"],
                    "bbox": [float(v) for v in det["bbox"]], "score": float(det["score"])})
    return out


def category_names(gt: GroundTruth) -> dict[Any, str]:
    """Category id -> name, in the order of ``gt['categories']``."""
    return {cat["id"]: str(cat["name"]) for cat in gt["categories"]}


# --------------------------------------------------------------------------- COCO AP

def _none_if_negative(x: float) -> float | None:
    # COCOeval writes -1 where a class has no ground truth
    return None if x < 0 else float(x)


def _class_ap(precision: np.ndarray) -> float | None:
    valid = precision[precision > -1]
    return float(valid.mean()) if valid.size else None


def coco_metrics(gt: GroundTruth | str | Path, detections: Detections,
                 backend: str = "faster_coco_eval") -> dict[str, Any]:
    """COCO box AP (IoU .50:.95), AP50 and AP75, overall and per class, plus PR curves.

    Returns ``{"overall": {"AP", "AP50", "AP75"}, "per_class": {name: {...}},
    "pr_curves": {name: {"recall": [101], "precision": [101]}} (IoU 0.5, all areas,
    100 detections per image), "n_images", "n_gt", "n_detections", "backend"}``. A value is
    None where a class (or the whole set) has no ground-truth boxes. ``backend`` is
    ``"faster_coco_eval"`` (default) or ``"pycocotools"``; both give the same numbers.
    """
    gt = load_gt(gt)
    return coco_metrics_checked(gt, load_detections(detections, gt), backend)


def coco_metrics_checked(gt: GroundTruth, dets: Detections,
                         backend: str = "faster_coco_eval") -> dict[str, Any]:
    """:func:`coco_metrics` on output of :func:`load_gt` and :func:`load_detections`."""
    names = category_names(gt)
    n_gt = sum(1 for a in gt["annotations"] if not a.get("iscrowd"))
    gt_cats = {a["category_id"] for a in gt["annotations"] if not a.get("iscrowd")}
    recall_points = np.linspace(0.0, 1.0, 101)
    result: dict[str, Any] = {"n_images": len(gt["images"]), "n_gt": n_gt,
                              "n_detections": len(dets), "backend": backend}
    if not dets:
        # COCOeval's answer without running it (pycocotools' loadRes raises on an empty list)
        zero = {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
        result["overall"] = dict(zero) if n_gt else {"AP": None, "AP50": None, "AP75": None}
        result["per_class"] = {names[c]: dict(zero) if c in gt_cats else
                               {"AP": None, "AP50": None, "AP75": None} for c in names}
        result["pr_curves"] = {names[c]: {"recall": recall_points.tolist(),
                                          "precision": [0.0] * 101 if c in gt_cats else None}
                               for c in names}
        return result

    if backend == "faster_coco_eval":
        from faster_coco_eval import COCO, COCOeval_faster as COCOeval
    elif backend == "pycocotools":
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    else:
        raise ValueError(f"unknown backend {backend!r}")
    with contextlib.redirect_stdout(io.StringIO()):  # both libraries print progress
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        # loadRes adds keys to its input
        coco_dt = coco_gt.loadRes([dict(d, bbox=list(d["bbox"])) for d in dets])
        ev = COCOeval(coco_gt, coco_dt, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = np.asarray(ev.stats, dtype=float)
    result["overall"] = {"AP": _none_if_negative(stats[0]), "AP50": _none_if_negative(stats[1]),
                         "AP75": _none_if_negative(stats[2])}
    # precision[T, R, K, A, M]: IoU thresholds, recall points, classes, areas, maxDets
    precision = np.asarray(ev.eval["precision"], dtype=float)
    iou_thrs = np.asarray(ev.params.iouThrs)
    t50 = int(np.argmin(np.abs(iou_thrs - 0.5)))
    t75 = int(np.argmin(np.abs(iou_thrs - 0.75)))
    area_all = list(ev.params.areaRngLbl).index("all")
    last_max = len(ev.params.maxDets) - 1
    per_class: dict[str, Any] = {}
    pr_curves: dict[str, Any] = {}
    for k, cat_id in enumerate(ev.params.catIds):
        p = precision[:, :, k, area_all, last_max]
        per_class[names[cat_id]] = {"AP": _class_ap(p), "AP50": _class_ap(p[t50]),
                                    "AP75": _class_ap(p[t75])}
        curve = p[t50]
        pr_curves[names[cat_id]] = {
            "recall": np.asarray(ev.params.recThrs, dtype=float).tolist(),
            "precision": None if (curve < 0).all() else np.clip(curve, 0.0, None).tolist()}
    result["per_class"] = per_class
    result["pr_curves"] = pr_curves
    return result


# --------------------------------------------------------------------------- matching

def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix of [x, y, w, h] boxes, shapes (n, 4) x (m, 4) -> (n, m), as pycocotools."""
    a = np.asarray(a, dtype=float).reshape(-1, 4)
    b = np.asarray(b, dtype=float).reshape(-1, 4)
    ax2, ay2 = a[:, 0] + a[:, 2], a[:, 1] + a[:, 3]
    bx2, by2 = b[:, 0] + b[:, 2], b[:, 1] + b[:, 3]
    iw = np.minimum(ax2[:, None], bx2[None]) - np.maximum(a[:, 0][:, None], b[:, 0][None])
    ih = np.minimum(ay2[:, None], by2[None]) - np.maximum(a[:, 1][:, None], b[:, 1][None])
    inter = np.clip(iw, 0, None) * np.clip(ih, 0, None)
    union = (a[:, 2] * a[:, 3])[:, None] + (b[:, 2] * b[:, 3])[None] - inter
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, inter / union, 0.0)


TP, FP, IGNORED = 1, 0, -1


@dataclass
class Matching:
    """Greedy one-to-one matching of detections to boxes at one IoU threshold.

    ``dets`` are sorted by descending score; ``det_status[i]`` is TP, FP or IGNORED (matched
    only a crowd box). ``gt_hit_score[j]`` is the score of the detection that took
    ground-truth annotation ``gt_anns[j]``, or -inf: the box is a hit at threshold t exactly
    when ``gt_hit_score[j] >= t``. Crowd boxes are left out of ``gt_anns``.
    """

    dets: Detections
    det_status: np.ndarray
    gt_anns: list[dict[str, Any]]
    gt_hit_score: np.ndarray
    iou: float

    def n_gt(self, category_ids: set | None = None) -> int:
        return sum(1 for a in self.gt_anns if category_ids is None or a["category_id"] in category_ids)


def match_detections(gt: GroundTruth, detections: Detections, iou: float = 0.5) -> Matching:
    """Match checked detections (see :func:`load_detections`) to the boxes of ``gt``."""
    order = sorted(range(len(detections)), key=lambda i: -detections[i]["score"])  # stable
    dets = [detections[i] for i in order]
    gt_anns = [a for a in gt["annotations"] if not a.get("iscrowd")]
    by_key: dict[tuple, list[int]] = {}
    for j, ann in enumerate(gt_anns):
        by_key.setdefault((ann["image_id"], ann["category_id"]), []).append(j)
    crowd: dict[tuple, list[list[float]]] = {}
    for ann in gt["annotations"]:
        if ann.get("iscrowd"):
            crowd.setdefault((ann["image_id"], ann["category_id"]), []).append(ann["bbox"])
    det_groups: dict[tuple, list[int]] = {}
    for i, det in enumerate(dets):
        det_groups.setdefault((det["image_id"], det["category_id"]), []).append(i)

    status = np.full(len(dets), FP, dtype=int)
    hit_score = np.full(len(gt_anns), -np.inf)
    for key, det_idx in det_groups.items():
        gt_idx = by_key.get(key, [])
        det_boxes = np.array([dets[i]["bbox"] for i in det_idx])
        ious = box_iou(det_boxes, np.array([gt_anns[j]["bbox"] for j in gt_idx])) if gt_idx else \
            np.zeros((len(det_idx), 0))
        crowd_iou = None
        if key in crowd:
            # a crowd region: overlap measured as in COCOeval, intersection over detection area
            cb = np.asarray(crowd[key], dtype=float)
            x1 = np.maximum(det_boxes[:, None, 0], cb[None, :, 0])
            y1 = np.maximum(det_boxes[:, None, 1], cb[None, :, 1])
            x2 = np.minimum(det_boxes[:, None, 0] + det_boxes[:, None, 2], cb[None, :, 0] + cb[None, :, 2])
            y2 = np.minimum(det_boxes[:, None, 1] + det_boxes[:, None, 3], cb[None, :, 1] + cb[None, :, 3])
            inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
            area = (det_boxes[:, 2] * det_boxes[:, 3])[:, None]
            crowd_iou = np.where(area > 0, inter / np.where(area > 0, area, 1), 0.0)
        taken = np.zeros(len(gt_idx), dtype=bool)
        for r, i in enumerate(det_idx):
            row = np.where(taken, -1.0, ious[r]) if gt_idx else ious[r]
            if row.size and row.max() >= iou:
                c = int(row.argmax())
                taken[c] = True
                status[i] = TP
                hit_score[gt_idx[c]] = dets[i]["score"]
            elif crowd_iou is not None and crowd_iou[r].max() >= iou:
                status[i] = IGNORED
    return Matching(dets=dets, det_status=status, gt_anns=gt_anns, gt_hit_score=hit_score, iou=iou)
