"""Jobs in Huey's immediate mode: retrain -> evaluate -> activate -> pre-label, parameter
checks, cancel, stale-job recovery, the CLI and the pages."""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import tiny_version, untrained_model

from annotator.db import db
from annotator.models import EvaluationReport, Job, JobStatus, ModelVersion, utcnow
from annotator.services import ServiceError
from annotator.services.job_runner import recover_stale, run_job, start_job
from annotator.services.job_spec import JobCancelled, JobContext


@pytest.fixture
def japp(app):
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    return app


def models_dir(app) -> Path:
    return Path(app.config["SONOLABEL_DATA_DIR"]) / "models"


@pytest.mark.slow
def test_retrain_evaluate_activate_prelabel(japp):
    seeded, dataset_id = tiny_version(japp)
    with japp.app_context():
        job = start_job("retrain", {"dataset": "tiny", "model": "two_frame", "epochs": "1",
                                    "size": "64"})
        assert job.status == JobStatus.succeeded, job.error
        assert job.progress == 100
        version = db.session.get(ModelVersion, job.result["model_version"])
        assert version.dataset_version_id == dataset_id and version.kind == "two_frame"
        assert version.name == f"two_frame-v{version.id}"
        model_pt = models_dir(japp) / str(version.id) / "model.pt"
        assert version.file_sha256 == hashlib.sha256(model_pt.read_bytes()).hexdigest()
        assert version.metrics["iterations"] == 1
        assert sorted(p.name for p in models_dir(japp).iterdir()) == [str(version.id)]

        # A child trained from it records its parent.
        child = start_job("retrain", {"dataset": str(dataset_id), "model": "single",
                                      "epochs": 1, "size": 64, "parent": version.name})
        assert child.status == JobStatus.succeeded, child.error
        assert db.session.get(ModelVersion, child.result["model_version"]).parent_id == version.id

        ev = start_job("evaluate", {"model_version": version.id, "dataset": "tiny", "split": "train"})
        assert ev.status == JobStatus.succeeded, ev.error
        assert {"AP", "AP50", "AP75", "report"} <= set(ev.result)
        report = db.session.get(EvaluationReport, ev.result["report"])
        assert report.model_version_id == version.id and report.split == "train"
        assert report.report["coco"]["overall"]["AP"] == ev.result["AP"]
        # Each image carries its video's frame rate (10 fps in the seed): 4 frames = 0.4 s.
        assert report.report["fp_per_minute"]["minutes"] == pytest.approx(4 / 10 / 60)

        with pytest.raises(ServiceError, match="No model version is active"):
            start_job("prelabel", {"scene": seeded.scene_id})
        from annotator.services.models_registry import activate

        activate(version.id)
        pre = start_job("prelabel", {"scene": seeded.scene_id})
        assert pre.status == JobStatus.succeeded, pre.error
        assert pre.result["model_version"] == version.name


@pytest.mark.parametrize("kind, params, message", [
    ("nope", {}, "Unknown job kind"),
    ("retrain", {}, "needs the parameter 'dataset'"),
    ("retrain", {"dataset": "tiny", "epochs": "0"}, "'epochs' must be a whole number"),
    ("retrain", {"dataset": "tiny", "model": "three_frame"}, "'model' must be one of"),
    ("retrain", {"dataset": "tiny", "size": "100"}, "multiple of 32"),
    ("retrain", {"dataset": "missing"}, "No dataset version 'missing'"),
    ("retrain", {"dataset": "tiny", "lr": "1"}, "Unknown parameter lr"),
    ("evaluate", {"model_version": "99", "dataset": "tiny"}, "No model version '99'"),
    ("prelabel", {"scene": "1", "video": "1", "model_version": "x"}, "No model version"),
    ("propagate", {"scene": "999"}, "No scene 999"),
])
def test_bad_parameters_are_refused_before_anything_is_queued(japp, kind, params, message):
    tiny_version(japp)
    with japp.app_context():
        with pytest.raises(ServiceError, match=message):
            start_job(kind, params)
        assert db.session.scalar(db.select(db.func.count(Job.id))) == 0


