"""The JSON API of the labelling workspace, under /api/.

Views only parse the request, call the label services (``box_edits``, ``undo``, ``workflow``,
``event_log``) and shape the answer; refusals are answered by ``errors.py`` as
``{"error": message, ...detail}`` with the service's status code (400 bad input, 403 role,
404, 409 stale version or locked scene). CSRF is enforced by Flask-WTF on every
POST/PATCH/DELETE: the page sends the token from its ``csrf-token`` meta tag in the
``X-CSRFToken`` header. The OpenAPI document describing these routes is ``annotator/openapi.py``,
served at ``/api/openapi.json``; a test keeps it and the URL map in step.
"""
from __future__ import annotations

from typing import Any

from flask import Blueprint, jsonify, request, url_for
from flask_login import current_user

from .auth import ALL_ROLES, roles_required
from .db import db
from .models import Box, Frame, LabelClass, LabelEvent, Role, Scene, User
from .request_args import int_arg, json_object
from .services import box_edits, event_log, review_gate, track_fuse, tracks, undo, workflow
from .services.models_registry import prelabel_threshold
from .services.workflow import Change, LabelRefused

bp = Blueprint("api", __name__, url_prefix="/api")
EDIT = (Role.annotator,)


def _usernames() -> dict[int, str]:
    return dict(db.session.execute(db.select(User.id, User.username)).all())


def box_json(box: Box, names: dict[int, str] | None = None) -> dict[str, Any]:
    data = box.as_dict()
    names = names if names is not None else _usernames()
    data["author"] = names.get(box.author_id) if box.author_id else None
    return data


def scene_json(scene: Scene, names: dict[int, str] | None = None) -> dict[str, Any]:
    names = names if names is not None else _usernames()
    return {**workflow.scene_summary(scene, names), "patient": scene.video.patient.code}


def _name(user_id: int | None) -> str | None:
    if user_id is None:
        return None
    if user_id == current_user.id:
        return current_user.username
    return db.session.scalar(db.select(User.username).where(User.id == user_id))


def _change(change: Change) -> dict[str, Any]:
    """The answer to an edit, built from data taken before the commit (no further queries
    in the common case: the author and assignee are the user who saved)."""
    box = change.box_data
    if box is not None:
        box = {**box, "author": _name(box["author_id"])}
    return {"box": box, "event_ids": change.event_ids, "undo_ids": change.undo_ids,
            "scene": change.scene_data}


def _permissions(scene: Scene) -> dict[str, bool]:
    role = current_user.role
    # The workspace shows edit tools only where the server would take the edit.
    editor = role in workflow.EDITOR_ROLES
    return {
        "edit": editor and workflow.edit_refused(scene, current_user) is None,
        "review": role in workflow.REVIEWER_ROLES,
        "submit": editor and workflow.edit_refused(scene, current_user) is None,
    }


@bp.get("/scenes")
@roles_required(*ALL_ROLES)
def scenes() -> Any:
    found = workflow.find_scenes(status=request.args.get("status", ""), video_id=int_arg("video_id"),
                                 patient=request.args.get("patient", ""),
                                 assignee=request.args.get("assignee", ""))
    names = _usernames()
    return jsonify(scenes=[scene_json(s, names) for s in found])


