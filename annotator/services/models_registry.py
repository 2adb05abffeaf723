"""Model versions: trained by ``retrain`` jobs, evaluated by ``evaluate`` jobs
(:mod:`.evaluation_reports`), activated for pre-labelling.

Design choices:
- A version is registered only when training succeeded: the run is written to
  ``<data dir>/models/.tmp-job<job id>/`` and renamed to ``models/<version id>/`` in the same
  transaction that inserts the row; any failure (or cancel) removes the folder and rolls back.
  A worker killed half-way leaves a ``.tmp-`` folder (or, between rename and commit, a
  numbered folder without a row); :func:`clean_orphans` removes both when a worker starts.
  Paths come from ids only.
- Training reads the dataset version's frozen COCO files (the train part, and the val part
  when there is one, which then picks the best epoch); ``parent`` starts from a registered
  version's weights (``--init``), the way a two-frame model starts from a single-frame one.
- A version's name, ``<kind>-v<id>``, is what pre-labelled boxes carry in ``model_version``.
- Exactly one version is active at a time (or none); pre-labels use it by default.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from detector import recipe

from ..db import db
from ..models import DatasetVersion, EvaluationReport, Job, JobStatus, ModelVersion, Role, User
from . import ServiceError
from .frames import commit_or_remove, data_dir, file_sha256
from .input_checks import is_db_int
from .job_spec import JobCancelled, JobContext, Param, choice, integer, kind, text
from .retrain_launch import MAX_PROCESSES, check_placement, device, train_run

MODEL_KINDS = ("single", "two_frame")


class ModelRefused(ServiceError):
    """A model-version request that cannot be carried out."""


def models_root() -> Path:
    return data_dir() / "models"


def model_dir(version_id: int) -> Path:
    return models_root() / str(int(version_id))


def model_file(version: ModelVersion) -> Path:
    return model_dir(version.id) / "model.pt"


# --- lookups ---------------------------------------------------------------------------------

def _by_id_or_name(model: type, ref: str | int, what: str) -> Any:
    ref = str(ref).strip()
    # Only ASCII digits an id column can hold are an id ("²" is a digit to str.isdigit).
    is_id = ref.isascii() and ref.isdigit() and len(ref) <= 10 and is_db_int(int(ref))
    row = db.session.get(model, int(ref)) if is_id else None
    if row is None:
        row = db.session.scalar(sa.select(model).where(model.name == ref))
    if row is None:
        raise ModelRefused(f"No {what} {ref!r}.", status=404)
    return row


def get_model_version(ref: str | int) -> ModelVersion:
    """A version by id or name."""
    return _by_id_or_name(ModelVersion, ref, "model version")


def get_dataset_version(ref: str | int) -> DatasetVersion:
    """A dataset version by id or name."""
    return _by_id_or_name(DatasetVersion, ref, "dataset version")


def split_coco(version: DatasetVersion, split: str) -> Path:
    """The frozen ``annotations.json`` of one part (images beside it), hash-checked."""
    from .dataset_versions import split_files

    files = split_files(version)
    if split not in files:
        raise ModelRefused(f"Dataset version {version.name!r} has no {split} part "
                           f"(it has {', '.join(files) or 'none'}).")
    return files[split]


def active_version() -> ModelVersion | None:
    return db.session.scalar(sa.select(ModelVersion).where(ModelVersion.active.is_(True)))


def list_versions() -> list[ModelVersion]:
    return list(db.session.scalars(sa.select(ModelVersion).order_by(ModelVersion.id.desc())))


def reports_of(version_id: int | None = None) -> list[EvaluationReport]:
    query = sa.select(EvaluationReport).order_by(EvaluationReport.id.desc())
    if version_id is not None:
        query = query.where(EvaluationReport.model_version_id == version_id)
    return list(db.session.scalars(query))


def version_json(version: ModelVersion) -> dict[str, Any]:
    best = (version.metrics or {}).get("best") or {}
    return {"id": version.id, "name": version.name, "kind": version.kind,
            "parent": version.parent_id, "dataset_version": version.dataset_version_id,
            "active": version.active, "file_sha256": version.file_sha256,
            "created_at": version.created_at.isoformat() if version.created_at else None,
            "val_AP": best.get("AP"), "iterations": (version.metrics or {}).get("iterations"),
            "threshold": version_threshold(version),
            "config": version.config,
            "evaluations": [{"id": r.id, "dataset_version": r.dataset_version_id, "split": r.split,
                             **{k: r.summary.get(k) for k in ("AP", "AP50", "AP75")}}
                            for r in reports_of(version.id)]}


def version_threshold(version: ModelVersion) -> float | None:
    """The score threshold chosen on the version's validation part (max F1 of calibrated
    scores), or None when it was trained without one."""
    value = ((version.metrics or {}).get("threshold") or {}).get("value")
    return float(value) if isinstance(value, (int, float)) else None


def prelabel_threshold(version_names: list[str]) -> dict[str, Any] | None:
    """``{"model_version", "value"}`` for the workspace's threshold slider: the validation
    threshold of the version that made most of ``version_names`` (one name per pre-label),
    else of the active version; None when that version has no threshold."""
    version = None
    for name in sorted(set(version_names), key=lambda n: (-version_names.count(n), n)):
        version = db.session.scalar(sa.select(ModelVersion).where(ModelVersion.name == name))
        if version is not None:
            break
    version = version or active_version()
    value = version_threshold(version) if version is not None else None
    return None if value is None else {"model_version": version.name, "value": value}


def activate(ref: str | int) -> ModelVersion:
    """Make one version the active one (pre-labels use it by default)."""
    version = get_model_version(ref)
    if not model_file(version).is_file():
        raise ModelRefused(f"The model file of {version.name} is missing ({model_file(version)}).",
                           status=500)
    db.session.execute(sa.update(ModelVersion).where(ModelVersion.id != version.id)
                       .values(active=False))
    version.active = True
    db.session.commit()
    return version


def clean_orphans() -> list[str]:
    """Remove run folders of unfinished jobs and numbered folders without a version row."""
    root = models_root()
    if not root.is_dir():
        return []
    running = set(db.session.scalars(sa.select(Job.id).where(Job.status == JobStatus.running)))
    known = set(db.session.scalars(sa.select(ModelVersion.id)))
    removed = []
    for path in root.iterdir():
        match = re.fullmatch(r"\.tmp-job(\d+)(-.*)?", path.name)
        orphan = (match is not None and int(match.group(1)) not in running) or \
                 (path.name.isdigit() and int(path.name) not in known)
        if orphan and path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path.name)
    return removed


# --- retrain ---------------------------------------------------------------------------------

def _check_retrain(params: dict[str, Any]) -> None:
    dataset = get_dataset_version(params["dataset"])
    split_coco(dataset, "train")
    if params.get("parent"):
        parent = get_model_version(params["parent"])
        if not model_file(parent).is_file():
            raise ModelRefused(f"The model file of {parent.name} is missing.")
    if params["size"] % 32:
        raise ModelRefused(f"'size' must be a multiple of 32, not {params['size']}.")
    check_placement(params)


RETRAIN_PARAMS = {
    "dataset": Param(text, required=True, help="dataset version id or name"),
    "model": Param(choice(*MODEL_KINDS), "two_frame", help="single or two_frame"),
    "epochs": Param(integer(1, 1000), recipe.EPOCHS, help="passes over the train part"),
    "parent": Param(text, help="model version to start from"),
    "size": Param(integer(64, 2048), recipe.SIZE, help="input size in pixels, a multiple of 32"),
    "batch": Param(integer(1, 64), recipe.BATCH, help="images per step"),
    "min_stride": Param(choice(*map(str, recipe.MIN_STRIDES)), str(recipe.MIN_STRIDE),
                        help="the finest feature map: 4 adds a level for objects of a few "
                             "pixels (small vessels), at more time a frame"),
    "max_iters": Param(integer(1), help="stop after this many steps"),
    "device": Param(device, "auto", help="auto, cpu, cuda or cuda:N, on the worker"),
    "processes": Param(integer(1, MAX_PROCESSES), 1,
                       help="training processes (torchrun, DistributedDataParallel)"),
}


@kind("retrain", RETRAIN_PARAMS, (Role.admin,), "Train a detector on a dataset version.",
      check=_check_retrain)
def run_retrain(ctx: JobContext, params: dict[str, Any], user: User | None) -> dict[str, Any]:
    from detector.train import TrainConfig

    dataset = get_dataset_version(params["dataset"])
    train_coco = split_coco(dataset, "train")
    val_coco = None
    if "val" in (dataset.summary or {}):
        val_coco = split_coco(dataset, "val")
    parent = get_model_version(params["parent"]) if params.get("parent") else None
    dataset_id, parent_id = dataset.id, parent.id if parent else None
    init = str(model_file(parent)) if parent else None
    db.session.rollback()  # no transaction stays open through the training

    models_root().mkdir(parents=True, exist_ok=True)
    run_dir = models_root() / f".tmp-job{ctx.job_id}-{uuid.uuid4().hex[:6]}"
    config = TrainConfig(
        coco=str(train_coco), images=str(train_coco.parent), out=str(run_dir),
        model=params["model"], val_coco=str(val_coco) if val_coco else None,
        val_images=str(val_coco.parent) if val_coco else None, epochs=params["epochs"],
        batch=params["batch"], size=params["size"], init=init,
        min_stride=int(params.get("min_stride", recipe.MIN_STRIDE)),
        max_iters=params.get("max_iters"),
        device=params.get("device", "auto"))
    processes = params.get("processes", 1)
    ctx.progress(1, f"training {params['model']} on {dataset.name} "
                    f"({dataset.summary.get('train', {}).get('images', '?')} images)"
                 + (f" from {parent.name}" if parent else "")
                 + f" on {config.device}" + (f", {processes} processes" if processes > 1 else ""))
    try:
        if os.environ.get("SONOLABEL_TORCH_THREADS"):  # share a machine with the web server
            import torch

            torch.set_num_threads(int(os.environ["SONOLABEL_TORCH_THREADS"]))
        steps = _TrainingProgress(ctx)
        summary = train_run(config, processes, steps.iterations, steps.stage)
        ctx.progress(96, f"trained: {summary['iterations']} iterations, stopped by "
                         f"{summary['status']}; registering the model version")
        version = _register(run_dir, params, summary, dataset_id, parent_id, ctx.job_id, user)
    except BaseException:
        db.session.rollback()
        shutil.rmtree(run_dir, ignore_errors=True)
        raise
    ctx.log(f"registered model version {version.name}")
    return {"model_version": version.id, "name": version.name}


class _TrainingProgress:
    """A retrain job's progress: the iterations take it from 1 to 90 %; each line of the
    run's log after the last iteration (the last epoch's validation and checkpoints, the
    calibration, the end) moves it on one point, up to 95 %, and every line goes to the
    job's log; registering the model takes it on from 96 %. A job that sat at 98 % for
    minutes without a word looked dead while it validated and calibrated."""

    def __init__(self, ctx: JobContext):
        self.ctx, self.percent = ctx, 1.0

    def iterations(self, pct: float) -> None:
        self.percent = max(self.percent, 1 + 0.89 * pct)
        self.ctx.progress(self.percent)

    def stage(self, line: str) -> None:
        if self.percent >= 90:
            self.percent = min(95.0, self.percent + 1)
        try:
            self.ctx.progress(self.percent, line)
        except JobCancelled:
            pass  # a log line must not raise; the next progress call stops the run


def _register(run_dir: Path, params: dict[str, Any], summary: dict[str, Any], dataset_id: int,
              parent_id: int | None, job_id: int, user: User | None) -> ModelVersion:
    model_pt = run_dir / "model.pt"
    if not model_pt.is_file():
        raise ModelRefused("Training ended without a model file.")
    digest = file_sha256(model_pt)
    metrics = {k: summary.get(k) for k in ("status", "best_epoch", "best", "iterations", "epochs",
                                           "calibration", "threshold")}
    version = ModelVersion(name=f"pending-{uuid.uuid4().hex}", kind=params["model"],
                           parent_id=parent_id, dataset_version_id=dataset_id,
                           config=json.loads(json.dumps(params)), metrics=json.loads(json.dumps(metrics)),
                           file_sha256=digest, active=False, job_id=job_id,
                           created_by_id=user.id if user else None)
    db.session.add(version)
    db.session.flush()
    version.name = f"{params['model']}-v{version.id}"
    final = model_dir(version.id)
    if final.exists():  # left by a version whose row is gone (SQLite may reuse its id)
        shutil.rmtree(final)
    os.rename(run_dir, final)
    commit_or_remove(final)
    return version
