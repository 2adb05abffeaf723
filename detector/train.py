"""Training a detector: ``python -m detector train ...`` and :func:`train`.

* AdamW, linear warm-up then cosine decay per iteration, gradient norm clipped.
* With a validation set, COCO AP (IoU .50:.95) after every epoch; ``model.pt`` holds the best
  epoch and training stops after ``patience`` epochs without improvement. Without one,
  ``model.pt`` is the last epoch.
* ``last.pt`` (model, optimiser, schedule, counters) after every epoch; ``--resume`` goes on
  from it with the same settings. ``--max-iters`` caps the iterations of the whole run (an
  epoch cut short still ends with validation and checkpoints).
* ``--init OTHER_RUN/model.pt`` copies every weight whose name and shape match, the intended
  way to start ``two_frame`` / ``concat`` from a trained ``single`` model.
* RUN_DIR gets ``model.pt``, ``last.pt``, ``metrics.json`` (per epoch: loss, lr, AP, AP50,
  AP75, seconds) and ``train.log``.
* With a validation set, after training the best epoch's validation detections fit the score
  calibration and the validation-F1 threshold (:mod:`detector.calibration`); both are stored
  in ``model.pt`` (``calibration``, ``threshold``) and ``metrics.json`` (with the expected
  calibration error before and after), and :class:`detector.predict.Predictor` applies it.

Options beside the default recipe, each off unless asked for (``python -m detector cv``
measures what they are worth): ``--augment-set ultrasound`` adds a TGC curve, gamma and depth
crops to the default augmentation (:mod:`detector.transforms`); ``--fit-anchors`` fits the
anchor sizes and aspect ratios to the training boxes (:mod:`detector.anchors`, stored in the
model's config); ``--ema DECAY`` validates and keeps an exponential moving average of the
weights (:mod:`detector.ema`; its state is in ``last.pt`` for ``--resume``).

``train(config, progress)`` calls ``progress(percent)`` after every iteration (0-100); an
exception raised by the callback (e.g. :class:`Cancelled`) stops training at once and
propagates; the ``last.pt`` of the last finished epoch stays, so the run can be resumed.
``train(config, progress, stage)`` also hands every line of ``train.log`` to ``stage(message)``
as it is written (rank 0 only; ``stage`` must not raise): the validation of each epoch, the
checkpoints, the calibration and the end, which come after the last iteration's 100 %.

Devices (:mod:`detector.devices`): ``--device auto`` (the default) trains on a CUDA GPU when
there is one, with mixed precision (``--precision``), else on the CPU in float32.
``torchrun --nproc-per-node N -m detector train ...`` trains with DistributedDataParallel
(gloo on the CPU, NCCL on GPUs, one GPU per process):

* ``--batch`` is per process, so a step takes N x batch images; ``--epochs`` counts passes
  over the whole training set, which a DistributedSampler shares out (an epoch has about 1/N
  of the steps); ``--max-iters`` and ``iterations`` count optimiser steps, which all
  processes take together; ``--lr`` is not scaled. The logged loss is the mean over the
  processes.
* Rank 0 alone validates, writes RUN_DIR (the same files as one process) and prints; the
  others wait for it at the end of each epoch. Every process returns rank 0's summary;
  ``metrics.json`` says ``processes`` and ``device``.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import logging
import math
import os
import random
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from detector import recipe
from detector.backbones import BACKBONES
from detector.checkpoint import (atomic_save, load_matching, model_path, read_checkpoint,
                                 save_model)
from detector.cli import CliParser, positive
from detector.data import PairDataset, collate, load_coco, select_categories
from detector.devices import (DEVICE_CHOICES, PRECISIONS, Distributed, autocast_dtype, join,
                              leave, resolve_device)
from detector.model import ARCHS, ModelConfig, build_model
from detector.anchors import fit_anchors
from detector.ema import WeightEMA
from detector.transforms import AUGMENT_SETS, augment_set


class Cancelled(Exception):
    """Raise from a progress callback to stop training."""


@dataclass
class TrainConfig:
    coco: str
    images: str
    out: str
    model: str = "two_frame"
    val_coco: str | None = None
    val_images: str | None = None
    epochs: int = recipe.EPOCHS
    lr: float = recipe.LR
    batch: int = recipe.BATCH
    size: int = recipe.SIZE
    seed: int = 0
    init: str | None = None
    backbone: str = "efficientnet_lite0"
    backbone_weights: str | None = None
    min_stride: int = recipe.MIN_STRIDE
    max_iters: int | None = None
    patience: int = recipe.PATIENCE
    warmup_iters: int = recipe.WARMUP_ITERS
    weight_decay: float = 1e-4
    grad_clip: float = 10.0
    workers: int = 0
    classes: list[str] | None = None
    augment: bool = True
    augment_set: str = "default"
    fit_anchors: bool = False
    ema: float = 0.0
    resume: bool = False
    device: str = "auto"
    precision: str = "auto"


def _check(config: TrainConfig) -> None:
    """Raise ValueError / FileNotFoundError for settings that cannot work, before any file is
    written."""
    if config.model not in ARCHS:
        raise ValueError(f"unknown model {config.model!r}; choose from {', '.join(ARCHS)}")
    if config.backbone not in BACKBONES:
        raise ValueError(f"unknown backbone {config.backbone!r}")
    if config.min_stride not in recipe.MIN_STRIDES:
        raise ValueError(f"min-stride must be one of {recipe.MIN_STRIDES}, not {config.min_stride}")
    for name in ("epochs", "batch", "patience"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name} must be at least 1")
    if config.max_iters is not None and config.max_iters < 1:
        raise ValueError("max-iters must be at least 1")
    if not config.lr > 0:
        raise ValueError("lr must be positive")
    augment_set(config.augment_set)
    if not 0 <= config.ema < 1:
        raise ValueError(f"ema must be 0 (off) or a decay below 1, not {config.ema}")
    if config.size < 32 or config.size % 32:
        raise ValueError(f"size must be a multiple of 32 (got {config.size})")
    for label, path in (("--coco", config.coco), ("--val-coco", config.val_coco)):
        if path is not None and not Path(path).is_file():
            raise FileNotFoundError(f"{label} {path} not found")
    if config.init is not None and not model_path(config.init).is_file():
        raise FileNotFoundError(f"--init {config.init} not found")
    for label, path in (("--images", config.images), ("--val-images", config.val_images)):
        if path is not None and not Path(path).is_dir():
            raise FileNotFoundError(f"{label} {path} is not a directory")
    out = Path(config.out)
    if config.resume and not (out / "last.pt").is_file():
        raise FileNotFoundError(f"nothing to resume: {out / 'last.pt'} not found")
    if not config.resume and (out / "model.pt").exists():
        raise ValueError(f"{out} already holds a model.pt; use --resume or another --out")
    place = Distributed.here()
    autocast_dtype(resolve_device(config.device, place.local_rank if place.active else None),
                   config.precision)


def _schedule(warmup: int, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def coco_ap(coco: dict[str, Any], results: list[dict[str, Any]], cat_ids: list[int]
            ) -> dict[str, float]:
    """AP, AP50, AP75 of ``results`` against ``coco`` over ``cat_ids`` (0 when empty)."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if not results or not coco.get("annotations"):
        return {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO()
        gt.dataset = {"info": {}, "categories": coco.get("categories", []), **coco}
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, "bbox")
        ev.params.catIds = cat_ids
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    stats = [max(0.0, float(s)) for s in ev.stats[:3]]
    return dict(zip(("AP", "AP50", "AP75"), stats))


