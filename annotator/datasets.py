"""Pages for dataset versions: list, create form, detail, and downloads (zip, Label Studio)."""
from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, Response, flash, redirect, render_template, request, send_file, url_for
from flask_login import current_user

from .auth import roles_required
from .db import db
from .errors import redirect_on_refusal, show_form_on_refusal, wants_json
from .models import DatasetVersion, LabelClass, Patient, Role, Scene, SceneStatus, Video
from .request_args import form_ints, parse_int

bp = Blueprint("datasets", __name__)
MANAGERS = (Role.data_manager,)  # admins pass every check


@bp.get("/datasets")
@roles_required(*MANAGERS)
def index() -> Any:
    versions = db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id.desc())).all()
    return render_template("datasets/index.html", versions=versions)


def _form_context() -> dict[str, Any]:
    counts = dict(db.session.execute(
        sa.select(Scene.status, sa.func.count(Scene.id)).group_by(Scene.status)).all())
    return {
        "statuses": [(s.value, counts.get(s, 0)) for s in SceneStatus],
        "videos": db.session.scalars(sa.select(Video).order_by(Video.id)).all(),
        "patients": db.session.scalars(sa.select(Patient).order_by(Patient.code)).all(),
        "classes": db.session.scalars(sa.select(LabelClass).order_by(LabelClass.id)).all(),
    }


@bp.get("/datasets/new")
@roles_required(*MANAGERS)
def new() -> Any:
    return render_template("datasets/new.html", form={}, **_form_context())


@bp.post("/datasets")
@roles_required(*MANAGERS)
def create() -> Any:
    from .services.dataset_create import create_version
    from .services.dataset_split import Selection, SplitSpec, parse_ratios

    form = request.form
    show_form_on_refusal("datasets/new.html", lambda: {"form": form, **_form_context()})
    video_ids = tuple(form_ints("video"))
    seed = parse_int(form.get("seed", "").strip() or "0", "'seed'", 0)
    ratios = parse_ratios(",".join(form.get(k, "") for k in ("train", "val", "test")))
    selection = Selection(statuses=tuple(form.getlist("status")), video_ids=video_ids,
                          patient_codes=tuple(form.getlist("patient")),
                          class_names=tuple(form.getlist("class")))
    spec = SplitSpec(by=form.get("split_by", "patient"), ratios=ratios, seed=seed)
    version = create_version(form.get("name", "").strip(), selection, spec, user=current_user)
    if wants_json():
        return {"version": version.name, "id": version.id, "hash": version.content_hash,
                "splits": version.summary}, 201
    flash(f"Version {version.name} frozen: {version.image_count} images, {version.box_count} boxes.")
    return redirect(url_for("datasets.detail", version_id=version.id))


@bp.get("/datasets/<int:version_id>")
@roles_required(*MANAGERS)
def detail(version_id: int) -> Any:
    version = db.get_or_404(DatasetVersion, version_id)
    return render_template("datasets/detail.html", version=version)


@bp.post("/datasets/<int:version_id>/delete")
@roles_required(*MANAGERS)
def delete(version_id: int) -> Any:
    from .services.dataset_split import DatasetRefused
    from .services.dataset_versions import delete_version

    version = db.get_or_404(DatasetVersion, version_id)
    name = version.name
    redirect_on_refusal(url_for("datasets.detail", version_id=version_id))
    if request.form.get("confirm", "").strip() != name:
        raise DatasetRefused(f"Type the version's name ({name}) to delete it.")
    delete_version(version)
    flash(f"Dataset version {name} deleted.")
    return redirect(url_for("datasets.index"))


@bp.get("/datasets/<int:version_id>/download")
@roles_required(*MANAGERS)
def download(version_id: int) -> Any:
    from .services.dataset_versions import ensure_zip

    version = db.get_or_404(DatasetVersion, version_id)
    path = ensure_zip(version)
    return send_file(path, mimetype="application/zip", as_attachment=True,
                     download_name=f"{version.name}.zip", etag=version.content_hash)


@bp.get("/datasets/<int:version_id>/labelstudio.json")
@roles_required(*MANAGERS)
def labelstudio_tasks(version_id: int) -> Any:
    """Tasks whose images are signed links to this server (``base``, by default the address
    the request came to; ``days`` valid), or ``image_prefix`` + file name when that is given."""
    from .services.labelstudio_export import version_tasks
    from .services.labelstudio_images import use_signed_urls
    from .services.signed_urls import DEFAULT_DAYS, check_days

    version = db.get_or_404(DatasetVersion, version_id)
    prefix = request.args.get("image_prefix")
    days = check_days(request.args.get("days") or DEFAULT_DAYS)
    tasks = version_tasks(version, prefix or "")
    if prefix is None:
        use_signed_urls(tasks, request.args.get("base") or request.url_root, days)
    return Response(json.dumps(tasks), mimetype="application/json", headers={
        "Content-Disposition": f'attachment; filename="{version.name}.labelstudio.json"'})


@bp.get("/datasets/labelstudio-config.xml")
@roles_required(*MANAGERS)
def labelstudio_config() -> Any:
    from .services.labelstudio_export import labeling_config

    return Response(labeling_config(), mimetype="application/xml", headers={
        "Content-Disposition": 'attachment; filename="sonolabel-labeling-config.xml"'})
