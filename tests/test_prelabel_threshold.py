"""A model version's validation threshold: registered from its training run, sent with the
scene JSON, and the start of the workspace's score threshold slider."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import logged_in_page, retrain_two_patients, seed_scene

from annotator.db import db
from annotator.models import Job, ModelVersion


def add_version(app, name: str, threshold: float | None, active: bool = False) -> None:
    metrics = {"threshold": {"value": threshold, "method": "validation-f1"}} if threshold is not None else {}
    with app.app_context():
        db.session.add(ModelVersion(name=name, kind="single", config={}, metrics=metrics,
                                    file_sha256="0" * 64, active=active))
        db.session.commit()


def scene_threshold(login, scene_id: int):
    return login("annotator").get(f"/api/scenes/{scene_id}").get_json()["prelabel_threshold"]


def test_scene_json_carries_the_threshold_of_the_pre_labels_model(app, login):
    add_version(app, "single-v1", 0.37, active=True)
    add_version(app, "single-v2", 0.62)
    seeded = seed_scene(app, prelabels=3, model_version="single-v2")
    assert scene_threshold(login, seeded.scene_id) == {"model_version": "single-v2", "value": 0.62}


def test_without_pre_labels_the_active_versions_threshold_applies(app, login):
    add_version(app, "single-v1", 0.37, active=True)
    seeded = seed_scene(app, prelabels=0)
    assert scene_threshold(login, seeded.scene_id) == {"model_version": "single-v1", "value": 0.37}


def test_no_threshold_when_the_model_has_none_or_is_unknown(app, login):
    add_version(app, "single-v1", None, active=True)
    unknown = seed_scene(app, prelabels=2, model_version="deleted-v9")
    assert scene_threshold(login, unknown.scene_id) is None
    assert scene_threshold(login, seed_scene(app, prelabels=2, model_version="single-v1").scene_id) is None


@pytest.mark.browser
@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed")
def test_the_slider_starts_at_the_models_threshold(live, browser):
    """Rounded down to the slider's 0.01 step, so a box scoring exactly the threshold shows."""
    add_version(live, "single-v1", 0.456)
    seeded = seed_scene(live, prelabels=4, model_version="single-v1")  # scores .9 .3 .8 .2
    page = logged_in_page(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label",
                          "#ws[data-ready='1']")
    assert page.input_value("#threshold") == "0.45"
    assert page.text_content("#thr-out") == "0.45"
    assert page.evaluate("() => window.sonolabel.threshold") == pytest.approx(0.45)
    assert not page.errors


@pytest.mark.slow
def test_retrain_with_a_val_part_registers_calibration_and_threshold(app):
    from annotator.services.models_registry import version_json

    job_id = retrain_two_patients(app)
    with app.app_context():
        version = db.session.get(ModelVersion, db.session.get(Job, job_id).result["model_version"])
        assert version.metrics["threshold"]["method"] == "validation-f1"
        assert {"method", "ece_before", "ece_after"} <= set(version.metrics["calibration"])
        assert version_json(version)["threshold"] == version.metrics["threshold"]["value"]