def _logger(out: Path, to_file: bool = True) -> logging.Logger:
    """The run's ``train.log``; a logger that writes nothing when not ``to_file`` (the
    processes other than rank 0)."""
    log = logging.getLogger(f"detector.train.{out.resolve()}")
    log.setLevel(logging.INFO)
    log.propagate = False
    _close(log)
    handler = logging.FileHandler(out / "train.log", encoding="utf-8") if to_file else \
        logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(message)s"))
    log.addHandler(handler)
    return log


class _Stages(logging.Handler):
    """Hands every line of the run's log to a caller's ``stage(message)`` as well (a job's
    log), so the steps after the last iteration (validation, checkpoints, calibration) are
    seen as they happen rather than as a progress bar stopped short of 100 %."""

    def __init__(self, stage: Callable[[str], None]):
        super().__init__(logging.INFO)
        self.stage = stage

    def emit(self, record: logging.LogRecord) -> None:
        self.stage(record.getMessage())


def _seed(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainConfig, progress: Callable[[float], None] | None = None,
          stage: Callable[[str], None] | None = None) -> dict:
    """Train as configured; returns the summary also written to ``metrics.json``.

    Under ``torchrun`` (or in a process group the caller started) this is one process of a
    DistributedDataParallel run, and every process returns rank 0's summary. Each process
    calls ``progress``; a callback that raises must do so in all of them, or the others wait
    for the one that stopped until the group's timeout."""
    _check(config)
    place, device, started = join(config.device)
    try:
        return _train(config, progress, place, device, stage)
    finally:
        if started:
            leave()


