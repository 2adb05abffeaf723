"""Import COCO files of labels (this tool's exports, or another tool's) into an imported video.

The file is checked against the video's frames into an :class:`~.label_import.ImportPlan`,
which :func:`~.label_import.apply_plan` writes; the rules for matching images, classes and
boxes are in :mod:`.label_import`. Label Studio's COCO export (file names
``images/<8 hex>__<name>``, ids and categories numbered from 0, no ``frame_index``) imports
with ``match="file_name"``; its categories are matched by name like any other's.
"""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..models import BoxSource, Frame, User
from .classes import add_hint
from .input_checks import DB_INT_MAX, is_db_int, shown
from .label_import import (
    MATCHES,
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
from .workflow import Reopen


def _has_int_id(item: Any, where: str, plan: ImportPlan) -> bool:
    """Whether an image or annotation is an object with an integer id; else a problem."""
    if isinstance(item, dict) and is_int(item.get("id")):
        return True
    plan.problem(f"{where}: needs an integer 'id'"
                 + (f", got {shown(item.get('id'))}" if isinstance(item, dict) else
                    f"; not an object: {shown(item)}"))
    return False


def parse_coco(data: Any, video_id: int, match: str = "frame_index") -> ImportPlan:
    """Check a COCO document against the video's frames; every problem goes into the plan."""
    plan = ImportPlan(video_id)
    if match not in MATCHES:
        plan.problem(f"match by frame_index or file_name, not {match!r}")
        return plan
    frames = video_frames(video_id)
    if not isinstance(data, dict):
        plan.problem("not a COCO object: expected {\"images\": [...], \"annotations\": [...], "
                     "\"categories\": [...]}")
        return plan
    for key in ("images", "annotations", "categories"):
        if not isinstance(data.get(key), list):
            plan.problem(f"'{key}' is missing or not a list")
    if plan.problems:
        return plan

    classes = class_ids_by_name()
    category_class: dict[int, int] = {}
    unknown_categories: dict[int, str] = {}
    seen_cat: set[int] = set()
    for n, cat in enumerate(data["categories"]):
        if not isinstance(cat, dict):
            plan.problem(f"category #{n}: not an object")
            continue
        if not is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            plan.problem(f"category #{n}: needs an integer 'id' and a text 'name', got id "
                         f"{shown(cat.get('id'))} and name {shown(cat.get('name'))}")
            continue
        if cat["id"] in seen_cat:
            plan.problem(f"category id {shown(cat['id'])} is used twice")
            continue
        seen_cat.add(cat["id"])
        cid = classes.get(cat["name"].strip().lower())
        if cid is None:
            unknown_categories[cat["id"]] = cat["name"]
        else:
            category_class[cat["id"]] = cid

    image_frame: dict[int, Frame] = {}
    source_coords: set[int] = set()  # images whose boxes are in uncropped source pixels
    skipped: set[int] = set()
    frame_image: dict[int, int] = {}
    for n, img in enumerate(data["images"]):
        if not _has_int_id(img, f"image #{n}", plan):
            continue
        iid = img["id"]
        where = f"image {shown(iid)}"
        if iid in image_frame or iid in skipped:
            plan.problem(f"image id {shown(iid)} is used twice")
            continue
        other_video = img.get("video_id")
        # Another tool's name for its video (a text) says nothing about ours: it is ignored.
        if other_video is not None and not is_int(other_video) and not isinstance(other_video, str):
            plan.problem(f"{where}: 'video_id' must be an integer or a text, got {shown(other_video)}")
            continue
        if (is_int(other_video) and other_video != video_id) or (
                match == "file_name" and frames.of_other_video(img.get("file_name"))):
            skipped.add(iid)
            continue
        frame = frames.find(img.get("frame_index"), img.get("file_name"), match, where, plan)
        if frame is None:
            continue
        if frame.id in frame_image:
            plan.problem(f"images {shown(frame_image[frame.id])} and {shown(iid)} both match frame "
                         f"{frame.frame_index}")
            continue
        # null: not given (Label Studio's COCO export has no size for an image without boxes).
        size = (frame.width if img.get("width") is None else img["width"],
                frame.height if img.get("height") is None else img["height"])
        if size == frames.source_size and size != (frame.width, frame.height):
            source_coords.add(iid)
        else:
            for key, given, have in (("width", size[0], frame.width), ("height", size[1], frame.height)):
                if given != have:
                    plan.problem(f"{where}: {key} {shown(given)} is neither frame "
                                 f"{frame.frame_index}'s {have} nor the source video's "
                                 "(boxes would be misplaced)")
        frame_image[frame.id] = iid
        image_frame[iid] = frame
        if img.get("reviewed_empty") is True:
            plan.empty_frames.add(frame.id)
    plan.matched_frames = set(frame_image)
    plan.skipped_images = len(skipped)

    listed_images = {img["id"] for img in data["images"]
                     if isinstance(img, dict) and is_int(img.get("id"))}
    seen_ann: set[int] = set()
    used_unknown: Counter[int] = Counter()
    for n, ann in enumerate(data["annotations"]):
        if not _has_int_id(ann, f"annotation #{n}", plan):
            continue
        aid = ann["id"]
        where = f"annotation {shown(aid)}"
        if aid in seen_ann:
            plan.problem(f"annotation id {shown(aid)} is used twice")
            continue
        seen_ann.add(aid)
        image_id = ann.get("image_id")
        if not is_int(image_id):
            plan.problem(f"{where}: 'image_id' must be an integer, got {shown(image_id)}")
            continue
        if image_id in skipped:
            continue
        frame = image_frame.get(image_id)
        if frame is None:
            if image_id in listed_images:
                continue  # its image has a problem of its own, already reported
            plan.problem(f"{where}: image_id {shown(image_id)} is not an image of the file")
            continue
        cat = ann.get("category_id")
        if not is_int(cat):
            plan.problem(f"{where}: 'category_id' must be an integer, got {shown(cat)}")
            continue
        if cat in unknown_categories:
            used_unknown[cat] += 1
            continue
        if cat not in category_class:
            plan.problem(f"{where}: category_id {shown(cat)} is not in 'categories'")
            continue
        crowd = ann.get("iscrowd")
        if crowd is not None and (not isinstance(crowd, (int, float)) or crowd not in (0, 1)):
            plan.problem(f"{where}: 'iscrowd' must be 0 or 1, got {shown(crowd)}")
            continue
        if crowd == 1:  # true and 1.0 too: converters write either
            plan.problem(f"{where}: crowd regions (iscrowd 1) cannot be imported as boxes")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
            plan.problem(f"{where}: 'bbox' must be [x, y, width, height] in pixels (finite "
                         f"numbers), got {shown(bbox)}")
            continue
        geometry = fit_box(*bbox, frame, where, plan,
                           frames.roi_origin if image_id in source_coords else None)
        if geometry is None:
            continue
        score = ann.get("score")
        if score is not None and (not is_number(score) or not 0 <= score <= 1):
            plan.problem(f"{where}: 'score' must be a number from 0 to 1, got {shown(score)}")
            continue
        track_id = ann.get("track_id")
        if track_id is not None and not is_db_int(track_id, 0):
            plan.problem(f"{where}: 'track_id' must be an integer from 0 to {DB_INT_MAX}, "
                         f"got {shown(track_id)}")
            continue
        model_version = ann.get("model_version")
        if (problem := model_version_problem(model_version)) is not None:
            plan.problem(f"{where}: {problem}")
            continue
        is_model = score is not None
        plan.boxes.append(ImportedBox(
            frame.id, category_class[cat], *geometry,
            source=BoxSource.model if is_model else BoxSource.manual,
            score=float(score) if is_model else None,
            model_version=model_version if is_model else None, track_id=track_id))
    for cat, n in sorted(used_unknown.items()):
        plan.problem(f"unknown class {shown(unknown_categories[cat])} (category {shown(cat)}) is "
                     f"used by {n} annotation(s); the classes are {', '.join(sorted(classes))}; "
                     + add_hint(unknown_categories[cat]))
    for cat, name in sorted(unknown_categories.items()):
        if cat not in used_unknown:
            plan.warnings.append(f"category {shown(name)} is not a class here and has no "
                                 "annotations; ignored")
    return plan


def import_coco(data: Any, video_id: int, match: str = "frame_index", status: str | None = None,
                dry_run: bool = False, user: User | None = None,
                reopen: Reopen | None = None) -> ImportReport:
    """Parse and apply a COCO document; raises :class:`LabelImportRefused` listing problems."""
    return apply_plan(parse_coco(data, video_id, match), status=status, dry_run=dry_run, user=user,
                      reopen=reopen)
