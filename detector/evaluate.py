"""Evaluate a detector: COCO AP, per-scene sensitivity, false positives per minute.

``python -m detector evaluate`` (:func:`main`) writes one JSON report;
``python -m detector compare A.json B.json`` (:func:`compare_main`) prints the paper's
Table 2 for two reports on the same scenes.

The score threshold for per-scene sensitivity is, in order of precedence: ``--threshold``;
else chosen on a validation set (``--val-coco`` with ``--val-detections``, or with
``--val-images`` when a run is evaluated), by default the score maximising F1 over all
classes pooled (``--threshold-method recall`` instead takes the highest score reaching
``--target-recall``); else the run's own threshold (chosen on its validation set when it was
trained, :mod:`detector.calibration`); else 0.5, and the report says so. A run's detections
carry its calibrated scores. False positives per minute use their
own operating point (recall 0.9 on the evaluated set, as in UltraDet), independent of it.
``--fps`` defaults to each image's ``fps``, else ``info.fps`` of the COCO file, else 30.
``--tta flip`` predicts with test-time horizontal flip (:mod:`detector.tta`), on the
validation set too; the report records it as ``model.tta``.

The metric code lives in :mod:`detector.metrics` (COCO AP, matching),
:mod:`detector.sensitivity` (scenes, thresholds, FP tracks) and :mod:`detector.stats`
(paired tests); this module assembles the report and holds the command lines. The model is
imported only when ``--run`` is given, so evaluating precomputed detections needs no torch.
"""
from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Sequence

from detector.cli import CliParser, fail, parse_or_code
from detector.metrics import (Detections, GroundTruth, coco_metrics, coco_metrics_checked,
                              load_detections, load_gt, match_detections)
from detector.sensitivity import (choose_threshold, fp_tracks_per_minute, scene_sensitivity)
from detector.stats import compare_reports
from detector.tta import add_tta_option

REPORT_FORMAT = "sonolabel-detector-report"
REPORT_VERSION = 1
DEFAULT_THRESHOLD = 0.5

__all__ = ["coco_metrics", "scene_sensitivity", "choose_threshold", "fp_tracks_per_minute",
           "evaluate_detections", "compare_reports", "main", "compare_main"]


def _unpack_val(val: Any) -> tuple[Any, Any]:
    if isinstance(val, dict) and "gt" in val and "detections" in val:
        return val["gt"], val["detections"]
    if isinstance(val, (tuple, list)) and len(val) == 2:
        return val[0], val[1]
    raise ValueError("val must be {'gt': ..., 'detections': ...} or a (gt, detections) pair")


def evaluate_detections(gt: GroundTruth | str | Path, detections: Detections | str | Path,
                        threshold: float | None = None, val: Any = None, fps: float | None = None,
                        *, model: dict[str, Any] | None = None, threshold_method: str = "f1",
                        target_recall: float = 0.9, fp_recall: float = 0.9, scene_frames: int = 5,
                        iou: float = 0.5) -> dict[str, Any]:
    """The full, JSON-serialisable evaluation report of ``detections`` against ``gt``.

    ``threshold`` fixes the score threshold for per-scene sensitivity; otherwise ``val``
    (``{"gt", "detections"}`` of a validation set) chooses it with
    :func:`choose_threshold` (``threshold_method``, ``target_recall``); otherwise it is 0.5.
    Keys: ``format``, ``version``, ``model``, ``ground_truth``, ``threshold`` (value and how it
    was chosen), ``coco`` (:func:`coco_metrics`), ``sensitivity`` (:func:`scene_sensitivity`,
    scenes keyed so that two reports on the same COCO file pair up) and ``fp_per_minute``
    (:func:`fp_tracks_per_minute`).
    """
    gt_path = str(gt) if isinstance(gt, (str, Path)) else None
    gt = load_gt(gt)
    dets = load_detections(detections, gt)
    if threshold is not None and val is not None:
        raise ValueError("give either a fixed threshold or a validation set, not both")
    if threshold is not None:
        thr_info: dict[str, Any] = {"value": float(threshold), "method": "fixed"}
    elif val is not None:
        val_gt, val_dets = _unpack_val(val)
        val_gt = load_gt(val_gt)
        value = choose_threshold(val_gt, load_detections(val_dets, val_gt), method=threshold_method,
                                 target_recall=target_recall, iou=iou)
        thr_info = {"value": value, "method": f"validation-{threshold_method}",
                    "validation": {"n_images": len(val_gt["images"]),
                                   "n_gt": sum(1 for a in val_gt["annotations"] if not a.get("iscrowd"))}}
        if threshold_method == "recall":
            thr_info["target_recall"] = target_recall
    else:
        thr_info = {"value": DEFAULT_THRESHOLD, "method": "default (no validation set given)"}

    matching = match_detections(gt, dets, iou)
    report: dict[str, Any] = {
        "format": REPORT_FORMAT, "version": REPORT_VERSION,
        "model": dict(model or {}),
        "ground_truth": {"path": gt_path, "n_images": len(gt["images"]),
                         "n_gt": matching.n_gt(),
                         "categories": [{"id": c["id"], "name": c["name"]} for c in gt["categories"]]},
        "n_detections": len(dets),
        "threshold": thr_info,
        "coco": coco_metrics_checked(gt, dets),
        "sensitivity": scene_sensitivity(gt, dets, thr_info["value"], iou=iou,
                                         scene_frames=scene_frames, matching=matching),
        "fp_per_minute": fp_tracks_per_minute(gt, dets, fps=fps, recall=fp_recall, iou=iou,
                                              matching=matching),
    }
    return report


