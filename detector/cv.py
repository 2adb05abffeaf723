"""k-fold cross-validation grouped by patient: ``python -m detector cv --coco C --images D
--folds 5 --group-by patient [train options] --out DIR``.

Each fold trains on the other folds (with a validation part held out of them, as the
recipe trains) and is evaluated on its own images with :func:`detector.evaluate.evaluate_detections`;
the summary gives mean ± sd over folds of AP, AP50, AP75 and per-scene sensitivity per
class. Every training option of ``python -m detector train`` is accepted here and means the
same (:func:`detector.train.add_train_options`); ``--seed`` seeds both the folds and training.
``--init`` starts every fold from the same model, which is honest only if that model never
saw any of these images (a single-frame run trained on all of them leaks every test fold).

Groups (never split between folds, nor between a fold's training and validation parts):

* ``--group-by patient`` (default): an image's patient is its first field among
  ``patient_id``, ``patient``, ``patient_code`` (SonoLabel's COCO export); without one, its
  ``video_id`` (a video has one patient); without that, the image alone (BUSI's copy has one
  ``patient_id`` per image). ``video``: ``video_id``, else the image. ``image``: each image.
* Near-duplicates (:mod:`detector.near_duplicates`, perceptual hash within
  ``--dup-distance`` bits, 10 by default; -1 turns it off) are joined into one group, with
  every group either copy belongs to.

Folds are balanced by image count: groups, largest first (ties in a seeded random order), each
go to the fold with the fewest images so far. The same data, options and seed give the same
folds. ``--val-fraction`` (0.15) of each fold's training images, by whole groups, is its
validation part: the best epoch, the score calibration and the validation-F1 threshold come
from it, and per-scene sensitivity on the test fold uses that threshold. With 0, training
keeps its last epoch and sensitivity uses 0.5.

DIR gets ``plan.json`` (settings and the fold of every image), per fold ``fold_K/{train,val,
test}.json`` (COCO subsets, file names unchanged), ``fold_K/run/`` (the training run) and
``fold_K/report.json`` (the evaluation report), and ``cv.json`` (the summary; ``--summary``
names another path). Run again with the same options and DIR to finish a run that stopped:
folds with a report are reused; other options are refused. ``--tta flip`` predicts each test
fold with test-time flip (:mod:`detector.tta`); it counts among the options (a DIR evaluated
without it is refused) and each fold's report records it as ``model.tta``.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from detector.cli import CliParser, fail, parse_or_code, positive
from detector.near_duplicates import DEFAULT_MAX_DISTANCE, UnionFind, close_pairs, hash_files
from detector.tta import add_tta_option

GROUP_BY = ("patient", "video", "image")
PATIENT_FIELDS = ("patient_id", "patient", "patient_code")
SUMMARY_FORMAT = "sonolabel-detector-cv"
METRICS = ("AP", "AP50", "AP75")


# --------------------------------------------------------------------------- groups and folds

def group_key(image: dict[str, Any], group_by: str = "patient") -> str:
    """The group an image belongs to by its own fields (rules in the module docstring)."""
    if group_by not in GROUP_BY:
        raise ValueError(f"unknown --group-by {group_by!r}; use {', '.join(GROUP_BY)}")
    if group_by == "patient":
        for name in PATIENT_FIELDS:
            if image.get(name) not in (None, ""):
                return f"patient:{image[name]}"
    if group_by in ("patient", "video") and image.get("video_id") not in (None, ""):
        return f"video:{image['video_id']}"
    return f"image:{image['id']}"


def image_groups(images: Sequence[dict[str, Any]], group_by: str = "patient",
                 hashes: Sequence[int] | None = None,
                 max_distance: int = DEFAULT_MAX_DISTANCE) -> tuple[list[list[int]], dict]:
    """Indices of ``images`` in groups: same key, or near-duplicate ``hashes`` (chains
    joined). Returns the groups and what the hash did: ``pairs`` (image pairs within
    ``max_distance``), ``merged_groups`` (groups made of more than one key) and
    ``images_in_merged``."""
    uf = UnionFind(len(images))
    first: dict[str, int] = {}
    keys = [group_key(img, group_by) for img in images]
    for i, key in enumerate(keys):
        uf.union(first.setdefault(key, i), i)
    pairs = close_pairs(hashes, max_distance) if hashes is not None else []
    for i, j, _ in pairs:
        uf.union(i, j)
    groups = uf.groups()
    merged = [g for g in groups if len({keys[i] for i in g}) > 1]
    return groups, {"pairs": len(pairs), "merged_groups": len(merged),
                    "images_in_merged": sum(len(g) for g in merged),
                    "pair_list": [(images[i]["id"], images[j]["id"], d) for i, j, d in pairs]}


def assign_folds(sizes: Sequence[int], folds: int, seed: int = 0) -> list[int]:
    """The fold (0-based) of each group of ``sizes`` images: largest first, ties in a seeded
    random order, each to the fold with the fewest images so far (then fewest groups, then
    the lowest number)."""
    if folds < 2:
        raise ValueError("folds must be at least 2")
    if len(sizes) < folds:
        raise ValueError(f"{len(sizes)} group(s) cannot fill {folds} folds")
    rng = random.Random(seed)
    tie = [rng.random() for _ in sizes]
    order = sorted(range(len(sizes)), key=lambda g: (-sizes[g], tie[g]))
    load, count = [0] * folds, [0] * folds
    out = [0] * len(sizes)
    for g in order:
        fold = min(range(folds), key=lambda f: (load[f], count[f], f))
        out[g] = fold
        load[fold] += sizes[g]
        count[fold] += 1
    return out


def hold_out(groups: Sequence[Sequence[int]], fraction: float, seed: int) -> set[int]:
    """Image indices of whole groups, in a seeded order, until ``fraction`` of the images
    (at least one group when fraction > 0, never all of them)."""
    if fraction <= 0 or len(groups) < 2:
        return set()
    total = sum(len(g) for g in groups)
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    out: set[int] = set()
    for g in order[:-1]:
        if len(out) >= fraction * total:
            break
        out.update(groups[g])
    return out


def subset(coco: dict[str, Any], image_ids: set, note: str) -> dict[str, Any]:
    """The COCO file restricted to ``image_ids``; predecessors it names that are not in it
    (another fold's frame) come along under ``context_images``, as the export does."""
    out = {k: v for k, v in coco.items() if k not in {"images", "annotations", "context_images"}}
    out["info"] = dict(coco.get("info") or {}, split=note)
    out["images"] = [img for img in coco["images"] if img["id"] in image_ids]
    out["annotations"] = [a for a in coco.get("annotations", []) if a["image_id"] in image_ids]
    known = {img["id"]: img for img in coco["images"]}
    context = {img["id"]: img for img in coco.get("context_images", [])}
    wanted = {img.get("prev_image_id") for img in out["images"]} - image_ids - {None}
    context.update({i: known[i] for i in wanted if i in known})
    if context:
        out["context_images"] = [{k: v for k, v in img.items()} for img in context.values()]
    return out


def plan_folds(coco: dict[str, Any], images_dir: str | Path, folds: int, group_by: str,
               seed: int, max_distance: int, val_fraction: float,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The fold of every image, each fold's validation images, and the grouping record."""
    images = coco["images"]
    hashes = None
    if max_distance >= 0:
        if progress:
            progress(f"hashing {len(images)} images for near-duplicates")
        hashes = hash_files(Path(images_dir) / img["file_name"] for img in images)
    groups, dups = image_groups(images, group_by, hashes, max_distance)
    fold_of_group = assign_folds([len(g) for g in groups], folds, seed)
    fold_of = {}
    for g, members in enumerate(groups):
        for i in members:
            fold_of[images[i]["id"]] = fold_of_group[g]
    val: list[list] = []
    for k in range(folds):
        train_groups = [g for g, f in zip(groups, fold_of_group) if f != k]
        held = hold_out(train_groups, val_fraction, seed * 1000 + k)
        val.append(sorted(images[i]["id"] for i in held))
    sizes = [len(g) for g in groups]
    return {"fold_of": {str(i): f for i, f in fold_of.items()}, "val": val,
            "grouping": {"group_by": group_by, "groups": len(groups),
                         "largest_group": max(sizes), "dup_distance": max_distance,
                         "dup_pairs": dups["pairs"], "dup_merged_groups": dups["merged_groups"],
                         "dup_images_in_merged": dups["images_in_merged"],
                         "dup_pair_list": dups["pair_list"]},
            "fold_images": [sum(1 for f in fold_of.values() if f == k) for k in range(folds)]}


# --------------------------------------------------------------------------- one fold

def fold_row(report: dict[str, Any], seconds: float, counts: dict[str, int]) -> dict[str, Any]:
    """The numbers of one fold the summary keeps."""
    overall = report["coco"]["overall"]
    sens = {name: {k: s[k] for k in ("mean", "sd", "pooled", "n_scenes")}
            for name, s in report["sensitivity"]["summary"].items()}
    return {**counts, **{m: overall.get(m) for m in METRICS},
            "per_class": report["coco"]["per_class"], "sensitivity": sens,
            "threshold": report["threshold"], "train_seconds": round(seconds, 1)}


def run_fold(k: int, fold_dir: Path, config: Any, images_dir: str,
             parts: dict[str, dict[str, Any]], tta: str = "none") -> dict[str, Any]:
    """Train on ``parts['train']`` (validating on ``parts['val']`` when it has images),
    evaluate on ``parts['test']`` (predicting with ``tta``); writes and returns the fold's
    report."""
    from detector.checkpoint import read_checkpoint
    from detector.evaluate import evaluate_detections
    from detector.predict import predict_coco
    from detector.train import train

    fold_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, data in parts.items():
        paths[name] = fold_dir / f"{name}.json"
        paths[name].write_text(json.dumps(data), encoding="utf-8")
    run_dir = fold_dir / "run"
    if run_dir.exists():  # a fold that stopped half-way trains again from the start
        import shutil
        shutil.rmtree(run_dir)
    has_val = bool(parts["val"]["images"])
    started = time.time()
    train(replace(config, coco=str(paths["train"]), images=images_dir, out=str(run_dir),
                  val_coco=str(paths["val"]) if has_val else None,
                  val_images=images_dir if has_val else None, resume=False))
    seconds = time.time() - started
    dets = predict_coco(run_dir, paths["test"], images_dir, device=config.device, tta=tta)
    threshold = (read_checkpoint(run_dir).get("threshold") or {}).get("value")
    report = evaluate_detections(parts["test"], dets, threshold=threshold,
                                 model={"name": f"fold {k + 1}", "run_dir": str(run_dir),
                                        "tta": tta})
    report["threshold"]["method"] = "the fold run's validation-f1 (calibrated scores)" \
        if threshold is not None else "0.5 (no validation part, or nothing found on it)"
    report["ground_truth"]["path"] = str(paths["test"])
    counts = {"fold": k + 1, **{f"{n}_images": len(p["images"]) for n, p in parts.items()}}
    report["cv"] = fold_row(report, seconds, counts)
    _write_json(fold_dir / "report.json", report)
    return report


# --------------------------------------------------------------------------- summary

def mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and sample sd (ddof 1) of the values that are not None."""
    vals = np.array([v for v in values if v is not None], dtype=float)
    return {"mean": float(vals.mean()) if vals.size else None,
            "sd": float(vals.std(ddof=1)) if vals.size > 1 else None, "n": int(vals.size)}


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {m: mean_sd([r[m] for r in rows]) for m in METRICS}
    classes = sorted({c for r in rows for c in r["sensitivity"]})
    out["sensitivity"] = {c: mean_sd([(r["sensitivity"].get(c) or {}).get("mean") for r in rows])
                          for c in classes}
    out["per_class_AP50"] = {c: mean_sd([(r["per_class"].get(c) or {}).get("AP50")
                                         for r in rows]) for c in classes}
    out["train_seconds"] = mean_sd([r["train_seconds"] for r in rows])
    return out


def _fmt(cell: dict[str, float | None] | float | None) -> str:
    if isinstance(cell, dict):
        if cell["mean"] is None:
            return "-"
        return f"{cell['mean']:.3f}" + (f" ± {cell['sd']:.3f}" if cell["sd"] is not None else "")
    return "-" if cell is None else f"{cell:.3f}"


def table(summary: dict[str, Any]) -> str:
    """The printed table: one line per fold, then mean ± sd."""
    # classes without a box in any test fold have no sensitivity to show
    classes = sorted(c for c, v in summary["mean_sd"]["sensitivity"].items() if v["n"])
    head = ["fold", "train", "val", "test", *METRICS, *[f"sens {c}" for c in classes], "thr"]
    lines = [head]
    for r in summary["folds"]:
        lines.append([str(r["fold"]), str(r["train_images"]), str(r["val_images"]),
                      str(r["test_images"]), *[_fmt(r[m]) for m in METRICS],
                      *[_fmt((r["sensitivity"].get(c) or {}).get("mean")) for c in classes],
                      _fmt(r["threshold"]["value"])])
    ms = summary["mean_sd"]
    lines.append(["mean ± sd", "", "", "", *[_fmt(ms[m]) for m in METRICS],
                  *[_fmt(ms["sensitivity"][c]) for c in classes], ""])
    widths = [max(len(line[i]) for line in lines) for i in range(len(head))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(line, widths)).rstrip()
                     for line in lines)


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False), encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the whole run

def cross_validate(coco_path: str | Path, images_dir: str | Path, out: str | Path, config: Any,
                   folds: int = 5, group_by: str = "patient", seed: int = 0,
                   dup_distance: int = DEFAULT_MAX_DISTANCE, val_fraction: float = 0.15,
                   summary_path: str | Path | None = None, tta: str = "none") -> dict[str, Any]:
    """Plan the folds, run each (reusing finished ones), write and return the summary.
    ``config`` is a :class:`detector.train.TrainConfig` whose files are replaced per fold."""
    from tqdm import tqdm

    from detector.data import load_coco

    coco = load_coco(coco_path)
    if not 0 <= val_fraction < 1:
        raise ValueError("--val-fraction must be at least 0 and below 1")
    out = Path(out)
    settings = {"coco": str(coco_path), "images": str(images_dir), "folds": folds,
                "group_by": group_by, "seed": seed, "dup_distance": dup_distance,
                "val_fraction": val_fraction,
                "train": {k: v for k, v in asdict(config).items()
                          if k not in {"coco", "images", "out", "val_coco", "val_images",
                                       "resume", "device", "workers"}}}
    if tta != "none":  # only then, so that a DIR made before the option still matches
        settings["tta"] = tta
    plan_file = out / "plan.json"
    if plan_file.is_file():
        plan = json.loads(plan_file.read_text(encoding="utf-8"))
        if plan["settings"] != json.loads(json.dumps(settings)):
            raise ValueError(f"{out} holds a cross-validation with other settings; "
                             "use another --out")
    else:
        plan = plan_folds(coco, images_dir, folds, group_by, seed, dup_distance, val_fraction,
                          progress=lambda m: print(m, file=sys.stderr))
        plan["settings"] = settings
        out.mkdir(parents=True, exist_ok=True)
        _write_json(plan_file, plan)
    fold_of = {int(i): f for i, f in plan["fold_of"].items()}
    rows = []
    bar = tqdm(range(folds), desc="cv folds", unit="fold", file=sys.stderr, disable=None)
    for k in bar:
        fold_dir = out / f"fold_{k + 1}"
        done = fold_dir / "report.json"
        if done.is_file():
            rows.append(json.loads(done.read_text(encoding="utf-8"))["cv"])
            continue
        test_ids = {i for i, f in fold_of.items() if f == k}
        val_ids = set(plan["val"][k])
        train_ids = set(fold_of) - test_ids - val_ids
        parts = {"train": subset(coco, train_ids, f"cv fold {k + 1} train"),
                 "val": subset(coco, val_ids, f"cv fold {k + 1} validation"),
                 "test": subset(coco, test_ids, f"cv fold {k + 1} test")}
        rows.append(run_fold(k, fold_dir, replace(config, seed=seed), str(images_dir),
                             parts, tta)["cv"])
        bar.set_postfix(AP50=f"{rows[-1]['AP50'] or 0:.3f}")
    bar.close()
    grouping = {k: v for k, v in plan["grouping"].items() if k != "dup_pair_list"}
    summary = {"format": SUMMARY_FORMAT, "version": 1, "settings": settings,
               "grouping": grouping, "fold_images": plan["fold_images"], "folds": rows,
               "mean_sd": summarise(rows)}
    _write_json(Path(summary_path) if summary_path else out / "cv.json", summary)
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m detector cv ...``; returns 0, or 2 with one error line."""
    from detector.train import add_train_options, config_from_args

    parser = CliParser(prog="python -m detector cv",
                       description="k-fold cross-validation grouped by patient, near-duplicates "
                                   "kept together; mean ± sd of AP, AP50, AP75, sensitivity.")
    parser.add_argument("--coco", required=True, type=Path, help="COCO file of all images")
    parser.add_argument("--images", required=True, type=Path,
                        help="directory its file_names are under")
    parser.add_argument("--out", required=True, type=Path, help="directory for folds and runs")
    parser.add_argument("--folds", type=positive(int), default=5)
    parser.add_argument("--group-by", choices=GROUP_BY, default="patient")
    parser.add_argument("--dup-distance", type=int, default=DEFAULT_MAX_DISTANCE,
                        help="near-duplicate hash distance in bits (of 64); -1: off")
    parser.add_argument("--val-fraction", type=float, default=0.15,
                        help="share of each fold's training images held out for validation")
    parser.add_argument("--summary", type=Path, help="summary JSON (default OUT/cv.json)")
    add_tta_option(parser, "each fold's predictions")
    add_train_options(parser)
    args = parse_or_code(parser, sys.argv[1:] if argv is None else argv)
    if isinstance(args, int):
        return args
    if args.folds < 2:
        return fail("--folds must be at least 2")
    if not args.coco.is_file():
        return fail(f"--coco {args.coco} not found")
    if not args.images.is_dir():
        return fail(f"--images {args.images} is not a directory")
    config = config_from_args(args, coco=str(args.coco), images=str(args.images),
                              out=str(args.out))
    try:
        summary = cross_validate(args.coco, args.images, args.out, config, folds=args.folds,
                                 group_by=args.group_by, seed=args.seed,
                                 dup_distance=args.dup_distance,
                                 val_fraction=args.val_fraction, summary_path=args.summary,
                                 tta=args.tta)
    except (ValueError, FileNotFoundError) as exc:
        return fail(str(exc))
    g = summary["grouping"]
    print(f"{g['groups']} groups by {g['group_by']}; near-duplicates within "
          f"{g['dup_distance']} bits: {g['dup_pairs']} pairs joined {g['dup_merged_groups']} "
          f"groups ({g['dup_images_in_merged']} images)")
    print(table(summary))
    print(f"-> {args.summary or args.out / 'cv.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
