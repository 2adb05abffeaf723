"""Import existing labels (COCO files) into the frames of an imported video.

Design choices:
- Two steps: a parser turns the file into a :class:`ImportPlan` (boxes per frame, and every
  problem found, not only the first), then :func:`apply_plan` writes it in one transaction.
  Any problem, and nothing is written; ``dry_run`` rolls back after counting what would be.
- Images are matched to stored frames by ``frame_index`` (the 0-based decoder index stored at
  import) or by ``file_name``: its base name may be this tool's export name
  (``v<video>_f<index>.png``), the frame's content name (``<sha256>.png``), either with a
  Label Studio upload prefix (``<8 hex>-``). Images that carry a ``video_id`` of another video
  (a multi-video export) are skipped and counted, not refused.
- Classes are matched by name (tools number categories differently). Unknown classes used by
  an annotation are problems; unused unknown categories are only warned about.
- A box must lie inside the frame (0.01 px of slack for float noise, then clipped), have a
  positive size, and its image's ``width``/``height`` (when given) must be the frame's, or the
  source video's: labels drawn on the uncropped video (other tools see the scanner's whole
  screen) are moved by the stored sector ROI and clipped to it; a box wholly outside the
  sector is a problem.
- Imported boxes have no author; ``source`` is ``model`` when the annotation carries a
  ``score`` (kept, with ``model_version`` when given), else ``manual``. A box equal to one the
  frame already has (same class, source and geometry within half a pixel) is skipped, so
  importing this tool's own export twice adds nothing.
- Each box gets a ``label_events`` row (action ``import``). ``status`` moves every scene with a
  matched frame to that status, with an event (action ``status``, source ``import``).
- An image marked ``reviewed_empty: true`` (this tool's export) with no boxes marks its frame
  as reviewed-empty; adding boxes to a frame clears that mark.
"""
from __future__ import annotations

import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, LabelClass, LabelEvent, Scene, SceneStatus, User, Video
from . import ServiceError

MATCHES = ("frame_index", "file_name")
EDGE_SLACK = 0.01  # px
DUPLICATE_PX = 0.5
MAX_PROBLEMS = 200
_EXPORT_NAME = re.compile(r"^v(\d+)_f(\d+)\.png$")
_UPLOAD_PREFIX = re.compile(r"^[0-9a-f]{8}-")


