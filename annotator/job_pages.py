"""The Jobs page: start forms (by role) and the job list with live progress.

``static/jobs.js`` polls ``/jobs/status.json`` and moves the progress bars. ``/jobs/start`` and
``/jobs/cancel`` take a form (answer: a redirect with a message) or JSON (answer: JSON); the
workspace starts pre-label jobs through them too. These JSON routes live outside ``/api/`` on
purpose: ``/api/`` is the documented labelling API (``openapi.py``); these belong to the page.
"""
from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user

from .auth import ALL_ROLES, roles_required
from .db import db
from .errors import redirect_on_refusal
from .models import DatasetVersion, Job, JobStatus, Role
from .request_args import json_object, parse_int
from .services import job_runner
from .services import models_registry as registry
from .services.job_spec import TERMINAL, JobRefused

bp = Blueprint("jobs", __name__)
WORKER_GRACE = timedelta(minutes=1)  # how long a queued job may wait before the page says so


@bp.get("/jobs")
@roles_required(*ALL_ROLES)
def index() -> Any:
    from .services.job_kinds import KINDS  # OpenCV and NumPy come with the kinds: not at start-up

    role = current_user.role
    startable = [k for k, spec in KINDS.items() if role == Role.admin or role in spec.roles]
    return render_template(
        "jobs/index.html", jobs=job_runner.list_jobs(100), startable=startable,
        retrain=KINDS["retrain"].params,  # the form shows the job's own defaults
        no_worker=no_worker_minutes(),
        datasets=db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id.desc())).all(),
        versions=registry.list_versions(), active=registry.active_version(),
        terminal={s.value for s in TERMINAL})


def _aware(value: datetime | None) -> datetime | None:
    # SQLite gives back naive datetimes; they were written in UTC.
    return value.replace(tzinfo=timezone.utc) if value is not None and value.tzinfo is None else value


def no_worker_minutes(now: datetime | None = None) -> int | None:
    """Minutes since a worker was last seen, when a job has been queued for over
    :data:`WORKER_GRACE` and no worker showed a sign of life since; else None. Workers only
    write ``heartbeat_at`` while they run a job, so an idle worker would have taken the job."""
    now = now or datetime.now(timezone.utc)
    oldest = _aware(db.session.scalar(sa.select(sa.func.min(Job.created_at))
                                      .where(Job.status == JobStatus.queued)))
    if oldest is None or now - oldest < WORKER_GRACE:
        return None
    seen = _aware(db.session.scalar(sa.select(sa.func.max(Job.heartbeat_at))))
    if seen is not None and now - seen < WORKER_GRACE:
        return None
    since = max(seen, oldest) if seen is not None else oldest
    return max(1, int((now - since).total_seconds() // 60))


@bp.get("/jobs/status.json")
@roles_required(*ALL_ROLES)
def status() -> Any:
    raw = request.args.get("ids", "").strip()
    ids = [parse_int(i.strip(), "Query parameter 'ids' (job ids separated by commas)", 1)
           for i in raw.split(",") if i.strip()] if raw else None
    jobs = job_runner.list_jobs(200, ids)
    return jsonify(jobs=[job_runner.job_json(j, full=True) for j in jobs])


@bp.post("/jobs/start")
@roles_required(*ALL_ROLES)
def start() -> Any:
    back = redirect_on_refusal(url_for("jobs.index"))
    if request.is_json:
        body = json_object()
        kind, params = body.get("kind") or "", body.get("params") or {}
        if not isinstance(kind, str) or not isinstance(params, dict):
            raise JobRefused("'kind' is the kind of job (text) and 'params' an object.")
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
    body = json_object() if request.is_json else request.form
    job = job_runner.cancel_job(_job_id(body.get("job_id")), current_user._get_current_object())
    if request.is_json:
        return jsonify(job=job_runner.job_json(job, full=True))
    flash(f"Job {job.id}: cancel requested.", "info")
    return redirect(back)


def _job_id(value: Any) -> int:
    """A job id from JSON (a number) or a form (text)."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise JobRefused("Say which job ('job_id', an id).")
    return parse_int(value.strip(), "'job_id'", 1)
