"""What a job kind is made of, and what its runner gets; no kind is defined here.

- A kind is a runner plus a parameter spec (:func:`kind`, :class:`Param`): the spec parses CLI
  text (``--param epochs=3``) and JSON alike and refuses unknown names and bad values before
  anything is queued; ``check`` looks the named objects up so a typo fails at once, not in a
  worker. The kinds themselves are listed in :mod:`.job_kinds`.
- Progress, log lines, the heartbeat and the cancel flag go through short transactions of
  their own connection (:class:`JobContext`), never through the runner's session, so a
  runner's half-done work is never committed by a progress update. Runners therefore keep
  no write transaction open across progress calls (they compute, then write in one go).
- A running job stops at its next progress call once its cancel flag is set
  (:class:`JobCancelled`), so training stops mid-epoch.
"""
from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Callable

import sqlalchemy as sa

from ..db import db
from ..models import Job, JobStatus, Role, User, utcnow
from . import ServiceError
from .input_checks import DB_INT_MAX, DB_INT_MIN, is_db_int

TERMINAL = {JobStatus.succeeded, JobStatus.failed, JobStatus.cancelled}
LOG_TAIL_CHARS = 4000
HEARTBEAT_SECONDS = 15.0


class JobRefused(ServiceError):
    """A job that cannot be started, cancelled or run; the message says why."""


class JobCancelled(Exception):
    """Raised inside a runner when the job's cancel flag is set."""


@dataclass(frozen=True)
class Param:
    parse: Callable[[Any], Any]
    default: Any = None
    required: bool = False
    help: str = ""


Runner = Callable[["JobContext", dict[str, Any], User | None], dict[str, Any]]


@dataclass
class Kind:
    name: str
    run: Runner
    params: dict[str, Param]
    roles: tuple[Role, ...]
    check: Callable[[dict[str, Any]], None] | None = None
    help: str = ""


def kind(name: str, params: dict[str, Param], roles: tuple[Role, ...], help: str = "",
         check: Callable[[dict[str, Any]], None] | None = None) -> Callable[[Runner], Runner]:
    """Declare the decorated ``run(ctx, params, user) -> result`` the runner of job kind
    ``name``; :func:`kind_of` reads the declaration back. Declaring registers nothing: a kind
    runs only once :mod:`.job_kinds` lists it."""

    def decorator(run: Runner) -> Runner:
        run.job_kind = Kind(name, run, params, roles, check, help)  # type: ignore[attr-defined]
        return run

    return decorator


def kind_of(run: Runner) -> Kind:
    """The :class:`Kind` that :func:`kind` declared on ``run``."""
    return run.job_kind  # type: ignore[attr-defined]


# --- parameter parsers: each raises ValueError with what the value must be -------------------

def integer(low: int | None = None, high: int | None = None) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        if isinstance(value, bool):
            raise ValueError("a whole number")
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError("a whole number") from None
        lowest = DB_INT_MIN if low is None else low
        highest = DB_INT_MAX if high is None else high  # ids and counts go to Integer columns
        if not lowest <= number <= highest:
            raise ValueError(f"a whole number between {lowest} and {highest}")
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
    if not all(is_db_int(i, minimum=1) for i in out):
        raise ValueError("ids (whole numbers from 1)")
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


# --- what a runner gets ----------------------------------------------------------------------

def with_log_line(log: str | None, line: str) -> str:
    """``log`` with a time-stamped ``line`` appended, cut to its last ``LOG_TAIL_CHARS``."""
    stamp = datetime.now(timezone.utc).strftime("%H:%M:%S")
    return ((log or "") + f"{stamp} {line}\n")[-LOG_TAIL_CHARS:]


@dataclass
class JobContext:
    """What a runner gets: the job id, progress/log writers and the cancel check."""

    job_id: int
    engine: Any = None
    _last_write: float = 0.0
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
            self._last_write = now
        self.check_cancel(now)

    def log(self, message: str) -> None:
        self._update(log_tail=self._appended(message), heartbeat_at=utcnow())

    def _appended(self, message: str) -> str:
        with self.engine.connect() as conn:
            current = conn.execute(sa.select(Job.log_tail).where(Job.id == self.job_id)).scalar()
        return with_log_line(current, message)

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
