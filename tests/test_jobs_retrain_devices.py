"""The retrain job's device and process count: checked when the job is started (service, CLI,
JSON API), carried to training, and several processes launched through torchrun."""
from __future__ import annotations

import pytest
import torch
from helpers import tiny_version

from annotator.db import db
from annotator.models import Job, JobStatus, ModelVersion
from annotator.services import ServiceError
from annotator.services.job_runner import start_job


@pytest.fixture
def japp(app):
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    return app


@pytest.mark.parametrize("params, message", [
    ({"device": "gpu"}, "'device' must be auto, cpu, cuda or cuda:N"),
    ({"device": "cuda:x"}, "'device' must be auto, cpu, cuda or cuda:N"),
    ({"processes": "0"}, "'processes' must be a whole number between 1 and 16"),
    ({"processes": "17"}, "'processes' must be a whole number between 1 and 16"),
    ({"processes": "two"}, "'processes' must be a whole number"),
    ({"device": "cuda:1", "processes": "2"}, "each takes the GPU of its rank"),
])
def test_bad_device_or_process_count_is_refused_before_queueing(japp, params, message):
    tiny_version(japp)
    with japp.app_context():
        with pytest.raises(ServiceError, match=message):
            start_job("retrain", {"dataset": "tiny", **params})
        assert db.session.scalar(db.select(db.func.count(Job.id))) == 0


def test_cli_and_api_refuse_a_bad_device_in_one_line(japp, login):
    tiny_version(japp)
    result = japp.test_cli_runner().invoke(args=["jobs", "start", "retrain", "--param",
                                                 "dataset=tiny", "--param", "device=tpu"])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "'device'" in lines[0]
    admin = login("admin")
    resp = admin.json("POST", "/jobs/start", {"kind": "retrain",
                                              "params": {"dataset": "tiny", "processes": 99}})
    assert resp.status_code == 400 and "'processes'" in resp.get_json()["error"]
    page = admin.get("/jobs").get_data(as_text=True)
    assert 'name="device"' in page and 'name="processes"' in page


def test_a_device_the_worker_lacks_fails_the_job_in_one_line(japp, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    tiny_version(japp)
    with japp.app_context():
        job = start_job("retrain", {"dataset": "tiny", "device": "cuda", "epochs": 1,
                                    "size": 64})
        assert job.status == JobStatus.failed
        assert job.error.startswith("This worker cannot train there:") and "no CUDA GPU" in job.error
        assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 0


@pytest.mark.slow
@pytest.mark.parametrize("processes, min_stride", [(1, None), (2, "4")])
def test_a_cpu_retrain_job_runs_with_one_or_two_processes(japp, processes, min_stride):
    """Two processes also carry the stride-4 level through torchrun's command line."""
    tiny_version(japp)
    extra = {"min_stride": min_stride} if min_stride else {}
    with japp.app_context():
        job = start_job("retrain", {"dataset": "tiny", "model": "single", "epochs": 1,
                                    "size": 64, "batch": 2, "device": "cpu",
                                    "processes": processes, **extra})
        assert job.status == JobStatus.succeeded, (job.error, job.log_tail)
        assert job.progress == 100
        version = db.session.get(ModelVersion, job.result["model_version"])
        assert version.config["device"] == "cpu" and version.config["processes"] == processes
        assert f"on cpu{', 2 processes' if processes == 2 else ''}" in job.log_tail
        from annotator.services.models_registry import model_dir

        files = {p.name for p in model_dir(version.id).iterdir()}
        assert "model.pt" in files
        from detector.checkpoint import read_checkpoint

        saved = read_checkpoint(model_dir(version.id))["config"]
        assert saved["min_stride"] == int(min_stride or 8)
        if processes == 2:  # the launcher's output is kept with the run
            assert "torchrun.log" in files
            log = (model_dir(version.id) / "train.log").read_text()
            assert "device cpu, 2 process(es)" in log


def _processes_mentioning(text: str) -> list[int]:
    from pathlib import Path

    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if text in (proc / "cmdline").read_bytes().decode(errors="replace"):
                found.append(int(proc.name))
        except OSError:
            continue
    return found


@pytest.mark.slow
def test_cancelling_a_torchrun_job_ends_every_training_process(japp):
    import threading
    import time
    from pathlib import Path

    tiny_version(japp)
    with japp.app_context():
        job = Job(kind="retrain", params={"dataset": "tiny", "model": "single", "epochs": 500,
                                          "size": 64, "batch": 1, "device": "cpu",
                                          "processes": 2}, status=JobStatus.queued)
        db.session.add(job)
        db.session.commit()
        job_id, engine = job.id, db.engine
    models = Path(japp.config["SONOLABEL_DATA_DIR"]) / "models"
    seen: dict[str, Path] = {}

    def cancel_once_launched() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            logs = list(models.glob(f".tmp-job{job_id}-*/torchrun.log"))
            if logs and _processes_mentioning(str(logs[0].parent)):
                seen["run"] = logs[0].parent
                time.sleep(2)  # let the training processes start
                with engine.begin() as conn:
                    conn.execute(db.update(Job).where(Job.id == job_id)
                                 .values(cancel_requested=True))
                return
            time.sleep(0.2)

    from annotator.services.job_runner import run_job

    thread = threading.Thread(target=cancel_once_launched)
    thread.start()
    with japp.app_context():
        run_job(job_id)
    thread.join()
    with japp.app_context():
        assert db.session.get(Job, job_id).status == JobStatus.cancelled
        assert db.session.scalar(db.select(db.func.count(ModelVersion.id))) == 0
    assert "run" in seen and not seen["run"].exists()
    assert _processes_mentioning(str(seen["run"])) == []


def test_the_retrain_job_and_its_form_default_to_the_cli_recipe(japp, login):
    """An admin who starts retraining without touching the form trains the recipe that
    ``python -m detector train`` uses when given no option."""
    import argparse
    import re

    from detector.train import add_train_options

    from annotator.services.job_kinds import KINDS

    parser = argparse.ArgumentParser()
    add_train_options(parser)
    cli = parser.parse_args([])
    params = KINDS["retrain"].params
    assert (params["epochs"].default, params["size"].default, params["batch"].default,
            int(params["min_stride"].default)) == (cli.epochs, cli.size, cli.batch, cli.min_stride)
    tiny_version(japp)
    client = login("admin")
    page = client.get("/jobs").get_data(as_text=True)
    form = page[page.index('id="retrain-form"'):page.index("</form>", page.index('id="retrain-form"'))]
    shown = {name: int(value) for name, value in re.findall(r'name="(epochs|size)" [^>]*value="(\d+)"', form)}
    assert shown == {"epochs": cli.epochs, "size": cli.size}
