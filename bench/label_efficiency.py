"""Label efficiency: AP50 after N labelled training images (BUSI) or frames (phantom sweeps).

    python bench/label_efficiency.py [--n 25,50,100,200,400] [--size 160] [--iters 150] [--lr 1e-3]
                                     [--folds 5] [--test-folds 1] [--seeds 1] [--only phantom|busi]

How many frames must a team label before a model trained on them pre-labels well enough to pay?
For each N the detector is trained from the shipped ImageNet backbone on N labelled
images/frames for a fixed number of iterations (the same for every N, so small N means more
epochs) and scored (COCO AP50) on held-out data:

* **BUSI** (``../shared/data/busi``; skipped with a message when absent): the folds of
  ``python -m detector cv`` (:mod:`detector.cv`: groups by patient, near-duplicate images joined
  into one group, folds balanced by size). One fold is the test set; the N training images are
  whole groups drawn (seeded) from the other folds, so no near-duplicate of a test image is
  trained on. ``single`` only: BUSI has no previous frames.
* **Phantom sweeps** (:mod:`detector.phantom`, exact boxes): a pool of ``--pool-videos`` sweeps
  of another seed than the held-out ones; N frames spread evenly over all pool sweeps (each with
  its real, unlabelled previous frame as context); ``single`` and ``two_frame`` (both from the
  ImageNet backbone, same iterations). The test set is ``--test-videos`` held-out sweeps of 6
  frames, frame 0 context only, as in ``bench/two_frame_study.py``.

No validation part: a team that labelled N frames trains on all of them, so every run keeps its
last epoch; AP50 does not depend on a score threshold. Each finished run is cached in
``--out`` (``runs.json``), so a run that stopped resumes; the plot (PNG, drawn with OpenCV) and
the markdown table are rewritten after every run, so a partial run still leaves both.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import random
import sys
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Sequence

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"
DEFAULT_N = "25,50,100,200,400"
SERIES_COLOURS = [(40, 90, 220), (30, 160, 40), (200, 110, 20), (150, 40, 150), (20, 170, 200)]


# ----------------------------------------------------------------------------- choosing N

def pick_groups(groups: Sequence[Sequence[Any]], n: int, seed: int) -> list[Any]:
    """Members of whole ``groups``, in a seeded order, adding each group that still fits, until
    ``n`` (fewer only when the groups cannot make exactly ``n``; all of them when ``n`` exceeds
    the total). A group is never split, so a near-duplicate chain is trained on whole or not at
    all."""
    order = list(range(len(groups)))
    random.Random(seed).shuffle(order)
    out: list[Any] = []
    for g in order:
        if len(out) >= n:
            break
        if len(out) + len(groups[g]) <= n:
            out.extend(groups[g])
    return out


def spread_frames(videos: dict[Any, list[Any]], n: int, seed: int) -> list[Any]:
    """``n`` frames spread over all ``videos`` (id -> its frames in order): each video gets
    n // V frames (a seeded choice of videos one more), evenly spaced along the sweep."""
    keys = sorted(videos)
    random.Random(seed).shuffle(keys)
    out: list[Any] = []
    for i, key in enumerate(keys):
        frames = videos[key]
        want = min(len(frames), n // len(keys) + (1 if i < n % len(keys) else 0))
        if want:
            at = np.unique(np.round(np.linspace(0, len(frames) - 1, want)).astype(int))
            out.extend(frames[j] for j in at)
    return out


# ----------------------------------------------------------------------------- data

def busi_split(folds: int, fold: int, seed: int, dup_distance: int) -> tuple[dict, list, set]:
    """BUSI's COCO, the training folds' groups (image ids) and the test fold's image ids, by
    :mod:`detector.cv`'s grouping and fold assignment."""
    from detector.cv import assign_folds, image_groups
    from detector.data import load_coco
    from detector.near_duplicates import hash_files

    coco = load_coco(BUSI / "annotations.json")
    images = coco["images"]
    hashes = hash_files(BUSI / img["file_name"] for img in images) if dup_distance >= 0 else None
    groups, _ = image_groups(images, "patient", hashes, dup_distance)
    fold_of = assign_folds([len(g) for g in groups], folds, seed)
    pool = [[images[i]["id"] for i in g] for g, f in zip(groups, fold_of) if f != fold]
    test = {images[i]["id"] for g, f in zip(groups, fold_of) if f == fold for i in g}
    return coco, pool, test


def phantom_sets(work: Path, args: argparse.Namespace) -> tuple[Path, Path, Path, Path]:
    """Pool and held-out test sweeps (other seeds), made once into ``work``."""
    from detector.phantom import generate
    from two_frame_study import context_first

    pool, test = work / "phantom_pool", work / "phantom_test"
    frames = -(-max(args.n) // args.pool_videos) + 1  # frame 0 is context only
    if not (pool / "annotations.json").is_file():
        generate(pool, videos=args.pool_videos, frames=frames, size=args.size,
                 seed=args.seed * 10 + 5, scene_len=frames, overwrite=True)
    if not (test / "eval.json").is_file():
        generate(test, videos=args.test_videos, frames=6, size=args.size,
                 seed=args.seed * 10 + 6, scene_len=6, overwrite=True)
        context_first(test / "annotations.json", test / "eval.json")
    return pool / "annotations.json", pool / "images", test / "eval.json", test / "images"


# ----------------------------------------------------------------------------- one run

def train_and_score(train_coco: dict, images: Path, test_coco: Path, test_images: Path,
                    model: str, run_dir: Path, args: argparse.Namespace, seed: int
                    ) -> dict[str, Any]:
    """Train ``model`` on ``train_coco`` (no validation part: the last epoch is kept) and
    score it on ``test_coco`` with the project's train / predict / evaluate."""
    import shutil

    from detector.evaluate import evaluate_detections
    from detector.predict import predict_coco
    from detector.train import TrainConfig, train

    if run_dir.exists():
        shutil.rmtree(run_dir)  # a run that stopped half-way; train refuses a used folder
    run_dir.mkdir(parents=True)
    (run_dir.parent / f"{run_dir.name}.json").write_text(json.dumps(train_coco))
    config = TrainConfig(coco=str(run_dir.parent / f"{run_dir.name}.json"), images=str(images),
                         out=str(run_dir / "run"), model=model, epochs=100000, patience=100000,
                         max_iters=args.iters, size=args.size, batch=args.batch, seed=seed,
                         lr=args.lr,
                         warmup_iters=min(100, args.iters // 3), device=args.device)
    started = time.time()
    train(config)
    train_s = time.time() - started
    dets = predict_coco(run_dir / "run", test_coco, test_images, device=args.device)
    report = evaluate_detections(test_coco, dets, threshold=0.5)
    overall = report["coco"]["overall"]
    return {**{m: overall.get(m) for m in ("AP", "AP50", "AP75")},
            "train_s": round(train_s, 1), "total_s": round(time.time() - started, 1),
            "config": {k: v for k, v in asdict(config).items()
                       if k in ("model", "size", "batch", "max_iters", "lr", "warmup_iters",
                                "seed", "augment_set")}}


# ----------------------------------------------------------------------------- outputs

def aggregate(runs: list[dict]) -> dict[str, dict[int, dict[str, Any]]]:
    """series name -> N -> mean / sd of AP50 over the runs (folds x seeds) and their count."""
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for r in runs:
        n = r.get("n_wanted", r["n"])
        cell = out.setdefault(r["series"], {}).setdefault(n, {"values": [], "train_s": [],
                                                              "actual_n": []})
        cell["values"].append(r["AP50"] or 0.0)
        cell["train_s"].append(r["train_s"])
        cell["actual_n"].append(r["n"])
    for series in out.values():
        for cell in series.values():
            v = np.array(cell["values"])
            cell.update(mean=float(v.mean()), sd=float(v.std(ddof=1)) if v.size > 1 else None,
                        runs=int(v.size), mean_train_s=float(np.mean(cell["train_s"])))
    return out


def table(agg: dict[str, dict[int, dict[str, Any]]], ns: Sequence[int]) -> str:
    head = "| series | " + " | ".join(f"N = {n}" for n in ns) + " |"
    lines = [head, "|---|" + "---|" * len(ns)]
    for name, series in agg.items():
        cells = []
        for n in ns:
            c = series.get(n)
            if c is None:
                cells.append("—")
            else:
                sd = f" ± {c['sd']:.3f}" if c["sd"] is not None else ""
                short = f", only {min(c['actual_n'])}" if min(c["actual_n"]) < n else ""
                cells.append(f"{c['mean']:.3f}{sd} ({c['mean_train_s']:.0f} s{short})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(agg: dict[str, dict[int, dict[str, Any]]], ns: Sequence[int], path: Path,
         title: str) -> None:
    """AP50 against N (log x, ticks at the N values), one line per series, with a legend."""
    import cv2

    w, h, left, right, top, bottom = 900, 560, 80, 30, 60, 70
    img = np.full((h, w, 3), 255, np.uint8)
    font = cv2.FONT_HERSHEY_SIMPLEX
    lo, hi = math.log(min(ns)), math.log(max(ns))
    span = hi - lo or 1.0

    def x(n: float) -> int:
        return int(round(left + (math.log(n) - lo) / span * (w - left - right)))

    def y(v: float) -> int:
        return int(round(h - bottom - v * (h - top - bottom)))

    for k in range(11):
        v = k / 10
        cv2.line(img, (left, y(v)), (w - right, y(v)), (225, 225, 225), 1)
        cv2.putText(img, f"{v:.1f}", (left - 42, y(v) + 5), font, 0.45, (60, 60, 60), 1,
                    cv2.LINE_AA)
    for n in ns:
        cv2.line(img, (x(n), top), (x(n), h - bottom), (235, 235, 235), 1)
        cv2.line(img, (x(n), h - bottom), (x(n), h - bottom + 6), (0, 0, 0), 1)
        label = str(n)
        size = cv2.getTextSize(label, font, 0.5, 1)[0]
        cv2.putText(img, label, (x(n) - size[0] // 2, h - bottom + 24), font, 0.5, (0, 0, 0),
                    1, cv2.LINE_AA)
    cv2.rectangle(img, (left, top), (w - right, h - bottom), (0, 0, 0), 1)
    cv2.putText(img, "labelled training images / frames N (log scale)",
                (left + 200, h - 18), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, "AP50", (10, top - 15), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    cv2.putText(img, title, (left, 30), font, 0.55, (0, 0, 0), 1, cv2.LINE_AA)
    for i, (name, series) in enumerate(agg.items()):
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        points = [(x(n), y(series[n]["mean"])) for n in sorted(series)]
        for a, b in zip(points, points[1:]):
            cv2.line(img, a, b, colour, 2, cv2.LINE_AA)
        for n in sorted(series):
            c = series[n]
            if c["sd"] is not None:
                cv2.line(img, (x(n), y(c["mean"] - c["sd"])), (x(n), y(c["mean"] + c["sd"])),
                         colour, 1, cv2.LINE_AA)
            cv2.circle(img, (x(n), y(c["mean"])), 5, colour, -1, cv2.LINE_AA)
        ly = top + 22 + 24 * i
        cv2.line(img, (left + 15, ly - 5), (left + 45, ly - 5), colour, 2, cv2.LINE_AA)
        cv2.circle(img, (left + 30, ly - 5), 5, colour, -1, cv2.LINE_AA)
        cv2.putText(img, name, (left + 55, ly), font, 0.5, (0, 0, 0), 1, cv2.LINE_AA)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), img):
        raise OSError(f"could not write {path}")


def write_outputs(runs: list[dict], args: argparse.Namespace, elapsed: float) -> str:
    agg = aggregate(runs)
    text = table(agg, args.n)
    settings = (f"{args.size} px, {args.iters} iterations of batch {args.batch}, lr {args.lr}, "
                f"{args.seeds} seed(s), BUSI {args.test_folds} of {args.folds} folds, "
                f"phantom pool {args.pool_videos} sweeps / test {args.test_videos} sweeps")
    plot(agg, args.n, args.plot, f"AP50 on held-out data vs labelled N ({settings.split(',')[0]}, "
                                  f"{args.iters} iters)")
    md = (f"AP50 on held-out data (mean{' ± sd' if args.seeds * args.test_folds > 1 else ''} "
          f"over runs; training wall time per run in brackets). Settings: {settings}. "
          f"Machine: {machine()}. Whole run {elapsed / 60:.1f} min.\n\n{text}\n")
    args.table.parent.mkdir(parents=True, exist_ok=True)
    args.table.write_text(md)
    args.table.with_suffix(".json").write_text(json.dumps(
        {"settings": vars_json(args), "machine": machine(), "runs": runs}, indent=1))
    return text


def machine() -> str:
    import torch
    return (f"{os.cpu_count()} CPU cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, Python {platform.python_version()}")


def vars_json(args: argparse.Namespace) -> dict[str, Any]:
    return {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}


# ----------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", default=DEFAULT_N, help="labelled training images/frames, comma list")
    p.add_argument("--size", type=int, default=160)
    p.add_argument("--iters", type=int, default=150, help="training iterations per run")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--lr", type=float, default=1e-3,
                   help="1e-3 as bench/labeling_effort.py: these schedules are short")
    p.add_argument("--folds", type=int, default=5, help="BUSI folds (detector.cv grouping)")
    p.add_argument("--test-folds", type=int, default=1, help="how many of them are test folds")
    p.add_argument("--seeds", type=int, default=1, help="training / selection seeds per N")
    p.add_argument("--seed", type=int, default=0, help="first seed; also folds and phantom sets")
    p.add_argument("--dup-distance", type=int, default=10)
    p.add_argument("--pool-videos", type=int, default=20, help="phantom sweeps to label from")
    p.add_argument("--test-videos", type=int, default=20, help="held-out phantom sweeps")
    p.add_argument("--models", default="single,two_frame", help="phantom models")
    p.add_argument("--only", choices=("busi", "phantom"))
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads; 2 threads on 2 busy cores ran ~4x slower here")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "label_efficiency")
    p.add_argument("--plot", type=Path, default=ROOT / "docs" / "results" / "label_efficiency.png")
    p.add_argument("--table", type=Path, default=ROOT / "docs" / "results" / "label_efficiency.md")
    args = p.parse_args(argv)
    args.n = sorted({int(v) for v in args.n.split(",")})
    if min(args.n) < 1 or args.size % 32 or args.iters < 1 or args.seeds < 1 \
            or not 1 <= args.test_folds <= args.folds:
        p.error("N, iters, seeds >= 1; size a multiple of 32; 1 <= test-folds <= folds")
    import torch
    torch.set_num_threads(args.threads)
    sys.path.insert(0, str(ROOT / "bench"))
    args.out.mkdir(parents=True, exist_ok=True)
    cache_path = args.out / "runs.json"
    key_settings = {k: v for k, v in vars_json(args).items()
                    if k in ("size", "iters", "batch", "lr", "folds", "dup_distance", "pool_videos",
                             "test_videos", "seed")}
    cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    if cache.get("settings") != key_settings:
        cache = {"settings": key_settings, "runs": {}}
    started = time.time()
    runs: list[dict] = []

    def do(key: str, series: str, n_wanted: int, make) -> None:
        if key in cache["runs"]:
            rec = cache["runs"][key]
            print(f"[{key}] reused: AP50 {rec['AP50']:.3f} ({rec['train_s']:.0f} s training)")
        else:
            rec = make()
            rec.update(series=series, n_wanted=n_wanted)
            cache["runs"][key] = rec
            cache_path.write_text(json.dumps(cache, indent=1))
            print(f"[{key}] N={rec['n']} AP50 {rec['AP50']:.3f} AP {rec['AP']:.3f}  "
                  f"train {rec['train_s']:.0f} s, with evaluation {rec['total_s']:.0f} s",
                  flush=True)
        runs.append(rec)
        write_outputs(runs, args, time.time() - started)

    from detector.cv import subset

    if args.only != "busi":
        pool_coco, pool_images, test_coco, test_images = phantom_sets(args.out, args)
        pool = json.loads(pool_coco.read_text())
        videos: dict[Any, list[Any]] = {}
        for img in sorted(pool["images"], key=lambda i: (i["video_id"], i["frame_index"])):
            if img["frame_index"] > 0:  # frame 0 has no real predecessor
                videos.setdefault(img["video_id"], []).append(img["id"])
        for s in range(args.seed, args.seed + args.seeds):
            for n in args.n:
                ids = set(spread_frames(videos, n, s))
                for model in args.models.split(","):
                    def make(ids=ids, model=model, s=s, n=n) -> dict:
                        part = subset(pool, ids, f"label efficiency: {len(ids)} frames")
                        rec = train_and_score(part, pool_images, test_coco, test_images, model,
                                              args.out / "runs" / f"phantom_{model}_n{n}_s{s}",
                                              args, s)
                        return dict(rec, n=len(ids), dataset="phantom", seed=s)
                    do(f"phantom/{model}/n{n}/s{s}", f"phantom {model}", n, make)
    if args.only != "phantom":
        if not (BUSI / "annotations.json").is_file():
            print(f"BUSI skipped: {BUSI} not found (see ../shared/data/README.md)")
        else:
            for fold in range(args.test_folds):
                coco, groups, test = busi_split(args.folds, fold, args.seed, args.dup_distance)
                test_path = args.out / f"busi_test_fold{fold + 1}.json"
                test_path.write_text(json.dumps(subset(coco, test, f"test fold {fold + 1}")))
                for s in range(args.seed, args.seed + args.seeds):
                    for n in args.n:
                        def make(fold=fold, s=s, n=n, coco=coco, groups=groups,
                                 test_path=test_path) -> dict:
                            ids = set(pick_groups(groups, n, s))
                            part = subset(coco, ids, f"label efficiency: {len(ids)} images")
                            rec = train_and_score(part, BUSI, test_path, BUSI, "single",
                                                  args.out / "runs" /
                                                  f"busi_f{fold + 1}_n{n}_s{s}", args, s)
                            return dict(rec, n=len(ids), dataset="busi", seed=s,
                                        fold=fold + 1, test_images=len(test))
                        do(f"busi/f{fold + 1}/n{n}/s{s}", "BUSI single", n, make)
    elapsed = time.time() - started
    if runs:
        print("\n" + write_outputs(runs, args, elapsed))
        print(f"\nplot: {args.plot}\ntable: {args.table}\nwall time {elapsed / 60:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
