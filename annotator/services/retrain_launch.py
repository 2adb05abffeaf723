"""Where a retrain job trains: the ``device`` and ``processes`` parameters.

- ``device`` is what ``python -m detector train --device`` takes: ``auto`` (a CUDA GPU when
  the worker's torch sees one), ``cpu``, ``cuda`` or ``cuda:N``. It is checked for its form
  when the job is started (the web server may have no GPU); whether the worker has that GPU
  is known only there, and a missing one fails the job with detector's one-line reason.
- ``processes`` > 1 trains with DistributedDataParallel: the worker runs
  ``python -m torch.distributed.run --standalone --nproc-per-node N -m detector train ...``,
  the command a user would type (one process per GPU, or gloo processes on the CPU), and
  follows it through the run's ``metrics.json``. Under torchrun each process takes the GPU of
  its local rank, so ``cuda:N`` with more than one process is refused at the start.
  Cancelling the job ends the whole process group. The launcher's output is kept as
  ``torchrun.log`` in the run (and so in the model version's folder).
"""
from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable

from . import ServiceError

MAX_PROCESSES = 16
DEVICE_FORM = re.compile(r"auto|cpu|cuda(:\d{1,2})?")
POLL_SECONDS = 1.0


def device(value: Any) -> str:
    """A job parameter parser: the device's form (see the module notes)."""
    text = str(value).strip().lower()
    if not DEVICE_FORM.fullmatch(text):
        raise ValueError("auto, cpu, cuda or cuda:N")
    return text


def check_placement(params: dict[str, Any]) -> None:
    """Refuse what cannot run under torchrun, before the job is queued."""
    if params.get("processes", 1) > 1 and ":" in params.get("device", "auto"):
        raise ServiceError(f"'device' {params['device']} names one GPU, but with "
                           f"{params['processes']} processes each takes the GPU of its rank: "
                           "use cuda or auto.")


def train_run(config: Any, processes: int, progress: Callable[[float], None],
              stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Train ``config`` (a :class:`detector.train.TrainConfig`) here, or under torchrun with
    ``processes`` processes; ``progress(0-100)`` may raise to stop (the cancel flag);
    ``stage(line)`` gets the lines of the run's ``train.log`` (validation, checkpoints,
    calibration) as they are written. Returns the run's summary (its ``metrics.json``)."""
    from detector.train import train

    _check_worker(config.device, processes)
    if processes <= 1:
        return train(config, progress=progress, stage=stage)
    return _torchrun(config, processes, progress, stage)


def _check_worker(spec: str, processes: int) -> None:
    """Refuse, in one line, a device this worker does not have (or too few GPUs)."""
    import torch

    from detector.devices import resolve_device

    try:
        where = resolve_device(spec)
    except ValueError as exc:
        raise ServiceError(f"This worker cannot train there: {exc}") from None
    if where.type == "cuda" and processes > torch.cuda.device_count():
        raise ServiceError(f"{processes} processes need {processes} GPUs; this worker has "
                           f"{torch.cuda.device_count()}.")


def _torchrun(config: Any, processes: int, progress: Callable[[float], None],
              stage: Callable[[str], None] | None = None) -> dict[str, Any]:
    import detector
    from detector.train import train_argv

    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               "--nproc-per-node", str(processes), "-m", "detector", "train",
               *train_argv(config)]
    threads = os.environ.get("SONOLABEL_TORCH_THREADS")
    if threads:  # per process, as in the worker's own process
        command += ["--threads", threads]
    env = dict(os.environ)
    # the worker imports detector from wherever it is installed; so do the launched processes
    package_root = str(Path(detector.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    log_path = out / "torchrun.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env,
                                start_new_session=True)
        read = 0  # how much of rank 0's train.log has been handed to stage
        try:
            while proc.poll() is None:
                progress(_percent(out / "metrics.json", config))
                read = _new_lines(out / "train.log", read, stage)
                time.sleep(POLL_SECONDS)
        except BaseException:
            _stop(proc)
            raise
        _new_lines(out / "train.log", read, stage)
    if proc.returncode != 0:
        raise ServiceError(f"training under torchrun ({processes} processes) failed with exit "
                           f"code {proc.returncode}: {_reason(log_path)}")
    progress(100.0)
    return json.loads((out / "metrics.json").read_text(encoding="utf-8"))


def _new_lines(path: Path, start: int, stage: Callable[[str], None] | None) -> int:
    """Hand the whole lines of ``path`` after byte ``start`` to ``stage`` (the time stamp
    cut off); returns where the next call starts."""
    if stage is None:
        return start
    try:
        with open(path, "rb") as f:
            f.seek(start)
            chunk = f.read()
    except OSError:
        return start
    end = chunk.rfind(b"\n") + 1
    for line in chunk[:end].decode("utf-8", "replace").splitlines():
        parts = line.split(" ", 2)  # "2026-01-01 12:00:00,123 message"
        stage(parts[2] if len(parts) == 3 else line)
    return start + end


def _percent(metrics: Path, config: Any) -> float:
    """How far the run is, from the epochs its rank 0 has written so far."""
    try:
        summary = json.loads(metrics.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return 0.0
    done = max(len(summary.get("epochs") or []) / config.epochs,
               (summary.get("iterations") or 0) / config.max_iters if config.max_iters else 0.0)
    return min(99.0, 100.0 * done)


def _stop(proc: subprocess.Popen) -> None:
    """End the launcher and its training processes (they share its session)."""
    for sig, wait in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def _reason(log_path: Path) -> str:
    """The training's own error line from the launcher's output, else its last line."""
    try:
        lines = [ln.strip() for ln in log_path.read_text(encoding="utf-8", errors="replace")
                 .splitlines() if ln.strip()]
    except OSError:
        return "no output"
    for line in reversed(lines):
        line = re.sub(r"^\[(default)?rank\d+\]:\s*", "", line)  # torchrun's prefix, if any
        if line.startswith("error:") or re.match(r"\w+(Error|Exception):", line):
            return line[:500]
    return lines[-1][:500] if lines else "no output"