def _loader(dataset: PairDataset, config: TrainConfig, epoch: int,
            sampler: DistributedSampler | None) -> DataLoader:
    if sampler is None:
        return DataLoader(dataset, batch_size=config.batch, shuffle=True, collate_fn=collate,
                          num_workers=config.workers,
                          generator=torch.Generator().manual_seed(config.seed + epoch))
    sampler.set_epoch(epoch)
    return DataLoader(dataset, batch_size=config.batch, sampler=sampler, collate_fn=collate,
                      num_workers=config.workers)


def _train(config: TrainConfig, progress: Callable[[float], None] | None, place: Distributed,
           device: torch.device, stage: Callable[[str], None] | None = None) -> dict:
    from tqdm import tqdm

    from detector.predict import predict_dataset

    out = Path(config.out)
    resume_state = torch.load(out / "last.pt", map_location="cpu", weights_only=False) \
        if config.resume else None
    if resume_state is not None:
        saved = resume_state["train_config"]
        # the run's own settings win, except how long to go on and where
        keep = {k: getattr(config, k) for k in ("epochs", "max_iters", "patience", "resume",
                                               "device", "precision", "workers", "out")}
        config = TrainConfig(**{**saved, **keep})
    coco = load_coco(config.coco)
    categories = resume_state["categories"] if resume_state else \
        select_categories(coco, config.classes)
    model_config = ModelConfig.from_dict(resume_state["model_config"]) if resume_state else \
        ModelConfig(arch=config.model, backbone=config.backbone,
                    backbone_weights=config.backbone_weights, min_stride=config.min_stride,
                    num_classes=len(categories) + 1, size=config.size)
    temporal = model_config.arch != "single"
    train_set = PairDataset(coco, config.images, categories, model_config.size,
                            model_config.flow_max_side,
                            augment_set(config.augment_set) if config.augment else None,
                            config.seed, temporal)
    if config.fit_anchors and resume_state is None:
        sizes, ratios = fit_anchors(train_set.box_sizes(), levels=len(model_config.anchor_sizes))
        model_config = replace(model_config, anchor_sizes=sizes, aspect_ratios=ratios)
    val_set = val_coco = None
    if config.val_coco:
        val_coco = load_coco(config.val_coco)
        val_set = PairDataset(val_coco, config.val_images or config.images, categories,
                              model_config.size, model_config.flow_max_side, None,
                              config.seed, temporal)
    if len(train_set) == 0:
        raise ValueError(f"{config.coco} lists no images")

    out.mkdir(parents=True, exist_ok=True)
    log = _logger(out, to_file=place.main)
    if stage is not None and place.main:
        log.addHandler(_Stages(stage))
    _seed(config.seed)
    amp_dtype = autocast_dtype(device, config.precision)
    model = build_model(model_config, load_backbone_weights=resume_state is None)
    if config.init and resume_state is None:
        init_cats = read_checkpoint(config.init)["categories"]
        if [c["name"] for c in init_cats] != [c["name"] for c in categories]:
            log.info("init checkpoint classes %s differ from %s", init_cats, categories)
        copied, total = load_matching(model, config.init)
        log.info("init from %s: %d of %d tensors copied", config.init, copied, total)
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    # an epoch is one pass over the training set, shared out among the processes
    per_epoch = math.ceil(math.ceil(len(train_set) / place.world_size) / config.batch)
    total_iters = config.epochs * per_epoch
    if config.max_iters:
        total_iters = min(total_iters, config.max_iters)
    warmup = max(1, min(config.warmup_iters, total_iters // 5))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _schedule(warmup, total_iters))
    scaler = torch.amp.GradScaler(device.type, enabled=amp_dtype == torch.float16)
    ema = WeightEMA(model, config.ema) if config.ema > 0 else None

    history: list[dict[str, Any]] = []
    start_epoch, iteration, best, best_epoch, bad_epochs = 0, 0, -1.0, None, 0
    best_val_results: list[dict[str, Any]] | None = None  # raw scores, for the calibration
    if resume_state is not None:
        model.load_state_dict(resume_state["model"])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        if resume_state.get("scaler"):
            scaler.load_state_dict(resume_state["scaler"])
        if ema is not None and resume_state.get("ema"):
            ema.load_state_dict(resume_state["ema"])
        start_epoch, iteration = resume_state["epoch"] + 1, resume_state["iteration"]
        best, best_epoch = resume_state["best"], resume_state["best_epoch"]
        bad_epochs, history = resume_state["bad_epochs"], resume_state["history"]
        log.info("resumed at epoch %d, iteration %d", start_epoch, iteration)
    step_model: torch.nn.Module = model
    sampler = None
    if place.active:
        step_model = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
        sampler = DistributedSampler(train_set, num_replicas=place.world_size, rank=place.rank,
                                     shuffle=True, seed=config.seed)
    log.info("train %s: %d images, %d val, categories %s, model %s",
             config.coco, len(train_set), len(val_set) if val_set else 0,
             [c["name"] for c in categories], model_config.to_dict())
    log.info("device %s, %d process(es), %s", device, place.world_size,
             f"autocast {amp_dtype}" if amp_dtype else "float32")
    where = {"device": str(device), "processes": place.world_size}

    def report(done: float) -> None:
        if progress is not None:
            progress(min(100.0, 100.0 * done / max(1, total_iters)))

    stop_reason = "epochs"
    bar = tqdm(total=total_iters, initial=min(iteration, total_iters), unit="it",
               file=sys.stderr, disable=None if place.main else True,
               desc=f"train {model_config.arch}")
    try:
        for epoch in range(start_epoch, config.epochs):
            if iteration >= total_iters:
                break
            started = time.time()
            step_model.train()
            train_set.epoch = epoch
            losses: list[float] = []
            for batch in _loader(train_set, config, epoch, sampler):
                if iteration >= total_iters:
                    break
                images = [b["image"].to(device) for b in batch]
                targets = [{k: v.to(device) for k, v in b["target"].items()} for b in batch]
                kwargs = {}
                if temporal:
                    kwargs = {"prev_images": [b["prev_image"].to(device) for b in batch],
                              "flows": [b["flow"] for b in batch]}
                with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                    loss_dict = step_model(images, targets, **kwargs)
                loss = sum(loss_dict.values())
                seen = place.mean(loss.detach())  # every process stops together
                if not torch.isfinite(seen):
                    raise FloatingPointError(f"loss became {seen.item()} at iteration "
                                             f"{iteration}; lower --lr")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.grad_clip)
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                if ema is not None:
                    ema.update(model)
                iteration += 1
                losses.append(seen.item())
                bar.update(1)
                bar.set_postfix(loss=f"{losses[-1]:.3f}", epoch=epoch + 1)
                report(iteration)
            stop = False
            if place.main:  # the others wait at the share() below
                row: dict[str, Any] = {"epoch": epoch + 1, "iterations": iteration,
                                       "loss": float(np.mean(losses)) if losses else None,
                                       "lr": optimizer.param_groups[0]["lr"]}
                improved = True
                # with --ema the averaged weights are validated and kept as model.pt
                with ema.swapped_in(model) if ema is not None else contextlib.nullcontext():
                    if val_set is not None:
                        log.info("epoch %d: validating on %d images", epoch + 1, len(val_set))
                        # COCO AP counts low-scoring boxes too, as evaluation does
                        model.roi_heads.score_thresh = 0.001
                        try:
                            results = predict_dataset(model, val_set, categories)
                        finally:
                            model.roi_heads.score_thresh = 0.05
                        row.update(coco_ap(val_coco, results, [c["id"] for c in categories]))
                        improved = row["AP"] > best
                    row["seconds"] = round(time.time() - started, 1)
                    history.append(row)
                    if improved:
                        best, best_epoch, bad_epochs = row.get("AP", best), epoch + 1, 0
                        if val_set is not None:
                            best_val_results = results
                        save_model(out / "model.pt", model, categories,
                                   {"epoch": epoch + 1, "metrics": row, "config": asdict(config)})
                    else:
                        bad_epochs += 1
                atomic_save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                             "ema": ema.state_dict() if ema is not None else None,
                             "scheduler": scheduler.state_dict(),
                             "scaler": scaler.state_dict(), "epoch": epoch,
                             "iteration": iteration, "best": best, "best_epoch": best_epoch,
                             "bad_epochs": bad_epochs, "history": history,
                             "categories": categories, "model_config": model_config.to_dict(),
                             "train_config": asdict(config)}, out / "last.pt")
                summary = _summary(config, model_config, categories, history, best_epoch,
                                   iteration, "running", where)
                _write_json(out / "metrics.json", summary)
                log.info("epoch %d: %s", epoch + 1, json.dumps(row))
                stop = val_set is not None and bad_epochs >= config.patience
            if place.share(stop):
                stop_reason = "patience"
                break
        if stop_reason != "patience" and iteration >= total_iters \
                and total_iters < config.epochs * per_epoch:
            stop_reason = "max_iters"
    except BaseException as exc:
        log.info("stopped: %r", exc)
        _close(log)
        raise
    finally:
        bar.close()
    summary = None
    if place.main:
        if val_set is not None:
            log.info("calibrating the scores on the best epoch's validation detections")
            where["calibration"] = _calibrate(out, model, val_set, val_coco, categories,
                                              best_val_results, log)
            where["threshold"] = where["calibration"].pop("threshold")
        summary = _summary(config, model_config, categories, history, best_epoch, iteration,
                           stop_reason, where)
        _write_json(out / "metrics.json", summary)
        log.info("done (%s): best epoch %s", stop_reason, best_epoch)
    _close(log)
    summary = place.share(summary)  # the others wait until rank 0 has written the run
    report(total_iters)
    return summary


