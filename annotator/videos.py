"""Pages for videos, scenes and frames, and the upload that imports a video."""
from __future__ import annotations

import re
import secrets
import time
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

from .auth import ALL_ROLES, roles_required
from .db import db
from .errors import render_on_refusal, show_form_on_refusal, wants_json
from .models import Frame, Role, Scene, SceneStatus, Video
from .request_args import parse_int
from .services import ImportRefused
from .services.frames import data_dir
from .services.input_checks import json_document
from .services.uploads import tmp_dir, upload_file

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
    return render_template("videos/detail.html", video=video, thumbs=dict(first_frames),
                           **_label_form())


@bp.post("/videos/<int:video_id>/scenes")
@roles_required(Role.data_manager)
def create_scene(video_id: int) -> Any:
    from .services.scene_edit import cut_scene

    video = db.get_or_404(Video, video_id)
    first, last = (parse_int(request.form.get(k, "").strip(), f"'{k}' (a frame number)", 0)
                   for k in ("first", "last"))
    scene = cut_scene(video, first, last)
    flash(f"Scene {scene.id} created from frames {first}–{last}.")
    return redirect(url_for("videos.detail", video_id=video.id))


LABEL_FILE_MAX_MB = 64
LABEL_FORMATS = {"coco": "COCO", "labelstudio": "Label Studio JSON"}


def _label_form(choice: dict[str, str] | None = None) -> dict[str, Any]:
    """What the label-import form shows: its options and the user's last choice."""
    from .services.label_import import MATCHES

    return {"choice": choice or {"format": "coco", "match": "frame_index", "status": "",
                                 "reopen": "", "reason": ""},
            "formats": LABEL_FORMATS, "matches": MATCHES,
            "statuses": [s.value for s in SceneStatus], "label_max_mb": LABEL_FILE_MAX_MB}


CHECKED_LABELS_MAX_AGE_S = 24 * 3600
_TOKEN = re.compile(r"[0-9a-f]{32}")


def _checked_path(video_id: int, token: str) -> Path:
    """Where a checked label file waits for "Import these boxes" (the token is ours, hex only)."""
    return tmp_dir() / f"labels-{video_id}-{token}.json"


def _keep_checked(video_id: int, raw: bytes) -> str:
    folder = tmp_dir()
    cutoff = time.time() - CHECKED_LABELS_MAX_AGE_S
    for old in folder.glob("labels-*.json"):  # checked and never imported
        try:
            if old.stat().st_mtime < cutoff:
                old.unlink()
        except FileNotFoundError:
            pass
    token = secrets.token_hex(16)
    _checked_path(video_id, token).write_bytes(raw)
    return token


@bp.post("/videos/<int:video_id>/labels")
@roles_required(Role.data_manager)
def import_labels(video_id: int) -> Any:
    """Check (dry run) or import a COCO / Label Studio file of boxes for this video's frames.

    A file that passed its check is kept for a day, so "Import these boxes" needs no second
    upload; it is deleted once imported. So is a file refused only because it would change
    submitted or reviewed scenes, for an admin to reopen them (``reopen``, ``reason``).
    """
    from .services.coco_import import import_coco
    from .services.label_import import MATCHES, LabelImportRefused
    from .services.labelstudio_import import import_labelstudio
    from .services.workflow import ScenesLocked, reopen_leave

    video = db.get_or_404(Video, video_id)
    form = request.form
    choice = {"format": form.get("format", "coco"), "match": form.get("match", "frame_index"),
              "status": form.get("status", ""), "reopen": "1" if form.get("reopen") else "",
              "reason": form.get("reason", "")}
    dry_run = form.get("action") != "import"
    checked: Path | None = None

    def page(report: Any = None, problems: list[str] | None = None, message: str = "",
             token: str = "", locked: bool = False) -> str:
        return render_template("videos/labels.html", video=video, report=report,
                               problems=problems or [], message=message, token=token,
                               locked=locked, **_label_form(choice))

    def refused(err: Any) -> str:
        """The same page, with the message and every problem in place of the report."""
        if isinstance(err, ScenesLocked):
            token = form["token"] if checked is not None else _keep_checked(video.id, raw)
            return page(message=err.message, token=token, locked=True)
        return page(problems=err.problems if isinstance(err, LabelImportRefused) else None,
                    message=err.message)

    render_on_refusal(refused)
    leave = (reopen_leave(current_user._get_current_object(), choice["reason"])
             if choice["reopen"] else None)
    if choice["format"] not in LABEL_FORMATS or choice["match"] not in MATCHES:
        raise ImportRefused("Choose a format (COCO or Label Studio) and a way to match frames.")
    upload = request.files.get("file")
    if upload is not None and upload.filename:
        raw = upload.stream.read(LABEL_FILE_MAX_MB * 1024 * 1024 + 1)
        if len(raw) > LABEL_FILE_MAX_MB * 1024 * 1024:
            raise ImportRefused(f"The label file is larger than {LABEL_FILE_MAX_MB} MB.", 413)
    elif _TOKEN.fullmatch(form.get("token", "")):
        checked = _checked_path(video.id, form["token"])
        try:
            raw = checked.read_bytes()
        except FileNotFoundError:
            raise ImportRefused("The checked file is gone (imported already, or older than a "
                                "day); choose it again.") from None
    else:
        raise ImportRefused("Choose a JSON file of labels.")
    data = json_document(raw, "The file")
    run = import_coco if choice["format"] == "coco" else import_labelstudio
    report = run(data, video.id, match=choice["match"], status=choice["status"] or None,
                 dry_run=dry_run, user=current_user, reopen=leave)
    if dry_run:
        return page(report=report, token=_keep_checked(video.id, raw))
    if checked is not None:
        checked.unlink(missing_ok=True)
    return page(report=report)


