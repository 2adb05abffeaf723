"""Pages and JSON for jobs and model versions, and the workspace's propagate / next-scene.

- ``/jobs``: start forms (by role) and the job list; ``static/jobs.js`` polls
  ``/jobs/status.json`` and moves the progress bars. ``/jobs/start`` and ``/jobs/cancel``
  take a form (answer: a redirect with a message) or JSON (answer: JSON).
- ``/models``: versions, their evaluations, activation; ``/models/report?a=ID[&b=ID]``: one
  report's plots, or two compared (the reference paper's Table 2).
- ``/scenes/<id>/propagate`` (key P) and ``/scenes/next`` (the "next scene" button).

JSON routes live outside ``/api/`` on purpose: ``/api/`` is the documented labelling API
(``openapi.py``); these belong to the pages. Ids of jobs and versions travel in the query or
body, so every URL is built from the scene/frame ids the rest of the app uses. Plots are
inline SVG drawn here, without scripts or CDNs.
"""
from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

import sqlalchemy as sa
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for
from flask_login import current_user
from markupsafe import Markup, escape

from .auth import ALL_ROLES, roles_required
from .db import db
from .models import DatasetVersion, EvaluationReport, Frame, Role, User
from .services import ServiceError
from .services import jobs as jobs_service
from .services import models_registry as registry

bp = Blueprint("jobs", __name__)
COLORS = {"tumor": "#5ec8f2", "vessel": "#e53935"}
PALETTE = ["#5ec8f2", "#e53935", "#ffd166", "#8bc34a", "#ba68c8"]


def _wants_json() -> bool:
    return request.is_json or request.accept_mimetypes.best == "application/json"


def _refuse(err: ServiceError, back: str) -> Any:
    if _wants_json():
        return jsonify(error=str(err)), err.status
    flash(str(err), "error")
    return redirect(back)


def _back(default: str) -> str:
    target = request.form.get("next") or default
    if not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        target = default
    return target


def _id(value: Any, what: str) -> int:
    try:
        return int(str(value))
    except (TypeError, ValueError):
        raise jobs_service.JobRefused(f"Say which {what} (an id).") from None


# --- jobs ------------------------------------------------------------------------------------

@bp.get("/jobs")
@roles_required(*ALL_ROLES)
def index() -> Any:
    kinds = jobs_service.load_kinds()
    role = current_user.role
    startable = [k for k, spec in kinds.items() if role == Role.admin or role in spec.roles]
    return render_template(
        "jobs/index.html", jobs=jobs_service.list_jobs(100), startable=startable,
        datasets=db.session.scalars(sa.select(DatasetVersion).order_by(DatasetVersion.id.desc())).all(),
        versions=registry.list_versions(), active=registry.active_version(),
        job_json=jobs_service.job_json, terminal={s.value for s in jobs_service.TERMINAL})


@bp.get("/jobs/status.json")
@roles_required(*ALL_ROLES)
def status() -> Any:
    raw = request.args.get("ids", "").strip()
    try:
        ids = [int(i) for i in raw.split(",") if i.strip()] if raw else None
    except ValueError:
        return jsonify(error="ids are job ids separated by commas"), 400
    jobs = jobs_service.list_jobs(200, ids)
    return jsonify(jobs=[jobs_service.job_json(j, full=True) for j in jobs])


@bp.post("/jobs/start")
@roles_required(*ALL_ROLES)
def start() -> Any:
    back = _back(url_for("jobs.index"))
    if request.is_json:
        body = request.get_json(silent=True) or {}
        kind, params = str(body.get("kind") or ""), body.get("params") or {}
    else:
        kind = request.form.get("kind", "")
        spec = jobs_service.load_kinds().get(kind)
        params = {name: request.form.get(name, "") for name in (spec.params if spec else ())}
        params = {k: v for k, v in params.items() if v.strip()}
    try:
        if not kind:
            raise jobs_service.JobRefused("Say which kind of job to start.")
        job = jobs_service.start_job(kind, params, current_user._get_current_object())
    except ServiceError as err:
        return _refuse(err, back)
    if request.is_json:
        return jsonify(job=jobs_service.job_json(job, full=True)), 202
    flash(f"Started {job.kind} job {job.id}.", "info")
    return redirect(back)


@bp.post("/jobs/cancel")
@roles_required(*ALL_ROLES)
def cancel() -> Any:
    body = request.get_json(silent=True) if request.is_json else request.form
    try:
        job = jobs_service.cancel_job(_id((body or {}).get("job_id"), "job"),
                                      current_user._get_current_object())
    except ServiceError as err:
        return _refuse(err, url_for("jobs.index"))
    if request.is_json:
        return jsonify(job=jobs_service.job_json(job, full=True))
    flash(f"Job {job.id}: cancel requested.", "info")
    return redirect(url_for("jobs.index"))


# --- model versions and reports --------------------------------------------------------------

