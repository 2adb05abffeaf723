"""Import labels made elsewhere into the frames of an imported video: what every format shares.

A format's parser (:mod:`.coco_import`, :mod:`.labelstudio`) checks a file against the
video's frames and fills an :class:`ImportPlan`; :func:`apply_plan` writes it.

Design choices:
- Two steps: a parser turns the file into a :class:`ImportPlan` (boxes per frame, and every
  problem found, not only the first), then :func:`apply_plan` writes it in one transaction.
  Any problem, and nothing is written; ``dry_run`` rolls back after counting what would be.
- Images are matched to stored frames by ``frame_index`` (the 0-based decoder index stored at
  import) or by ``file_name``: its base name may be this tool's export name
  (``v<video>_f<index>.png``), the frame's content name (``<sha256>.png``), either with
  Label Studio's upload prefix (``<8 hex>-``) and/or its COCO export's prefix
  (``images/<8 hex>__``), or a signed image link's ``<token>.png``. Images that carry a
  ``video_id`` of another video, or are named for another video's frame (a multi-video
  export), are skipped and counted, not refused. Ids are the file's own: 0 is one like any
  other (Label Studio counts from 0).
- Classes are matched by name (tools number categories differently). Unknown classes used by
  an annotation are problems; unused unknown categories are only warned about.
- Every field's type is checked before use: ids are integers (not booleans or lists), numbers
  finite (a 400-digit integer is refused, not overflowed), texts texts; a problem names the
  field and the image, annotation, task or region, with the bad value shortened.
- A box must lie inside the frame (0.01 px of slack for float noise, then clipped), be at
  least :data:`~.boxes.MIN_INPUT_SIZE` on a side, and its image's ``width``/``height`` (when
  given) must be the frame's, or the source video's: labels drawn on the uncropped video
  (other tools see the scanner's whole screen) are moved by the stored sector ROI and
  clipped to it; a box wholly outside the sector is a problem.
- Imported boxes have no author; ``source`` is ``model`` when the annotation carries a
  ``score`` (kept, with ``model_version`` when given), else ``manual``. Coordinates are kept
  as given (floats). How the file's boxes meet a frame's (appended, or synced: moved and
  deleted too) is :mod:`.label_sync`; importing a file twice changes nothing.
- Each added box gets a label event (action ``import``); a synced move, accept or delete gets
  an ``update``, ``accept`` or ``delete`` event with the plan's ``event_source``.
  ``status`` moves every scene with a matched frame to that status, with an event (action
  ``status``, source ``import``).
- Imports respect the review lock: an import that would change a submitted or reviewed scene
  (add a box, change a "no findings" mark or its status) is refused, naming the scenes, dry
  run or not, unless an admin reopens them for it (:mod:`.workflow`). Re-importing what a
  locked scene already holds changes nothing, so it is not refused.
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
from ..models import Box, BoxSource, Frame, Scene, SceneStatus, User, Video
from . import ServiceError
from .boxes import MIN_INPUT_SIZE, OutsideFrame, clip_box
from .classes import ids_by_name
from .event_log import record_event
from .input_checks import is_db_int, is_db_text, shown
from .label_sync import diff_frames, write_diffs
from .signed_urls import SignedUrlRefused, frame_id_of
from .workflow import Reopen, unlock_for_import

MATCHES = ("frame_index", "file_name")
EDGE_SLACK = 0.01  # px
MAX_PROBLEMS = 200
MAX_FRAME_LINES = 200  # of the diff, per changed frame
MODEL_VERSION_LENGTH = Box.__table__.c.model_version.type.length
# Label Studio's download prefix in its COCO export (<8 hex>__), then its upload prefix (<8 hex>-).
_LABEL_STUDIO_PREFIX = re.compile(r"^(?:[0-9a-f]{8}__)?(?:[0-9a-f]{8}-)?")
_EXPORT_NAME = re.compile(r"v(\d{6,})_f\d{6,}\.png")


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
    box_id: int | None = None  # the stored box the file says this is (sync imports)


@dataclass
class ImportPlan:
    video_id: int
    boxes: list[ImportedBox] = field(default_factory=list)
    matched_frames: set[int] = field(default_factory=set)
    empty_frames: set[int] = field(default_factory=set)  # to mark reviewed-empty when box-free
    skipped_images: int = 0
    # Sync imports (:mod:`.label_sync`): the file is the truth for the frames in ``truth_frames``;
    # ``sent`` holds per frame the ids of the manual boxes the file was exported with.
    sync: bool = False
    sent: dict[int, set[int]] = field(default_factory=dict)
    truth_frames: set[int] = field(default_factory=set)
    event_source: str = "import"
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
    scenes_reopened: list[int] = field(default_factory=list)
    boxes_moved: int = 0
    boxes_deleted: int = 0
    # frame index -> added, moved, deleted, unchanged: the frames where something changes
    frames: dict[int, dict[str, int]] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

    def lines(self) -> list[str]:
        verb = "would add" if self.dry_run else "added"
        by_source = ", ".join(f"{n} {s}" for s, n in sorted(self.boxes_by_source.items())) or "none"
        out = [f"video {self.video_id}: {self.images_matched} images matched, "
               f"{self.images_skipped} of other videos skipped"]
        changed = sorted(self.frames.items())
        out += [f"frame {index}: " + ", ".join(f"{n} {what}" for what, n in counts.items())
                for index, counts in changed[:MAX_FRAME_LINES]]
        if len(changed) > MAX_FRAME_LINES:
            out.append(f"... and {len(changed) - MAX_FRAME_LINES} more frames (all in the JSON)")
        out += [f"total: {verb} {self.boxes_added} boxes ({by_source}); "
                f"{self.boxes_moved} {'to move' if self.dry_run else 'moved'}, "
                f"{self.boxes_deleted} {'to delete' if self.dry_run else 'deleted'}, "
                f"{self.duplicates_skipped} already present (unchanged)",
                f"frames marked reviewed-empty: {self.frames_marked_empty}"]
        if self.scenes_reopened:
            out.append(f"{'would reopen' if self.dry_run else 'reopened'} (back to returned): "
                       f"scenes {', '.join(map(str, self.scenes_reopened))}")
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
    by_id: dict[int, Frame] = field(default_factory=dict)

    def find(self, index: Any, name: Any, match: str, where: str, plan: ImportPlan,
             index_key: str = "'frame_index'", name_key: str = "'file_name'") -> Frame | None:
        """The one stored frame that ``index`` (decoder order) or ``name`` designates, by ``match``;
        None, with the problem in ``plan``, when there is not exactly one."""
        if match == "frame_index":
            if not is_int(index):
                plan.problem(f"{where}: no integer {index_key} (try matching by file_name)"
                             + ("" if index is None else f", got {shown(index)}"))
                return None
            frame = self.by_index.get(index)
            if frame is None:
                plan.problem(f"{where}: video {self.video_id} has no stored frame {shown(index)}")
            return frame
        if not isinstance(name, str) or not name:
            plan.problem(f"{where}: no {name_key}"
                         + ("" if name is None else f" text, got {shown(name)}"))
            return None
        found = self.match_name(name)
        if len(found) != 1:
            plan.problem(f"{where}: file name {shown(name)} matches "
                         + ("no frame" if not found else "frames " + ", ".join(
                             str(f.frame_index) for f in found) + " (identical content)")
                         + f" of video {self.video_id}")
            return None
        return found[0]

    def match_name(self, file_name: str) -> list[Frame]:
        base = _base_name(file_name)
        stripped = _LABEL_STUDIO_PREFIX.sub("", base)
        found = self.by_name.get(base) or self.by_name.get(stripped)
        signed = None if found else _signed_frame(stripped)
        return found or ([self.by_id[signed]] if signed in self.by_id else [])

    def of_other_video(self, file_name: Any) -> bool:
        """Whether ``file_name`` is this tool's export name of another video's frame (an image
        of a multi-video export, skipped and counted)."""
        if not isinstance(file_name, str):
            return False
        name = _LABEL_STUDIO_PREFIX.sub("", _base_name(file_name))
        named = _EXPORT_NAME.fullmatch(name)
        if named is not None:
            return int(named.group(1)) != self.video_id
        signed = _signed_frame(name)
        return signed is not None and signed not in self.by_id


def _signed_frame(name: str) -> int | None:
    """The frame id in a signed image link's name (``<token>.png``), expired or not: the
    signature shows this instance made it."""
    if not name.endswith(".png"):
        return None
    try:
        return frame_id_of(name[:-4], now=0)
    except SignedUrlRefused:
        return None


def _base_name(file_name: str) -> str:
    # A path, a URL, or Label Studio's local-files URL (``/data/local-files/?d=<name>``).
    return re.split(r"[\\/]|\?d=", str(file_name))[-1].split("?")[0]


def video_frames(video_id: int) -> VideoFrames:
    video = db.session.get(Video, video_id) if is_db_int(video_id, 1) else None
    if video is None:
        raise LabelImportRefused([f"no video {shown(video_id)}"])
    frames = db.session.scalars(sa.select(Frame).where(Frame.video_id == video_id)).all()
    by_name: dict[str, list[Frame]] = defaultdict(list)
    for f in frames:
        by_name[f"v{video_id:06d}_f{f.frame_index:06d}.png"].append(f)
        by_name[f"{f.sha256}.png"].append(f)
    return VideoFrames(video_id, {f.frame_index: f for f in frames}, by_name,
                       (video.width, video.height), (video.roi_x, video.roi_y),
                       {f.id: f for f in frames})


def class_ids_by_name() -> dict[str, int]:
    return ids_by_name()


def is_int(value: Any) -> bool:
    """An integer, not a boolean (ids of the file's own, any size)."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: Any) -> bool:
    """A finite int or float (not a boolean); an integer past float range is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def model_version_problem(value: Any) -> str | None:
    """Why ``value`` cannot be a box's ``model_version`` (a text the column stores), or None."""
    ok = value is None or is_db_text(value, MODEL_VERSION_LENGTH)
    return None if ok else (f"'model_version' must be a text of up to {MODEL_VERSION_LENGTH} "
                            f"characters without NUL, got {shown(value)}")


def fit_box(x: float, y: float, w: float, h: float, frame: Frame, where: str, plan: ImportPlan,
            origin: tuple[int, int] | None = None) -> tuple[float, float, float, float] | None:
    """The box clipped to the frame, or None (with a problem) when it is outside or too small.

    ``origin``: the box is in source-video pixels; move it by the ROI's corner and clip it to
    the sector, refusing only a box with (almost) nothing inside."""
    if w <= 0 or h <= 0:
        plan.problem(f"{where}: width and height must be positive, got {w:g} x {h:g}")
        return None
    if w < MIN_INPUT_SIZE or h < MIN_INPUT_SIZE:
        plan.problem(f"{where}: the box is {w:g} x {h:g} px; boxes are at least "
                     f"{MIN_INPUT_SIZE:g} px on a side")
        return None
    W, H = frame.width, frame.height
    if origin is not None:
        x, y = x - origin[0], y - origin[1]
    box = f"box [{x:g}, {y:g}, {w:g}, {h:g}]"
    try:
        inside = clip_box(x, y, w, h, W, H, slack=EDGE_SLACK if origin is None else math.inf)
    except OutsideFrame:
        plan.problem(f"{where}: {box} lies outside the {W}x{H} frame {frame.frame_index}")
        return None
    if inside is None:
        plan.problem(f"{where}: box lies outside the ultrasound sector of frame {frame.frame_index}"
                     f" (less than {MIN_INPUT_SIZE:g} px on a side inside it)"
                     if origin is not None else
                     f"{where}: {box} keeps less than {MIN_INPUT_SIZE:g} px on a side inside "
                     f"the {W}x{H} frame {frame.frame_index}")
        return None
    return inside["x"], inside["y"], inside["w"], inside["h"]


# --- writing ---------------------------------------------------------------------------------

def apply_plan(plan: ImportPlan, status: str | None = None, dry_run: bool = False,
               user: User | None = None, reopen: Reopen | None = None) -> ImportReport:
    """Write the plan in one transaction (or count what it would write, for a dry run).

    Submitted and reviewed scenes the import would change (boxes, "no findings" marks,
    status) refuse it, dry run or not, unless an admin's ``reopen`` reopens them
    (:func:`.workflow.unlock_for_import`)."""
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
        # Locked until the commit: a scene submitted meanwhile waits, so it is submitted with
        # the imported boxes, never changed after its lock was checked.
        scenes = {s.id: s for s in db.session.scalars(
            sa.select(Scene).where(Scene.video_id == plan.video_id).with_for_update()
            .execution_options(populate_existing=True))}
        # What would change, first: the review lock is checked before anything is written.
        diffs, held = diff_frames(plan.video_id, plan.boxes, plan.matched_frames,
                                  plan.sent if plan.sync else None, plan.truth_frames)
        decided = sum(d.decided for d in diffs.values())
        if decided:
            plan.warnings.append(f"{decided} prediction(s) of pre-labels accepted or rejected "
                                 "here since the export were left as they are")
        with_boxes = {fid for fid in plan.matched_frames
                      if len(held[fid]) - len(diffs[fid].delete) + len(diffs[fid].create) > 0}
        unmark = [fid for fid in sorted(plan.matched_frames)
                  if frames[fid].reviewed_empty and fid in with_boxes]
        mark = [fid for fid in sorted(plan.matched_frames) if fid in plan.empty_frames
                and fid not in with_boxes and not frames[fid].reviewed_empty]
        touched = sorted({frames[fid].scene_id for fid in plan.matched_frames
                          if frames[fid].scene_id is not None})
        edited = [fid for fid, d in diffs.items() if d.create or d.update or d.delete]
        changed = {frames[fid].scene_id for fid in edited + unmark + mark}
        if status is not None:  # moving a scene's status changes it too
            changed |= {sid for sid in touched if scenes[sid].status != new_status}
        reopened = unlock_for_import([scenes[sid] for sid in sorted(changed - {None})], reopen)
        added = write_diffs(diffs, frames, user, plan.event_source)
        for fid in unmark:
            frames[fid].reviewed_empty = False
            record_event(user, "unmark_empty", "import", frame=frames[fid],
                         before={"reviewed_empty": True}, after={"reviewed_empty": False})
        for fid in mark:
            frames[fid].reviewed_empty = True
            record_event(user, "mark_empty", "import", frame=frames[fid],
                         before={"reviewed_empty": False}, after={"reviewed_empty": True})
        scenes_status: dict[int, str] = {}
        if status is not None:
            for sid in touched:
                scene = scenes[sid]
                scenes_status[scene.id] = new_status.value
                if scene.status != new_status:
                    record_event(user, "status", "import", scene_id=scene.id,
                                 before={"status": scene.status.value},
                                 after={"status": new_status.value})
                    scene.status = new_status
        report = ImportReport(
            video_id=plan.video_id, dry_run=dry_run, images_matched=len(plan.matched_frames),
            images_skipped=plan.skipped_images, boxes_added=len(added),
            boxes_by_source=dict(Counter(b.source.value for b in added)),
            duplicates_skipped=sum(d.unchanged for d in diffs.values()),
            frames_marked_empty=len(mark), scenes_status=scenes_status,
            warnings=list(plan.warnings), scenes_reopened=[s.id for s in reopened],
            boxes_moved=sum(len(d.update) for d in diffs.values()),
            boxes_deleted=sum(len(d.delete) for d in diffs.values()),
            frames={frames[fid].frame_index: diffs[fid].counts() for fid in edited})
        if dry_run:
            db.session.rollback()
        else:
            db.session.commit()
        return report
    except BaseException:
        db.session.rollback()
        raise
