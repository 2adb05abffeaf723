"""Single-frame vs two-frame detector on the real ultrasound data in ``../shared/data``.

    python bench/real_data_results.py busi [--size 256] [--max-iters 300] [--finetune-iters 100]
    python bench/real_data_results.py rus  [--size 320] [--max-iters 150] [--finetune-iters 100]
    python bench/real_data_results.py all

* ``busi`` (590 breast images, class tumor): split by ``patient_id`` (one image per patient in
  this copy), stratified by the benign / malignant / normal group, 70 / 15 / 15 %, seeded.
  These are still images: the two-frame model sees each image as its own predecessor with
  zero flow, where its aggregation returns the current frame's features unchanged, so
  ``two_frame`` is the single-frame detector trained ``--finetune-iters`` more. It cannot show
  a temporal benefit; it checks that the two-frame path does not hurt still images.
* ``rus`` (rus-abdominal: 50 labelled real liver frames, classes vessel and liver, each with
  its real previous frame via ``prev_file_name``): split by ``video_id``. Only 3 of the 10
  series carry labels, so one labelled series is the test set, one the validation set and
  the rest the training set (the video with the most labelled frames trains; test and
  validation are drawn by a seeded shuffle, or named with ``--test-videos`` / ``--val-videos``). ``single_ft`` continues ``single`` as long as ``two_frame`` is trained,
  so the two differ only in the temporal part.

Both: ``single`` trained first, ``two_frame`` initialised from it via ``--init``; best
validation-AP epoch kept; each model's score threshold for per-scene sensitivity maximises F1
on the validation split (fixed 0.5, and said so, when the model finds nothing there). Split
COCO files are written under ``--out`` (deterministic for a seed); the data are never copied.
Every step is a ``python -m detector ...`` command from the repository root, printed with its
wall time and written with the numbers to ``docs/results/real_<dataset>.json``.
"""
from __future__ import annotations

import argparse
import json
import random
import shlex
import shutil
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from two_frame_study import (ROOT, STEPS_NOTE, Steps, compare, evaluate,  # noqa: E402
                             finished, machine, rel, slim_report, table1, train_args,
                             write_json)

DATA = ROOT.parent / "shared" / "data"


def _subset(coco: dict[str, Any], image_ids: set, note: str) -> dict[str, Any]:
    out = {k: v for k, v in coco.items() if k not in {"images", "annotations"}}
    out["info"] = dict(coco.get("info", {}), split=note)
    out["images"] = [img for img in coco["images"] if img["id"] in image_ids]
    out["annotations"] = [a for a in coco["annotations"] if a["image_id"] in image_ids]
    return out


def split_busi(coco: dict[str, Any], seed: int, fractions: tuple[float, float] = (0.15, 0.15)
               ) -> dict[str, set]:
    """Image ids per split, grouped by ``patient_id`` and stratified by its group
    (the patient id without its number: benign / malignant / normal)."""
    by_patient: dict[str, list[int]] = {}
    for img in coco["images"]:
        by_patient.setdefault(str(img.get("patient_id", img["id"])), []).append(img["id"])
    strata: dict[str, list[str]] = {}
    for patient in sorted(by_patient):
        strata.setdefault(patient.rsplit("-", 1)[0], []).append(patient)
    rng = random.Random(seed)
    split: dict[str, set] = {"train": set(), "val": set(), "test": set()}
    for group in sorted(strata):
        patients = strata[group]
        rng.shuffle(patients)
        n_test = round(len(patients) * fractions[1])
        n_val = round(len(patients) * fractions[0])
        for i, patient in enumerate(patients):
            part = "test" if i < n_test else "val" if i < n_test + n_val else "train"
            split[part].update(by_patient[patient])
    return split


