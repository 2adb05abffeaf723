"""Pre-labels: a model version's boxes on every frame of a scene, for annotators to review.

Design choices:
- The model streams through each scene's frames in order (:class:`detector.predict.Predictor`,
  reset per scene), so a two-frame model sees each frame with its real predecessor; the
  first frame is its own predecessor, as in training.
- Boxes are stored with source ``model``, the score and the version's name; at most
  ``MAX_PER_FRAME`` per frame, scoring at least ``min_score``. Classes are matched by name
  (any case); a model class with no SonoLabel class is skipped, with a line in the job's log.
- A scene's frames are predicted first and written in one transaction, so a cancelled or
  failed job leaves no scene half pre-labelled. Re-running replaces only this version's
  boxes that are still unreviewed (source ``model``): accepted ones became manual boxes, and
  manual boxes, propagated boxes and other versions' pre-labels are never touched.
- Scenes the user who started the job may not edit are skipped (:func:`.workflow.edit_refused`):
  submitted and reviewed ones (locked, and pre-labels would be exported with them), and for an
  annotator those assigned to someone else.
- Each new box writes a ``prelabel`` label event (user: who started the job); each replaced
  one a ``replace`` event without a box id, so review notes do not count it as rejected.
- After each scene its rank for "what to label next" is computed from the same frames.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, ModelVersion, Role, Scene, User
from . import ServiceError
from .boxes import clip_box, plain
from .classes import add_hint, ids_by_name
from .event_log import record_event
from .frames import read_frame
from .job_spec import JobContext, Param, id_list, integer, kind, number, text
from .models_registry import active_version, get_model_version, model_file
from .ranking import scene_disagreement, store_ranking
from .workflow import edit_refused

MAX_PER_FRAME = 30
DEFAULT_MIN_SCORE = 0.1


class PrelabelRefused(ServiceError):
    """Pre-labelling that cannot be done (no active model, unknown scene)."""


def resolve_model(ref: str | None) -> ModelVersion:
    if ref:
        return get_model_version(ref)
    version = active_version()
    if version is None:
        raise PrelabelRefused("No model version is active: activate one on the Models page "
                              "(sonolabel models activate ID) or name one with model_version=.")
    return version


def resolve_scenes(params: dict[str, Any]) -> list[Scene]:
    if bool(params.get("scene")) == bool(params.get("video")):
        raise PrelabelRefused("Name either scene (one id or several, comma-separated) or video.")
    if params.get("scene"):
        scenes = [db.session.get(Scene, sid) for sid in params["scene"]]
        missing = [str(sid) for sid, s in zip(params["scene"], scenes) if s is None]
        if missing:
            raise PrelabelRefused(f"No scene {', '.join(missing)}.", status=404)
        return scenes
    scenes = list(db.session.scalars(sa.select(Scene).where(Scene.video_id == params["video"])
                                     .order_by(Scene.first_frame)))
    if not scenes:
        raise PrelabelRefused(f"Video {params['video']} has no scenes (or does not exist).", status=404)
    return scenes


def _check(params: dict[str, Any]) -> None:
    version = resolve_model(params.get("model_version"))
    if not model_file(version).is_file():
        raise PrelabelRefused(f"The model file of {version.name} is missing.", status=500)
    resolve_scenes(params)


def predict_scene(predictor: Any, frames: list[Frame], progress: Any = None) -> tuple[list, list]:
    """(grey images, detections per frame) of one scene, streamed in frame order."""
    predictor.reset()
    images, detections = [], []
    for n, frame in enumerate(frames):
        image = read_frame(frame)
        images.append(image)
        detections.append(predictor.step(image))
        if progress is not None:
            progress(n + 1)
    return images, detections


def missing_class_lines(model_classes: list[str]) -> list[str]:
    """A log line for each of a model's classes that no SonoLabel class has the name of."""
    known = ids_by_name()
    return [f"model class {name!r} has no SonoLabel class: its boxes are skipped; " + add_hint(name)
            for name in model_classes if name.lower() not in known]