@bp.get("/scenes/<int:scene_id>")
@roles_required(*ALL_ROLES)
def scene(scene_id: int) -> Any:
    """Everything the workspace needs: frames, boxes, classes, review notes, permissions, and
    the pre-labels' model's validation score threshold (``prelabel_threshold``, or null)."""
    scene = db.get_or_404(Scene, scene_id)
    names = _usernames()
    frames = scene.frames
    boxes = db.session.scalars(db.select(Box).where(Box.frame_id.in_([f.id for f in frames]))
                               .order_by(Box.id)).all()
    by_frame: dict[str, list] = {str(f.id): [] for f in frames}
    for box in boxes:
        by_frame[str(box.frame_id)].append(box_json(box, names))
    classes = db.session.scalars(db.select(LabelClass).order_by(LabelClass.hotkey)).all()
    return jsonify(
        scene={**scene_json(scene, names), "fps": scene.video.fps},
        classes=[{"id": c.id, "name": c.name, "color": c.color, "hotkey": c.hotkey} for c in classes],
        frames=[{"id": f.id, "index": f.frame_index, "timestamp_ms": f.timestamp_ms,
                 "width": f.width, "height": f.height, "reviewed_empty": f.reviewed_empty,
                 "image_url": url_for("videos.frame_image", frame_id=f.id)} for f in frames],
        boxes=by_frame,
        coverage=review_gate.coverage(frames, boxes),
        # the score threshold slider starts at the validation threshold of the pre-labels' model
        prelabel_threshold=prelabel_threshold([b.model_version for b in boxes if b.model_version]),
        review=event_log.review_notes(scene.id),
        permissions=_permissions(scene),
        user={"id": current_user.id, "username": current_user.username,
              "role": current_user.role.value},
    )


@bp.get("/frames/<int:frame_id>/boxes")
@roles_required(*ALL_ROLES)
def frame_boxes(frame_id: int) -> Any:
    frame = db.get_or_404(Frame, frame_id)
    names = _usernames()
    return jsonify(frame_id=frame.id, reviewed_empty=frame.reviewed_empty,
                   boxes=[box_json(b, names) for b in frame.boxes])


@bp.post("/frames/<int:frame_id>/boxes")
@roles_required(*EDIT)
def create_box(frame_id: int) -> Any:
    return _change(box_edits.create_box(frame_id, json_object(), current_user)), 201


@bp.patch("/boxes/<int:box_id>")
@roles_required(*EDIT)
def update_box(box_id: int) -> Any:
    return _change(box_edits.update_box(box_id, json_object(), current_user))


@bp.delete("/boxes/<int:box_id>")
@roles_required(*EDIT)
def delete_box(box_id: int) -> Any:
    return _change(box_edits.delete_box(box_id, json_object(), current_user))


@bp.post("/boxes/<int:box_id>/accept")
@roles_required(*EDIT)
def accept_box(box_id: int) -> Any:
    return _change(box_edits.accept_box(box_id, json_object(), current_user))


@bp.post("/boxes/<int:box_id>/reject")
@roles_required(*EDIT)
def reject_box(box_id: int) -> Any:
    return _change(box_edits.reject_box(box_id, json_object(), current_user))


@bp.post("/frames/<int:frame_id>/accept-above")
@roles_required(*EDIT)
def accept_above(frame_id: int) -> Any:
    answer = _change(box_edits.accept_above(frame_id, json_object(), current_user))
    names = _usernames()
    return {**answer, "boxes": [box_json(b, names) for b in db.session.get(Frame, frame_id).boxes]}


@bp.post("/scenes/<int:scene_id>/pre-labels/reject")
@roles_required(*EDIT)
def reject_pending(scene_id: int) -> Any:
    change, frames = box_edits.reject_pending(scene_id, json_object(), current_user)
    return _with_tracks(change, scene_id, rejected=len(change.undo_ids), frames=frames)


@bp.post("/frames/<int:frame_id>/no-findings")
@roles_required(*EDIT)
def no_findings(frame_id: int) -> Any:
    answer = _change(box_edits.set_no_findings(frame_id, json_object(), current_user))
    return {**answer, "reviewed_empty": db.session.get(Frame, frame_id).reviewed_empty}


@bp.post("/events/revert")
@roles_required(*EDIT)
def revert() -> Any:
    return _change(undo.revert_events(json_object().get("event_ids"), current_user))


@bp.post("/scenes/<int:scene_id>/status")
@roles_required(Role.annotator, Role.reviewer)
def scene_status(scene_id: int) -> Any:
    return _change(workflow.change_status(scene_id, json_object(), current_user))


