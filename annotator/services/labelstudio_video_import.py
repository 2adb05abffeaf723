"""Label Studio video tasks, inward: a video-tracking export turned back into per-frame boxes.

Design choices:
- Only video tasks SonoLabel exported can come back: ``data.frame_indexes`` maps Label
  Studio's frame n (from 1) to a stored frame, ``data.clip_width/height`` gives the size the
  percent coordinates refer to. A task of another video is skipped and counted.
- Each ``videorectangle`` region is one track. Its frames are what Label Studio shows: a
  keyframe's box on its frame; between an enabled keyframe and the next one, the box
  interpolated linearly (x, y, width, height, as Label Studio does); after an enabled last
  keyframe, that box to the clip's end; after a disabled keyframe, nothing until the next.
- Keyframes are the annotator's boxes: stored as manual boxes, except a keyframe that was a
  propagated box at export and was not moved (still a suggestion). Interpolated frames are
  propagated suggestions, to accept in the workspace: nothing unchecked becomes ground truth.
- A sync like image tasks (:mod:`.label_sync`): ``data.sonolabel_tracks[<region id>]`` names
  each keyframe's box and source and the track id; the task's most recent annotation is the
  truth for every frame of the clip, so a box the track no longer has there is deleted (manual
  or propagated, never a pre-label). A region Label Studio made gets a new track.
- Other shapes (polygons, keypoints, brushes, …) and a region without a ``sequence`` are
  refused, each with one line naming the task and region.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..models import BoxSource, Frame
from .dataset_versions import progress_bar
from .input_checks import is_db_int, shown
from .label_import import (
    ImportedBox,
    ImportPlan,
    VideoFrames,
    class_ids_by_name,
    fit_box,
    is_int,
    is_number,
    video_frames,
)
from .labelstudio_shapes import from_percent, region_class, unsupported
from .tracks import next_track_id

EDGES = ("x", "y", "width", "height")


@dataclass
class TrackBox(ImportedBox):
    """A box of a Label Studio track; ``interpolated``: Label Studio filled it in between
    keyframes, so it stays a suggestion (:func:`.label_sync.sync_frame`)."""

    interpolated: bool = False


def counted(items: list[Any], unit: str, progress: bool) -> Any:
    """``items`` one by one, counted by a progress bar on a terminal when ``progress``."""
    bar = progress_bar(len(items), unit, progress)
    try:
        for item in items:
            yield item
            bar.update()
    finally:
        bar.close()


def is_video_export(data: Any) -> bool:
    """Whether a Label Studio export holds video tasks (``data.video``, no ``data.image``)."""
    tasks = [data] if isinstance(data, dict) else data if isinstance(data, list) else []
    return any(isinstance(t, dict) and isinstance(t.get("data"), dict) and "video" in t["data"]
               and "image" not in t["data"] for t in tasks)


def parse_video_tasks(data: Any, video_id: int, recency: Any, progress: bool = False
                      ) -> ImportPlan:
    """Check Label Studio video tasks against the video's frames; problems go in the plan.
    ``recency``: how recent an annotation is (:func:`.labelstudio_import.recency`)."""
    plan = ImportPlan(video_id, sync=True, event_source="labelstudio")
    frames = video_frames(video_id)
    tasks = [data] if isinstance(data, dict) else data
    classes = class_ids_by_name()
    new_tracks: dict[int | None, int] = {}
    task_ids: set[int] = set()
    for n, task in enumerate(counted(tasks, "tasks", progress)):
        if not isinstance(task, dict) or not isinstance(task.get("data"), dict):
            plan.problem(f"task #{n}: not an object with a 'data' object")
            continue
        tid = task.get("id")
        where = f"task {shown(tid)}" if is_int(tid) else f"task #{n}"
        if tid is not None and (not is_int(tid) or tid in task_ids):
            plan.problem(f"{where}: 'id' must be an integer used once, got {shown(tid)}")
            continue
        task_ids.add(tid)
        d = task["data"]
        if "video" not in d:
            plan.problem(f"{where}: an image task in an export of video tasks; import them "
                         "separately")
            continue
        if d.get("video_id") is not None and d.get("video_id") != video_id:
            if not is_int(d.get("video_id")):
                plan.problem(f"{where}: 'data.video_id' must be an integer, got {shown(d['video_id'])}")
            else:
                plan.skipped_images += len(d.get("frame_indexes") or [])
            continue
        clip = _clip(d, frames, where, plan)
        if clip is None:
            continue
        plan.matched_frames.update(f.id for f in clip)
        if task.get("predictions"):
            plan.warnings.append(f"{where}: predictions on video tasks are not imported")
        answered = []
        for k, ann in enumerate(task.get("annotations") or []):
            if not isinstance(ann, dict) or not isinstance(ann.get("result", []), list):
                plan.problem(f"{where}, annotation #{k}: needs a 'result' list")
                continue
            order = recency(ann, f"{where}, annotation #{k}", plan)
            if order is not None and not ann.get("was_cancelled"):
                answered.append((order, k, ann))
        if not answered:
            continue
        _, k, ann = max(answered, key=lambda a: (a[0], a[1]))
        meta = d.get("sonolabel_tracks") if isinstance(d.get("sonolabel_tracks"), dict) else {}
        for region in meta.values():
            for number, held in (region.get("boxes") or {}).items() if isinstance(region, dict) else ():
                position = int(number) - 1 if str(number).isdigit() else -1
                if 0 <= position < len(clip) and _named(held) is not None:
                    plan.sent.setdefault(clip[position].id, set()).add(_named(held)[0])
        plan.truth_frames.update(f.id for f in clip)
        size = (d.get("clip_width"), d.get("clip_height"))
        scene_id = clip[0].scene_id
        if scene_id not in new_tracks:
            new_tracks[scene_id] = next_track_id(scene_id)
        _regions(ann.get("result") or [], clip, size, classes, meta, new_tracks, scene_id,
                 f"{where}, annotation #{k}", plan)
    return plan


def _clip(d: dict[str, Any], frames: VideoFrames, where: str, plan: ImportPlan
          ) -> list[Frame] | None:
    """The stored frames behind the task's clip frames, or None with a problem."""
    indexes = d.get("frame_indexes")
    if not isinstance(indexes, list) or not indexes or not all(is_int(i) for i in indexes):
        plan.problem(f"{where}: no 'data.frame_indexes' list: only video tasks exported by "
                     "SonoLabel (--video-tasks) can be imported, their frames are known")
        return None
    if any(b <= a for a, b in zip(indexes, indexes[1:])):
        plan.problem(f"{where}: 'data.frame_indexes' must increase")
        return None
    missing = [i for i in indexes if i not in frames.by_index]
    if missing:
        plan.problem(f"{where}: video {frames.video_id} has no stored frame {missing[0]}")
        return None
    clip = [frames.by_index[i] for i in indexes]
    size = (d.get("clip_width"), d.get("clip_height"))
    if not all(is_int(v) and v >= 1 for v in size):
        plan.problem(f"{where}: 'data.clip_width' and 'data.clip_height' must be positive "
                     f"integers, got {shown(list(size))}")
        return None
    return clip


