"""Background jobs: records in the ``jobs`` table, started, cancelled and run to their end.

- The row is committed before the task is queued, so a worker (or immediate mode, which runs
  the task inside ``enqueue``) always finds it. The queue (:mod:`annotator.job_queue`) carries
  only the job id; its one task is :func:`run_job`, handed to it by :func:`job_huey`.
- Cancel sets ``cancel_requested``; a queued job is marked cancelled at once, a running one
  stops at its next progress call (see :mod:`.job_spec`).
- Stale jobs (:func:`recover_stale`, run when a worker starts): a running job whose worker
  process is gone (same host: its pid is dead or is the new worker's own; other hosts: no
  heartbeat for ``STALE_AFTER`` seconds) becomes failed with a message. Runners write files
  to a temporary folder and register results only on success, so nothing is half-registered.
- The kinds (:mod:`.job_kinds`) are imported when a job is started or run, not with this
  module: they bring OpenCV and NumPy, which a web or CLI process needs only then.
"""
from __future__ import annotations

import os
import socket
import traceback
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from flask import Flask, current_app

from ..db import db
from ..job_queue import enqueue, get_huey
from ..models import Job, JobStatus, Role, User, utcnow
from . import ServiceError
from .job_spec import TERMINAL, JobCancelled, JobContext, JobRefused, with_log_line
from .models_registry import clean_orphans

if TYPE_CHECKING:
    from huey import Huey

STALE_AFTER = 120.0


def job_huey(app: Flask) -> Huey:
    """The app's queue, its one task running :func:`run_job`."""
    return get_huey(app, run_job)


# --- starting, cancelling, describing --------------------------------------------------------

def start_job(kind_name: str, raw_params: dict[str, Any], user: User | None = None) -> Job:
    """Check, record and queue a job. ``user`` None is the command line (any kind allowed)."""
    from .job_kinds import KINDS, parse_params

    params = parse_params(kind_name, raw_params)
    spec = KINDS[kind_name]
    if user is not None and user.role != Role.admin and user.role not in spec.roles:
        raise JobRefused(f"A {user.role.value.replace('_', ' ')} may not start {kind_name} jobs.",
                         status=403)
    job = Job(kind=kind_name, params=params, created_by_id=user.id if user else None,
              status=JobStatus.queued, progress=0.0, log_tail="", error="")
    db.session.add(job)
    db.session.commit()
    job_id = job.id
    try:
        queue_id = enqueue(current_app._get_current_object(), run_job, job_id)
    except Exception as err:  # the queue is unreachable: say so on the row, not only here
        _finish(job_id, JobStatus.failed, error=f"could not queue the job: {err}")
        raise JobRefused(f"The job queue is unreachable: {err}", status=503) from None
    db.session.expire_all()
    job = db.session.get(Job, job_id)
    if queue_id and not job.queue_id:
        job.queue_id = queue_id
        db.session.commit()
    return job


def get_job(job_id: int) -> Job:
    job = db.session.get(Job, job_id)
    if job is None:
        raise JobRefused(f"No job {job_id}.", status=404)
    return job


def cancel_job(job_id: int, user: User | None = None) -> Job:
    """Ask a job to stop: a queued job is cancelled now, a running one at its next step."""
    job = get_job(job_id)
    if user is not None and user.role != Role.admin and job.created_by_id != user.id:
        raise JobRefused("Only an admin or the user who started a job may cancel it.", status=403)
    if job.status in TERMINAL:
        raise JobRefused(f"Job {job.id} has {job.status.value}; there is nothing to cancel.",
                         status=409)
    job.cancel_requested = True
    if job.status == JobStatus.queued:
        job.status = JobStatus.cancelled
        job.finished_at = utcnow()
        job.log_tail = with_log_line(job.log_tail, "cancelled before it started")
        _revoke(job.queue_id)
    db.session.commit()
    return job


def _revoke(queue_id: str) -> None:
    if not queue_id:
        return
    try:
        job_huey(current_app._get_current_object()).revoke_by_id(queue_id)
    except Exception:  # the row says cancelled; a worker that still gets the task skips it
        pass


def list_jobs(limit: int = 50, ids: list[int] | None = None) -> list[Job]:
    query = sa.select(Job).order_by(Job.id.desc())
    if ids is not None:
        query = query.where(Job.id.in_(ids))
    return list(db.session.scalars(query.limit(limit)))


