"""Pages of the labelling workspace: scene lists and the review queue, the canvas editor, the audit.

The editor page is a shell: ``static/workspace.js`` loads the scene from ``/api/scenes/<id>``
and saves every action through the JSON API, so the page and the API share one code path.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .api import box_json, event_json
from .auth import ALL_ROLES, roles_required
from .db import db
from .errors import redirect_on_refusal
from .models import Box, Frame, LabelClass, Patient, Role, Scene, SceneStatus, User, Video
from .request_args import form_ints, int_arg, json_object
from .services import ServiceError
from .services import event_log, workflow
from .services.input_checks import is_db_int, shown
from .services.models_registry import active_version

bp = Blueprint("workspace", __name__)


def _filters() -> dict[str, Any]:
    return {"status": request.args.get("status", ""), "video_id": int_arg("video_id"),
            "patient": request.args.get("patient", "").strip(),
            "assignee": request.args.get("assignee", "").strip()}


def scene_cards(scenes: list[Scene]) -> tuple[list[Scene], dict[int, int], dict[int, int]]:
    """Scenes in reading order (video, then first frame: a list of the newest change first
    read 3, 2, 1), with each one's box count and its first frame's id (the thumbnail)."""
    scenes = sorted(scenes, key=lambda s: (s.video_id, s.first_frame, s.id))
    ids = [s.id for s in scenes]
    counts: dict[int, int] = {}
    thumbs: dict[int, int] = {}
    for start in range(0, len(ids), 500):  # bounded IN lists, whatever the filter lets through
        chunk = ids[start:start + 500]
        counts.update(db.session.execute(
            db.select(Frame.scene_id, db.func.count(Box.id)).join(Box, Box.frame_id == Frame.id)
            .where(Frame.scene_id.in_(chunk)).group_by(Frame.scene_id)).all())
        thumbs.update(db.session.execute(
            db.select(Frame.scene_id, db.func.min(Frame.id)).where(Frame.scene_id.in_(chunk))
            .group_by(Frame.scene_id)).all())
    return scenes, counts, thumbs


def _list(title: str, filters: dict[str, Any], queue: bool = False) -> Any:
    scenes, box_counts, thumbs = scene_cards(workflow.find_scenes(**filters))
    choices = {
        "statuses": [s.value for s in SceneStatus],
        "videos": db.session.scalars(db.select(Video).order_by(Video.id)).all(),
        "patients": db.session.scalars(db.select(Patient.code).order_by(Patient.code)).all(),
        "users": db.session.scalars(db.select(User.username).order_by(User.username)).all(),
        "assignable": [u.username for u in workflow.assignable_users()]
        if current_user.role in (Role.admin, Role.data_manager) else [],
    }
    return render_template("workspace/list.html", title=title, scenes=scenes, filters=filters,
                           box_counts=box_counts, thumbs=thumbs, queue=queue, feedback=event_log.model_feedback(), **choices)


@bp.get("/scenes")
@roles_required(*ALL_ROLES)
def scenes() -> Any:
    return _list("Scenes", _filters())


@bp.post("/scenes/assign")
@roles_required(Role.data_manager)
def assign() -> Any:
    form = request.form
    back = redirect_on_refusal(url_for("workspace.scenes", **{
        k: v for k in ("status", "video_id", "patient", "assignee")
        if (v := form.get(f"filter_{k}", "").strip())}))
    ids = form_ints("scene_id")
    if not ids:
        raise ServiceError("Tick the scenes to assign first.")
    who = form.get("to", "").strip()
    scenes = workflow.assign_scenes(ids, who or None, current_user)
    flash(f"{len(scenes)} scene{'' if len(scenes) == 1 else 's'} "
          + (f"assigned to {who}." if who else "unassigned."))
    return redirect(back)


@bp.get("/review")
@roles_required(*ALL_ROLES)
def review_queue() -> Any:
    filters = _filters()
    filters["status"] = filters["status"] or SceneStatus.submitted.value
    return _list("Review queue", filters, queue=True)


@bp.get("/scenes/<int:scene_id>/label")
@roles_required(*ALL_ROLES)
def label(scene_id: int) -> Any:
    scene = db.get_or_404(Scene, scene_id)
    # Said before the click, in words, rather than as a failed job's CLI hint.
    blocked = None if active_version() else (
        "No model is active yet, so there is nothing to pre-label with: an admin activates a "
        "trained model on the Models page.")
    return render_template("workspace/label.html", scene=scene, prelabel_blocked=blocked)


@bp.get("/scenes/<int:scene_id>/audit")
@roles_required(*ALL_ROLES)
def scene_audit(scene_id: int) -> Any:
    scene = db.get_or_404(Scene, scene_id)
    return _audit(scene, None, event_log.scene_events(scene_id=scene.id))


@bp.get("/frames/<int:frame_id>/audit")
@roles_required(*ALL_ROLES)
def frame_audit(frame_id: int) -> Any:
    frame = db.get_or_404(Frame, frame_id)
    return _audit(frame.scene, frame, event_log.scene_events(frame_id=frame.id))


def _audit(scene: Scene | None, frame: Frame | None, events: list) -> Any:
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    index = {}
    if scene is not None:
        index = dict(db.session.execute(db.select(Frame.id, Frame.frame_index)
                                        .where(Frame.scene_id == scene.id)).all())
    classes = dict(db.session.execute(db.select(LabelClass.id, LabelClass.name)).all())
    return render_template("workspace/audit.html", scene=scene, frame=frame, frame_index=index,
                           classes=classes, events=[event_json(e, names) for e in events])


@bp.post("/scenes/<int:scene_id>/propagate")
@roles_required(Role.annotator)
def propagate(scene_id: int) -> Any:
    """Carry a frame's boxes to the next frame(s) (key P; ``frames``: how many on, default 1)."""
    from .services.propagate import PropagationRefused, get_scene, propagate as run  # OpenCV: not at start-up

    body = json_object()
    scene = get_scene(scene_id)
    frame_id = body.get("frame_id")
    if not is_db_int(frame_id, minimum=1):
        raise PropagationRefused(f"'frame_id' must be a frame id, not {shown(frame_id)}.")
    frame = db.session.get(Frame, frame_id)
    if frame is None or frame.scene_id != scene.id:
        raise PropagationRefused(f"Frame {frame_id} ('frame_id') is not in scene {scene.id}.", status=404)
    steps = body.get("frames", 1)
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 50:
        raise PropagationRefused("'frames' is how many frames on: 1 to 50 (a whole scene: start a "
                                 "propagate job).")
    result = run(scene, frame, steps, current_user._get_current_object())
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    frames = [{"frame_id": frame_id,
               "boxes": [box_json(b, names) for b in db.session.get(Frame, frame_id).boxes]}
              for frame_id in result.created]
    return jsonify(frames=frames, created=sum(len(v) for v in result.created.values()),
                   replaced=result.replaced, event_ids=result.event_ids, undo_ids=result.undo_ids,
                   scene=result.scene_data)


