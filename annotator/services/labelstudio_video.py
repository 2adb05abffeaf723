"""Label Studio video tasks, outward: one task per scene, its frames as a clip, its tracks as
``videorectangle`` regions with keyframe sequences.

Design choices:
- A task per scene (per video for frames outside every scene): ``data.video`` is the scene's
  clip (:mod:`.labelstudio_clips`), reached like images are, through a signed link or a
  local-files folder; ``data.frame_indexes`` lists the stored frame behind each clip frame
  (Label Studio's frame n is ``frame_indexes[n - 1]``), and ``data.clip_width/height`` the
  clip's size, which the percent coordinates refer to.
- One region per track (``t<track id>``; a box without a track is a region ``b<box id>`` of its
  own; a track of two classes gives one region per class, ``t<id>c<class id>``). Every box of
  the track is a keyframe, so Label Studio shows exactly the stored boxes, and its linear
  interpolation has nothing to fill: a keyframe that ends a run of frames (the track ends or
  has a gap) is ``enabled: false``, which hides the region until its next keyframe. Manual
  and propagated boxes are exported; pending model pre-labels stay here (Label Studio has no
  per-frame score for a track).
- Which box each keyframe was, and its source, sits in ``data.sonolabel_tracks[<region id>]``
  (``track_id``, ``boxes: {<frame n>: [box id, source]}``), so an import is a sync
  (:mod:`.labelstudio_video_import`): an untouched task changes nothing, a propagated box
  stays a suggestion unless it was moved there.
- One frame rate for the export (the most common among its videos): Label Studio's config
  holds one ``framerate``, and every clip is encoded at it, so frame numbers and times agree.
"""
from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlparse

import sqlalchemy as sa
from flask import current_app

from ..db import db
from ..models import BoxSource, DatasetVersion, Scene, Video
from .coco_export import build_coco, frames_of_scenes, frames_of_videos
from .dataset_versions import link_or_copy, progress_bar
from .input_checks import is_db_int
from .labelstudio_clips import ClipFrame, clip_size, ensure_clip, fps_fraction, range_frames
from .labelstudio_export import LabelStudioRefused, class_labels
from .labelstudio_shapes import to_percent
from .labelstudio_images import Media, check_base_url
from .signed_urls import DEFAULT_DAYS, clip_token

VIDEO_FROM = "box"
VIDEO_TO = "video"
LABELS_NAME = "videoLabels"


def video_labeling_config(fps: tuple[int, int], classes: list[tuple[str, str]] | None = None
                          ) -> str:
    """The config of video tasks: the clip at its frame rate, VideoRectangle, one Label per class."""
    labels = class_labels(classes)
    return (f'<View>\n  <Labels name="{LABELS_NAME}" toName="{VIDEO_TO}">\n{labels}\n  </Labels>\n'
            f'  <Video name="{VIDEO_TO}" value="$video" framerate="{framerate_text(fps)}"/>\n'
            f'  <VideoRectangle name="{VIDEO_FROM}" toName="{VIDEO_TO}"/>\n</View>\n')


def framerate_text(fps: tuple[int, int]) -> str:
    return f"{fps[0] / fps[1]:.8g}"


def export_fps(video_ids: set[int]) -> tuple[int, int]:
    """The one frame rate of an export: the most common of its videos' rates."""
    rates = Counter(fps_fraction(fps) for fps in db.session.scalars(
        sa.select(Video.fps).where(Video.id.in_(sorted(video_ids)))))
    return rates.most_common(1)[0][0] if rates else fps_fraction(None)


