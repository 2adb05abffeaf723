"""``sonolabel worker``, ``sonolabel jobs ...`` and ``sonolabel models ...``.

``jobs start KIND --param key=value ... [--wait]`` prints the job as one JSON object
``{"id", "kind", "status", "progress", "result"}`` (with ``error`` when it failed); with
``--wait`` after it finished (a progress bar on a terminal's stderr meanwhile), exiting 1 when
it failed or was cancelled. Bad input exits 2 with one ``error:`` line and queues nothing.
"""
from __future__ import annotations

import json
import time

import click
from flask import Flask, current_app
from flask.cli import with_appcontext

from .cli_support import ID, WholeNumber, fail
from .db import db
from .models import Job, JobStatus


@click.command("worker", help="Run the job consumer (Huey) on this machine.")
@click.option("--workers", default=1, show_default=True, help="Jobs run at the same time.")
@with_appcontext
def worker_command(workers: int) -> None:
    from huey.consumer import Consumer

    from .services import job_kinds  # noqa: F401  (a kind that cannot load stops the worker now)
    from .services.job_runner import job_huey, recover_stale

    app = current_app._get_current_object()
    huey = job_huey(app)
    if huey.immediate:
        fail("SONOLABEL_JOBS_IMMEDIATE is set: jobs run in the process that starts them, "
             "there is no queue to consume")
    _wait_for_schema()
    failed = recover_stale()
    if failed:
        click.echo(f"marked {len(failed)} job(s) whose worker had stopped as failed: "
                   + ", ".join(map(str, failed)))
    db.session.remove()
    click.echo(f"worker consuming {huey.storage.__class__.__name__} queue {huey.name!r}")
    Consumer(huey, workers=workers, worker_type="thread").run()


def _wait_for_schema(poll_s: float = 2.0) -> None:
    """Block until the database is reachable and migrated: started beside the web service (as
    in docker-compose.yml), the worker must not read the jobs table before ``db upgrade`` made it."""
    import sqlalchemy as sa
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = current_app.extensions["migrate"].migrate.get_config()
    heads = set(ScriptDirectory.from_config(config).get_heads())
    said = ""
    while True:
        try:
            with db.engine.connect() as conn:
                tables = sa.inspect(conn)
                if not tables.has_table("jobs"):
                    why = "the database has no tables yet (run: sonolabel db upgrade)"
                elif tables.has_table("alembic_version") and \
                        set(MigrationContext.configure(conn).get_current_heads()) != heads:
                    why = f"the database is not migrated to {', '.join(sorted(heads))} yet"
                else:
                    return
        except sa.exc.OperationalError as exc:
            why = f"the database is not reachable ({str(exc.orig).strip().splitlines()[0]})"
        if why != said:
            click.echo(f"worker waiting: {why}", err=True)
            said = why
        time.sleep(poll_s)


@click.group("jobs", help="Start, list and cancel background jobs.")
def jobs_cli() -> None:
    pass


@jobs_cli.command("start", help="Start a job of KIND (retrain, evaluate, prelabel, propagate).")
@click.argument("kind")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the job; repeat for several.")
@click.option("--wait", is_flag=True, help="Wait for the job to finish and print its result.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
@with_appcontext
def start_command(kind: str, params: tuple[str, ...], wait: bool, timeout: float | None) -> None:
    from .services.job_runner import job_json, start_job
    from .services.job_spec import parse_pairs

    job = start_job(kind, parse_pairs(params))
    if wait:
        job = _wait(job.id, timeout)
    click.echo(json.dumps(job_json(job)))
    if wait and job.status != JobStatus.succeeded:
        raise SystemExit(1)


def _wait(job_id: int, timeout: float | None) -> Job:
    from tqdm import tqdm

    from .services.job_spec import TERMINAL

    started = time.monotonic()
    bar = tqdm(total=100, unit="%", desc=f"job {job_id}", disable=None,
               bar_format="{desc}: {percentage:3.0f}%|{bar}| {elapsed}")
    try:
        while True:
            db.session.expire_all()
            job = db.session.get(Job, job_id)
            bar.update(max(0.0, float(job.progress or 0) - bar.n))
            if job.status in TERMINAL:
                return job
            if timeout is not None and time.monotonic() - started > timeout:
                fail(f"job {job_id} is still {job.status.value} after {timeout:g} s "
                     "(is a worker running? start one with: sonolabel worker)")
            db.session.commit()  # end the read so the next poll sees the worker's writes
            time.sleep(0.5)
    finally:
        bar.close()


@jobs_cli.command("list", help="The newest jobs.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@click.option("--limit", type=WholeNumber(1), default=20, show_default=True)
@with_appcontext
def list_command(as_json: bool, limit: int) -> None:
    from .services.job_runner import job_json, list_jobs

    jobs = list_jobs(limit)
    if as_json:
        click.echo(json.dumps([job_json(j, full=True) for j in jobs]))
        return
    for j in jobs:
        click.echo(f"{j.id:>5}  {j.kind:<10} {j.status.value:<10} {j.progress:5.1f}%  "
                   f"{json.dumps(j.params)}  {j.error[:80] if j.error else ''}")


@jobs_cli.command("show", help="One job as JSON, with its log tail.")
@click.argument("job_id", type=ID)
@with_appcontext
def show_command(job_id: int) -> None:
    from .services.job_runner import get_job, job_json

    click.echo(json.dumps(job_json(get_job(job_id), full=True), indent=1))


@jobs_cli.command("cancel", help="Cancel a queued or running job.")
@click.argument("job_id", type=ID)
@with_appcontext
def cancel_command(job_id: int) -> None:
    from .services.job_runner import cancel_job, job_json

    click.echo(json.dumps(job_json(cancel_job(job_id))))


@click.group("models", help="Model versions: list and activate.")
def models_cli() -> None:
    pass


@models_cli.command("list", help="Registered model versions, newest first.")
@click.option("--json", "as_json", is_flag=True, help="One JSON array.")
@with_appcontext
def models_list(as_json: bool) -> None:
    from .services.models_registry import list_versions, version_json

    versions = [version_json(v) for v in list_versions()]
    if as_json:
        click.echo(json.dumps(versions))
        return
    if not versions:
        click.echo("no model versions yet (sonolabel jobs start retrain --param dataset=NAME)")
    for v in versions:
        ap = "-" if v["val_AP"] is None else f"{v['val_AP']:.3f}"
        click.echo(f"{v['id']:>4}  {v['name']:<20} {'active' if v['active'] else '':<6} "
                   f"dataset {v['dataset_version']}  val AP {ap}  evaluations {len(v['evaluations'])}")


@models_cli.command("activate", help="Make model version ID (or name) the one pre-labels use.")
@click.argument("ref")
@with_appcontext
def models_activate(ref: str) -> None:
    from .services.models_registry import activate

    version = activate(ref)
    click.echo(f"activated {version.name} (id {version.id})")


def register(app: Flask) -> None:
    for command in (worker_command, jobs_cli, models_cli):
        app.cli.add_command(command)
