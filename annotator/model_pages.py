"""The Models page: model versions, their evaluations and activation, and evaluation reports.

``/models/report?a=ID[&b=ID]`` shows one report's plots (:mod:`.plots`), or two compared over
their common scenes (the reference paper's Table 2); the comparison is computed once and kept
(:func:`.services.evaluation_reports.comparison`). Ids of versions and reports travel in the
query or body, so every URL is built from the ids the rest of the app uses.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from flask import Blueprint, flash, jsonify, redirect, render_template, request, url_for

from .auth import ALL_ROLES, roles_required
from .db import db
from .errors import redirect_on_refusal
from .models import DatasetVersion, EvaluationReport
from .plots import class_colors, paired_plot, pr_plot, sensitivity_plot
from .request_args import int_arg, json_object
from .services import models_registry as registry
from .services.evaluation_reports import comparison

bp = Blueprint("models", __name__)


def _dataset_names() -> dict[int, str]:
    return dict(db.session.execute(sa.select(DatasetVersion.id, DatasetVersion.name)).all())


@bp.get("/models")
@roles_required(*ALL_ROLES)
def index() -> Any:
    versions = registry.list_versions()
    return render_template("models/index.html", versions=versions, reports=registry.reports_of(),
                           names={v.id: v.name for v in versions}, datasets=_dataset_names())


@bp.post("/models/activate")
@roles_required()
def activate() -> Any:
    back = redirect_on_refusal(url_for("models.index"))
    body = json_object() if request.is_json else request.form
    ref = body.get("model_version")
    if isinstance(ref, bool) or not isinstance(ref, (str, int)) or not str(ref).strip():
        raise registry.ModelRefused("Say which model version to activate ('model_version', "
                                    "a name or an id).")
    version = registry.activate(ref)
    if request.is_json:
        return jsonify(model_version=registry.version_json(version))
    flash(f"{version.name} is now the active model: pre-labels use it.", "info")
    return redirect(back)


@bp.get("/models/report")
@roles_required(*ALL_ROLES)
def report() -> Any:
    ids = [int_arg(k) for k in ("a", "b")]
    rows = [db.session.get(EvaluationReport, i) if i else None for i in ids]
    if rows[0] is None:
        if ids[0]:
            return render_template("error.html", code=404, message=f"No report {ids[0]}."), 404
        return redirect(url_for("models.index"))
    if ids[1] and rows[1] is None:
        return render_template("error.html", code=404, message=f"No report {ids[1]}."), 404
    a, b = rows
    compared, problem = None, None
    if b is not None:
        compared = comparison(a, b)
        problem = compared.get("problem")
    return render_template("models/report.html", a=a, b=b, comparison=compared, problem=problem,
                           datasets=_dataset_names(), colors=class_colors(), pr_plot=pr_plot,
                           sensitivity_plot=sensitivity_plot, paired_plot=paired_plot)