def split_videos(coco: dict[str, Any], seed: int, test: list[str] | None,
                 val: list[str] | None) -> tuple[dict[str, set], dict[str, list[str]]]:
    """Image ids per split by ``video_id``: the given video ids, else one labelled video each
    for test and validation by a seeded shuffle of all but the video with the most labelled
    frames; the rest train."""
    frames: dict[str, int] = {}
    for img in coco["images"]:
        frames[str(img["video_id"])] = frames.get(str(img["video_id"]), 0) + 1
    videos = sorted(frames)
    # the video with the most labelled frames always trains: with 3 labelled videos a draw
    # could otherwise leave 8 training frames
    largest = max(videos, key=lambda v: (frames[v], v))
    order = [v for v in videos if v != largest]
    random.Random(seed).shuffle(order)
    test = test or order[:1]
    val = val or [v for v in order if v not in test][:1]
    unknown = [v for v in test + val if v not in videos]
    if unknown:
        raise SystemExit(f"error: video(s) {', '.join(unknown)} have no labelled frames "
                         f"(labelled: {', '.join(videos)})")
    if set(test) & set(val):
        raise SystemExit("error: a video cannot be in both the test and validation splits")
    train = [v for v in videos if v not in test and v not in val]
    if not train:
        raise SystemExit("error: no labelled video left for training")
    names = {"train": train, "val": list(val), "test": list(test)}
    split = {part: {img["id"] for img in coco["images"] if str(img["video_id"]) in vids}
             for part, vids in names.items()}
    return split, names


def _counts(coco: dict[str, Any]) -> dict[str, Any]:
    names = {c["id"]: c["name"] for c in coco["categories"]}
    per: dict[str, int] = {}
    for a in coco["annotations"]:
        per[names[a["category_id"]]] = per.get(names[a["category_id"]], 0) + 1
    return {"images": len(coco["images"]), "boxes": len(coco["annotations"]),
            "boxes_per_class": per,
            "images_without_boxes": len({i["id"] for i in coco["images"]} -
                                        {a["image_id"] for a in coco["annotations"]})}