@bp.post("/scenes/assign")
@roles_required(Role.data_manager)
def assign_scenes() -> Any:
    data = json_object()
    if "assignee" not in data:  # leaving it out must not unassign by accident
        raise LabelRefused("'assignee' is required: a user name, or null to unassign.")
    scenes = workflow.assign_scenes(data.get("scene_ids"), data["assignee"], current_user)
    names = _usernames()
    return jsonify(scenes=[{"id": s.id, "assignee": names.get(s.assignee_id)} for s in scenes])


@bp.get("/scenes/<int:scene_id>/tracks")
@roles_required(*ALL_ROLES)
def scene_tracks(scene_id: int) -> Any:
    return jsonify(tracks=tracks.list_tracks(scene_id), offers=track_fuse.offers(scene_id))


def _with_tracks(change: Change, scene_id: int, **extra: Any) -> dict[str, Any]:
    """A track operation's answer: the change, the scene's tracks and its boxes now (the
    operation may have touched every frame)."""
    names = _usernames()
    boxes = db.session.scalars(db.select(Box).join(Frame, Frame.id == Box.frame_id)
                               .where(Frame.scene_id == scene_id).order_by(Box.id)).all()
    by_frame: dict[str, list] = {}
    for box in boxes:
        by_frame.setdefault(str(box.frame_id), []).append(box_json(box, names))
    return {**_change(change), **extra, "tracks": tracks.list_tracks(scene_id),
            "offers": track_fuse.offers(scene_id), "scene_boxes": by_frame}


@bp.post("/scenes/<int:scene_id>/tracks/class")
@roles_required(*EDIT)
def track_class(scene_id: int) -> Any:
    return _with_tracks(tracks.set_class(scene_id, json_object(), current_user), scene_id)


@bp.post("/scenes/<int:scene_id>/tracks/accept")
@roles_required(*EDIT)
def track_accept(scene_id: int) -> Any:
    change, retired = tracks.accept(scene_id, json_object(), current_user)
    return _with_tracks(change, scene_id, retired=retired)


@bp.post("/scenes/<int:scene_id>/tracks/split")
@roles_required(*EDIT)
def track_split(scene_id: int) -> Any:
    change, new_id = tracks.split(scene_id, json_object(), current_user)
    return _with_tracks(change, scene_id, new_track_id=new_id)


@bp.post("/scenes/<int:scene_id>/tracks/fuse")
@roles_required(*EDIT)
def track_fuse_offer(scene_id: int) -> Any:
    return _with_tracks(track_fuse.fuse(scene_id, json_object(), current_user), scene_id)


@bp.post("/scenes/<int:scene_id>/tracks/merge")
@roles_required(*EDIT)
def track_merge(scene_id: int) -> Any:
    return _with_tracks(tracks.merge(scene_id, json_object(), current_user), scene_id)


def event_json(ev: LabelEvent, names: dict[int, str]) -> dict[str, Any]:
    return {"id": ev.id, "at": ev.at.isoformat(), "user": names.get(ev.user_id),
            "scene_id": ev.scene_id, "frame_id": ev.frame_id, "box_id": ev.box_id,
            "action": ev.action, "source": ev.source, "before": ev.before, "after": ev.after}


@bp.get("/scenes/<int:scene_id>/events")
@roles_required(*ALL_ROLES)
def scene_events(scene_id: int) -> Any:
    db.get_or_404(Scene, scene_id)
    names = _usernames()
    events = event_log.scene_events(scene_id, int_arg("frame_id"))
    return jsonify(events=[event_json(e, names) for e in events])


@bp.get("/model-feedback")
@roles_required(*ALL_ROLES)
def model_feedback() -> Any:
    return jsonify(versions=event_log.model_feedback(int_arg("scene_id")))


@bp.get("/openapi.json")
@roles_required(*ALL_ROLES)
def openapi() -> Any:
    from .openapi import spec

    return jsonify(spec())