def coco_to_video_tasks(doc: dict[str, Any], fps: tuple[int, int], split: str | None = None
                        ) -> list[dict[str, Any]]:
    """One video task per scene of a COCO document written by ``coco_export``."""
    names = {c["id"]: c["name"] for c in doc["categories"]}
    by_image: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for ann in doc["annotations"]:
        if ann.get("source", "manual") != BoxSource.model.value:
            by_image[ann["image_id"]].append(ann)
    groups: dict[tuple[int, int | None], list[dict[str, Any]]] = defaultdict(list)
    for img in doc["images"]:
        groups[(img["video_id"], img.get("scene_id"))].append(img)
    rate = fps[0] / fps[1]
    tasks = []
    for images in groups.values():
        images.sort(key=lambda i: i["frame_index"])
    for (video_id, scene_id), images in sorted(
            groups.items(), key=lambda g: (g[0][0], g[1][0]["frame_index"])):
        W, H = clip_size(images[0]["width"], images[0]["height"])
        n_frames = len(images)
        # region id -> clip frame number -> the annotation (one box per track and frame)
        regions: dict[str, dict[int, dict[str, Any]]] = defaultdict(dict)
        for n, img in enumerate(images, start=1):
            for ann in by_image.get(img["id"], ()):
                rid = _region_id(ann)
                held = regions[rid].get(n)
                if held is None or (held.get("source") != "manual" and ann.get("source") == "manual"):
                    regions[rid][n] = ann
        track_classes: dict[Any, set[int]] = defaultdict(set)
        for rid, frames in regions.items():
            for ann in frames.values():
                track_classes[ann.get("track_id", rid)].add(ann["category_id"])
        result, meta = [], {}
        for rid, frames in sorted(regions.items(), key=lambda r: min(r[1])):
            by_class: dict[int, dict[int, dict[str, Any]]] = defaultdict(dict)
            for n, ann in frames.items():
                by_class[ann["category_id"]][n] = ann
            for class_id, keyed in sorted(by_class.items()):
                region_id = rid if len(by_class) == 1 else f"{rid}c{class_id}"
                result.append(_region(region_id, keyed, names[class_id], W, H, n_frames, rate))
                first = keyed[min(keyed)]
                meta[region_id] = {"track_id": first.get("track_id"), "boxes": {
                    str(n): [a["box_id"], a.get("source", "manual")] for n, a in sorted(keyed.items())}}
        data: dict[str, Any] = {
            "video": "", "video_id": video_id, "scene_id": scene_id,
            "patient_code": images[0].get("patient_code"),
            "frame_indexes": [i["frame_index"] for i in images], "framerate": framerate_text(fps),
            "clip_width": W, "clip_height": H, "sonolabel_tracks": meta}
        if split is not None:
            data["split"] = split
        task: dict[str, Any] = {"data": data}
        if result:
            task["annotations"] = [{"result": result, "ground_truth": False}]
        tasks.append(task)
    return tasks


def _region_id(ann: dict[str, Any]) -> str:
    return f"t{ann['track_id']}" if ann.get("track_id") is not None else f"b{ann['box_id']}"


def _region(rid: str, keyed: dict[int, dict[str, Any]], label: str, W: int, H: int,
            n_frames: int, rate: float) -> dict[str, Any]:
    sequence = []
    for n in sorted(keyed):
        x, y, w, h = keyed[n]["bbox"]
        # The last box of a run hides the region until its next keyframe (or for good).
        ends_run = n + 1 not in keyed and n < n_frames
        sequence.append({"frame": n, "enabled": not ends_run, "rotation": 0,
                         **to_percent(x, y, w, h, W, H), "time": n / rate})
    return {"id": rid, "type": "videorectangle", "from_name": VIDEO_FROM, "to_name": VIDEO_TO,
            "origin": "manual",
            "value": {"framesCount": n_frames, "duration": n_frames / rate,
                      "sequence": sequence, "labels": [label]}}


def version_video_tasks(version: DatasetVersion) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    from .dataset_versions import load_parts

    parts = load_parts(version)
    fps = export_fps({i["video_id"] for doc in parts.values() for i in doc["images"]})
    tasks: list[dict[str, Any]] = []
    for part, doc in parts.items():
        tasks.extend(coco_to_video_tasks(doc, fps, split=part))
    return tasks, fps


