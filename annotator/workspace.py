"""Pages of the labelling workspace: scene lists and the review queue, the canvas editor, the audit.

The editor page is a shell: ``static/workspace.js`` loads the scene from ``/api/scenes/<id>``
and saves every action through the JSON API, so the page and the API share one code path.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .api import event_json
from .auth import ALL_ROLES, roles_required
from .db import db
from .models import Frame, LabelClass, Patient, Role, Scene, SceneStatus, User, Video
from .services import labels
from .services.labels import LabelRefused

bp = Blueprint("workspace", __name__)


def _filters() -> dict[str, Any]:
    return {"status": request.args.get("status", ""), "video_id": request.args.get("video_id", type=int),
            "patient": request.args.get("patient", "").strip(),
            "assignee": request.args.get("assignee", "").strip()}


def _list(title: str, filters: dict[str, Any], queue: bool = False) -> Any:
    try:
        scenes = labels.find_scenes(**filters)
    except LabelRefused as err:
        return render_template("error.html", code=400, message=str(err)), 400
    choices = {
        "statuses": [s.value for s in SceneStatus],
        "videos": db.session.scalars(db.select(Video).order_by(Video.id)).all(),
        "patients": db.session.scalars(db.select(Patient.code).order_by(Patient.code)).all(),
        "users": db.session.scalars(db.select(User.username).order_by(User.username)).all(),
        "assignable": [u.username for u in labels.assignable_users()]
        if current_user.role in (Role.admin, Role.data_manager) else [],
    }
    return render_template("workspace/list.html", title=title, scenes=scenes, filters=filters,
                           queue=queue, feedback=labels.model_feedback(), **choices)


@bp.get("/scenes")
@roles_required(*ALL_ROLES)
def scenes() -> Any:
    return _list("Scenes", _filters())


@bp.post("/scenes/assign")
@roles_required(Role.data_manager)
def assign() -> Any:
    form = request.form
    back = url_for("workspace.scenes", **{k: v for k in ("status", "video_id", "patient", "assignee")
                                           if (v := form.get(f"filter_{k}", "").strip())})
    try:
        ids = [int(i) for i in form.getlist("scene_id")]
    except ValueError:
        ids = []
    if not ids:
        flash("Tick the scenes to assign first.", "error")
        return redirect(back)
    who = form.get("to", "").strip()
    try:
        scenes = labels.assign_scenes(ids, who or None, current_user)
    except LabelRefused as err:
        flash(str(err), "error")
        return redirect(back)
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
    return render_template("workspace/label.html", scene=scene)


@bp.get("/scenes/<int:scene_id>/audit")
@roles_required(*ALL_ROLES)
def scene_audit(scene_id: int) -> Any:
    scene = db.get_or_404(Scene, scene_id)
    return _audit(scene, None, labels.scene_events(scene_id=scene.id))


@bp.get("/frames/<int:frame_id>/audit")
@roles_required(*ALL_ROLES)
def frame_audit(frame_id: int) -> Any:
    frame = db.get_or_404(Frame, frame_id)
    return _audit(frame.scene, frame, labels.scene_events(frame_id=frame.id))


def _audit(scene: Scene | None, frame: Frame | None, events: list) -> Any:
    names = dict(db.session.execute(db.select(User.id, User.username)).all())
    index = {}
    if scene is not None:
        index = dict(db.session.execute(db.select(Frame.id, Frame.frame_index)
                                        .where(Frame.scene_id == scene.id)).all())
    classes = dict(db.session.execute(db.select(LabelClass.id, LabelClass.name)).all())
    return render_template("workspace/audit.html", scene=scene, frame=frame, frame_index=index,
                           classes=classes, events=[event_json(e, names) for e in events])
