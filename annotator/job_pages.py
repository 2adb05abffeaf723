"""The Jobs page: start forms (by role) and the job list with live progress.

``static/jobs.js`` polls ``/jobs/status.json`` and moves the progress bars. ``/jobs/start`` and
``/jobs/cancel`` take a form (answer: a redirect with a message) or JSON (answer: JSON); the
workspace starts pre-label jobs through them too. These JSON routes live outside ``/api/`` on
purpose: ``/api/`` is the documented labelling API (``openapi.py``); these belong to the page.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .auth import ALL_ROLES, roles_required
from .db import db
from .errors import redirect_on_refusal
from .models import DatasetVersion, Role
from .services import job_runner
from .services import models_registry as registry
from .services.job_spec import TERMINAL, JobRefused

bp = Blueprint("jobs", __name__)


@bp.get("/jobs")
@roles_required(*ALL_ROLES)
def index() -> Any:
    from .services.job_kinds import KINDS  # OpenCV and NumPy come with the kinds: not at start-up

    role = current_user.role
    startable = [k for k, spec in KINDS.items() if role == Role.admin or role in spec.roles]
    return render_template(
        "jobs/index.html", jobs=job_runner.list_jobs(100), startable=startable,
        datasets=db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id.desc())).all(),
        versions=registry.list_versions(), active=registry.active_version(),
        terminal={s.value for s in TERMINAL})


@bp.get("/jobs/status.json")
@roles_required(*ALL_ROLES)
def status() -> Any:
    raw = request.args.get("ids", "").strip()
    try:
        ids = [int(i) for i in raw.split(",") if i.strip()] if raw else None
    except ValueError:
        return jsonify(error="ids are job ids separated by commas"), 400
    jobs = job_runner.list_jobs(200, ids)
    return jsonify(jobs=[job_runner.job_json(j, full=True) for j in jobs])


@bp.post("/jobs/start")
@roles_required(*ALL_ROLES)
def start() -> Any:
    back = redirect_on_refusal(url_for("jobs.index"))
    if request.is_json:
        body = request.get_json(silent=True) or {}
        kind, params = str(body.get("kind") or ""), body.get("params") or {}
    else:
        from .services.job_kinds import KINDS

        kind = request.form.get("kind", "")
        spec = KINDS.get(kind)
        params = {name: request.form.get(name, "") for name in (spec.params if spec else ())}
        params = {k: v for k, v in params.items() if v.strip()}
    if not kind:
        raise JobRefused("Say which kind of job to start.")
    job = job_runner.start_job(kind, params, current_user._get_current_object())
    if request.is_json:
        return jsonify(job=job_runner.job_json(job, full=True)), 202
    flash(f"Started {job.kind} job {job.id}.", "info")
    return redirect(back)


@bp.post("/jobs/cancel")
@roles_required(*ALL_ROLES)
def cancel() -> Any:
    back = redirect_on_refusal(url_for("jobs.index"))
    body = request.get_json(silent=True) if request.is_json else request.form
    job = job_runner.cancel_job(_job_id((body or {}).get("job_id")),
                                current_user._get_current_object())
    if request.is_json:
        return jsonify(job=job_runner.job_json(job, full=True))
    flash(f"Job {job.id}: cancel requested.", "info")
    return redirect(back)


def _job_id(value: Any) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise JobRefused("Say which job (an id).") from None