# --------------------------------------------------------------------------- command lines

def _write_json_atomic(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(payload, fh, indent=1, allow_nan=False)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _run_model_info(run_dir: Path, name: str | None) -> dict[str, Any]:
    """Name, run directory and the checkpoint's metadata (config, categories, training)."""
    info: dict[str, Any] = {"name": name or run_dir.resolve().name, "run_dir": str(run_dir.resolve())}
    from detector.checkpoint import read_checkpoint  # needs torch

    try:
        data = read_checkpoint(run_dir)
    except (OSError, ValueError, RuntimeError) as exc:
        raise ValueError(f"cannot read the model of {run_dir}: {exc}") from None
    for key in ("config", "categories", "train", "calibration", "threshold"):
        if key in data:
            try:
                info[key] = json.loads(json.dumps(data[key], allow_nan=False))
            except (TypeError, ValueError):
                info[key] = repr(data[key])  # keep the report strict JSON whatever training stored
    return info


def _predict(run_dir: Path, coco: Path, images: Path, device: str, what: str,
             tta: str = "none") -> list[dict]:
    from tqdm import tqdm

    from detector.predict import predict_coco  # needs torch and a trained run

    bar = tqdm(desc=f"predict {what}", unit="image", file=sys.stderr, disable=None)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.update(done - bar.n)

    try:
        return predict_coco(run_dir, coco, images, device=device, progress=progress, tta=tta)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise ValueError(f"prediction with {run_dir} failed: {exc}") from None
    finally:
        bar.close()


def _evaluate_parser() -> CliParser:
    p = CliParser(prog="python -m detector evaluate",
                  description="COCO AP, per-scene sensitivity and false positives per minute as JSON.")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--run", type=Path, help="training run directory (predicts with its model)")
    src.add_argument("--detections", type=Path, help="precomputed COCO results JSON")
    p.add_argument("--coco", type=Path, required=True, help="ground-truth COCO JSON")
    p.add_argument("--images", type=Path, help="image directory of --coco (with --run)")
    p.add_argument("--out", type=Path, required=True, help="report JSON to write")
    p.add_argument("--name", help="model name in the report (default: the run or file name)")
    p.add_argument("--device", default="auto",
                   help="where --run's model predicts: auto (default), cpu, cuda or cuda:N")
    add_tta_option(p, "--run's model")
    p.add_argument("--threshold", type=float, help="fixed score threshold for sensitivity")
    p.add_argument("--val-coco", type=Path, help="validation COCO JSON to choose the threshold on")
    p.add_argument("--val-detections", type=Path, help="detections on --val-coco")
    p.add_argument("--val-images", type=Path, help="images of --val-coco (with --run)")
    p.add_argument("--threshold-method", choices=["f1", "recall"], default="f1",
                   help="max F1 (default) or the highest score reaching --target-recall")
    p.add_argument("--target-recall", type=float, default=0.9)
    p.add_argument("--fp-recall", type=float, default=0.9,
                   help="recall at which false positives per minute are counted (default 0.9)")
    p.add_argument("--fps", type=float,
                   help="video frame rate (default: image 'fps', else info 'fps', else 30)")
    p.add_argument("--scene-frames", type=int, default=5,
                   help="frames per scene when scenes are cut from a video_id (default 5)")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector evaluate ...``; returns 0, or 2 with one error line."""
    args = parse_or_code(_evaluate_parser(), sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if args.run is None and args.detections is None:
        return fail("give --run RUN_DIR (with --images) or --detections DETS.json")
    if args.run is not None and args.images is None:
        return fail("--run needs --images DIR")
    if args.tta != "none" and args.run is None:
        return fail("--tta needs --run (precomputed detections are evaluated as they are)")
    if args.threshold is not None and args.val_coco is not None:
        return fail("give either --threshold or --val-coco, not both")
    if args.val_coco is not None and args.val_detections is None and args.val_images is None:
        return fail("--val-coco needs --val-detections, or --val-images with --run")
    if args.val_images is not None and args.run is None:
        return fail("--val-images needs --run (or give --val-detections)")
    if (args.val_detections or args.val_images) and args.val_coco is None:
        return fail("--val-detections/--val-images need --val-coco")
    if args.fps is not None and not args.fps > 0:
        return fail("--fps must be > 0")
    if args.scene_frames < 1:
        return fail("--scene-frames must be >= 1")
    for flag in ("run", "images", "val_images"):
        path = getattr(args, flag)
        if path is not None and not path.is_dir():
            return fail(f"--{flag.replace('_', '-')} {path} is not a directory")
    try:
        gt = load_gt(args.coco)
        val = None
        if args.run is not None:
            model = _run_model_info(args.run, args.name)
            model["tta"] = args.tta
            dets: Any = _predict(args.run, args.coco, args.images, args.device, "test", args.tta)
            if args.val_coco is not None:
                val_dets = (args.val_detections if args.val_detections is not None else
                            _predict(args.run, args.val_coco, args.val_images, args.device,
                                     "validation", args.tta))
                val = {"gt": args.val_coco, "detections": val_dets}
        else:
            model = {"name": args.name or args.detections.stem, "detections": str(args.detections)}
            dets = args.detections
            if args.val_coco is not None:
                val = {"gt": args.val_coco, "detections": args.val_detections}
        threshold = args.threshold
        if threshold is None and val is None and args.run is not None:
            threshold = (model.get("threshold") or {}).get("value")
        report = evaluate_detections(
            gt, dets, threshold=threshold, val=val, fps=args.fps, model=model,
            threshold_method=args.threshold_method, target_recall=args.target_recall,
            fp_recall=args.fp_recall, scene_frames=args.scene_frames)
        if threshold is not None and args.threshold is None:
            report["threshold"]["method"] = "the run's (validation-f1 on calibrated scores)"
        report["ground_truth"]["path"] = str(args.coco)
        _write_json_atomic(args.out, report)
    except (ValueError, OSError, ImportError) as exc:
        return fail(str(exc))
    overall = report["coco"]["overall"]
    fp = report["fp_per_minute"]["overall"]
    print(f"AP {_num(overall['AP'])}  AP50 {_num(overall['AP50'])}  AP75 {_num(overall['AP75'])}  "
          f"threshold {report['threshold']['value']:.3f} ({report['threshold']['method']})  "
          f"FP tracks/min {_num(fp['fp_tracks_per_minute'], '.2f')} at recall "
          f"{_num(fp['recall'], '.2f')}  -> {args.out}")
    return 0


def _num(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _read_report(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ValueError(f"report {path} does not exist")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"report {path} is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError(f"report {path} is not a JSON object")
    return data


def compare_main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector compare A.json B.json [--json]``: the paired Table 2."""
    p = CliParser(prog="python -m detector compare",
                  description="Paired per-scene comparison of two evaluation reports (B - A).")
    p.add_argument("a", type=Path, help="report of model A")
    p.add_argument("b", type=Path, help="report of model B")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=10000, help="bootstrap resamples (default 10000)")
    args = parse_or_code(p, sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if args.resamples < 1:
        return fail("--resamples must be >= 1")
    try:
        ra, rb = _read_report(args.a), _read_report(args.b)
        labels = ((ra.get("model") or {}).get("name") or args.a.stem,
                  (rb.get("model") or {}).get("name") or args.b.stem)
        if labels[0] == labels[1]:
            labels = (f"{labels[0]} ({args.a.name})", f"{labels[1]} ({args.b.name})")
        result = compare_reports(ra, rb, n_resamples=args.resamples, seed=args.seed, labels=labels)
    except (ValueError, OSError, AttributeError, KeyError, TypeError) as exc:
        # a JSON file that is not a report fails somewhere inside; say which file pair
        if isinstance(exc, ValueError):
            return fail(str(exc))
        return fail(f"{args.a} and {args.b} are not evaluation reports ({type(exc).__name__}: {exc})")
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        print(result["table"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