def job_json(job: Job, full: bool = False) -> dict[str, Any]:
    """``{"id", "kind", "status", "progress", "result"}`` (+ the rest when ``full``)."""
    out: dict[str, Any] = {"id": job.id, "kind": job.kind, "status": job.status.value,
                           "progress": round(float(job.progress or 0.0), 1), "result": job.result}
    if job.status == JobStatus.failed or full:
        out["error"] = job.error or ""
    if full:
        out.update({
            "params": job.params, "log_tail": job.log_tail or "",
            "created_by": job.created_by.username if job.created_by else None,
            "cancel_requested": job.cancel_requested, "worker": job.worker,
            "created_at": _iso(job.created_at), "started_at": _iso(job.started_at),
            "finished_at": _iso(job.finished_at)})
    return out


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


# --- running ---------------------------------------------------------------------------------

def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def run_job(job_id: int) -> None:
    """Run one job to its end; called by the queue's task inside an app context."""
    from .job_kinds import KINDS

    job = db.session.get(Job, job_id)
    if job is None or job.status != JobStatus.queued:
        return  # cancelled before it started, or run already (a re-delivered task)
    if job.cancel_requested:
        _finish(job_id, JobStatus.cancelled, log="cancelled before it started")
        return
    job.status, job.started_at, job.worker = JobStatus.running, utcnow(), worker_name()
    job.heartbeat_at = job.started_at
    job.log_tail = with_log_line(job.log_tail, f"started on {job.worker}")
    db.session.commit()
    spec = KINDS.get(job.kind)
    params, user = dict(job.params or {}), job.created_by
    ctx = JobContext(job_id)
    ctx.start_heartbeat()
    try:
        if spec is None:
            raise JobRefused(f"unknown job kind {job.kind!r}")
        result = spec.run(ctx, params, user)
    except JobCancelled:
        db.session.rollback()
        _finish(job_id, JobStatus.cancelled, log="cancelled")
    except ServiceError as err:
        db.session.rollback()
        _finish(job_id, JobStatus.failed, error=str(err), log=f"failed: {err}")
    except Exception as err:
        db.session.rollback()
        message = f"{type(err).__name__}: {err}"
        _finish(job_id, JobStatus.failed, error=message,
                log="failed:\n" + "".join(traceback.format_exc(limit=6))[-1500:])
    else:
        _finish(job_id, JobStatus.succeeded, result=result, log="succeeded")
    finally:
        ctx.stop_heartbeat()


def _finish(job_id: int, status: JobStatus, *, result: dict | None = None, error: str = "",
            log: str = "") -> None:
    db.session.rollback()
    job = db.session.get(Job, job_id)
    if job is None:
        return
    db.session.refresh(job)
    job.status, job.finished_at = status, utcnow()
    if status == JobStatus.succeeded:
        job.progress = 100.0
        job.result = result or {}
    if error:
        job.error = error[:5000]
    if log:
        job.log_tail = with_log_line(job.log_tail, log)
    db.session.commit()


# --- stale jobs ------------------------------------------------------------------------------

def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return False  # this worker is only starting: it runs nothing yet
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stale_jobs(stale_after: float = STALE_AFTER) -> list[Job]:
    """Running jobs whose worker is gone (see the module's docstring); changes nothing."""
    host = socket.gethostname()
    now = utcnow()
    stale: list[Job] = []
    for job in db.session.scalars(sa.select(Job).where(Job.status == JobStatus.running)):
        worker_host, _, pid = (job.worker or "").rpartition(":")
        if worker_host == host and pid.isdigit():
            gone = not _pid_alive(int(pid))
        else:
            beat = job.heartbeat_at or job.started_at or job.created_at
            if beat is not None and beat.tzinfo is None:
                beat = beat.replace(tzinfo=timezone.utc)
            gone = beat is None or now - beat > timedelta(seconds=stale_after)
        if gone:
            stale.append(job)
    return stale


def recover_stale(stale_after: float = STALE_AFTER, found_by: str = "a starting worker") -> list[int]:
    """Mark running jobs whose worker is gone as failed; returns their ids. Then remove the
    leftovers of unfinished runs (see :func:`models_registry.clean_orphans`)."""
    now = utcnow()
    failed: list[int] = []
    for job in stale_jobs(stale_after):
        job.status, job.finished_at = JobStatus.failed, now
        job.error = (f"The worker running this job ({job.worker or 'unknown'}) stopped before "
                     "it finished; nothing it was making was registered. Start the job again.")
        job.log_tail = with_log_line(job.log_tail, f"failed: worker gone (found by {found_by})")
        failed.append(job.id)
    db.session.commit()
    clean_orphans()
    return failed
