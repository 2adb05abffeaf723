"""Pages for videos, scenes and frames, and the upload that imports a video."""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    jsonify,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)
from flask_login import current_user
from werkzeug.utils import secure_filename

from .auth import ALL_ROLES, roles_required, wants_json
from .db import db
from .models import Frame, Role, Scene, Video

bp = Blueprint("videos", __name__)


@bp.get("/")
@roles_required(*ALL_ROLES)
def home() -> Any:
    return redirect(url_for("videos.index"))


@bp.get("/videos")
@roles_required(*ALL_ROLES)
def index() -> Any:
    videos = db.session.scalars(db.select(Video).order_by(Video.id.desc())).all()
    return render_template("videos/index.html", videos=videos)


@bp.get("/videos/<int:video_id>")
@roles_required(*ALL_ROLES)
def detail(video_id: int) -> Any:
    video = db.get_or_404(Video, video_id)
    first_frames = db.session.execute(
        db.select(Frame.scene_id, db.func.min(Frame.id))
        .where(Frame.video_id == video_id, Frame.scene_id.is_not(None))
        .group_by(Frame.scene_id)
    ).all()
    return render_template("videos/detail.html", video=video, thumbs=dict(first_frames))


@bp.post("/videos/<int:video_id>/scenes")
@roles_required(Role.data_manager)
def create_scene(video_id: int) -> Any:
    from .services import SceneRefused
    from .services.scenes import cut_scene

    video = db.get_or_404(Video, video_id)
    try:
        first, last = int(request.form["first"]), int(request.form["last"])
    except (KeyError, ValueError):
        abort(400, description="In and out must be frame numbers.")
    try:
        scene = cut_scene(video, first, last)
    except SceneRefused as err:
        abort(400, description=str(err))
    flash(f"Scene {scene.id} created from frames {first}–{last}.")
    return redirect(url_for("videos.detail", video_id=video.id))


@bp.get("/scenes/<int:scene_id>")
@roles_required(*ALL_ROLES)
def scene(scene_id: int) -> Any:
    return render_template("videos/scene.html", scene=db.get_or_404(Scene, scene_id))


@bp.get("/frames/<int:frame_id>.png")
@roles_required(*ALL_ROLES)
def frame_image(frame_id: int) -> Any:
    frame = db.get_or_404(Frame, frame_id)
    path = Path(current_app.config["SONOLABEL_DATA_DIR"]) / frame.relpath
    if not path.is_file():
        abort(404, description="The frame's image file is missing from the data directory.")
    # Content-addressed: the URL of a frame never changes content, so browsers may keep it.
    resp = send_file(path, mimetype="image/png", etag=frame.sha256, conditional=True, max_age=31536000)
    resp.cache_control.private = True
    resp.cache_control.immutable = True
    return resp


@bp.route("/videos/upload", methods=["GET", "POST"])
@roles_required(Role.data_manager)
def upload() -> Any:
    from .services import ImportRefused
    from .services.video_import import import_video

    context = {
        "max_mb": current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
        "scene_length": current_app.config["SONOLABEL_SCENE_LENGTH"],
    }
    if request.method == "GET":
        return render_template("videos/upload.html", **context)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        return _refuse(400, "Choose a file to import.", context)
    mode = request.form.get("scenes", "auto")
    if mode == "fixed":
        mode = f"fixed:{request.form.get('scene_length', '')}"
    tmp_dir = Path(current_app.config["SONOLABEL_DATA_DIR"]) / "tmp"
    tmp_dir.mkdir(parents=True, exist_ok=True)
    # The user's file name is only shown, never used as a path.
    fd, tmp_name = tempfile.mkstemp(dir=tmp_dir, suffix=".upload")
    try:
        with os.fdopen(fd, "wb") as out:
            upload.save(out)
        result = import_video(Path(tmp_name), request.form.get("patient", ""), scenes=mode,
                              user=current_user, source_name=secure_filename(upload.filename) or "upload")
    except ImportRefused as err:
        return _refuse(err.status, str(err), context)
    finally:
        os.unlink(tmp_name)
    url = url_for("videos.detail", video_id=result.video.id)
    message = (f"Imported {result.frames} frames in {result.scenes} scenes." if result.created
               else "This file was imported before; nothing was duplicated.")
    if wants_json():
        return jsonify(video_id=result.video.id, frames=result.frames, scenes=result.scenes,
                       roi=result.roi, created=result.created, url=url)
    flash(message)
    return redirect(url)


def _refuse(status: int, message: str, context: dict[str, Any]) -> Any:
    if wants_json():
        return jsonify(error=message), status
    flash(message, "error")
    return render_template("videos/upload.html", **context), status
