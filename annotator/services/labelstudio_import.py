"""Label Studio interchange, inward: Label Studio JSON exports checked and applied to a video.

Design choices:
- Tasks come back to their frames by ``data.frame_index`` (or by file name); what SonoLabel put
  in ``data.sonolabel_regions[<region id>]`` (box id, propagated source, track ids) is applied
  to the region of that id.
- An import is a sync (:mod:`.label_sync`): a task's most recent annotation (latest
  ``updated_at``, else ``created_at``, else highest ``id``, else the last listed; cancelled
  ones skipped) is the truth for its frame, whether the user edited the exported annotation
  or made a second one. Its regions that carry a SonoLabel box id update that box (moved,
  re-classed, a pre-label accepted), the others are matched by IoU or created, and the
  manual boxes the task was exported with that are gone from it are deleted; the events name
  ``labelstudio`` as their source. An empty most recent annotation marks the frame
  reviewed-empty. Older annotations are checked for shape only.
- Percentages become pixels as floats, never rounded: a round trip leaves float noise far
  below the sync's tolerance, so untouched boxes and predictions come back unchanged.
- Label Studio's plain JSON export lists predictions by id only: they are skipped with one
  warning saying how to get them (a snapshot export with full predictions).
- Video tasks (``data.video``) are read by :mod:`.labelstudio_video_import`, each track
  back to per-frame boxes.
- Rotated boxes (a ``rotation`` or ``image_rotation`` that is not a finite whole
  turn: boxes here are axis-aligned), other region types, unknown labels, boxes outside the
  frame or of another frame size, task ids that are not integers, region ids that are neither
  texts nor integers, and colliding task or region ids are problems: nothing is imported.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ..models import BoxSource, User
from .input_checks import DB_INT_MAX, is_db_int, shown
from .label_import import (
    ImportedBox,
    ImportPlan,
    ImportReport,
    apply_plan,
    class_ids_by_name,
    fit_box,
    is_int,
    is_number,
    model_version_problem,
    video_frames,
)
from .labelstudio_shapes import from_percent, region_class, unsupported
from .labelstudio_video_import import counted, is_video_export, parse_video_tasks
from .workflow import Reopen

MATCHES = ("frame_index", "file_name")
PREDICTION_IDS = ("predictions are listed by id only: export a snapshot with full predictions "
                  "(serialization_options predictions.only_id=false)")


def parse_labelstudio(data: Any, video_id: int, match: str = "frame_index",
                      progress: bool = False) -> ImportPlan:
    """Check a Label Studio JSON export against the video's frames; problems go in the plan.
    ``progress``: a progress bar over the tasks on a terminal."""
    plan = ImportPlan(video_id, sync=True, event_source="labelstudio")
    if match not in MATCHES:
        plan.problem(f"match by frame_index or file_name, not {match!r}")
        return plan
    if is_video_export(data):
        if match != "frame_index":
            plan.problem("video tasks are matched by their data.frame_indexes; leave out --match")
            return plan
        return parse_video_tasks(data, video_id, recency, progress)
    frames = video_frames(video_id)
    if isinstance(data, dict) and "data" in data:
        data = [data]
    if not isinstance(data, list):
        plan.problem("not a Label Studio JSON export: expected a list of tasks")
        return plan
    classes = class_ids_by_name()
    task_ids: set[int] = set()
    task_of_frame: dict[int, str] = {}
    prediction_ids = 0
    for n, task in enumerate(counted(data, "tasks", progress)):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            plan.problem(f"task #{n}: not an object with a 'data' object")
            continue
        tid = task.get("id")
        where = f"task {shown(tid)}" if is_int(tid) else f"task #{n}"
        if tid is not None:
            if not is_int(tid):
                plan.problem(f"{where}: 'id' must be an integer, got {shown(tid)}")
                continue
            if tid in task_ids:
                plan.problem(f"task id {shown(tid)} is used twice")
                continue
            task_ids.add(tid)
        d = task["data"]
        other_video = d.get("video_id")
        if other_video is not None and not is_int(other_video):
            plan.problem(f"{where}: 'data.video_id' must be an integer, got {shown(other_video)}")
            continue
        if (other_video is not None and other_video != video_id) or (
                match == "file_name" and frames.of_other_video(d.get("image"))):
            plan.skipped_images += 1
            continue
        frame = frames.find(d.get("frame_index"), d.get("image"), match, where, plan,
                            "data.frame_index", "data.image")
        if frame is None:
            continue
        if frame.id in task_of_frame:
            plan.problem(f"{task_of_frame[frame.id]} and {where} both match frame {frame.frame_index}")
            continue
        task_of_frame[frame.id] = where
        plan.matched_frames.add(frame.id)
        meta = d.get("sonolabel_regions") if isinstance(d.get("sonolabel_regions"), dict) else {}
        annotations = task.get("annotations") or []
        predictions = task.get("predictions") or []
        if not isinstance(annotations, list) or not isinstance(predictions, list):
            plan.problem(f"{where}: 'annotations' and 'predictions' must be lists")
            continue
        answered: list[tuple[tuple, int, dict[str, Any]]] = []
        for k, ann in enumerate(annotations):
            if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
                plan.problem(f"{where}, annotation #{k}: needs a 'result' list")
                continue
            order = recency(ann, f"{where}, annotation #{k}", plan)
            if order is not None and not ann.get("was_cancelled"):
                answered.append((order, k, ann))
        if answered:
            _, k, ann = max(answered, key=lambda a: (a[0], a[1]))
            plan.truth_frames.add(frame.id)
            plan.sent[frame.id] = _sent_boxes(meta)
            if _regions(ann.get("result", []), frame, classes, meta, None,
                        f"{where}, annotation #{k}", plan) == 0:
                plan.empty_frames.add(frame.id)
        for k, pred in enumerate(predictions):
            if is_int(pred):
                prediction_ids += 1
                continue
            if not isinstance(pred, dict) or not isinstance(pred.get("result", []), list):
                plan.problem(f"{where}, prediction #{k}: needs a 'result' list")
                continue
            _regions(pred.get("result", []), frame, classes, meta, pred,
                     f"{where}, prediction #{k}", plan)
    if prediction_ids:
        plan.warnings.append(f"{prediction_ids} prediction(s) skipped: {PREDICTION_IDS}")
    return plan


def recency(ann: dict[str, Any], where: str, plan: ImportPlan) -> tuple | None:
    """How recent an annotation is, comparable between a task's annotations; None (with a
    problem) when a time or id has the wrong shape."""
    times = []
    for key in ("updated_at", "created_at"):
        value = ann.get(key)
        if value is None:
            times.append(None)
            continue
        try:
            when = datetime.fromisoformat(value) if isinstance(value, str) else None
        except ValueError:
            when = None
        if when is None:
            plan.problem(f"{where}: '{key}' must be an ISO 8601 time, got {shown(value)}")
            return None
        times.append(when if when.tzinfo else when.replace(tzinfo=timezone.utc))
    aid = ann.get("id")
    if aid is not None and not is_int(aid):
        plan.problem(f"{where}: 'id' must be an integer, got {shown(aid)}")
        return None
    when = times[0] or times[1]
    return (when is not None, when.timestamp() if when else 0.0, aid if aid is not None else -1)


def _sent_boxes(meta: dict[str, Any]) -> set[int]:
    """The manual boxes the task was exported with (deleted when its annotation lost them)."""
    return {r["box_id"] for r in meta.values() if isinstance(r, dict)
            and r.get("source") == BoxSource.manual.value and is_db_int(r.get("box_id"), 1)}


def _regions(results: list[Any], frame, classes: dict[str, int], meta: dict[str, Any],
             prediction: dict[str, Any] | None, where: str, plan: ImportPlan) -> int:
    """Add the regions of one annotation (``prediction`` None) or prediction; count them."""
    seen: set[str] = set()
    count = 0
    for k, item in enumerate(results):
        at = f"{where}, region #{k}"
        if not isinstance(item, dict):
            plan.problem(f"{at}: not an object")
            continue
        rid = item.get("id")
        if rid is not None:
            if isinstance(rid, bool) or not isinstance(rid, (str, int)):
                plan.problem(f"{at}: 'id' must be a text or an integer, got {shown(rid)}")
                continue
            at = f"{where}, region {shown(rid)}"
            if rid in seen:
                plan.problem(f"{where}: region id {shown(rid)} is used twice")
                continue
            seen.add(rid)
        if item.get("type") != "rectanglelabels":
            plan.problem(f"{at}: {unsupported(item.get('type'))}")
            continue
        value = item.get("value")
        edges = ("x", "y", "width", "height")
        if not isinstance(value, dict) or not all(is_number(value.get(k)) for k in edges):
            got = {k: value.get(k) for k in edges} if isinstance(value, dict) else value
            plan.problem(f"{at}: value needs finite numbers x, y, width and height, "
                         f"got {shown(got)}")
            continue
        turned = _turned(value.get("rotation"), item.get("image_rotation"))
        if turned:
            plan.problem(f"{at}: {turned}")
            continue
        class_id = region_class(value.get("rectanglelabels"), "rectanglelabels", classes, at, plan)
        if class_id is None:
            continue
        sizes = [(key, item.get(key), have) for key, have in
                 (("original_width", frame.width), ("original_height", frame.height))]
        wrong = [f"{key} {shown(got)}" for key, got, have in sizes
                 if got is not None and got != have]
        if wrong:
            plan.problem(f"{at}: {', '.join(wrong)} differs from frame {frame.frame_index}'s "
                         f"{frame.width}x{frame.height}")
            continue
        geometry = fit_box(*from_percent(value, frame.width, frame.height), frame, at, plan)
        if geometry is None:
            continue
        region = meta.get(str(rid)) if rid is not None else None
        region = region if isinstance(region, dict) else {}
        track_id = region.get("track_id")
        if track_id is not None and not is_db_int(track_id, 0):
            plan.problem(f"{at}: data.sonolabel_regions track_id must be an integer from 0 to "
                         f"{DB_INT_MAX}, got {shown(track_id)}")
            continue
        box_id = region.get("box_id")
        if box_id is not None and not is_db_int(box_id, 1):
            plan.problem(f"{at}: data.sonolabel_regions box_id must be an integer from 1 to "
                         f"{DB_INT_MAX}, got {shown(box_id)}")
            continue
        if prediction is None:
            source = (BoxSource.propagated if region.get("source") == BoxSource.propagated.value
                      else BoxSource.manual)
            score, version = None, None
        else:
            source = BoxSource.model
            score = item.get("score", prediction.get("score"))
            if score is not None and (not is_number(score) or not 0 <= score <= 1):
                plan.problem(f"{at}: score must be a number from 0 to 1, got {shown(score)}")
                continue
            version = prediction.get("model_version") or None
            if (problem := model_version_problem(version)) is not None:
                plan.problem(f"{at}: {problem}")
                continue
        plan.boxes.append(ImportedBox(frame.id, class_id, *geometry, source=source,
                                      score=None if score is None else float(score),
                                      model_version=version, track_id=track_id, box_id=box_id))
        count += 1
    return count


def _turned(rotation: Any, image_rotation: Any) -> str:
    """Why a region's ``value.rotation`` or ``image_rotation`` keeps it out (boxes here are
    axis-aligned on the unrotated frame), or "" when both are absent or whole turns."""
    for key, degrees, what in (
            ("rotation", rotation, "rotated boxes"),
            ("image_rotation", image_rotation, "boxes drawn on a rotated image")):
        if degrees is None:
            continue
        if not is_number(degrees):
            return f"'{key}' must be a finite number of degrees, got {shown(degrees)}"
        if min(degrees % 360, -degrees % 360) > 1e-6:
            return f"{what} ({degrees:g}°) cannot be imported; boxes here are axis-aligned"
    return ""


def import_labelstudio(data: Any, video_id: int, match: str = "frame_index",
                       status: str | None = None, dry_run: bool = False,
                       user: User | None = None, reopen: Reopen | None = None,
                       progress: bool = False) -> ImportReport:
    """Parse and apply a Label Studio JSON export; raises ``LabelImportRefused`` on problems."""
    return apply_plan(parse_labelstudio(data, video_id, match, progress), status=status,
                      dry_run=dry_run, user=user, reopen=reopen)