def _calibrate(out: Path, model: torch.nn.Module, val_set: PairDataset, val_coco: dict[str, Any],
               categories: list[dict], results: list[dict[str, Any]] | None,
               log: logging.Logger) -> dict[str, Any]:
    """Fit the calibration and the validation-F1 threshold on the best epoch's validation
    detections (predicted again from ``model.pt`` after a resume) and store them in
    ``model.pt``; returns the record (with ``threshold``) for ``metrics.json``."""
    from detector.calibration import calibrate
    from detector.predict import predict_dataset

    checkpoint = read_checkpoint(out)
    if results is None:
        model.load_state_dict(checkpoint["state_dict"])
        model.roi_heads.score_thresh = 0.001
        try:
            results = predict_dataset(model, val_set, categories)
        finally:
            model.roi_heads.score_thresh = 0.05
    gt = {**val_coco, "categories": categories}
    gt["annotations"] = [a for a in val_coco.get("annotations", [])
                         if a.get("category_id") in {c["id"] for c in categories}]
    try:
        _, record = calibrate(gt, results)
    except ValueError as exc:  # a validation file pycocotools took but the checks refuse
        record = {"method": "none", "reason": str(exc), "ece_before": None, "ece_after": None,
                  "threshold": {"value": None, "method": "validation-f1", "reason": str(exc)}}
    checkpoint["calibration"] = {k: v for k, v in record.items() if k != "threshold"}
    checkpoint["threshold"] = record["threshold"]
    atomic_save(checkpoint, model_path(out))
    log.info("calibration %s: ECE %s -> %s, threshold %s", record["method"],
             record["ece_before"], record["ece_after"], record["threshold"].get("value"))
    return record