def scene_video_tasks(scene_id: int) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """The scene as it is now, as one video task; and the frame rate."""
    if not is_db_int(scene_id, 1) or (scene := db.session.get(Scene, scene_id)) is None:
        raise LabelStudioRefused(f"No scene {scene_id}.", status=404)
    fps = export_fps({scene.video_id})
    doc = build_coco({"scene": frames_of_scenes([scene_id])})["scene"]
    return coco_to_video_tasks(doc, fps), fps


def video_video_tasks(video_id: int) -> tuple[list[dict[str, Any]], tuple[int, int]]:
    """Every scene of a video as it is now, one video task each; and the frame rate."""
    if not is_db_int(video_id, 1) or db.session.get(Video, video_id) is None:
        raise LabelStudioRefused(f"No video {video_id}.", status=404)
    fps = export_fps({video_id})
    doc = build_coco({"video": frames_of_videos([video_id]).get(video_id, [])})["video"]
    return coco_to_video_tasks(doc, fps), fps


def _clip_frames(task: dict[str, Any]) -> list[ClipFrame]:
    d = task["data"]
    indexes = d["frame_indexes"]
    frames = range_frames(d["video_id"], indexes[0], indexes[-1])
    if [f[0] for f in frames] != indexes:
        raise LabelStudioRefused(f"Frames {indexes[0]}-{indexes[-1]} of video {d['video_id']} are "
                                 "no longer all stored; the clip cannot be made.", status=409)
    return frames


def make_clips(tasks: list[dict[str, Any]], fps: tuple[int, int], progress: bool = False
               ) -> list[Path]:
    """Encode (or find cached) every task's clip; their paths, in task order."""
    bar = progress_bar(len(tasks), "clips", progress)
    paths = []
    try:
        for task in tasks:
            paths.append(ensure_clip(_clip_frames(task), fps))
            bar.update()
    finally:
        bar.close()
    return paths


def use_signed_clip_urls(tasks: list[dict[str, Any]], fps: tuple[int, int], base_url: str,
                         days: float = DEFAULT_DAYS, progress: bool = False) -> None:
    """Point every task's ``data.video`` at a signed clip link under ``base_url``; the clips
    are encoded now, so the first annotator does not wait for them."""
    parsed = urlparse(check_base_url(base_url))
    adapter = current_app.url_map.bind(parsed.netloc, script_name=parsed.path or "/",
                                       url_scheme=parsed.scheme)
    make_clips(tasks, fps, progress)
    for task in tasks:
        d = task["data"]
        token = clip_token(d["video_id"], d["frame_indexes"][0], d["frame_indexes"][-1], fps, days)
        d["video"] = adapter.build("videos.signed_scene_clip", {"clip": token},
                                   force_external=True)


def add_local_clips(fps: tuple[int, int]) -> Media:
    """What puts video tasks' clips in a local-files folder (``labelstudio_images.Media``)."""
    return lambda tasks, folder, under_root, progress: _add_local_clips(
        tasks, fps, folder, under_root, progress)


def _add_local_clips(tasks: list[dict[str, Any]], fps: tuple[int, int], folder: Path,
                     under_root: str, progress: bool = False) -> None:
    """Put every task's clip in ``folder/videos`` and point ``data.video`` at it through Label
    Studio's local-files URL (``under_root``: the folder's path under the document root)."""
    (folder / "videos").mkdir(parents=True, exist_ok=True)
    for task, path in zip(tasks, make_clips(tasks, fps, progress)):
        d = task["data"]
        name = f"v{d['video_id']:06d}_f{d['frame_indexes'][0]:06d}-{d['frame_indexes'][-1]:06d}.mp4"
        link_or_copy(path, folder / "videos" / name)
        d["video"] = "/data/local-files/?d=" + quote(f"{under_root}videos/{name}")