@bp.get("/models")
@roles_required(*ALL_ROLES)
def models() -> Any:
    versions = registry.list_versions()
    reports = registry.reports_of()
    names = {v.id: v.name for v in versions}
    datasets = dict(db.session.execute(sa.select(DatasetVersion.id, DatasetVersion.name)).all())
    return render_template("jobs/models.html", versions=versions, reports=reports, names=names,
                           datasets=datasets)


@bp.post("/models/activate")
@roles_required()
def activate() -> Any:
    body = request.get_json(silent=True) if request.is_json else request.form
    try:
        ref = (body or {}).get("model_version")
        if not ref:
            raise registry.ModelRefused("Say which model version to activate.")
        version = registry.activate(ref)
    except ServiceError as err:
        return _refuse(err, url_for("jobs.models"))
    if request.is_json:
        return jsonify(model_version=registry.version_json(version))
    flash(f"{version.name} is now the active model: pre-labels use it.", "info")
    return redirect(url_for("jobs.models"))


@bp.get("/models/report")
@roles_required(*ALL_ROLES)
def report() -> Any:
    ids = [request.args.get(k, type=int) for k in ("a", "b")]
    rows = [db.session.get(EvaluationReport, i) if i else None for i in ids]
    if rows[0] is None:
        if ids[0]:
            return render_template("error.html", code=404, message=f"No report {ids[0]}."), 404
        return redirect(url_for("jobs.models"))
    if ids[1] and rows[1] is None:
        return render_template("error.html", code=404, message=f"No report {ids[1]}."), 404
    a, b = rows
    comparison, problem = None, None
    if b is not None:
        from detector.stats import compare_reports

        try:
            comparison = compare_reports(a.report, b.report, n_resamples=5000,
                                         labels=(a.model_version.name, b.model_version.name))
        except ValueError as err:
            problem = str(err)
    datasets = dict(db.session.execute(sa.select(DatasetVersion.id, DatasetVersion.name)).all())
    return render_template("jobs/report.html", a=a, b=b, comparison=comparison, problem=problem,
                           datasets=datasets, pr_plot=pr_plot, sensitivity_plot=sensitivity_plot,
                           paired_plot=paired_plot)


# --- workspace: propagate and next scene -----------------------------------------------------

@bp.post("/scenes/<int:scene_id>/propagate")
@roles_required(Role.annotator)
def propagate(scene_id: int) -> Any:
    """Carry a frame's boxes to the next frame (``frames``: how many on, default 1)."""
    from .api import box_json
    from .services.propagate import get_scene, propagate as run

    body = request.get_json(silent=True)
    try:
        if not isinstance(body, dict):
            raise jobs_service.JobRefused("Send a JSON object with frame_id.")
        scene = get_scene(scene_id)
        frame = db.session.get(Frame, _id(body.get("frame_id"), "frame"))
        if frame is None or frame.scene_id != scene.id:
            raise jobs_service.JobRefused(f"Frame {body.get('frame_id')} is not in scene {scene.id}.",
                                          status=404)
        steps = body.get("frames", 1)
        if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= 50:
            raise jobs_service.JobRefused("'frames' is how many frames on: 1 to 50 "
                                          "(a whole scene: start a propagate job).")
        result = run(scene, frame, steps, current_user._get_current_object())
    except ServiceError as err:
        return jsonify(error=str(err)), err.status
    names = dict(db.session.execute(sa.select(User.id, User.username)).all())
    frames = []
    for frame_id in result.created:
        target = db.session.get(Frame, frame_id)
        frames.append({"frame_id": frame_id, "boxes": [box_json(b, names) for b in target.boxes]})
    scene_data = result.scene_data
    scene_data = {**scene_data, "assignee": names.get(scene_data.pop("assignee_id"))}
    return jsonify(frames=frames, created=sum(len(v) for v in result.created.values()),
                   replaced=result.replaced, event_ids=result.event_ids, undo_ids=result.undo_ids,
                   scene=scene_data)


@bp.get("/scenes/next")
@roles_required(Role.annotator)
def next_scene() -> Any:
    from .services.ranking import next_scene as pick

    scene = pick(current_user._get_current_object(), request.args.get("after", type=int))
    if scene is None:
        flash("No scene is waiting for you: every scene is labelled, submitted or taken.", "info")
        return redirect(url_for("workspace.scenes"))
    return redirect(url_for("workspace.label", scene_id=scene.id))


# --- inline SVG plots ------------------------------------------------------------------------

W, H, PAD = 420, 300, 42


def _color(name: str, i: int) -> str:
    return COLORS.get(name, PALETTE[i % len(PALETTE)])