class LabelImportRefused(ServiceError):
    """Bad labels: ``problems`` lists each one; nothing was imported."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        n = len(problems)
        super().__init__(f"{n} problem{'s' if n != 1 else ''} in the labels; nothing was imported"
                         + (f": {problems[0]}" if n == 1 else "."))


@dataclass
class ImportedBox:
    frame_id: int
    class_id: int
    x: float
    y: float
    w: float
    h: float
    source: BoxSource = BoxSource.manual
    score: float | None = None
    model_version: str | None = None
    track_id: int | None = None


@dataclass
class ImportPlan:
    video_id: int
    boxes: list[ImportedBox] = field(default_factory=list)
    matched_frames: set[int] = field(default_factory=set)
    empty_frames: set[int] = field(default_factory=set)  # to mark reviewed-empty when box-free
    skipped_images: int = 0
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def problem(self, text: str) -> None:
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(text)
        elif len(self.problems) == MAX_PROBLEMS:
            self.problems.append("... more problems not listed")


@dataclass
class ImportReport:
    video_id: int
    dry_run: bool
    images_matched: int
    images_skipped: int
    boxes_added: int
    boxes_by_source: dict[str, int]
    duplicates_skipped: int
    frames_marked_empty: int
    scenes_status: dict[int, str]
    warnings: list[str]

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        verb = "would add" if self.dry_run else "added"
        by_source = ", ".join(f"{n} {s}" for s, n in sorted(self.boxes_by_source.items())) or "none"
        out = [f"video {self.video_id}: {self.images_matched} images matched, "
               f"{self.images_skipped} of other videos skipped",
               f"{verb} {self.boxes_added} boxes ({by_source}); "
               f"{self.duplicates_skipped} already present",
               f"frames marked reviewed-empty: {self.frames_marked_empty}"]
        if self.scenes_status:
            out.append(f"scenes set to {next(iter(self.scenes_status.values()))}: "
                       + ", ".join(map(str, sorted(self.scenes_status))))
        out += [f"warning: {w}" for w in self.warnings]
        if self.dry_run:
            out.append("dry run: nothing was written")
        return out


# --- frames and classes of the target video ---------------------------------------------------

@dataclass
class VideoFrames:
    video_id: int
    by_index: dict[int, Frame]
    by_name: dict[str, list[Frame]]
    source_size: tuple[int, int]
    roi_origin: tuple[int, int]

    def find(self, index: Any, name: Any, match: str, where: str, plan: ImportPlan,
             index_key: str = "'frame_index'", name_key: str = "'file_name'") -> Frame | None:
        """The one stored frame that ``index`` (decoder order) or ``name`` designates, by ``match``;
        None, with the problem in ``plan``, when there is not exactly one."""
        if match == "frame_index":
            if not is_int(index):
                plan.problem(f"{where}: no integer {index_key} (try matching by file_name)")
                return None
            frame = self.by_index.get(index)
            if frame is None:
                plan.problem(f"{where}: video {self.video_id} has no stored frame {index}")
            return frame
        if not isinstance(name, str) or not name:
            plan.problem(f"{where}: no {name_key}")
            return None
        found = self.match_name(name)
        if len(found) != 1:
            plan.problem(f"{where}: file name {name!r} matches "
                         + ("no frame" if not found else "frames " + ", ".join(
                             str(f.frame_index) for f in found) + " (identical content)")
                         + f" of video {self.video_id}")
            return None
        return found[0]

    def match_name(self, file_name: str) -> list[Frame]:
        base = re.split(r"[\\/]", str(file_name))[-1].split("?")[0]
        found = self.by_name.get(base)
        if not found and _UPLOAD_PREFIX.match(base):
            found = self.by_name.get(base[9:])
        return found or []


def video_frames(video_id: int) -> VideoFrames:
    video = db.session.get(Video, video_id)
    if video is None:
        raise LabelImportRefused([f"no video {video_id}"])
    frames = db.session.scalars(sa.select(Frame).where(Frame.video_id == video_id)).all()
    by_name: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        by_name[f"v{video_id:06d}_f{f.frame_index:06d}.png"].append(f)
        by_name[f"{f.sha256}.png"].append(f)
    return VideoFrames(video_id, {f.frame_index: f for f in frames}, by_name,
                       (video.width, video.height), (video.roi_x, video.roi_y))


def class_ids_by_name() -> dict[str, int]:
    return {name.lower(): cid for name, cid in db.session.execute(
        sa.select(LabelClass.name, LabelClass.id))}


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    return (isinstance(value, (int, float)) and not isinstance(value, bool)
            and math.isfinite(value))


def fit_box(x: float, y: float, w: float, h: float, frame: Frame, where: str, plan: ImportPlan,
            origin: tuple[int, int] | None = None) -> tuple[float, float, float, float] | None:
    """The box clipped to the frame, or None (with a problem) when it is outside or empty.

    ``origin``: the box is in source-video pixels; move it by the ROI's corner and clip it to
    the sector, refusing only a box with nothing inside."""
    if w <= 0 or h <= 0:
        plan.problem(f"{where}: width and height must be positive, got {w:g} x {h:g}")
        return None
    W, H = frame.width, frame.height
    if origin is not None:
        x, y = x - origin[0], y - origin[1]
        if x + w <= 0 or y + h <= 0 or x >= W or y >= H:
            plan.problem(f"{where}: box lies outside the ultrasound sector of frame {frame.frame_index}")
            return None
    elif x < -EDGE_SLACK or y < -EDGE_SLACK or x + w > W + EDGE_SLACK or y + h > H + EDGE_SLACK:
        plan.problem(f"{where}: box [{x:g}, {y:g}, {w:g}, {h:g}] lies outside the "
                     f"{W}x{H} frame {frame.frame_index}")
        return None
    x0, y0 = max(0.0, float(x)), max(0.0, float(y))
    x1, y1 = min(float(W), float(x) + w), min(float(H), float(y) + h)
    return x0, y0, x1 - x0, y1 - y0


# --- COCO ------------------------------------------------------------------------------------

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
        if not isinstance(cat, dict) or not is_int(cat.get("id")) or not isinstance(cat.get("name"), str):
            plan.problem(f"category #{n}: needs an integer 'id' and a 'name'")
            continue
        if cat["id"] in seen_cat:
            plan.problem(f"category id {cat['id']} is used twice")
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
        if not isinstance(img, dict) or not is_int(img.get("id")):
            plan.problem(f"image #{n}: needs an integer 'id'")
            continue
        iid = img["id"]
        if iid in image_frame or iid in skipped:
            plan.problem(f"image id {iid} is used twice")
            continue
        if is_int(img.get("video_id")) and img["video_id"] != video_id:
            skipped.add(iid)
            continue
        frame = frames.find(img.get("frame_index"), img.get("file_name"), match, f"image {iid}", plan)
        if frame is None:
            continue
        if frame.id in frame_image:
            plan.problem(f"images {frame_image[frame.id]} and {iid} both match frame "
                         f"{frame.frame_index}")
            continue
        size = (img.get("width", frame.width), img.get("height", frame.height))
        if size == frames.source_size and size != (frame.width, frame.height):
            source_coords.add(iid)
        else:
            for key, given, have in (("width", size[0], frame.width), ("height", size[1], frame.height)):
                if given != have:
                    plan.problem(f"image {iid}: {key} {given} is neither frame {frame.frame_index}'s "
                                 f"{have} nor the source video's (boxes would be misplaced)")
        frame_image[frame.id] = iid
        image_frame[iid] = frame
        if img.get("reviewed_empty") is True:
            plan.empty_frames.add(frame.id)
    plan.matched_frames = set(frame_image)
    plan.skipped_images = len(skipped)

    listed_images = _ids(data["images"])
    seen_ann: set[int] = set()
    used_unknown: Counter[int] = Counter()
    for n, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or not is_int(ann.get("id")):
            plan.problem(f"annotation #{n}: needs an integer 'id'")
            continue
        aid = ann["id"]
        where = f"annotation {aid}"
        if aid in seen_ann:
            plan.problem(f"annotation id {aid} is used twice")
            continue
        seen_ann.add(aid)
        image_id = ann.get("image_id")
        if image_id in skipped:
            continue
        frame = image_frame.get(image_id) if is_int(image_id) else None
        if frame is None:
            if is_int(image_id) and image_id in listed_images:
                continue  # its image has a problem of its own, already reported
            plan.problem(f"{where}: image_id {image_id!r} is not an image of the file")
            continue
        cat = ann.get("category_id")
        if cat in unknown_categories:
            used_unknown[cat] += 1
            continue
        if cat not in category_class:
            plan.problem(f"{where}: category_id {cat!r} is not in 'categories'")
            continue
        if ann.get("iscrowd"):
            plan.problem(f"{where}: crowd regions (iscrowd 1) cannot be imported as boxes")
            continue
        bbox = ann.get("bbox")
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(is_number(v) for v in bbox):
            plan.problem(f"{where}: 'bbox' must be [x, y, width, height] in pixels, got {bbox!r}")
            continue
        geometry = fit_box(*bbox, frame, where, plan,
                           frames.roi_origin if image_id in source_coords else None)
        if geometry is None:
            continue
        score = ann.get("score")
        if score is not None and (not is_number(score) or not 0 <= score <= 1):
            plan.problem(f"{where}: score must be a number from 0 to 1, got {score!r}")
            continue
        track_id = ann.get("track_id")
        if track_id is not None and not is_int(track_id):
            plan.problem(f"{where}: track_id must be an integer, got {track_id!r}")
            continue
        model_version = ann.get("model_version")
        if model_version is not None and (not isinstance(model_version, str) or len(model_version) > 64):
            plan.problem(f"{where}: model_version must be a text of up to 64 characters")
            continue
        is_model = score is not None
        plan.boxes.append(ImportedBox(
            frame.id, category_class[cat], *geometry,
            source=BoxSource.model if is_model else BoxSource.manual,
            score=float(score) if is_model else None,
            model_version=model_version if is_model else None, track_id=track_id))
    for cat, n in sorted(used_unknown.items()):
        plan.problem(f"unknown class {unknown_categories[cat]!r} (category {cat}) is used by {n} "
                     f"annotation(s); the classes are {', '.join(sorted(classes))}")
    for cat, name in sorted(unknown_categories.items()):
        if cat not in used_unknown:
            plan.warnings.append(f"category {name!r} is not a class here and has no annotations; ignored")
    return plan


def _ids(images: list[Any]) -> set[Any]:
    return {img.get("id") for img in images if isinstance(img, dict)}


# --- writing ---------------------------------------------------------------------------------

def apply_plan(plan: ImportPlan, status: str | None = None, dry_run: bool = False,
               user: User | None = None) -> ImportReport:
    """Write the plan in one transaction (or count what it would write, for a dry run)."""
    if status is not None:
        try:
            new_status = SceneStatus(status)
        except ValueError:
            plan.problem(f"unknown scene status {status!r}; one of "
                         f"{', '.join(s.value for s in SceneStatus)}")
    if not plan.matched_frames and not plan.problems:
        # Almost always the wrong --video: say so rather than report a successful no-op.
        skipped = f" ({plan.skipped_images} belong to other videos)" if plan.skipped_images else ""
        plan.problem(f"no image of the file matches a frame of video {plan.video_id}{skipped}")
    if plan.problems:
        raise LabelImportRefused(plan.problems)
    try:
        frames = {f.id: f for f in db.session.scalars(
            sa.select(Frame).where(Frame.video_id == plan.video_id))}
        existing: dict[int, list[tuple]] = defaultdict(list)
        for row in db.session.execute(
                sa.select(Box.frame_id, Box.class_id, Box.source, Box.x, Box.y, Box.w, Box.h)
                .join(Frame, Box.frame_id == Frame.id).where(Frame.video_id == plan.video_id)):
            existing[row[0]].append(tuple(row[1:]))
        added: list[Box] = []
        duplicates = 0
        for b in plan.boxes:
            key = (b.class_id, b.source, b.x, b.y, b.w, b.h)
            if any(_same(key, other) for other in existing[b.frame_id]):
                duplicates += 1
                continue
            existing[b.frame_id].append(key)
            box = Box(frame_id=b.frame_id, class_id=b.class_id, x=b.x, y=b.y, w=b.w, h=b.h,
                      source=b.source, score=b.score, model_version=b.model_version,
                      track_id=b.track_id, author_id=None)
            db.session.add(box)
            added.append(box)
        db.session.flush()
        actor = user.id if user is not None else None
        for box in added:
            frame = frames[box.frame_id]
            db.session.add(LabelEvent(user_id=actor, action="import", source=box.source.value,
                                      scene_id=frame.scene_id, frame_id=frame.id, box_id=box.id,
                                      after=box.as_dict()))
        with_boxes = {b.frame_id for b in added} | {fid for fid, rows in existing.items() if rows}
        marked = 0
        for fid in plan.matched_frames:
            frame = frames[fid]
            want_empty = fid in plan.empty_frames and fid not in with_boxes
            if frame.reviewed_empty and fid in with_boxes:
                frame.reviewed_empty = False
                db.session.add(LabelEvent(user_id=actor, action="unmark_empty", source="import",
                                          scene_id=frame.scene_id, frame_id=fid,
                                          before={"reviewed_empty": True},
                                          after={"reviewed_empty": False}))
            elif want_empty and not frame.reviewed_empty:
                frame.reviewed_empty = True
                marked += 1
                db.session.add(LabelEvent(user_id=actor, action="mark_empty", source="import",
                                          scene_id=frame.scene_id, frame_id=fid,
                                          before={"reviewed_empty": False},
                                          after={"reviewed_empty": True}))
        scenes_status: dict[int, str] = {}
        if status is not None:
            scene_ids = sorted({frames[fid].scene_id for fid in plan.matched_frames
                                if frames[fid].scene_id is not None})
            for scene in db.session.scalars(sa.select(Scene).where(Scene.id.in_(scene_ids))):
                scenes_status[scene.id] = new_status.value
                if scene.status != new_status:
                    db.session.add(LabelEvent(user_id=actor, action="status", source="import",
                                              scene_id=scene.id,
                                              before={"status": scene.status.value},
                                              after={"status": new_status.value}))
                    scene.status = new_status
        report = ImportReport(
            video_id=plan.video_id, dry_run=dry_run, images_matched=len(plan.matched_frames),
            images_skipped=plan.skipped_images, boxes_added=len(added),
            boxes_by_source=dict(Counter(b.source.value for b in added)),
            duplicates_skipped=duplicates, frames_marked_empty=marked,
            scenes_status=scenes_status, warnings=list(plan.warnings))
        if dry_run:
            db.session.rollback()
        else:
            db.session.commit()
        return report
    except BaseException:
        db.session.rollback()
        raise


def _same(a: tuple, b: tuple) -> bool:
    return a[0] == b[0] and a[1] == b[1] and all(abs(p - q) <= DUPLICATE_PX for p, q in zip(a[2:], b[2:]))


def import_coco(data: Any, video_id: int, match: str = "frame_index", status: str | None = None,
                dry_run: bool = False, user: User | None = None) -> ImportReport:
    """Parse and apply a COCO document; raises :class:`LabelImportRefused` listing problems."""
    return apply_plan(parse_coco(data, video_id, match), status=status, dry_run=dry_run, user=user)