def _named(held: Any) -> tuple[int, str] | None:
    """(box id, source) of a ``sonolabel_tracks`` entry, None when malformed."""
    if (isinstance(held, list) and len(held) == 2 and is_db_int(held[0], 1)
            and held[1] in (BoxSource.manual.value, BoxSource.propagated.value)):
        return held[0], held[1]
    return None


def _regions(results: list[Any], clip: list[Frame], size: tuple[int, int],
             classes: dict[str, int], meta: dict[str, Any], new_tracks: dict[int | None, int],
             scene_id: int | None, where: str, plan: ImportPlan) -> None:
    labels_of = {item.get("id"): item.get("value", {}).get("labels") for item in results
                 if isinstance(item, dict) and item.get("type") == "labels"
                 and isinstance(item.get("value"), dict)}
    seen: set[Any] = set()
    for k, item in enumerate(results):
        at = f"{where}, region #{k}"
        if not isinstance(item, dict):
            plan.problem(f"{at}: not an object")
            continue
        rid = item.get("id")
        if rid is not None:
            at = f"{where}, region {shown(rid)}"
        kind = item.get("type")
        if kind == "labels":
            continue
        if kind != "videorectangle":
            plan.problem(f"{at}: {unsupported(kind, video=True)}")
            continue
        if rid in seen or isinstance(rid, bool) or not isinstance(rid, (str, int, type(None))):
            plan.problem(f"{at}: region id must be a text or an integer used once")
            continue
        seen.add(rid)
        value = item.get("value")
        sequence = value.get("sequence") if isinstance(value, dict) else None
        if not isinstance(sequence, list) or not sequence:
            plan.problem(f"{at}: a video region needs a non-empty 'value.sequence' of keyframes")
            continue
        class_id = region_class(value.get("labels") or labels_of.get(rid), "value.labels", classes,
                                at, plan)
        if class_id is None:
            continue
        keyframes = _keyframes(sequence, len(clip), at, plan)
        if keyframes is None:
            continue
        region = meta.get(str(rid)) if isinstance(meta.get(str(rid)), dict) else {}
        track_id = region.get("track_id")
        if not is_db_int(track_id, 1):
            track_id = new_tracks[scene_id]
            new_tracks[scene_id] += 1
        boxes = region.get("boxes") if isinstance(region.get("boxes"), dict) else {}
        for number, geometry, keyframe in shown_boxes(keyframes, len(clip)):
            frame = clip[number - 1]
            padded = tuple(size) != (frame.width, frame.height)  # the clip's even-size padding
            fitted = fit_box(*from_percent(geometry, *size), frame, f"{at}, frame {number}", plan,
                             origin=(0, 0) if padded else None)
            if fitted is None:
                break
            held = _named(boxes.get(str(number)))
            propagated = held is not None and held[1] == BoxSource.propagated.value
            source = BoxSource.propagated if propagated or not keyframe else BoxSource.manual
            box_id = held[0] if held is not None and (keyframe or propagated) else None
            plan.boxes.append(TrackBox(frame.id, class_id, *fitted, source=source,
                                       track_id=track_id, box_id=box_id,
                                       interpolated=not keyframe))


