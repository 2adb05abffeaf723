"""Per-scene sensitivity, the score threshold, and false-positive tracks per minute.

Design choices:

* Scenes (the paper's Table 2 unit). Each image goes to a scene by the first rule that
  applies: its ``scene_id`` (key ``"scene:<id>"``); else its ``video_id``, the video's
  images sorted by ``frame_index`` (image id when absent) and cut into chunks of
  ``scene_frames`` consecutive images, 5 by default as in the paper's 30 scenes x 5 frames
  (key ``"video:<video_id>#<chunk>"``); else the image alone (key ``"image:<id>"``).
  Keys depend only on the ground truth, so two reports on the same COCO file pair up.
* A box is a hit when a detection of its class with IoU >= 0.5 and score >= threshold takes
  it in the greedy one-to-one matching by score (:func:`detector.metrics.match_detections`).
* :func:`choose_threshold` pools all classes into one threshold. ``method="f1"`` (the
  default) takes the score that maximises F1 = 2TP / (2TP + FP + FN); ``method="recall"``
  takes the highest score at which recall reaches ``target_recall``.
* False positives per minute follow UltraDet (MICCAI 2023): the threshold is the highest
  score at which recall reaches ``recall`` (0.9) on the evaluated set, or the one giving the
  highest recall when 0.9 is never reached (the lowest score when nothing is ever found,
  so every detection counts). Unmatched detections at that threshold are linked between
  neighbouring evaluated frames of one video (same class, IoU >= 0.3, one-to-one, greedy by
  IoU) into tracks; a track is one false alarm a user would see. Neighbouring means next in
  ``frame_index`` order among the evaluated images, so the minutes (frames / fps / 60) assume
  the COCO file lists the video's frames at ``fps``; for a sparsely labelled video pass the
  rate of the labelled frames as ``fps``. Each class gets its own threshold; "overall" uses
  one threshold for all classes pooled.
* ``fps`` is, per image: the argument when given, else the image's ``fps`` field, else
  ``info.fps`` of the COCO file, else 30.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from detector.metrics import (FP, TP, Detections, GroundTruth, Matching, box_iou,
                              category_names, load_detections, load_gt, match_detections)

DEFAULT_FPS = 30.0


# --------------------------------------------------------------------------- scenes

def _frame_order(img: dict[str, Any]) -> tuple:
    index = img.get("frame_index")
    return (0, index, str(img["id"])) if isinstance(index, (int, float)) else (1, 0, str(img["id"]))


def assign_scenes(gt: GroundTruth, scene_frames: int = 5) -> dict[str, list]:
    """Scene key -> image ids (in frame order), by the rules in the module docstring."""
    if scene_frames < 1:
        raise ValueError("scene_frames must be >= 1")
    scenes: dict[str, list] = {}
    videos: dict[str, list[dict]] = {}
    for img in gt["images"]:
        if img.get("scene_id") is not None:
            scenes.setdefault(f"scene:{img['scene_id']}", []).append(img["id"])
        elif img.get("video_id") is not None:
            videos.setdefault(str(img["video_id"]), []).append(img)
        else:
            scenes[f"image:{img['id']}"] = [img["id"]]
    for video_id, imgs in videos.items():
        imgs.sort(key=_frame_order)
        for start in range(0, len(imgs), scene_frames):
            scenes[f"video:{video_id}#{start // scene_frames:03d}"] = [
                im["id"] for im in imgs[start:start + scene_frames]]
    return scenes


def _mean_sd(values: list[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    arr = np.asarray(values, dtype=float)
    return float(arr.mean()), (float(arr.std(ddof=1)) if arr.size > 1 else None)


def scene_sensitivity(gt: GroundTruth | str, detections: Detections | str, threshold: float,
                      iou: float = 0.5, scene_frames: int = 5,
                      matching: Matching | None = None) -> dict[str, Any]:
    """Per scene and class: ``hits``, ``boxes``, ``sensitivity`` (None without boxes).

    Returns ``{"threshold", "iou", "scene_frames", "classes": [names], "scenes": {key:
    {"image_ids", "per_class": {name: {"hits", "boxes", "sensitivity"}}}}, "summary": {name:
    {"n_scenes", "mean", "sd", "hits", "boxes", "pooled"}}}``; ``sd`` is the sample sd over
    scenes that have boxes of the class, ``pooled`` is all hits / all boxes. Passing
    ``matching`` (of ``detections`` against ``gt`` already checked by ``load_gt``) skips the
    checks and the matching.
    """
    if matching is None:
        gt = load_gt(gt)
        matching = match_detections(gt, load_detections(detections, gt), iou)
    names = category_names(gt)
    hits: dict[tuple, int] = {}
    boxes: dict[tuple, int] = {}
    for ann, score in zip(matching.gt_anns, matching.gt_hit_score):
        key = (ann["image_id"], ann["category_id"])
        boxes[key] = boxes.get(key, 0) + 1
        hits[key] = hits.get(key, 0) + int(score >= threshold)
    scenes_out: dict[str, Any] = {}
    per_class_values: dict[str, list[float]] = {name: [] for name in names.values()}
    totals = {name: [0, 0] for name in names.values()}
    for key, image_ids in assign_scenes(gt, scene_frames).items():
        per_class = {}
        for cat_id, name in names.items():
            h = sum(hits.get((i, cat_id), 0) for i in image_ids)
            b = sum(boxes.get((i, cat_id), 0) for i in image_ids)
            sens = h / b if b else None
            per_class[name] = {"hits": h, "boxes": b, "sensitivity": sens}
            if sens is not None:
                per_class_values[name].append(sens)
            totals[name][0] += h
            totals[name][1] += b
        scenes_out[key] = {"image_ids": list(image_ids), "per_class": per_class}
    summary = {}
    for name, values in per_class_values.items():
        mean, sd = _mean_sd(values)
        h, b = totals[name]
        summary[name] = {"n_scenes": len(values), "mean": mean, "sd": sd, "hits": h, "boxes": b,
                         "pooled": h / b if b else None}
    return {"threshold": float(threshold), "iou": iou, "scene_frames": scene_frames,
            "classes": list(names.values()), "scenes": scenes_out, "summary": summary}


# --------------------------------------------------------------------------- thresholds

def _cumulative(matching: Matching, category_ids: set | None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Scores (descending) and cumulative TP / FP counts at each tie-group end."""
    keep = [i for i, d in enumerate(matching.dets)
            if category_ids is None or d["category_id"] in category_ids]
    scores = np.array([matching.dets[i]["score"] for i in keep], dtype=float)
    status = matching.det_status[keep]
    cum_tp = np.cumsum(status == TP)
    cum_fp = np.cumsum(status == FP)
    # only the last detection of a group of equal scores is a reachable operating point
    last_of_tie = np.ones(len(scores), dtype=bool)
    if len(scores) > 1:
        last_of_tie[:-1] = scores[:-1] != scores[1:]
    return scores[last_of_tie], cum_tp[last_of_tie], cum_fp[last_of_tie], matching.n_gt(category_ids)