@bp.get("/scenes/<int:scene_id>")
@roles_required(*ALL_ROLES)
def scene(scene_id: int) -> Any:
    return render_template("videos/scene.html", scene=db.get_or_404(Scene, scene_id))


@bp.get("/frames/<int:frame_id>.png")
@roles_required(*ALL_ROLES)
def frame_image(frame_id: int) -> Any:
    return _send_frame_png(db.get_or_404(Frame, frame_id))


# Public on purpose: no log-in, the signed token is the permission (services/signed_urls.py).
# GET only, it changes nothing, so it needs no CSRF token.
@bp.get("/signed/frames/<token>.png")
def signed_frame_image(token: str) -> Any:
    from .services.signed_urls import frame_id_of

    resp = _send_frame_png(db.get_or_404(Frame, frame_id_of(token)))
    # Label Studio's page runs on another origin and may load the image into a canvas.
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


# Public like the signed frame images: the token names a video's frame range and frame rate.
@bp.get("/signed/clips/<clip>.mp4")
def signed_scene_clip(clip: str) -> Any:
    from .services.labelstudio_clips import ensure_clip, range_frames
    from .services.signed_urls import clip_of

    video_id, first, last, fps = clip_of(clip)
    path = ensure_clip(range_frames(video_id, first, last), fps)
    # Named by its content; conditional: browsers seek in a video with Range requests.
    resp = send_file(path, mimetype="video/mp4", etag=path.stem, conditional=True, max_age=31536000)
    resp.cache_control.private = True
    resp.headers["Access-Control-Allow-Origin"] = "*"
    return resp


def _send_frame_png(frame: Frame) -> Any:
    path = data_dir() / frame.relpath
    if not path.is_file():
        abort(404, description="The frame's image file is missing from the data directory.")
    # Content-addressed: the URL of a frame never changes content, so browsers may keep it.
    resp = send_file(path, mimetype="image/png", etag=frame.sha256, conditional=True, max_age=31536000)
    resp.cache_control.private = True
    resp.cache_control.immutable = True
    return resp


SHOWN_NAME_MAX = 80


def _shown_file_name(name: str) -> str:
    """A sanitised file name cut to :data:`SHOWN_NAME_MAX` characters, keeping its extension."""
    if len(name) <= SHOWN_NAME_MAX:
        return name
    stem, dot, ext = name.rpartition(".")
    ext = f".{ext}" if dot and stem and len(ext) <= 10 else ""
    return name[:SHOWN_NAME_MAX - len(ext) - 3] + "..." + ext


@bp.route("/videos/upload", methods=["GET", "POST"])
@roles_required(Role.data_manager)
def upload() -> Any:
    from .services.video_import import import_video

    context = {
        "max_mb": current_app.config["MAX_CONTENT_LENGTH"] // (1024 * 1024),
        "scene_length": current_app.config["SONOLABEL_SCENE_LENGTH"],
    }
    if request.method == "GET":
        return render_template("videos/upload.html", **context)
    show_form_on_refusal("videos/upload.html", lambda: context)
    upload = request.files.get("file")
    if upload is None or not upload.filename:
        raise ImportRefused("Choose a file to import.")
    mode = request.form.get("scenes", "auto")
    if mode == "fixed":
        mode = f"fixed:{request.form.get('scene_length', '')}"
    source_name = secure_filename(upload.filename) or "upload"
    # The file waits under the user's (sanitised, shortened) name in a folder of its own, so
    # every refusal of the import names their file, never a server path.
    with upload_file(_shown_file_name(source_name)) as path:  # swept if this process dies
        upload.save(path)
        result = import_video(path, request.form.get("patient", ""), scenes=mode,
                              user=current_user, source_name=source_name)
    url = url_for("videos.detail", video_id=result.video.id)
    message = (f"Imported {result.frames} frames in {result.scenes} scenes." if result.created
               else "This file was imported before; nothing was duplicated.")
    if result.skipped:
        message += (f" {len(result.skipped)} damaged frame(s) could not be decoded and were "
                    "skipped: see the list below.")
    if wants_json():
        return jsonify(video_id=result.video.id, frames=result.frames, scenes=result.scenes,
                       roi=result.roi, created=result.created, url=url,
                       skipped_frames=result.skipped)
    flash(message)
    return redirect(url)
