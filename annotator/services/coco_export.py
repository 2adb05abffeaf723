"""COCO detection files built from stored frames and boxes.

Design choices:
- Which frames: every stored frame of the selected scenes is an image, boxes or not, not only
  the labelled or reviewed-empty ones. A scene is selected as a whole (by default only
  reviewed scenes), so a frame without boxes in it was seen and found empty; such frames are
  where false positives count. Images get ``reviewed_empty: true`` when the frame carries
  that mark, so an import restores it.
- Ids start at 1 in every file (pycocotools never matches an annotation with id 0); images are
  numbered in (video, frame index) order, then annotations in that order, so the same content
  always gives the same file. Category ids are the class table's ids (tumour 1, vessel 2).
- ``prev_image_id`` names the previous *stored* frame of the same video. When that frame is not
  an image of the file it is listed under ``context_images`` (ids after the images) and its
  file is exported too, so a two-frame model always finds its predecessor; a video's first
  stored frame has ``prev_image_id: null``.
- Image files are named ``v<video id>_f<frame index>.png`` (zero-padded): unique, sortable,
  derived from ids, and what ``--match file_name`` recognises on import.
- Rows are read with column selects, not ORM objects, and grouped in Python: a 100,000-box
  version is built in well under a second this way (``bench/export_speed.py``).
- The content hash covers everything but ``info`` (which holds the version name and date), so
  two versions with the same content have the same hash.
"""
from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import sqlalchemy as sa

from ..db import db
from ..models import Box, Frame, LabelClass, Patient, User, Video

CHUNK = 500  # ids per IN (...) clause; keeps every backend well under its parameter limit


@dataclass(frozen=True)
class FrameRow:
    id: int
    video_id: int
    scene_id: int | None
    frame_index: int
    sha256: str
    width: int
    height: int
    reviewed_empty: bool


_FRAME_COLUMNS = (Frame.id, Frame.video_id, Frame.scene_id, Frame.frame_index, Frame.sha256,
                  Frame.width, Frame.height, Frame.reviewed_empty)


def image_file_name(video_id: int, frame_index: int) -> str:
    return f"v{video_id:06d}_f{frame_index:06d}.png"


def chunks(values: Iterable[int], size: int = CHUNK) -> Iterator[list[int]]:
    items = list(values)
    for start in range(0, len(items), size):
        yield items[start:start + size]


def frames_of_scenes(scene_ids: Iterable[int]) -> list[FrameRow]:
    """Every stored frame of the scenes, in (video, frame index) order."""
    rows: list[FrameRow] = []
    conn = db.session.connection()
    for part in chunks(sorted(set(scene_ids))):
        rows.extend(FrameRow(*r) for r in conn.execute(
            sa.select(*_FRAME_COLUMNS).where(Frame.scene_id.in_(part))).all())
    rows.sort(key=lambda f: (f.video_id, f.frame_index))
    return rows


def frames_of_videos(video_ids: Iterable[int]) -> dict[int, list[FrameRow]]:
    """Every stored frame of each video, in frame order."""
    out: dict[int, list[FrameRow]] = defaultdict(list)
    conn = db.session.connection()
    for part in chunks(sorted(set(video_ids))):
        for r in conn.execute(sa.select(*_FRAME_COLUMNS).where(Frame.video_id.in_(part))).all():
            out[r[1]].append(FrameRow(*r))
    for rows in out.values():
        rows.sort(key=lambda f: f.frame_index)
    return out


def patient_codes(video_ids: Iterable[int]) -> dict[int, str]:
    out: dict[int, str] = {}
    for part in chunks(sorted(set(video_ids))):
        out.update(db.session.execute(
            sa.select(Video.id, Patient.code).join(Patient, Video.patient_id == Patient.id)
            .where(Video.id.in_(part))).all())
    return out