def threshold_for_recall(matching: Matching, target: float = 0.9,
                         category_ids: set | None = None) -> tuple[float | None, float | None]:
    """(threshold, recall there): the highest score at which recall >= ``target``.

    When ``target`` is never reached, the highest score giving the best recall; when no
    detection is ever a hit, the lowest score. (None, None) without boxes; (None, 0.0)
    without detections.
    """
    scores, cum_tp, _, n_gt = _cumulative(matching, category_ids)
    if n_gt == 0:
        return None, None
    if scores.size == 0:
        return None, 0.0
    recall = cum_tp / n_gt
    reached = np.nonzero(recall >= target - 1e-12)[0]
    if reached.size:
        k = int(reached[0])
    elif cum_tp[-1] == 0:
        k = len(scores) - 1
    else:
        k = int(np.argmax(cum_tp))  # first index of the maximum
    return float(scores[k]), float(recall[k])


def choose_threshold(gt: GroundTruth | str, detections: Detections | str, method: str = "f1",
                     target_recall: float = 0.9, iou: float = 0.5) -> float:
    """A score threshold chosen on (validation) data, one for all classes pooled.

    ``method="f1"``: the score maximising F1 (the highest such score on ties).
    ``method="recall"``: the highest score at which recall reaches ``target_recall`` (the
    one with the best recall when never reached). Raises ValueError when no detection
    matches any box, since then no threshold is better than another.
    """
    gt = load_gt(gt)
    matching = match_detections(gt, load_detections(detections, gt), iou)
    scores, cum_tp, cum_fp, n_gt = _cumulative(matching, None)
    if n_gt == 0 or scores.size == 0 or cum_tp[-1] == 0:
        raise ValueError("cannot choose a threshold: no detection matches a ground-truth box "
                         "in the validation set")
    if method == "f1":
        f1 = 2 * cum_tp / (2 * cum_tp + cum_fp + n_gt - cum_tp)
        return float(scores[int(np.argmax(f1))])
    if method == "recall":
        threshold, _ = threshold_for_recall(matching, target_recall)
        return float(threshold)
    raise ValueError(f"unknown threshold method {method!r} (f1 or recall)")


# --------------------------------------------------------------------------- FP tracks

def _image_fps(gt: GroundTruth, fps: float | None) -> dict[Any, float]:
    if fps is not None:
        if not fps > 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        return {img["id"]: float(fps) for img in gt["images"]}
    info_fps = gt.get("info", {}).get("fps")
    default = float(info_fps) if isinstance(info_fps, (int, float)) and info_fps > 0 else DEFAULT_FPS
    out = {}
    for img in gt["images"]:
        value = img.get("fps")
        out[img["id"]] = float(value) if isinstance(value, (int, float)) and value > 0 else default
    return out