def _close(log: logging.Logger) -> None:
    for handler in list(log.handlers):
        log.removeHandler(handler)
        handler.close()


def _summary(config: TrainConfig, model_config: ModelConfig, categories: list[dict],
             history: list[dict], best_epoch: int | None, iteration: int, status: str,
             where: dict[str, Any]) -> dict[str, Any]:
    best_row = next((r for r in history if r["epoch"] == best_epoch), None)
    return {"status": status, "model": model_config.arch, "best_epoch": best_epoch,
            "best": best_row, "iterations": iteration, "epochs": history,
            "categories": categories, "model_path": str(Path(config.out) / "model.pt"),
            "train_config": asdict(config), **where}


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
    os.replace(tmp, path)


# -- command line -----------------------------------------------------------------------------

def add_train_options(parser: argparse.ArgumentParser) -> None:
    """The options that say how to train (not on which files, nor where to): ``train`` and
    ``cv`` (:mod:`detector.cv`) share them, and :func:`config_from_args` reads them back."""
    parser.add_argument("--model", choices=ARCHS, default="two_frame")
    parser.add_argument("--epochs", type=positive(int), default=recipe.EPOCHS,
                        help="passes over the training set (under torchrun too)")
    parser.add_argument("--lr", type=float, default=recipe.LR)
    parser.add_argument("--batch", type=positive(int), default=recipe.BATCH,
                        help="images per step and process")
    parser.add_argument("--size", type=positive(int), default=recipe.SIZE,
                        help="input size in pixels, a multiple of 32")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--init", help="model.pt (or its run directory) whose matching weights "
                                       "start this model, e.g. a trained single-frame run")
    parser.add_argument("--backbone", choices=BACKBONES, default="efficientnet_lite0")
    parser.add_argument("--backbone-weights", help="local ImageNet checkpoint of the backbone")
    parser.add_argument("--min-stride", type=int, choices=recipe.MIN_STRIDES,
                        default=recipe.MIN_STRIDE,
                        help="stride of the finest feature map: 4 adds a level for objects of "
                             f"a few pixels, at more time a frame (default {recipe.MIN_STRIDE})")
    parser.add_argument("--max-iters", type=positive(int), help="optimiser steps at most")
    parser.add_argument("--patience", type=positive(int), default=recipe.PATIENCE)
    parser.add_argument("--classes", help="comma-separated category names (default: all)")
    parser.add_argument("--no-augment", action="store_true", help="the same as --augment-set none")
    parser.add_argument("--augment-set", choices=AUGMENT_SETS, default="default",
                        help="default: flip, zoom, gain, contrast, speckle, shadow erasing; "
                             "ultrasound: those plus a TGC curve, gamma and depth crops")
    parser.add_argument("--fit-anchors", action="store_true",
                        help="anchor sizes and aspect ratios by k-means on the training boxes")
    parser.add_argument("--ema", type=float, default=0.0,
                        help="keep an exponential moving average of the weights with this "
                             "decay (e.g. 0.999) and validate and save it; 0: off (default)")
    parser.add_argument("--workers", type=int, default=0, help="data loader processes")
    parser.add_argument("--threads", type=positive(int), help="torch CPU threads")
    parser.add_argument("--device", default="auto",
                        help=f"{DEVICE_CHOICES}; auto (default) takes a CUDA GPU when present")
    parser.add_argument("--precision", choices=PRECISIONS, default="auto",
                        help="auto (default): mixed precision on a GPU (bf16, else fp16 with "
                             "loss scaling), fp32 on the CPU")