def store_prelabels(scene: Scene, frames: list[Frame], detections: list[list[dict[str, Any]]],
                    version_name: str, user: User | None, min_score: float) -> tuple[int, int, list[list[dict]]]:
    """Replace ``version_name``'s unreviewed boxes of the scene with ``detections`` (not
    committed). Returns (created, replaced, the stored boxes per frame as dicts)."""
    class_ids = ids_by_name()
    created = replaced = 0
    stored: list[list[dict[str, Any]]] = []
    for frame, dets in zip(frames, detections):
        for old in [b for b in frame.boxes
                    if b.source == BoxSource.model and b.model_version == version_name]:
            record_event(user, "replace", "model", frame=frame, before=old.as_dict())
            db.session.delete(old)
            replaced += 1
        keep = sorted((d for d in dets if d["score"] >= min_score and d["category"].lower() in class_ids),
                      key=lambda d: -d["score"])[:MAX_PER_FRAME]
        new, boxes = [], []
        for d in keep:
            geometry = clip_box(*d["box"], frame.width, frame.height, decimals=1)
            if geometry is None:
                continue
            box = Box(frame=frame, class_id=class_ids[d["category"].lower()], source=BoxSource.model,
                      score=round(float(d["score"]), 4), model_version=version_name, **geometry)
            db.session.add(box)
            new.append(box)
        db.session.flush()
        for box in new:
            record_event(user, "prelabel", "model", frame=frame, box_id=box.id, after=box.as_dict())
            boxes.append(plain(box))
        created += len(new)
        stored.append(boxes)
    return created, replaced, stored


@kind("prelabel", {
    "model_version": Param(text, help="model version id or name (default: the active one)"),
    "scene": Param(id_list, help="scene id(s), comma-separated"),
    "video": Param(integer(1), help="every scene of this video"),
    "min_score": Param(number(0.0, 1.0), DEFAULT_MIN_SCORE, help="lowest score kept"),
}, (Role.admin, Role.data_manager, Role.annotator),
    "Store a model version's boxes on scenes as pre-labels.", check=_check)
def run_prelabel(ctx: JobContext, params: dict[str, Any], user: User | None) -> dict[str, Any]:
    from detector.predict import Predictor

    version = resolve_model(params.get("model_version"))
    name, weights = version.name, model_file(version)
    scenes = resolve_scenes(params)
    plan = [(s.id, edit_refused(s, user), s.frame_count) for s in scenes]
    db.session.rollback()
    total = sum(n for _, refused, n in plan if refused is None) or 1
    ctx.progress(1, f"pre-labelling {len(plan)} scene(s) with {name}")
    predictor = Predictor(weights, score_threshold=min(0.05, params["min_score"]))
    for line in missing_class_lines(predictor.names[1:]):
        ctx.log(line)
    done, created, replaced, skipped = 0, 0, 0, []
    for scene_id, refused, _ in plan:
        if refused is not None:
            skipped.append(scene_id)
            ctx.log(f"scene {scene_id} skipped: {refused}")
            continue
        scene = db.session.get(Scene, scene_id)
        frames = list(scene.frames)
        images, detections = predict_scene(
            predictor, frames, lambda n: ctx.progress(1 + 98 * (done + n) / total))
        db.session.refresh(scene)
        refused = edit_refused(scene, user)  # submitted or reassigned while we were predicting
        if refused is not None:
            db.session.rollback()
            skipped.append(scene_id)
            ctx.log(f"scene {scene_id} skipped: {refused}")
            continue
        try:
            made, gone, stored = store_prelabels(scene, frames, detections, name, user,
                                                 params["min_score"])
            store_ranking(scene.id, name, scene_disagreement(images, stored))
            db.session.commit()
        except BaseException:
            db.session.rollback()
            raise
        done += len(frames)
        created += made
        replaced += gone
        ctx.progress(1 + 98 * done / total, f"scene {scene_id}: {made} boxes ({gone} replaced)")
    return {"model_version": name, "scenes": len(plan) - len(skipped), "skipped": skipped,
            "boxes": created, "replaced": replaced}