@pytest.mark.slow
def test_cancel_stops_training_mid_run_and_registers_nothing(japp):
    tiny_version(japp)
    with japp.app_context():
        job = Job(kind="retrain", params={"dataset": "tiny", "model": "single", "epochs": 500,
                                          "size": 64, "batch": 1}, status=JobStatus.queued)
        db.session.add(job)
        db.session.commit()
        job_id = job.id
        engine = db.engine

    def cancel_when_running() -> None:
        deadline = time.time() + 60
        while time.time() < deadline:
            with engine.connect() as conn:
                row = conn.execute(db.select(Job.status, Job.progress).where(Job.id == job_id)).one()
            if row[0] == JobStatus.running and row[1] > 1:
                with engine.begin() as conn:
                    conn.execute(db.update(Job).where(Job.id == job_id).values(cancel_requested=True))
                return
            time.sleep(0.1)

    thread = threading.Thread(target=cancel_when_running)
    thread.start()
    with japp.app_context():
        run_job(job_id)
    thread.join()
    with japp.app_context():
        job = db.session.get(Job, job_id)
        assert job.status == JobStatus.cancelled
        assert 1 < job.progress < 100
        assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 0
    assert not any(models_dir(japp).iterdir())


def test_cancel_a_queued_job_and_refuse_to_cancel_a_finished_one(japp, login):
    tiny_version(japp)
    with japp.app_context():
        job = Job(kind="retrain", params={"dataset": "tiny"}, status=JobStatus.queued)
        done = Job(kind="retrain", params={"dataset": "tiny"}, status=JobStatus.succeeded)
        db.session.add_all([job, done])
        db.session.commit()
        ids = job.id, done.id
    admin = login("admin")
    resp = admin.json("POST", "/jobs/cancel", {"job_id": ids[0]})
    assert resp.status_code == 200 and resp.get_json()["job"]["status"] == "cancelled"
    resp = admin.json("POST", "/jobs/cancel", {"job_id": ids[1]})
    assert resp.status_code == 409
    with japp.app_context():
        run_job(ids[0])  # a worker that still receives it skips it
        assert db.session.get(Job, ids[0]).status == JobStatus.cancelled


def test_stale_running_jobs_fail_and_leftovers_go(japp):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    host = socket.gethostname()
    root = models_dir(japp)
    with japp.app_context():
        now = utcnow()
        jobs = [Job(kind="retrain", params={}, status=JobStatus.running, worker=f"{host}:{dead}",
                    heartbeat_at=now),
                Job(kind="retrain", params={}, status=JobStatus.running, worker=f"{host}:{os.getppid()}",
                    heartbeat_at=now - timedelta(hours=1)),
                Job(kind="retrain", params={}, status=JobStatus.running, worker="gpu-box:7",
                    heartbeat_at=now),
                Job(kind="retrain", params={}, status=JobStatus.running, worker="gpu-box:8",
                    heartbeat_at=now - timedelta(minutes=10))]
        db.session.add_all(jobs)
        db.session.commit()
        (root / f".tmp-job{jobs[0].id}-abc").mkdir(parents=True)
        (root / f".tmp-job{jobs[2].id}-abc").mkdir()
        (root / "17").mkdir()  # a model folder without a row: a rename whose commit never came
        failed = recover_stale()
        assert failed == [jobs[0].id, jobs[3].id]
        assert "stopped before it finished" in db.session.get(Job, jobs[0].id).error
        assert db.session.get(Job, jobs[1].id).status == JobStatus.running  # its worker lives
        assert db.session.get(Job, jobs[2].id).status == JobStatus.running  # recent heartbeat
    assert sorted(p.name for p in root.iterdir()) == [f".tmp-job{jobs[2].id}-abc"]


def test_progress_raises_when_cancel_requested(japp):
    with japp.app_context():
        job = Job(kind="propagate", params={}, status=JobStatus.running)
        db.session.add(job)
        db.session.commit()
        ctx = JobContext(job.id)
        ctx.progress(10, "step one")
        job.cancel_requested = True
        db.session.commit()
        ctx._last_cancel_check = 0
        with pytest.raises(JobCancelled):
            ctx.progress(20)
        db.session.expire_all()
        assert db.session.get(Job, job.id).progress == 10 and "step one" in job.log_tail


