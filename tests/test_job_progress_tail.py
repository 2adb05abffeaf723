"""A retrain job never sits at one percentage without a word: after the last iteration its
log says what it is doing (the validation, the checkpoints, the calibration, the end, the
registration), each step with a percentage of its own."""
from __future__ import annotations

import pytest
from helpers import retrain_two_patients

from annotator.db import db
from annotator.models import Job
from annotator.services.job_spec import JobContext


@pytest.mark.slow
def test_the_steps_after_training_report_their_own_progress_and_log_lines(app, monkeypatch):
    calls: list[tuple[float, str | None]] = []
    progress = JobContext.progress

    def recorded(self, percent, message=None):
        calls.append((float(percent), message))
        return progress(self, percent, message)

    monkeypatch.setattr(JobContext, "progress", recorded)
    job_id = retrain_two_patients(app)
    with app.app_context():
        log = db.session.get(Job, job_id).log_tail
    for words in ("epoch 1: validating on", "epoch 1: {", "calibrating the scores",
                  "calibration ", "done (epochs)", "registering the model version",
                  "registered model version"):
        assert words in log, (words, log)
    # Past the last iteration (90 %) every step is a log line with a figure of its own.
    said = [(p, m) for p, m in calls if p >= 90 and m is not None]
    steps = ("epoch 1: validating", "epoch 1: {", "calibrating the scores", "calibration ",
             "done (epochs)", "trained: ")
    assert len(said) == len(steps) and all(m.startswith(w) for (_, m), w in zip(said, steps)), said
    figures = [p for p, _ in said]
    assert figures == sorted(figures) and len(set(figures)) == len(figures) and max(figures) < 100