def _video_sequences(gt: GroundTruth) -> list[list]:
    """Image ids of each video in frame order; an image without ``video_id`` is alone."""
    videos: dict[str, list[dict]] = {}
    singles = []
    for img in gt["images"]:
        if img.get("video_id") is None:
            singles.append([img["id"]])
        else:
            videos.setdefault(str(img["video_id"]), []).append(img)
    return [[im["id"] for im in sorted(imgs, key=_frame_order)] for imgs in videos.values()] + singles


def count_tracks(fp_by_image: dict[Any, list[dict]], sequences: list[list], link_iou: float = 0.3) -> int:
    """Number of tracks formed by linking detections of neighbouring frames.

    Links are one-to-one between frame k and k + 1, same class, IoU >= ``link_iou``, made
    greedily by descending IoU; tracks = detections - links.
    """
    n = sum(len(v) for v in fp_by_image.values())
    links = 0
    for seq in sequences:
        for prev_id, cur_id in zip(seq, seq[1:]):
            prev, cur = fp_by_image.get(prev_id, []), fp_by_image.get(cur_id, [])
            if not prev or not cur:
                continue
            ious = box_iou(np.array([d["bbox"] for d in prev]), np.array([d["bbox"] for d in cur]))
            same = np.array([[p["category_id"] == c["category_id"] for c in cur] for p in prev])
            ious = np.where(same, ious, -1.0)
            pairs = sorted(((ious[i, j], i, j) for i in range(len(prev)) for j in range(len(cur))
                            if ious[i, j] >= link_iou), reverse=True)
            used_p, used_c = set(), set()
            for _, i, j in pairs:
                if i not in used_p and j not in used_c:
                    used_p.add(i)
                    used_c.add(j)
                    links += 1
    return n - links


def fp_tracks_per_minute(gt: GroundTruth | str, detections: Detections | str,
                         fps: float | None = None, recall: float = 0.9, iou: float = 0.5,
                         link_iou: float = 0.3, matching: Matching | None = None) -> dict[str, Any]:
    """False-positive detections and tracks per minute of video at a target recall.

    Returns ``{"recall_target", "iou", "link_iou", "n_frames", "minutes", "fps",
    "overall": {...}, "per_class": {name: {...}}}``, each entry ``{"threshold", "recall",
    "fp_detections", "fp_tracks", "fp_detections_per_minute", "fp_tracks_per_minute"}``.
    A class without boxes has threshold/recall None and None counts (no operating point).
    ``fps`` is a single number or the per-image rule of the module docstring (then
    ``"fps"`` is the mean over images). ``matching`` as in :func:`scene_sensitivity`.
    """
    if matching is None:
        gt = load_gt(gt)
        matching = match_detections(gt, load_detections(detections, gt), iou)
    image_fps = _image_fps(gt, fps)
    minutes = sum(1.0 / f for f in image_fps.values()) / 60.0
    sequences = _video_sequences(gt)
    names = category_names(gt)

    def at_operating_point(category_ids: set | None) -> dict[str, Any]:
        threshold, rec = threshold_for_recall(matching, recall, category_ids)
        entry: dict[str, Any] = {"threshold": threshold, "recall": rec}
        if rec is None:
            entry.update(fp_detections=None, fp_tracks=None, fp_detections_per_minute=None,
                         fp_tracks_per_minute=None)
            return entry
        fp_by_image: dict[Any, list[dict]] = {}
        if threshold is not None:
            for det, status in zip(matching.dets, matching.det_status):
                if (status == FP and det["score"] >= threshold
                        and (category_ids is None or det["category_id"] in category_ids)):
                    fp_by_image.setdefault(det["image_id"], []).append(det)
        n_fp = sum(len(v) for v in fp_by_image.values())
        n_tracks = count_tracks(fp_by_image, sequences, link_iou)
        entry.update(fp_detections=n_fp, fp_tracks=n_tracks,
                     fp_detections_per_minute=n_fp / minutes if minutes else None,
                     fp_tracks_per_minute=n_tracks / minutes if minutes else None)
        return entry

    return {"recall_target": recall, "iou": iou, "link_iou": link_iou,
            "n_frames": len(gt["images"]), "minutes": minutes,
            "fps": (float(np.mean(list(image_fps.values()))) if image_fps else None),
            "overall": at_operating_point(None),
            "per_class": {name: at_operating_point({cat_id}) for cat_id, name in names.items()}}


__all__ = ["assign_scenes", "scene_sensitivity", "choose_threshold", "threshold_for_recall",
           "fp_tracks_per_minute", "count_tracks"]
