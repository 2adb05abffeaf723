"""Evaluation reports: made by ``evaluate`` jobs, and two reports of one dataset part compared.

- Evaluation predicts on a part of a dataset version and stores
  :func:`detector.evaluate.evaluate_detections`' report. The score threshold for per-scene
  sensitivity is chosen on the version's val part when evaluating another part, else it is
  the model version's own (chosen on its training val part), else 0.5. Scores are the model's
  calibrated ones.
  Each image gets its video's frame rate, so false positives per minute use real time.
- A comparison (:func:`detector.stats.compare_reports`, a bootstrap of ``N_RESAMPLES``) is
  computed once and kept in report A's ``summary["comparisons"]`` under B's id: for every
  earlier report of the same part when a report is made (the earlier one as A), and for
  any other pair when it is first viewed. Model names, the labels of a comparison, never change.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from ..db import db
from ..models import EvaluationReport, Role, User, Video
from .dataset_split import SPLITS
from .job_spec import JobContext, Param, choice, kind, text
from .models_registry import (ModelRefused, get_dataset_version, get_model_version, model_file,
                              split_coco, version_threshold)

N_RESAMPLES = 5000


def _check_evaluate(params: dict[str, Any]) -> None:
    version = get_model_version(params["model_version"])
    if not model_file(version).is_file():
        raise ModelRefused(f"The model file of {version.name} is missing.")
    split_coco(get_dataset_version(params["dataset"]), params["split"])


EVALUATE_PARAMS = {
    "model_version": Param(text, required=True, help="model version id or name"),
    "dataset": Param(text, required=True, help="dataset version id or name"),
    "split": Param(choice(*SPLITS), "test", help="train, val or test"),
}


@kind("evaluate", EVALUATE_PARAMS, (Role.admin, Role.data_manager),
      "Evaluate a model version on a part of a dataset version.", check=_check_evaluate)
def run_evaluate(ctx: JobContext, params: dict[str, Any], user: User | None) -> dict[str, Any]:
    from detector.evaluate import evaluate_detections
    from detector.metrics import load_gt
    from detector.predict import predict_coco

    version = get_model_version(params["model_version"])
    dataset = get_dataset_version(params["dataset"])
    split = params["split"]
    coco_path = split_coco(dataset, split)
    val_path = split_coco(dataset, "val") if split != "val" and "val" in dataset.summary else None
    weights = model_file(version)
    own_threshold = version_threshold(version)
    ids = {"model": version.id, "name": version.name, "dataset": dataset.id,
           "dataset_name": dataset.name}
    db.session.rollback()

    def predict(path: Path, lo: float, hi: float, what: str) -> list[dict]:
        ctx.progress(lo, f"predicting the {what} part")
        return predict_coco(weights, path, path.parent,
                            progress=lambda done, total: ctx.progress(lo + (hi - lo) * done / max(1, total)))

    val = None
    if val_path is not None:
        val = {"gt": _with_fps(load_gt(val_path)), "detections": predict(val_path, 2, 40, "val")}
    detections = predict(coco_path, 40 if val else 2, 90, split)
    ctx.progress(92, "scoring")
    fixed = own_threshold if val is None else None
    report = evaluate_detections(_with_fps(load_gt(coco_path)), detections, val=val,
                                 threshold=fixed,
                                 model={"name": ids["name"], "model_version": ids["model"]})
    if fixed is not None:
        report["threshold"]["method"] = "the model version's (validation-f1 on calibrated scores)"
    report["ground_truth"]["path"] = f"dataset {ids['dataset_name']} / {split}"
    report["ground_truth"]["dataset_version"] = ids["dataset"]
    report["ground_truth"]["split"] = split
    summary = report_summary(report)
    row = EvaluationReport(model_version_id=ids["model"], dataset_version_id=ids["dataset"],
                           split=split, summary=summary, report=report, job_id=ctx.job_id)
    db.session.add(row)
    db.session.commit()
    result = {"report": row.id, "model_version": ids["model"], "dataset": ids["dataset"],
              "split": split, **summary}
    earlier = earlier_reports(row)
    if earlier:
        # A log line, not progress: the report is stored, so a cancel must not stop the job now.
        ctx.log(f"comparing with {len(earlier)} earlier report(s) of this part")
        for other in earlier:
            comparison(other, row)
    return result


def _with_fps(gt: dict[str, Any]) -> dict[str, Any]:
    """Each image gets its video's frame rate (COCO files of a version carry ``video_id``)."""
    video_ids = {img.get("video_id") for img in gt["images"] if img.get("video_id") is not None}
    fps = dict(db.session.execute(sa.select(Video.id, Video.fps).where(Video.id.in_(video_ids))).all()) \
        if video_ids else {}
    for img in gt["images"]:
        if img.get("video_id") in fps and fps[img["video_id"]]:
            img["fps"] = float(fps[img["video_id"]])
    return gt


def report_summary(report: dict[str, Any]) -> dict[str, Any]:
    coco = report.get("coco") or {}
    fp = (report.get("fp_per_minute") or {}).get("overall") or {}
    return {**(coco.get("overall") or {}),
            "per_class": coco.get("per_class") or {},
            "threshold": (report.get("threshold") or {}).get("value"),
            "fp_tracks_per_minute": fp.get("fp_tracks_per_minute"),
            "n_images": (report.get("ground_truth") or {}).get("n_images")}


# --- comparisons -----------------------------------------------------------------------------

def earlier_reports(report: EvaluationReport) -> list[EvaluationReport]:
    """Reports made before ``report`` on the same part of the same dataset version."""
    return list(db.session.scalars(
        sa.select(EvaluationReport)
        .where(EvaluationReport.dataset_version_id == report.dataset_version_id,
               EvaluationReport.split == report.split, EvaluationReport.id < report.id)
        .order_by(EvaluationReport.id)))


def comparison(a: EvaluationReport, b: EvaluationReport) -> dict[str, Any]:
    """A's and B's paired comparison, ``compare_reports``' result or ``{"problem": why}`` when
    they cannot be paired; computed on the first call and kept in A's summary (commits then)."""
    kept = (a.summary or {}).get("comparisons") or {}
    if str(b.id) in kept:
        return kept[str(b.id)]
    from detector.stats import compare_reports

    try:
        made = compare_reports(a.report, b.report, n_resamples=N_RESAMPLES,
                               labels=(a.model_version.name, b.model_version.name))
    except ValueError as err:
        made = {"problem": str(err)}
    made = json.loads(json.dumps(made))
    a.summary = {**(a.summary or {}), "comparisons": {**kept, str(b.id): made}}
    db.session.commit()
    return made
