"""Jobs through a real ``sonolabel worker`` process: on Huey's SQLite storage (retrain ->
evaluate -> activate -> pre-label) and on Redis (``TEST_REDIS_URL``: cancel mid-training, a
killed worker's job failed by the next worker)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from helpers import tiny_version

from annotator.db import db
from annotator.models import Box, BoxSource, Job, JobStatus, ModelVersion

# Each test runs a real worker process (two of them train a model): slow.
pytestmark = pytest.mark.slow

SONOLABEL = str(Path(sys.executable).parent / "sonolabel")


@pytest.fixture
def database_url(tmp_path):
    """SQLite only: a worker process shares the test's database file."""
    return f"sqlite:///{tmp_path / 'queue.sqlite'}"


class Worker:
    def __init__(self, app, tmp_path: Path):
        self.env = {**os.environ,
                    "SONOLABEL_DATABASE_URL": app.config["SQLALCHEMY_DATABASE_URI"],
                    "SONOLABEL_DATA_DIR": app.config["SONOLABEL_DATA_DIR"],
                    "SONOLABEL_INSTANCE_DIR": str(tmp_path / "instance"),
                    "SONOLABEL_SECRET_KEY": "test",
                    "SONOLABEL_REDIS_URL": app.config.get("SONOLABEL_REDIS_URL") or "",
                    "SONOLABEL_QUEUE_NAME": app.config.get("SONOLABEL_QUEUE_NAME") or "sonolabel",
                    "SONOLABEL_TORCH_THREADS": "1"}
        self.env.pop("SONOLABEL_JOBS_IMMEDIATE", None)
        self.log = tmp_path / f"worker-{uuid.uuid4().hex[:6]}.log"
        self.proc = None

    def start(self) -> "Worker":
        self.out = open(self.log, "w")
        self.proc = subprocess.Popen([SONOLABEL, "worker"], env=self.env, stdout=self.out,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        return self

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()

    def text(self) -> str:
        return self.log.read_text()


def wait_for(app, job_id: int, done, timeout: float = 120, worker: Worker | None = None) -> Job:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with app.app_context():
            job = db.session.get(Job, job_id)
            if done(job):
                db.session.expunge(job)
                return job
        if worker is not None and worker.proc.poll() is not None:
            pytest.fail(f"the worker exited:\n{worker.text()[-3000:]}")
        time.sleep(0.3)
    pytest.fail(f"job {job_id} did not get there in {timeout} s:\n"
                + (worker.text()[-3000:] if worker else ""))


def cli_json(app, *args: str) -> dict:
    result = app.test_cli_runner().invoke(args=list(args))
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def test_sqlite_queue_retrain_evaluate_activate_prelabel(app, tmp_path):
    seeded, dataset_id = tiny_version(app)
    worker = Worker(app, tmp_path).start()
    try:
        job = cli_json(app, "jobs", "start", "retrain", "--param", "dataset=tiny", "--param", "epochs=1",
                       "--param", "size=64", "--param", "model=two_frame", "--wait", "--timeout", "150")
        assert job["status"] == "succeeded", job
        version_id = job["result"]["model_version"]
        ev = cli_json(app, "jobs", "start", "evaluate", "--param", f"model_version={version_id}",
                      "--param", "dataset=tiny", "--param", "split=train", "--wait", "--timeout", "60")
        assert ev["status"] == "succeeded" and {"AP", "AP50", "AP75"} <= set(ev["result"])
        result = app.test_cli_runner().invoke(args=["models", "activate", str(version_id)])
        assert result.exit_code == 0, result.output
        pre = cli_json(app, "jobs", "start", "prelabel", "--param", f"scene={seeded.scene_id}",
                       "--wait", "--timeout", "60")
        assert pre["status"] == "succeeded", pre
        assert "worker consuming SqliteStorage" in worker.text()
    finally:
        worker.kill(signal.SIGTERM)
    with app.app_context():
        version = db.session.get(ModelVersion, version_id)
        assert version.active and version.dataset_version_id == dataset_id
        boxes = db.session.scalars(db.select(Box).where(Box.source == BoxSource.model)).all()
        assert len(boxes) == pre["result"]["boxes"]
        assert {b.model_version for b in boxes} <= {version.name}
        job_row = db.session.get(Job, job["id"])
        assert job_row.worker and not job_row.worker.endswith(f":{os.getpid()}")


def test_a_worker_started_before_the_migration_waits_for_it(tmp_path):
    env = {**os.environ, "SONOLABEL_DATABASE_URL": f"sqlite:///{tmp_path / 'late.sqlite'}",
           "SONOLABEL_DATA_DIR": str(tmp_path / "data"), "SONOLABEL_SECRET_KEY": "test",
           "SONOLABEL_INSTANCE_DIR": str(tmp_path / "instance"), "SONOLABEL_REDIS_URL": ""}
    env.pop("SONOLABEL_JOBS_IMMEDIATE", None)
    log = tmp_path / "worker.log"
    with open(log, "w") as out:
        proc = subprocess.Popen([SONOLABEL, "worker"], env=env, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.time() + 60
        while "worker waiting" not in log.read_text() and time.time() < deadline:
            time.sleep(0.3)
        assert "the database has no tables yet" in log.read_text()
        assert proc.poll() is None
        upgrade = subprocess.run([SONOLABEL, "db", "upgrade"], env=env, capture_output=True,
                                 text=True, timeout=120)
        assert upgrade.returncode == 0, upgrade.stderr
        deadline = time.time() + 60
        while "worker consuming" not in log.read_text() and time.time() < deadline:
            time.sleep(0.3)
        assert "worker consuming SqliteStorage" in log.read_text(), log.read_text()
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(20)


@pytest.fixture
def redis_app(app):
    url = os.environ.get("TEST_REDIS_URL")
    if not url:
        pytest.skip("TEST_REDIS_URL is not set (e.g. redis://127.0.0.1:6379/0)")
    app.config["SONOLABEL_REDIS_URL"] = url
    app.config["SONOLABEL_QUEUE_NAME"] = f"test-{uuid.uuid4().hex[:10]}"
    yield app
    from annotator.services.job_runner import job_huey

    job_huey(app).storage.flush_all()


def start(app, kind: str, **params) -> int:
    from annotator.services.job_runner import start_job

    with app.app_context():
        return start_job(kind, params).id


def test_redis_worker_runs_cancels_and_a_killed_workers_job_fails(redis_app, tmp_path):
    app = redis_app
    seeded, _ = tiny_version(app)
    long_run = {"dataset": "tiny", "model": "single", "epochs": 500, "size": 64, "batch": 1}
    models = Path(app.config["SONOLABEL_DATA_DIR"]) / "models"
    worker = Worker(app, tmp_path).start()
    try:
        quick = start(app, "propagate", scene=seeded.scene_id)
        assert wait_for(app, quick, lambda j: j.status == JobStatus.succeeded, 60, worker).progress == 100
        assert "RedisStorage" in worker.text()

        job_id = start(app, "retrain", **long_run)
        wait_for(app, job_id, lambda j: j.status == JobStatus.running and j.progress > 1, 90, worker)
        from annotator.services.job_runner import cancel_job

        with app.app_context():
            cancel_job(job_id)
        job = wait_for(app, job_id, lambda j: j.status == JobStatus.cancelled, 60, worker)
        assert job.progress < 100
        assert not any(models.iterdir())

        doomed = start(app, "retrain", **long_run)
        wait_for(app, doomed, lambda j: j.status == JobStatus.running and j.progress > 1, 90, worker)
        assert any(p.name.startswith(f".tmp-job{doomed}") for p in models.iterdir())
        worker.kill(signal.SIGKILL)
        with app.app_context():
            assert db.session.get(Job, doomed).status == JobStatus.running
        worker = Worker(app, tmp_path).start()
        job = wait_for(app, doomed, lambda j: j.status == JobStatus.failed, 60, worker)
        assert "stopped before it finished" in job.error
        assert not any(models.iterdir())
        with app.app_context():
            assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 0
    finally:
        worker.kill(signal.SIGTERM)