@bp.post("/scenes/<int:scene_id>/propagate-track")
@roles_required(Role.annotator)
def propagate_track(scene_id: int) -> Any:
    """Propagate one track through the scene from its keyframes (``track_id``), or start a
    track from a pending pre-label (``box_id``); with ``frame_id``, the frame just corrected:
    only the spans it bounds are re-propagated; with ``threshold`` (the score slider), the
    pre-labels shown at it steer the track's boxes."""
    from .services.box_edits import score_threshold
    from .services.propagate import PropagationRefused, get_scene  # OpenCV: not at start-up
    from .services.track_propagation import propagate_stored_track, seed_prelabel

    body = json_object()
    scene = get_scene(scene_id)
    track_id, seed = seed_prelabel(scene, body)
    changed, frame_id = None, body.get("frame_id")
    if frame_id is not None:
        if not is_db_int(frame_id, minimum=1):
            raise PropagationRefused(f"'frame_id' must be a frame id, not {shown(frame_id)}.")
        changed = db.session.get(Frame, frame_id)
        if changed is None or changed.scene_id != scene.id:
            raise PropagationRefused(f"Frame {frame_id} ('frame_id') is not in scene {scene.id}.",
                                     status=404)
    threshold = score_threshold(body) if body.get("threshold") is not None else None
    result = propagate_stored_track(scene, track_id, current_user._get_current_object(), changed,
                                    seed, threshold)
    # The pre-label a track was started from is sent back too: it has its track id now.
    reload = [*result.changed, *([seed.frame.frame_index] if seed is not None else [])]
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    frames = db.session.scalars(db.select(Frame).where(Frame.scene_id == scene.id,
                                                       Frame.frame_index.in_(reload)))
    return jsonify(**result.as_dict(),
                   frames=[{"frame_id": f.id, "frame_index": f.frame_index,
                            "boxes": [box_json(b, names) for b in f.boxes]} for f in frames])


@bp.get("/scenes/next")
@roles_required(Role.annotator)
def next_scene() -> Any:
    """The "next scene" button: the open scene the model is least sure of."""
    from .services.ranking import next_scene as pick  # OpenCV: not at start-up

    after_id = int_arg("after")
    after = db.session.get(Scene, after_id) if after_id else None
    scene = pick(current_user._get_current_object(), after_id)
    if scene is not None and after is not None and scene.status != SceneStatus.returned:
        # The video's next open scene before the model's pick elsewhere: jumping between videos
        # loses the anatomy the annotator has just learnt. Returned scenes still come first.
        following = db.session.scalars(
            db.select(Scene).where(Scene.video_id == after.video_id,
                                   Scene.first_frame > after.first_frame,
                                   Scene.status.in_((SceneStatus.new, SceneStatus.in_progress)),
                                   db.or_(Scene.assignee_id.is_(None),
                                          Scene.assignee_id == current_user.id))
            .order_by(Scene.first_frame)).first()
        scene = following or scene
    if scene is None:
        flash("No scene is waiting for you: every scene is labelled, submitted or taken.", "info")
        return redirect(url_for("workspace.scenes"))
    return redirect(url_for("workspace.label", scene_id=scene.id))