def config_from_args(args: argparse.Namespace, *, coco: str, images: str, out: str,
                     val_coco: str | None = None, val_images: str | None = None,
                     resume: bool = False) -> TrainConfig:
    """The :class:`TrainConfig` of options added by :func:`add_train_options`, for these
    files; applies ``--threads`` to this process."""
    if getattr(args, "threads", None):
        torch.set_num_threads(args.threads)
    return TrainConfig(
        coco=coco, images=images, out=out, model=args.model,
        val_coco=val_coco, val_images=val_images, epochs=args.epochs, lr=args.lr,
        batch=args.batch, size=args.size, seed=args.seed, init=args.init,
        backbone=args.backbone, backbone_weights=args.backbone_weights,
        min_stride=args.min_stride, max_iters=args.max_iters, patience=args.patience,
        classes=[c.strip() for c in args.classes.split(",") if c.strip()] if args.classes
        else None, augment=not args.no_augment and args.augment_set != "none",
        augment_set="default" if args.augment_set == "none" else args.augment_set,
        fit_anchors=args.fit_anchors, ema=args.ema, resume=resume, workers=args.workers,
        device=args.device, precision=args.precision)


def train_argv(config: TrainConfig) -> list[str]:
    """The ``python -m detector train`` arguments that give ``config`` (what a launcher such
    as ``torchrun`` runs). Raises ValueError for a setting the command line cannot express."""
    fixed = TrainConfig(coco="", images="", out="")
    for name in ("warmup_iters", "weight_decay", "grad_clip"):
        if getattr(config, name) != getattr(fixed, name):
            raise ValueError(f"{name}={getattr(config, name)} has no command-line option")
    args = ["--coco", config.coco, "--images", config.images, "--out", config.out,
            "--model", config.model, "--epochs", str(config.epochs), "--lr", repr(config.lr),
            "--batch", str(config.batch), "--size", str(config.size), "--seed", str(config.seed),
            "--backbone", config.backbone, "--min-stride", str(config.min_stride),
            "--patience", str(config.patience),
            "--workers", str(config.workers), "--device", config.device,
            "--precision", config.precision]
    for flag, value in (("--val-coco", config.val_coco), ("--val-images", config.val_images),
                        ("--init", config.init), ("--backbone-weights", config.backbone_weights),
                        ("--max-iters", config.max_iters),
                        ("--classes", ",".join(config.classes) if config.classes else None)):
        if value is not None:
            args += [flag, str(value)]
    if not config.augment:
        args.append("--no-augment")
    if config.augment_set != "default":
        args += ["--augment-set", config.augment_set]
    if config.fit_anchors:
        args.append("--fit-anchors")
    if config.ema:
        args += ["--ema", repr(config.ema)]
    if config.resume:
        args.append("--resume")
    return args