def run_dataset(args: argparse.Namespace, dataset: str) -> dict[str, Any]:
    root = args.data / ("busi" if dataset == "busi" else "rus-abdominal")
    source = root / "annotations.json"
    if not source.is_file():
        raise SystemExit(f"error: {source} not found (the real data live in ../shared/data)")
    out = args.out / dataset
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    coco = json.loads(source.read_text())
    if dataset == "busi":
        split = split_busi(coco, args.seed)
        split_note = ("by patient_id (one image per patient id here), stratified by benign/"
                      f"malignant/normal, 70/15/15 %, seed {args.seed}")
        videos = None
        size = args.size or 256
        single_iters, ft_iters = args.max_iters or 300, args.finetune_iters or 100
        classes, control = None, False
    else:
        split, videos = split_videos(coco, args.seed, args.test_videos, args.val_videos)
        split_note = (f"by video_id, seed {args.seed}: train {videos['train']}, val "
                      f"{videos['val']}, test {videos['test']}")
        size = args.size or 320
        single_iters, ft_iters = args.max_iters or 150, args.finetune_iters or 100
        classes, control = "vessel,liver", True
    paths, counts = {}, {}
    for part, ids in split.items():
        subset = _subset(coco, ids, f"{part}: {split_note}")
        paths[part] = out / f"{part}.json"
        write_json(paths[part], subset)
        counts[part] = _counts(subset)
    print(f"[{dataset}] split {split_note}: " +
          ", ".join(f"{k} {v['images']} images / {v['boxes']} boxes" for k, v in counts.items()),
          flush=True)

    steps = Steps(out, args.threads)
    started = time.time()
    per_epoch = -(-counts["train"]["images"] // args.batch)
    common = dict(coco=paths["train"], images=root, val_coco=paths["val"], val_images=root,
                  size=size, batch=args.batch, per_epoch=per_epoch, seed=args.seed,
                  threads=args.threads, classes=classes)
    runs = out / "runs"
    plan = [("single", "single", single_iters, None),
            ("two_frame", "two_frame", ft_iters, runs / "single")]
    if control:
        plan.append(("single_ft", "single", ft_iters, runs / "single"))
    for name, model, iters, init in plan:
        done = finished(runs / name)
        if not done.exists() and (runs / name).exists():
            shutil.rmtree(runs / name)
        steps.run(f"train_{name}", train_args(model=model, out=runs / name, iters=iters,
                                              init=init, **common), done=done)
    reports = {name: evaluate(steps, name, runs / name, paths["test"], root, paths["val"], root,
                              out / "reports" / f"{name}.json") for name, *_ in plan}
    # false-positive tracks per minute assume consecutive frames at a frame rate: BUSI images
    # are stills and the labelled rus frames are sparse, so the column would mean nothing
    t1_text, t1 = table1(reports, fp=False)
    comparisons = {"single_vs_two_frame": compare(steps, "compare_single_two_frame",
                                                  out / "reports" / "single.json",
                                                  out / "reports" / "two_frame.json")}
    if control:
        comparisons["single_ft_vs_two_frame"] = compare(
            steps, "compare_single_ft_two_frame", out / "reports" / "single_ft.json",
            out / "reports" / "two_frame.json")
    print(f"\n[{dataset}] Table 1 (held-out test split)")
    print(t1_text)
    for key, comp in comparisons.items():
        print(f"\n[{dataset}] Table 2 ({key.replace('_', ' ')})")
        print(comp["table"])
    # a reused step counts the time it took when it ran
    total = sum(r["wall_s"] for r in steps.records)
    elapsed = time.time() - started
    train_wall = sum(r["wall_s"] for r in steps.records if r["step"].startswith("train_"))
    print(f"\n[{dataset}] wall time: training {train_wall:.0f} s, all steps {total:.0f} s")
    return {
        "study": f"single vs two-frame detector on real data: {dataset}",
        "script_command": "python bench/real_data_results.py " + shlex.join(args.argv),
        "data": rel(root), "split": split_note, "split_videos": videos, "counts": counts,
        "split_files": {k: rel(v) for k, v in paths.items()},
        "training": {"size": size, "batch": args.batch, "single_iters": single_iters,
                     "finetune_iters": ft_iters, "iters_per_epoch": per_epoch,
                     "classes": classes or "all (tumor)",
                     "two_frame_init": "runs/single/model.pt via --init",
                     "control": "single_ft = single continued via --init for the same "
                                "iterations" if control else None,
                     "model_selection": "best validation AP epoch"},
        "threshold": "per model, maximising pooled F1 on the validation split",
        "machine": dict(machine(), threads_per_run=args.threads),
        "steps": [{k: v for k, v in r.items() if k != "stdout"} for r in steps.records],
        "steps_note": STEPS_NOTE,
        "wall_s": {"training": round(train_wall, 1), "all_steps": round(total, 1),
                   "this_invocation": round(elapsed, 1)},
        "table1": t1, "table1_text": t1_text, "table2": comparisons,
        "reports": {k: slim_report(v) for k, v in reports.items()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("dataset", choices=["busi", "rus", "all"])
    p.add_argument("--data", type=Path, default=DATA, help="the shared data folder")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "real_data")
    p.add_argument("--results", type=Path, default=ROOT / "docs" / "results",
                   help="folder for real_<dataset>.json")
    p.add_argument("--size", type=int, help="input size (default busi 256, rus 320)")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-iters", type=int, help="single iterations (busi 300, rus 150)")
    p.add_argument("--finetune-iters", type=int,
                   help="two_frame / single_ft iterations after single (busi 100, rus 100)")
    p.add_argument("--test-videos", type=lambda s: s.split(","), help="rus: test video ids")
    p.add_argument("--val-videos", type=lambda s: s.split(","), help="rus: validation video ids")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per step")
    p.add_argument("--fresh", action="store_true", help="delete the dataset's --out first")
    args = p.parse_args(argv)
    args.argv = argv
    if args.size is not None and (args.size < 64 or args.size % 32):
        p.error("--size must be a multiple of 32, at least 64")
    for name in ("batch", "max_iters", "finetune_iters", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    for dataset in (["busi", "rus"] if args.dataset == "all" else [args.dataset]):
        summary = run_dataset(args, dataset)
        path = args.results / f"real_{dataset}.json"
        write_json(path, summary)
        print(f"report: {rel(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
