"""A paired comparison of two evaluation reports is computed once and kept with report A."""
from __future__ import annotations

import pytest
from helpers import tiny_version, untrained_model

from annotator.db import db
from annotator.models import EvaluationReport, JobStatus, ModelVersion
from annotator.services.evaluation_reports import N_RESAMPLES, comparison, earlier_reports
from annotator.services.job_runner import start_job


def _report(hits: list[float]) -> dict:
    """A detector report of one class over one scene per entry of ``hits`` (its sensitivity)."""
    scenes = {f"1/{i}": {"per_class": {"tumor": {"boxes": 2, "sensitivity": h}}}
              for i, h in enumerate(hits)}
    return {"sensitivity": {"classes": ["tumor"], "threshold": 0.5, "iou": 0.5, "scenes": scenes}}


def _rows(app, reports: list[tuple[dict, str]]) -> list[int]:
    with app.app_context():
        ids = []
        for n, (rep, split) in enumerate(reports):
            mv = ModelVersion(name=f"m{n}", kind="single", config={}, metrics={}, file_sha256="0" * 64)
            db.session.add(mv)
            db.session.flush()
            row = EvaluationReport(model_version_id=mv.id, dataset_version_id=1, split=split,
                                   summary={"AP": 0.5}, report=rep)
            db.session.add(row)
            db.session.flush()
            ids.append(row.id)
        db.session.commit()
    return ids


def test_a_comparison_is_computed_once_and_kept(app, monkeypatch):
    from detector.stats import compare_reports

    reports = [_report([0.0, 0.5, 0.5, 1.0]), _report([0.5, 1.0, 0.5, 1.0])]
    ids = _rows(app, [(reports[0], "test"), (reports[1], "test")])
    expected = compare_reports(*reports, n_resamples=N_RESAMPLES, labels=("m0", "m1"))
    with app.app_context():
        a, b = (db.session.get(EvaluationReport, i) for i in ids)
        assert comparison(a, b)["classes"] == expected["classes"]
    with app.app_context():
        a, b = (db.session.get(EvaluationReport, i) for i in ids)
        assert a.summary["AP"] == 0.5
        assert a.summary["comparisons"][str(b.id)]["table"] == expected["table"]
        assert "comparisons" not in b.summary

        def recompute(*args, **kwargs):
            raise AssertionError("the kept comparison is computed again")

        monkeypatch.setattr("detector.stats.compare_reports", recompute)
        assert comparison(a, b)["b"] == "m1"


def test_reports_that_cannot_be_paired_keep_the_reason(app):
    ids = _rows(app, [(_report([0.5]), "test"), ({"coco": {}}, "test")])
    with app.app_context():
        a, b = (db.session.get(EvaluationReport, i) for i in ids)
        assert "per-scene sensitivity" in comparison(a, b)["problem"]
        assert "per-scene sensitivity" in a.summary["comparisons"][str(b.id)]["problem"]


def test_earlier_reports_are_those_of_the_same_part(app):
    ids = _rows(app, [(_report([1.0]), "test"), (_report([1.0]), "val"), (_report([1.0]), "test")])
    with app.app_context():
        newest = db.session.get(EvaluationReport, ids[2])
        assert [r.id for r in earlier_reports(newest)] == [ids[0]]
        assert earlier_reports(db.session.get(EvaluationReport, ids[0])) == []


@pytest.mark.slow  # two evaluate jobs predict with a detector
def test_the_evaluate_job_compares_its_report_with_earlier_ones_of_the_part(app):
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    tiny_version(app)
    versions = [untrained_model(app, kind="single", active=False)[0] for _ in range(2)]
    with app.app_context():
        jobs = [start_job("evaluate", {"model_version": v, "dataset": "tiny", "split": "train"})
                for v in versions]
        assert [j.status for j in jobs] == [JobStatus.succeeded] * 2
        first, second = (db.session.get(EvaluationReport, j.result["report"]) for j in jobs)
        assert "comparisons" not in jobs[1].result and "comparisons" not in second.summary
        kept = first.summary["comparisons"][str(second.id)]
        assert kept == comparison(first, second)
        assert "comparing with 1 earlier report(s)" in jobs[1].log_tail