def test_cli_start_wait_list_and_activate(japp):
    seeded, _ = tiny_version(japp)
    runner = japp.test_cli_runner()
    result = runner.invoke(args=["jobs", "start", "propagate", "--param", f"scene={seeded.scene_id}",
                                 "--param", "from_frame=0", "--wait"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.output.strip().splitlines()[-1])
    assert set(data) >= {"id", "kind", "status", "progress", "result"}
    assert data["status"] == "succeeded" and data["result"]["scene"] == seeded.scene_id

    for args, message in ((["jobs", "start", "retrain", "--param", "dataset"], "key=value"),
                          (["jobs", "start", "retrain", "--param", "dataset=nope"], "No dataset version"),
                          (["models", "activate", "42"], "No model version")):
        result = runner.invoke(args=args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.strip().startswith("error: ") and message in result.output
        assert len(result.output.strip().splitlines()) == 1

    mv_id, name = untrained_model(japp, active=False)
    result = runner.invoke(args=["models", "activate", name])
    assert result.exit_code == 0, result.output
    listed = json.loads(runner.invoke(args=["models", "list", "--json"]).output)
    assert [(v["id"], v["active"]) for v in listed] == [(mv_id, True)]


def test_pages_and_json_by_role(japp, login):
    seeded, _ = tiny_version(japp)
    annotator, admin = login("annotator"), login("admin")
    page = annotator.get("/jobs").get_data(as_text=True)
    assert "prelabel-form" in page and "retrain-form" not in page
    assert "retrain-form" in admin.get("/jobs").get_data(as_text=True)
    resp = annotator.json("POST", "/jobs/start", {"kind": "retrain", "params": {"dataset": "tiny"}})
    assert resp.status_code == 403
    resp = annotator.json("POST", "/jobs/start", {"kind": "propagate",
                                                  "params": {"scene": seeded.scene_id}})
    assert resp.status_code == 202, resp.get_json()
    job = resp.get_json()["job"]
    assert job["status"] == "succeeded" and job["created_by"] == "annotator"
    status = annotator.get(f"/jobs/status.json?ids={job['id']}").get_json()["jobs"]
    assert [j["id"] for j in status] == [job["id"]] and status[0]["progress"] == 100
    # A form post answers with a redirect and a message.
    resp = admin.post("/jobs/start", {"kind": "retrain", "dataset": "missing"})
    assert resp.status_code == 302
    assert "No dataset version" in admin.get("/jobs").get_data(as_text=True)
    assert "No model versions yet" in annotator.get("/models").get_data(as_text=True)


def _synthetic_report(hit_rate: float, seed: int) -> dict:
    """A detector report on 6 scenes x 3 frames with one tumour each, found at ``hit_rate``."""
    import numpy as np

    from detector.evaluate import evaluate_detections

    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(18):
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 100, "height": 100,
                       "scene_id": i // 3 + 1, "video_id": 1, "frame_index": i})
        anns.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [10, 10, 30, 30],
                     "area": 900, "iscrowd": 0})
        hit = rng.random() < hit_rate
        dets.append({"image_id": i + 1, "category_id": 1, "score": 0.9 if hit else 0.2,
                     "bbox": [11, 10, 30, 30] if hit else [60, 60, 20, 20]})
    gt = {"info": {}, "images": images, "annotations": anns,
          "categories": [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]}
    return evaluate_detections(gt, dets, threshold=0.5)


def test_report_page_plots_and_compares(app, login):
    from annotator.services.evaluation_reports import report_summary
    from detector.stats import compare_reports

    reports = [_synthetic_report(0.4, 1), _synthetic_report(0.9, 2)]
    with app.app_context():
        ids = []
        for n, rep in enumerate(reports):
            mv = ModelVersion(name=f"m{n}", kind="single", config={}, metrics={}, file_sha256="0" * 64)
            db.session.add(mv)
            db.session.flush()
            row = EvaluationReport(model_version_id=mv.id, dataset_version_id=1, split="test",
                                   summary=report_summary(rep), report=rep)
            db.session.add(row)
            db.session.flush()
            ids.append(row.id)
        db.session.commit()
    s = login("reviewer")
    page = s.get(f"/models/report?a={ids[0]}").get_data(as_text=True)
    assert f"{reports[0]['coco']['overall']['AP']:.3f}" in page
    assert page.count('class="pr-curve"') == 1 and page.count('class="scene-dot"') == 6
    assert "m0" in s.get("/models").get_data(as_text=True)

    page = s.get(f"/models/report?a={ids[0]}&b={ids[1]}").get_data(as_text=True)
    expected = compare_reports(reports[0], reports[1], n_resamples=5000, labels=("m0", "m1"))
    tumour = expected["classes"]["tumor"]
    assert 'id="table2"' in page and page.count('class="pair"') == 6
    assert f"{tumour['a']['mean']:.3f} ± {tumour['a']['sd']:.3f}" in page
    assert f"{tumour['mean_diff']:+.3f} [{tumour['ci95'][0]:+.3f}, {tumour['ci95'][1]:+.3f}]" in page
    p = tumour["t_test"]["p"]
    assert ("&lt;0.001" if p < 0.001 else f"{p:.3f}") in page
    assert s.get("/models/report?a=999").status_code == 404
    assert s.get("/models/report").status_code == 302
