"""Background jobs: records in the ``jobs`` table, run by the Huey task of ``annotator.jobs``.

Design choices:
- A job kind is a runner plus a parameter spec (:func:`kind`); the spec parses CLI text
  (``--param epochs=3``) and JSON alike, refuses unknown names and bad values before anything
  is queued, and ``check`` looks the named objects up so a typo fails at once, not in a worker.
- The row is committed before the task is queued, so a worker (or immediate mode, which runs
  the task inside ``enqueue``) always finds it. The queue carries only the job id.
- Progress, log lines, the heartbeat and the cancel flag go through short transactions of
  their own connection (:class:`JobContext`), never through the runner's session, so a
  runner's half-done work is never committed by a progress update. Runners therefore keep
  no write transaction open across progress calls (they compute, then write in one go).
- Cancel sets ``cancel_requested``; a queued job is marked cancelled at once, a running one
  stops at its next progress call (:class:`JobCancelled`), so training stops mid-epoch.
- Stale jobs (:func:`recover_stale`, run when a worker starts): a running job whose worker
  process is gone (same host: its pid is dead or is the new worker's own; other hosts: no
  heartbeat for ``STALE_AFTER`` seconds) becomes failed with a message. Runners write files
  to a temporary folder and register results only on success, so nothing is half-registered.
"""
from __future__ import annotations

import os
import socket
import threading
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import sqlalchemy as sa
from flask import current_app

from ..db import db
from ..models import Job, JobStatus, Role, User, utcnow
from . import ServiceError

TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
LOG_TAIL_CHARS = 4000
HEARTBEAT_SECONDS = 15.0
STALE_AFTER = 120.0


class JobRefused(ServiceError):
    """A job that cannot be started, cancelled or run; the message says why."""


class JobCancelled(Exception):
    """Raised inside a runner when the job's cancel flag is set."""


# --- kinds and their parameters --------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    help: str = ""


@dataclass
class Kind:
    name: str
    run: Callable[["JobContext", dict[str, Any], User | None], dict[str, Any]]
    params: dict[str, Param]
    roles: tuple[Role, ...]
    check: Callable[[dict[str, Any]], None] | None = None
    help: str = ""


KINDS: dict[str, Kind] = {}


def kind(name: str, params: dict[str, Param], roles: tuple[Role, ...], help: str = "",
         check: Callable[[dict[str, Any]], None] | None = None) -> Callable:
    """Register the decorated ``run(ctx, params, user) -> result`` as job kind ``name``."""

    def decorator(fn: Callable) -> Callable:
        KINDS[name] = Kind(name, fn, params, roles, check, help)
        return fn

    return decorator


def load_kinds() -> dict[str, Kind]:
    """Import the modules that define kinds (they register themselves on import)."""
    from . import models_registry, prelabel, propagate  # noqa: F401

    return KINDS


def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("a whole number")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("a whole number") from None
        if (low is not None and number < low) or (high is not None and number > high):
            bounds = f"at least {low}" if high is None else f"between {low} and {high}"
            raise ValueError(f"a whole number {bounds}")
        return number

    return parse


def number(low: float, high: float) -> Callable[[Any], float]:
    def parse(value: Any) -> float:
        try:
            out = float(str(value).strip())
        except ValueError:
            raise ValueError("a number") from None
        if not low <= out <= high:
            raise ValueError(f"a number between {low} and {high}")
        return out

    return parse


def choice(*options: str) -> Callable[[Any], str]:
    def parse(value: Any) -> str:
        text = str(value).strip()
        if text not in options:
            raise ValueError("one of " + ", ".join(options))
        return text

    return parse


def text(value: Any) -> str:
    out = str(value).strip()
    if not out or len(out) > 200:
        raise ValueError("a name or id of 1-200 characters")
    return out


def id_list(value: Any) -> list[int]:
    items = value if isinstance(value, list) else str(value).split(",")
    try:
        out = [int(str(v).strip()) for v in items if str(v).strip()]
    except ValueError:
        raise ValueError("ids separated by commas") from None
    if not out:
        raise ValueError("at least one id")
    return out


