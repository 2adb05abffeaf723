"""The job queue: Huey on SQLite in the data directory by default (nothing to install),
on Redis when ``SONOLABEL_REDIS_URL`` is set so workers on other machines share the queue.

One Huey task, ``run_job(job_id)``, runs every kind of job: the ``jobs`` table holds the kind
and parameters, so the queue only carries an id, and the web process, the CLI and every worker
register the same single task. The job runner hands the queue that task's body
(:func:`annotator.services.job_runner.job_huey`), so the queue knows nothing of jobs. The task
pushes an app context of the app that registered it (a worker builds that app with
``create_app``). ``SONOLABEL_QUEUE_NAME`` (default ``sonolabel``) separates queues sharing one
Redis; ``SONOLABEL_JOBS_IMMEDIATE`` runs jobs at once in the caller (Huey's immediate mode, for
tests and single-process use).
"""
from __future__ import annotations

import os
from typing import TYPE_CHECKING, Callable

from flask import Flask

if TYPE_CHECKING:
    from huey import Huey

_EXTENSION = "sonolabel_huey"
_TASK = _EXTENSION + "_task"


def _setting(app: Flask, key: str, default: str = "") -> str:
    value = app.config.get(key)
    return str(value) if value not in (None, "") else os.environ.get(key, default)


def make_huey(app: Flask, immediate: bool = False) -> Huey:
    # Huey brings the Redis client: imported with the first queue, not with every page or command.
    from huey import RedisHuey, SqliteHuey

    name = _setting(app, "SONOLABEL_QUEUE_NAME", "sonolabel")
    url = app.config.get("SONOLABEL_REDIS_URL")
    if url:
        return RedisHuey(name, url=url, immediate=immediate)
    path = os.path.join(app.config["SONOLABEL_DATA_DIR"], "jobs.sqlite")
    return SqliteHuey(name, filename=path, immediate=immediate)


def get_huey(app: Flask, run: Callable[[int], None]) -> Huey:
    """The app's Huey with its one task, ``run_job``, calling ``run(job_id)`` inside an app
    context (made once per app; ``run`` is the same function on every call)."""
    huey = app.extensions.get(_EXTENSION)
    if huey is not None:
        return huey
    immediate = _setting(app, "SONOLABEL_JOBS_IMMEDIATE").lower() in ("1", "true", "yes")
    huey = make_huey(app, immediate=immediate)

    def run_job(job_id: int) -> None:
        with app.app_context():
            run(job_id)

    app.extensions[_EXTENSION] = huey
    app.extensions[_TASK] = huey.task(name="run_job")(run_job)
    return huey


def enqueue(app: Flask, run: Callable[[int], None], job_id: int) -> str:
    """Queue job ``job_id`` for ``run``; returns the queue's task id (in immediate mode it has
    run)."""
    get_huey(app, run)
    result = app.extensions[_TASK](job_id)
    return str(getattr(result, "id", "") or "")