def _axes(x_label: str, y_label: str, y_ticks: list[float], x_ticks: list[tuple[float, str]]) -> list[str]:
    out = [f'<rect x="{PAD}" y="10" width="{W - PAD - 10}" height="{H - PAD - 10}" fill="none" stroke="#2c333d"/>']
    for v in y_ticks:
        y = _y(v)
        out.append(f'<line x1="{PAD}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2c333d" stroke-dasharray="2 3"/>')
        out.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v, label in x_ticks:
        out.append(f'<text x="{_x(v):.1f}" y="{H - PAD + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<text x="{(W + PAD) / 2:.0f}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(12 {(H - PAD) / 2:.0f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    return out


def _x(v: float) -> float:
    return PAD + v * (W - PAD - 10)


def _y(v: float) -> float:
    return 10 + (1 - v) * (H - PAD - 10)


def _svg(parts: list[str], title: str, legend: list[tuple[str, str]]) -> Markup:
    for i, (name, color) in enumerate(legend):
        parts.append(f'<rect x="{W - 120}" y="{18 + 16 * i}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{W - 105}" y="{27 + 16 * i}">{escape(name)}</text>')
    body = "".join(parts)
    return Markup(f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
                  f'aria-label="{escape(title)}" font-size="11" fill="#8d97a5">'
                  f'<title>{escape(title)}</title>{body}</svg>')


def pr_plot(report: dict[str, Any]) -> Markup:
    """Precision against recall per class at IoU 0.5."""
    curves = (report.get("coco") or {}).get("pr_curves") or {}
    parts = _axes("recall", "precision (IoU 0.5)", [0, 0.25, 0.5, 0.75, 1],
                  [(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)])
    legend = []
    for i, (name, curve) in enumerate(sorted(curves.items())):
        if not curve or curve.get("precision") is None:
            continue
        pts = [(r, p) for r, p in zip(curve["recall"], curve["precision"]) if p is not None and p >= 0]
        if not pts:
            continue
        color = _color(name, i)
        path = " ".join(f"{_x(r):.1f},{_y(p):.1f}" for r, p in pts)
        parts.append(f'<polyline class="pr-curve" data-class="{escape(name)}" points="{path}" '
                     f'fill="none" stroke="{color}" stroke-width="2"/>')
        legend.append((name, color))
    return _svg(parts, "Precision-recall curves", legend)


def sensitivity_plot(report: dict[str, Any]) -> Markup:
    """Per-scene sensitivity per class: one dot a scene, the mean and ± 1 sd as a bar."""
    sens = report.get("sensitivity") or {}
    classes = sens.get("classes") or []
    n = max(1, len(classes))
    parts = _axes("class", f"per-scene sensitivity (score ≥ {sens.get('threshold', 0):.2f})",
                  [0, 0.25, 0.5, 0.75, 1], [((k + 0.5) / n, c) for k, c in enumerate(classes)])
    for k, name in enumerate(classes):
        values = [s["per_class"][name]["sensitivity"] for s in (sens.get("scenes") or {}).values()
                  if (s["per_class"].get(name) or {}).get("sensitivity") is not None]
        color, cx = _color(name, k), (k + 0.5) / n
        for j, v in enumerate(values):
            jitter = ((j * 37) % 21 - 10) / 10 * 0.12 / n
            parts.append(f'<circle class="scene-dot" cx="{_x(cx + jitter):.1f}" cy="{_y(v):.1f}" r="3" '
                         f'fill="{color}" fill-opacity=".6"/>')
        summary = (sens.get("summary") or {}).get(name) or {}
        if summary.get("mean") is not None:
            mean, sd = summary["mean"], summary.get("sd") or 0.0
            x0, x1 = _x(cx - 0.25 / n), _x(cx + 0.25 / n)
            parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{_y(mean):.1f}" y2="{_y(mean):.1f}" '
                         f'stroke="#fff" stroke-width="2"/>')
            parts.append(f'<line x1="{_x(cx):.1f}" x2="{_x(cx):.1f}" y1="{_y(min(1, mean + sd)):.1f}" '
                         f'y2="{_y(max(0, mean - sd)):.1f}" stroke="#fff"/>')
    return _svg(parts, "Per-scene sensitivity", [])


def paired_plot(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str]) -> Markup:
    """Each scene's sensitivity under model A and model B joined by a line, per class."""
    sa_, sb_ = a.get("sensitivity") or {}, b.get("sensitivity") or {}
    classes = [c for c in sa_.get("classes") or [] if c in (sb_.get("classes") or [])]
    n = max(1, len(classes))
    ticks = []
    for k, name in enumerate(classes):
        ticks += [((k + 0.3) / n, f"{name} A"), ((k + 0.7) / n, "B")]
    parts = _axes(f"A = {labels[0]}, B = {labels[1]}", "per-scene sensitivity",
                  [0, 0.25, 0.5, 0.75, 1], ticks)
    for k, name in enumerate(classes):
        color = _color(name, k)
        for key, scene in (sa_.get("scenes") or {}).items():
            other = (sb_.get("scenes") or {}).get(key)
            va = (scene["per_class"].get(name) or {}).get("sensitivity")
            vb = ((other or {}).get("per_class", {}).get(name) or {}).get("sensitivity")
            if va is None or vb is None:
                continue
            parts.append(f'<line class="pair" x1="{_x((k + 0.3) / n):.1f}" y1="{_y(va):.1f}" '
                         f'x2="{_x((k + 0.7) / n):.1f}" y2="{_y(vb):.1f}" stroke="{color}" '
                         f'stroke-opacity=".5"/>')
    return _svg(parts, "Paired per-scene sensitivity", [])