def categories(class_ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
    query = sa.select(LabelClass.id, LabelClass.name).order_by(LabelClass.id)
    if class_ids is not None:
        query = query.where(LabelClass.id.in_(list(class_ids)))
    return [{"id": cid, "name": name, "supercategory": "liver"}
            for cid, name in db.session.execute(query)]


def boxes_of_frames(frames: list[FrameRow], class_ids: Iterable[int] | None = None,
                    sources: Iterable[str] | None = None) -> dict[int, list[Any]]:
    """frame id -> its boxes as rows (frame_id, class_id, x, y, w, h, source, score,
    model_version, track_id, author name, box id), in box id order. Read per scene when the
    frames have scenes (one indexed lookup per 500 scenes instead of per 500 frames), through
    the Core connection: ORM result processing would double the time of a large export."""
    wanted = {f.id for f in frames}
    box, frame, user = Box.__table__.c, Frame.__table__.c, User.__table__.c
    # The source as stored text: the Enum type's per-row conversion is a third of the read time.
    columns = (box.frame_id, box.class_id, box.x, box.y, box.w, box.h,
               sa.type_coerce(box.source, sa.String), box.score, box.model_version, box.track_id,
               user.username, box.id)
    base = (sa.select(*columns).select_from(Box.__table__.join(Frame.__table__, box.frame_id == frame.id)
                                            .outerjoin(User.__table__, box.author_id == user.id))
            .order_by(box.id))
    if class_ids is not None:
        base = base.where(box.class_id.in_(list(class_ids)))
    if sources is not None:
        base = base.where(sa.type_coerce(box.source, sa.String).in_(list(sources)))
    scene_ids = {f.scene_id for f in frames if f.scene_id is not None}
    loose = [f.id for f in frames if f.scene_id is None]
    queries = [base.where(frame.scene_id.in_(p)) for p in chunks(sorted(scene_ids))]
    queries += [base.where(box.frame_id.in_(p)) for p in chunks(loose)]
    out: dict[int, list[Any]] = defaultdict(list)
    conn = db.session.connection()
    for query in queries:
        for row in conn.execute(query).all():
            if row[0] in wanted:
                out[row[0]].append(row)
    return out


def build_split(frames: list[FrameRow], video_frames: dict[int, list[FrameRow]],
                boxes: dict[int, list[tuple]], codes: dict[int, str],
                cats: list[dict[str, Any]]) -> dict[str, Any]:
    """One COCO document (without ``info``) for ``frames`` (sorted by video, frame index)."""
    images: list[dict[str, Any]] = []
    image_id_of: dict[int, int] = {}
    for n, f in enumerate(frames, start=1):
        image_id_of[f.id] = n
    context: list[dict[str, Any]] = []
    context_id_of: dict[int, int] = {}
    next_id = len(frames) + 1
    prev_of = _previous_frames(video_frames)
    for f in frames:
        prev = prev_of.get(f.id)
        prev_id = None
        if prev is not None:
            prev_id = image_id_of.get(prev.id) or context_id_of.get(prev.id)
            if prev_id is None:
                prev_id = context_id_of[prev.id] = next_id
                next_id += 1
                context.append(_image(prev, prev_id, codes, None))
        images.append(_image(f, image_id_of[f.id], codes, prev_id))

    annotations: list[dict[str, Any]] = []
    ann_id = 0
    for f in frames:
        image_id = image_id_of[f.id]
        for (_, class_id, x, y, w, h, source, score, model_version, track_id, author,
             box_id) in boxes.get(f.id, ()):
            ann_id += 1
            # box_id: which stored box this is, so a file edited elsewhere syncs back to it.
            ann = {"id": ann_id, "image_id": image_id, "category_id": class_id,
                   "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0, "source": source,
                   "box_id": box_id}
            if author is not None:
                ann["author"] = author
            if track_id is not None:
                ann["track_id"] = track_id
            if score is not None:
                ann["score"] = score
            if model_version is not None:
                ann["model_version"] = model_version
            annotations.append(ann)
    return {"licenses": [], "categories": cats, "images": images, "context_images": context,
            "annotations": annotations}


def _previous_frames(video_frames: dict[int, list[FrameRow]]) -> dict[int, FrameRow]:
    out: dict[int, FrameRow] = {}
    for rows in video_frames.values():
        for before, after in zip(rows, rows[1:]):
            out[after.id] = before
    return out


def _image(f: FrameRow, image_id: int, codes: dict[int, str], prev_id: int | None
           ) -> dict[str, Any]:
    image = {"id": image_id, "file_name": image_file_name(f.video_id, f.frame_index),
             "width": f.width, "height": f.height, "video_id": f.video_id,
             "frame_index": f.frame_index, "prev_image_id": prev_id, "scene_id": f.scene_id,
             "patient_code": codes.get(f.video_id), "sha256": f.sha256}
    if f.reviewed_empty:
        image["reviewed_empty"] = True
    return image


def build_coco(frames_by_split: dict[str, list[FrameRow]], class_ids: Iterable[int] | None = None,
               sources: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
    """A COCO document (without ``info``) per split; ``class_ids`` keeps only those classes,
    ``sources`` only boxes of those sources (``("manual",)``: ground truth without pending
    pre-labels or propagated suggestions; an accepted one is already manual)."""
    class_list = None if class_ids is None else sorted(set(class_ids))
    all_frames = [f for rows in frames_by_split.values() for f in rows]
    video_ids = {f.video_id for f in all_frames}
    video_frames = frames_of_videos(video_ids)
    codes = patient_codes(video_ids)
    boxes = boxes_of_frames(all_frames, class_list, sources)
    cats = categories(class_list)
    return {split: build_split(sorted(rows, key=lambda f: (f.video_id, f.frame_index)),
                               video_frames, boxes, codes, cats)
            for split, rows in frames_by_split.items()}


def dump(doc: dict[str, Any], info: dict[str, Any]) -> tuple[bytes, str]:
    """The file's bytes (``info`` first) and the SHA-256 of everything but ``info``."""
    body = json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()
    head = b'{"info":' + json.dumps(info, separators=(",", ":"), ensure_ascii=False).encode()
    data = head + (b"}" if body == b"{}" else b"," + body[1:])
    return data, hashlib.sha256(body).hexdigest()


def body_hash(data: bytes) -> str:
    """The content hash of a file written by :func:`dump` (parses it and drops ``info``)."""
    doc = json.loads(data)
    doc.pop("info", None)
    return hashlib.sha256(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode()).hexdigest()


def split_hash(split_hashes: dict[str, str]) -> str:
    """One hash for a version: its splits' names and content hashes, in split order."""
    return hashlib.sha256("".join(f"{s}:{h}\n" for s, h in split_hashes.items()).encode()).hexdigest()
