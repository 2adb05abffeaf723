"""Single-frame vs two-frame detector on synthetic liver sweeps (the paper's Tables 1 and 2).

    python bench/two_frame_study.py [--train-videos 40] [--frames 12] [--size 256]
                                    [--max-iters 600] [--finetune-iters 300] [--quick]

Protocol (Karako et al. 2022, read for phantom data):

* Three phantom sets with different seeds, so no phantom "patient" is in two of them:
  training sweeps (``--train-videos`` x ``--frames``), a validation set and a held-out test set
  of ``--test-scenes`` scenes. Validation and test videos have 6 frames: the first is kept only
  as context (``context_images``, the previous frame of the second) and the other 5 form one
  scene, so every evaluated frame has a real predecessor, as in a video.
* ``single`` is trained first (``--max-iters``); ``two_frame`` starts from its checkpoint
  (``--init``, every matching weight; only the aggregation starts fresh) and is trained
  ``--finetune-iters`` more, as UltraDet and TransVOD do. Because that gives ``two_frame`` more
  training in total, a control ``single_ft`` continues ``single`` for the same iterations with
  the same schedule; two_frame vs single_ft isolates the temporal part.
* Every run keeps the epoch with the best validation AP. Each model's score threshold for
  per-scene sensitivity is the F1-maximising one on the validation set (the same rule for all).
* Table 1: COCO AP, AP50, AP75 on the test frames, and false-positive tracks per minute of
  test video at ``--fp-recall`` (UltraDet counts them at recall 0.9, which models trained this
  briefly do not reach); Table 2: per-scene sensitivity per class, paired t-test, Wilcoxon and
  bootstrap CI (``python -m detector compare``).

Every step is a ``python -m detector ...`` command run from the repository root; the script
prints each command and its wall time, and writes them with the numbers to ``--report``.
Finished steps are reused when the script is run again with the same settings (``--fresh``
starts over), and the report says so.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
FINISHED = {"epochs", "max_iters", "patience"}
STEPS_NOTE = ("wall_s: seconds the command took when it ran; reused: true means an earlier run of "
              "the same script command ran it and this one reused its output")


# ----------------------------------------------------------------------------- steps

class Steps:
    """Runs ``python -m detector`` commands from the repository root, logs them and their wall
    time, and reuses a step whose outputs exist from an earlier run with the same command."""

    def __init__(self, out: Path, threads: int):
        self.out = out
        self.threads = threads
        self.records: list[dict[str, Any]] = []
        self.timings_path = out / "timings.json"
        self.previous: dict[str, Any] = (json.loads(self.timings_path.read_text())
                                         if self.timings_path.is_file() else {})

    def run(self, name: str, args: list[str], done: Path | None = None,
            may_fail: bool = False) -> str | None:
        """Run ``python -m detector ARGS``; returns its stdout. ``done``: a file whose presence
        (with the same command recorded) means the step can be reused. ``may_fail``: return
        None (and record the error) instead of stopping when the command fails."""
        cmd = ["python", "-m", "detector", *map(str, args)]
        text = shlex.join(cmd)
        prev = self.previous.get(name)
        if done is not None and done.exists() and prev and prev["command"] == text:
            record = dict(prev, reused=True)
            print(f"[{name}] reused ({prev['wall_s']:.0f} s when run): {text}", flush=True)
            self.records.append(record)
            return prev.get("stdout", "")
        print(f"[{name}] $ {text}", flush=True)
        env = dict(os.environ, OMP_NUM_THREADS=str(self.threads),
                   MKL_NUM_THREADS=str(self.threads))
        started = time.time()
        proc = subprocess.run([sys.executable, *cmd[1:]], cwd=ROOT, env=env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        wall = time.time() - started
        log = self.out / "logs" / f"{name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text(f"$ {text}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}")
        if proc.returncode != 0 and may_fail:
            error = (proc.stderr.strip().splitlines() or [""])[-1]
            print(f"[{name}] failed: {error}", flush=True)
            self.records.append({"step": name, "command": text, "wall_s": round(wall, 1),
                                 "failed": error, "reused": False})
            return None
        if proc.returncode != 0:
            tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-15:])
            raise SystemExit(f"step {name} failed (exit {proc.returncode}, log {log}):\n{tail}")
        last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
        print(f"[{name}] {wall:.1f} s  {last[:160]}", flush=True)
        record = {"step": name, "command": text, "wall_s": round(wall, 1),
                  "stdout": proc.stdout[-4000:], "reused": False}
        self.records.append(record)
        self.previous[name] = record
        self.timings_path.write_text(json.dumps(self.previous, indent=1))
        return proc.stdout


def rel(path: Path) -> str:
    """``path`` relative to the repository root (the commands' working directory)."""
    return os.path.relpath(Path(path).resolve(), ROOT)


def train_args(*, coco: Path, images: Path, model: str, out: Path, val_coco: Path,
               val_images: Path, size: int, batch: int, iters: int, per_epoch: int, seed: int,
               threads: int, init: Path | None = None, classes: str | None = None,
               lr: float | None = None) -> list[str]:
    """``detector train`` arguments: as many epochs as ``iters`` needs, the cosine schedule over
    ``iters``, validation every epoch, no early stop (the best epoch is kept anyway)."""
    epochs = max(1, -(-iters // max(1, per_epoch)))
    args = ["train", "--coco", rel(coco), "--images", rel(images), "--model", model,
            "--out", rel(out), "--val-coco", rel(val_coco), "--val-images", rel(val_images),
            "--size", size, "--batch", batch, "--epochs", epochs, "--max-iters", iters,
            "--patience", epochs + 1, "--seed", seed, "--threads", threads]
    if init is not None:
        args += ["--init", rel(init / "model.pt")]
    if classes:
        args += ["--classes", classes]
    if lr is not None:
        args += ["--lr", lr]
    return args


def finished(run_dir: Path) -> Path:
    """The file whose presence means a training run completed."""
    metrics = run_dir / "metrics.json"
    try:
        if json.loads(metrics.read_text())["status"] in FINISHED:
            return run_dir / "model.pt"
    except (OSError, ValueError, KeyError):
        pass
    return run_dir / "model.pt.never"


def slim_report(report: dict[str, Any]) -> dict[str, Any]:
    """An evaluation report without PR curves and with only the classes a scene has boxes of
    (kept small for docs/results; the full report stays in the run folder)."""
    out = json.loads(json.dumps(report))
    out.get("coco", {}).pop("pr_curves", None)
    for scene in out.get("sensitivity", {}).get("scenes", {}).values():
        scene["per_class"] = {c: v for c, v in scene.get("per_class", {}).items()
                              if v.get("boxes")}
    model = out.get("model", {})
    for key in ("config", "train"):
        model.pop(key, None)
    if model.get("run_dir"):
        model["run_dir"] = rel(Path(model["run_dir"]))
    return out


def table1(reports: dict[str, dict[str, Any]], fp: bool = True) -> tuple[str, dict[str, Any]]:
    """The paper's Table 1 (COCO AP, AP50, AP75, overall and per class) as text and JSON;
    ``fp``: add the false-positive tracks per minute column (only meaningful for video)."""
    rows: dict[str, Any] = {}
    classes: list[str] = []
    for name, rep in reports.items():
        coco = rep["coco"]
        per = {c: v for c, v in coco["per_class"].items() if v.get("AP") is not None}
        classes += [c for c in per if c not in classes]
        fpm = rep["fp_per_minute"]["overall"]
        rows[name] = {"overall": coco["overall"], "per_class": per,
                      "threshold": rep["threshold"]["value"],
                      "fp_tracks_per_minute": fpm.get("fp_tracks_per_minute"),
                      "fp_recall": fpm.get("recall")}

    def f(x: float | None) -> str:
        return "-" if x is None else f"{x:.3f}"
    head = f"{'model':<12}{'AP':>7}{'AP50':>7}{'AP75':>7}" + "".join(
        f"{c + ' AP':>12}{c + ' AP50':>14}" for c in classes) + f"{'thr':>7}" + (
        f"{'FP/min':>8}" if fp else "")
    lines = [head, "-" * len(head)]
    for name, r in rows.items():
        o = r["overall"]
        line = f"{name:<12}{f(o['AP']):>7}{f(o['AP50']):>7}{f(o['AP75']):>7}"
        for c in classes:
            pc = r["per_class"].get(c, {})
            line += f"{f(pc.get('AP')):>12}{f(pc.get('AP50')):>14}"
        fpm = r["fp_tracks_per_minute"]
        line += f"{r['threshold']:>7.3f}"
        if fp:
            line += f"{'-' if fpm is None else f'{fpm:.1f}':>8}"
        lines.append(line)
    if not fp:
        for r in rows.values():
            del r["fp_tracks_per_minute"], r["fp_recall"]
    return "\n".join(lines), rows


def evaluate(steps: Steps, name: str, run_dir: Path, coco: Path, images: Path, val_coco: Path,
             val_images: Path, report: Path, fp_recall: float | None = None) -> dict[str, Any]:
    """``detector evaluate`` with the threshold chosen on the validation set; when the model
    finds nothing there to choose from (a barely trained model), the fixed default 0.5, and the
    report's ``threshold.method`` says so."""
    base = ["evaluate", "--run", rel(run_dir), "--coco", rel(coco), "--images", rel(images),
            "--name", name, "--out", rel(report)]
    if fp_recall is not None:
        base += ["--fp-recall", fp_recall]
    ok = steps.run(f"evaluate_{name}", base + ["--val-coco", rel(val_coco), "--val-images",
                                               rel(val_images)], done=report, may_fail=True)
    if ok is None:
        steps.run(f"evaluate_{name}_fixed", base + ["--threshold", "0.5"], done=report)
    return json.loads(report.read_text())


def compare(steps: Steps, name: str, a: Path, b: Path) -> dict[str, Any]:
    out = steps.run(name, ["compare", rel(a), rel(b), "--json"])
    return json.loads(out)


def machine() -> dict[str, Any]:
    import torch
    return {"cpu_count": os.cpu_count(), "platform": platform.platform(),
            "python": platform.python_version(), "torch": torch.__version__,
            "device": "cpu"}


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, allow_nan=False))
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- phantom sets

def context_first(coco_path: Path, out_path: Path) -> dict[str, int]:
    """Move each video's first frame into ``context_images`` (and drop its boxes), so the
    evaluated frames all have a real previous frame; returns counts."""
    coco = json.loads(coco_path.read_text())
    first = {img["id"] for img in coco["images"] if img["frame_index"] == 0}
    coco["context_images"] = [img for img in coco["images"] if img["id"] in first]
    coco["images"] = [img for img in coco["images"] if img["id"] not in first]
    coco["annotations"] = [a for a in coco["annotations"] if a["image_id"] not in first]
    coco["info"]["evaluation"] = ("frame 0 of each video is context only (the previous frame "
                                  "of frame 1); frames 1-5 form one scene")
    write_json(out_path, coco)
    return {"videos": len(first), "images": len(coco["images"]),
            "boxes": len(coco["annotations"])}


def phantom(steps: Steps, name: str, out: Path, videos: int, frames: int, size: int,
            seed: int) -> Path:
    steps.run(f"phantom_{name}", ["phantom", "--out", rel(out), "--videos", videos, "--frames",
                                  frames, "--size", size, "--seed", seed, "--scene-len", frames,
                                  "--overwrite", "--quiet"], done=out / "annotations.json")
    return out / "annotations.json"


def study(args: argparse.Namespace) -> dict[str, Any]:
    out: Path = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = Steps(out, args.threads)
    started = time.time()
    seeds = {"train": args.seed * 10 + 1, "val": args.seed * 10 + 2, "test": args.seed * 10 + 3}
    train_coco = phantom(steps, "train", out / "train", args.train_videos, args.frames,
                         args.size, seeds["train"])
    phantom(steps, "val", out / "val", args.val_videos, 6, args.size, seeds["val"])
    phantom(steps, "test", out / "test", args.test_scenes, 6, args.size, seeds["test"])
    val_coco, test_coco = out / "val" / "eval.json", out / "test" / "eval.json"
    counts = {"val": context_first(out / "val" / "annotations.json", val_coco),
              "test": context_first(out / "test" / "annotations.json", test_coco)}
    train = json.loads(train_coco.read_text())
    counts["train"] = {"videos": args.train_videos, "images": len(train["images"]),
                       "boxes": len(train["annotations"])}
    per_epoch = -(-len(train["images"]) // args.batch)
    common = dict(coco=train_coco, images=out / "train" / "images", val_coco=val_coco,
                  val_images=out / "val" / "images", size=args.size, batch=args.batch,
                  per_epoch=per_epoch, seed=args.seed, threads=args.threads)
    runs = out / "runs"
    plan = [("single", "single", args.max_iters, None),
            ("two_frame", "two_frame", args.finetune_iters, runs / "single")]
    if args.control:
        plan.append(("single_ft", "single", args.finetune_iters, runs / "single"))
    for name, model, iters, init in plan:
        done = finished(runs / name)
        if not done.exists() and (runs / name).exists():
            shutil.rmtree(runs / name)  # an interrupted run; train refuses a used directory
        steps.run(f"train_{name}", train_args(model=model, out=runs / name, iters=iters,
                                              init=init, **common), done=done)
    reports: dict[str, dict[str, Any]] = {}
    for name, *_ in plan:
        reports[name] = evaluate(steps, name, runs / name, test_coco, out / "test" / "images",
                                 val_coco, out / "val" / "images",
                                 out / "reports" / f"{name}.json", args.fp_recall)
    t1_text, t1 = table1(reports)
    comparisons = {"single_vs_two_frame": compare(steps, "compare_single_two_frame",
                                                  out / "reports" / "single.json",
                                                  out / "reports" / "two_frame.json")}
    if args.control:
        comparisons["single_ft_vs_two_frame"] = compare(
            steps, "compare_single_ft_two_frame", out / "reports" / "single_ft.json",
            out / "reports" / "two_frame.json")
    print(f"\nTable 1 (held-out phantom test frames; thr = validation-F1 score threshold; "
          f"FP/min = false-positive tracks per minute at recall {args.fp_recall})")
    print(t1_text)
    for key, comp in comparisons.items():
        print(f"\nTable 2 ({key.replace('_', ' ')})")
        print(comp["table"])
    # a reused step counts the time it took when it ran
    total = sum(r["wall_s"] for r in steps.records)
    elapsed = time.time() - started
    train_wall = sum(r["wall_s"] for r in steps.records if r["step"].startswith("train_"))
    print(f"\nwall time: training {train_wall:.0f} s, whole study {total:.0f} s "
          f"(reused steps count their original time in 'training')")
    return {
        "study": "two-frame vs single-frame detector on synthetic liver sweeps",
        "script_command": "python bench/two_frame_study.py " + shlex.join(args.argv),
        "protocol": {
            "sets": {"train_seed": seeds["train"], "val_seed": seeds["val"],
                     "test_seed": seeds["test"], "size": args.size, "frames_per_train_video":
                     args.frames, **{f"{k}_counts": v for k, v in counts.items()}},
            "scenes": "each val/test video = 6 frames; frame 0 is context only, frames 1-5 "
                      "are one scene (5 frames, each with its real previous frame)",
            "training": {"single_iters": args.max_iters, "finetune_iters": args.finetune_iters,
                         "batch": args.batch, "iters_per_epoch": per_epoch,
                         "two_frame_init": "runs/single/model.pt via --init (all matching "
                                           "weights; aggregation fresh)",
                         "control": "single_ft = single continued via --init for the same "
                                    "iterations" if args.control else None,
                         "model_selection": "best validation AP epoch"},
            "threshold": "per model, maximising pooled F1 on the validation set",
            "fp_per_minute": f"false-positive tracks per minute of test video (15 fps) at the "
                             f"highest score reaching recall {args.fp_recall} on the test set",
        },
        "machine": dict(machine(), threads_per_run=args.threads),
        "steps": [{k: v for k, v in r.items() if k != "stdout"} for r in steps.records],
        "steps_note": STEPS_NOTE,
        "wall_s": {"training": round(train_wall, 1), "study": round(total, 1),
                   "this_invocation": round(elapsed, 1)},
        "table1": t1, "table1_text": t1_text,
        "table2": {k: {kk: vv for kk, vv in v.items()} for k, v in comparisons.items()},
        "reports": {k: slim_report(v) for k, v in reports.items()},
    }


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "out" / "two_frame_study")
    p.add_argument("--report", type=Path, default=ROOT / "docs" / "results" /
                   "two_frame_phantom.json", help="summary JSON to write")
    p.add_argument("--train-videos", type=int, default=40)
    p.add_argument("--frames", type=int, default=12, help="frames per training video")
    p.add_argument("--val-videos", type=int, default=10)
    p.add_argument("--test-scenes", type=int, default=40, help="held-out scenes of 5 frames")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-iters", type=int, default=600, help="iterations of single")
    p.add_argument("--finetune-iters", type=int, default=300,
                   help="iterations of two_frame (and single_ft) after single")
    p.add_argument("--no-control", dest="control", action="store_false",
                   help="skip the single_ft control")
    p.add_argument("--fp-recall", type=float, default=0.7,
                   help="recall at which false-positive tracks per minute are counted "
                        "(0.7: these briefly trained models never reach UltraDet's 0.9)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="torch threads per step")
    p.add_argument("--quick", action="store_true",
                   help="a minutes-long smoke run (tiny sets, a few iterations)")
    p.add_argument("--fresh", action="store_true", help="delete --out first")
    args = p.parse_args(argv)
    args.argv = argv
    if args.quick:
        args.train_videos, args.frames, args.val_videos, args.test_scenes = 3, 8, 2, 4
        args.size, args.max_iters, args.finetune_iters = 128, 4, 2
        if "--out" not in argv:
            args.out = ROOT / "bench" / "out" / "two_frame_study_quick"
        if "--report" not in argv:
            args.report = args.out / "summary.json"
    for name in ("train_videos", "frames", "val_videos", "test_scenes", "batch", "max_iters",
                 "finetune_iters", "threads"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.frames < 2:
        p.error("--frames must be at least 2 (the two-frame model needs predecessors)")
    if args.size < 64 or args.size % 32:
        p.error("--size must be a multiple of 32, at least 64")
    summary = study(args)
    write_json(args.report, summary)
    print(f"report: {rel(args.report)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