def parse_params(kind_name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Typed parameters of a job of ``kind_name`` with defaults filled in; empty values count
    as not given (a blank form field)."""
    kinds = load_kinds()
    spec = kinds.get(kind_name)
    if spec is None:
        raise JobRefused(f"Unknown job kind {kind_name!r}; one of {', '.join(sorted(kinds))}.")
    if not isinstance(raw, dict):
        raise JobRefused("Job parameters must be an object of name: value.")
    unknown = sorted(set(raw) - set(spec.params))
    if unknown:
        raise JobRefused(f"Unknown parameter {', '.join(unknown)} for {kind_name}; it takes "
                         f"{', '.join(spec.params)}.")
    out: dict[str, Any] = {}
    for name, param in spec.params.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if param.required:
                raise JobRefused(f"{kind_name} needs the parameter {name!r} ({param.help}).")
            if param.default is not None:
                out[name] = param.default
            continue
        try:
            out[name] = param.parse(value)
        except ValueError as err:
            raise JobRefused(f"Parameter {name!r} must be {err}, not {value!r}.") from None
    if spec.check is not None:
        spec.check(out)
    return out


def parse_pairs(pairs: list[str] | tuple[str, ...]) -> dict[str, str]:
    """``["epochs=3", "model=single"]`` -> dict; refuses items without ``=`` and repeats."""
    out: dict[str, str] = {}
    for item in pairs:
        name, sep, value = item.partition("=")
        name = name.strip()
        if not sep or not name:
            raise JobRefused(f"Parameters are key=value, not {item!r}.")
        if name in out:
            raise JobRefused(f"Parameter {name!r} is given twice.")
        out[name] = value
    return out


# --- starting, cancelling, describing --------------------------------------------------------

def start_job(kind_name: str, raw_params: dict[str, Any], user: User | None = None) -> Job:
    """Check, record and queue a job. ``user`` None is the command line (any kind allowed)."""
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
    from ..jobs import enqueue

    try:
        queue_id = enqueue(current_app._get_current_object(), job_id)
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
        job.log_tail = _tail(job.log_tail, "cancelled before it started")
        _revoke(job.queue_id)
    db.session.commit()
    return job


def _revoke(queue_id: str) -> None:
    if not queue_id:
        return
    try:
        from ..jobs import get_huey

        get_huey(current_app._get_current_object()).revoke_by_id(queue_id)
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


def _tail(log: str, line: str) -> str:
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    return ((log or "") + f"{stamp} {line}\n")[-LOG_TAIL_CHARS:]


# --- running ---------------------------------------------------------------------------------

def worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class JobContext:
    """What a runner gets: the job id, progress/log writers and the cancel check."""

    job_id: int
    engine: Any = None
    _last_write: float = 0.0
    _last_progress: float = -1.0
    _last_cancel_check: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __post_init__(self) -> None:
        if self.engine is None:
            self.engine = db.engine

    def _update(self, **values: Any) -> None:
        with self.engine.begin() as conn:
            conn.execute(sa.update(Job).where(Job.id == self.job_id).values(**values))

    def progress(self, percent: float, message: str | None = None) -> None:
        """Record progress (0-100) and an optional log line; raises :class:`JobCancelled`
        when the job was asked to stop. Cheap enough to call every step: writes are
        throttled to one per half second unless there is a message."""
        percent = max(0.0, min(100.0, float(percent)))
        now = time.monotonic()
        if message is not None or now - self._last_write >= 0.5 or percent >= 100.0:
            values: dict[str, Any] = {"progress": percent, "heartbeat_at": utcnow()}
            if message is not None:
                values["log_tail"] = self._appended(message)
            self._update(**values)
            self._last_write, self._last_progress = now, percent
        self.check_cancel(now)

    def log(self, message: str) -> None:
        self._update(log_tail=self._appended(message), heartbeat_at=utcnow())

    def _appended(self, message: str) -> str:
        with self.engine.connect() as conn:
            current = conn.execute(sa.select(Job.log_tail).where(Job.id == self.job_id)).scalar()
        return _tail(current or "", message)

    def check_cancel(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if now - self._last_cancel_check < 0.5:
            return
        self._last_cancel_check = now
        with self.engine.connect() as conn:
            flag = conn.execute(sa.select(Job.cancel_requested).where(Job.id == self.job_id)).scalar()
        if flag:
            raise JobCancelled()

    def start_heartbeat(self) -> None:
        """A daemon thread stamps ``heartbeat_at`` while a long step makes no progress calls."""

        def beat() -> None:
            while not self._stop.wait(HEARTBEAT_SECONDS):
                try:
                    self._update(heartbeat_at=utcnow())
                except Exception:
                    pass

        self._thread = threading.Thread(target=beat, name=f"job-{self.job_id}-heartbeat", daemon=True)
        self._thread.start()

    def stop_heartbeat(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


def run_job(job_id: int) -> None:
    """Run one job to its end; called by the queue's task inside an app context."""
    job = db.session.get(Job, job_id)
    if job is None or job.status != JobStatus.queued:
        return  # cancelled before it started, or run already (a re-delivered task)
    if job.cancel_requested:
        _finish(job_id, JobStatus.cancelled, log="cancelled before it started")
        return
    job.status, job.started_at, job.worker = JobStatus.running, utcnow(), worker_name()
    job.heartbeat_at = job.started_at
    job.log_tail = _tail(job.log_tail, f"started on {job.worker}")
    db.session.commit()
    kinds = load_kinds()
    spec = kinds.get(job.kind)
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
        job.log_tail = _tail(job.log_tail, log)
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


def recover_stale(stale_after: float = STALE_AFTER) -> list[int]:
    """Mark running jobs whose worker is gone as failed; returns their ids. Then remove the
    leftovers of unfinished runs (see :func:`models_registry.clean_orphans`)."""
    host = socket.gethostname()
    now = utcnow()
    failed: list[int] = []
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
            job.status, job.finished_at = JobStatus.failed, now
            job.error = (f"The worker running this job ({job.worker or 'unknown'}) stopped before "
                         "it finished; nothing it was making was registered. Start the job again.")
            job.log_tail = _tail(job.log_tail, "failed: worker gone (found by a starting worker)")
            failed.append(job.id)
    db.session.commit()
    from .models_registry import clean_orphans

    clean_orphans()
    return failed