def _keyframes(sequence: list[Any], n_frames: int, at: str, plan: ImportPlan
               ) -> list[dict[str, Any]] | None:
    """The region's keyframes, checked and sorted by frame; None with a problem."""
    out: dict[int, dict[str, Any]] = {}
    for j, kf in enumerate(sequence):
        here = f"{at}, keyframe #{j}"
        if not isinstance(kf, dict):
            plan.problem(f"{here}: not an object")
            return None
        frame = kf.get("frame")
        if not is_int(frame) or not 1 <= frame <= n_frames:
            plan.problem(f"{here}: 'frame' must be an integer from 1 to the clip's {n_frames} "
                         f"frames, got {shown(frame)}")
            return None
        if not all(is_number(kf.get(e)) for e in EDGES):
            plan.problem(f"{here}: needs finite numbers x, y, width and height, got "
                         f"{shown({e: kf.get(e) for e in EDGES})}")
            return None
        rotation = kf.get("rotation", 0)
        if not is_number(rotation) or min(rotation % 360, -rotation % 360) > 1e-6:
            plan.problem(f"{here}: rotated boxes ({shown(rotation)}°) cannot be imported; boxes "
                         "here are axis-aligned")
            return None
        enabled = kf.get("enabled", True)
        if not isinstance(enabled, bool):
            plan.problem(f"{here}: 'enabled' must be true or false, got {shown(enabled)}")
            return None
        if frame in out:
            plan.problem(f"{here}: two keyframes on frame {frame}")
            return None
        out[frame] = {"frame": frame, "enabled": enabled, **{e: float(kf[e]) for e in EDGES}}
    return [out[f] for f in sorted(out)]


def shown_boxes(keyframes: list[dict[str, Any]], n_frames: int
                ) -> list[tuple[int, dict[str, float], bool]]:
    """What Label Studio shows of a track on frames 1..n_frames: (frame, box in percent,
    whether it is a keyframe), keyframes as they are and the frames after an enabled keyframe
    interpolated linearly to the next keyframe (or held to the clip's end after the last)."""
    out = []
    for i, kf in enumerate(keyframes):
        out.append((kf["frame"], {e: kf[e] for e in EDGES}, True))
        if not kf["enabled"]:
            continue
        nxt = keyframes[i + 1] if i + 1 < len(keyframes) else None
        end = nxt["frame"] if nxt is not None else n_frames + 1
        for f in range(kf["frame"] + 1, end):
            r = 0.0 if nxt is None else (f - kf["frame"]) / (nxt["frame"] - kf["frame"])
            out.append((f, {e: kf[e] + (nxt[e] - kf[e]) * r if nxt else kf[e] for e in EDGES},
                        False))
    return out