def train_parser() -> CliParser:
    """The command line of ``python -m detector train``."""
    parser = CliParser(prog="python -m detector train",
                       description="Train a single-frame or two-frame detector on COCO data.")
    parser.add_argument("--coco", required=True, help="training COCO file")
    parser.add_argument("--images", required=True, help="directory its file_names are under")
    parser.add_argument("--out", required=True, help="run directory")
    parser.add_argument("--val-coco")
    parser.add_argument("--val-images", help="default: --images")
    parser.add_argument("--resume", action="store_true", help="go on from RUN_DIR/last.pt")
    add_train_options(parser)
    return parser


def main(argv: list[str]) -> int:
    parser = train_parser()
    args = parser.parse_args(argv)
    config = config_from_args(args, coco=args.coco, images=args.images, out=args.out,
                              val_coco=args.val_coco, val_images=args.val_images,
                              resume=args.resume)
    try:
        _check(config)
        if config.init:
            read_checkpoint(config.init)
        coco = load_coco(config.coco)
        select_categories(coco, config.classes)
        if config.val_coco:
            load_coco(config.val_coco)
    except (ValueError, FileNotFoundError, OSError) as exc:
        parser.error(str(exc))
    try:
        summary = train(config)
    except (ValueError, FileNotFoundError) as exc:
        # data problems found while building datasets (missing image files, bad ids)
        parser.error(str(exc))
    if Distributed.from_environment().main:
        print(json.dumps({k: summary[k] for k in ("status", "model", "best_epoch", "best",
                                                  "iterations", "model_path")}))
    return 0
