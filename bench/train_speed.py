"""Wall time of the default training recipe on about 500 BUSI images, on this machine.

    python bench/train_speed.py [--val 90] [--out DIR] [-- more train options]

``../shared/data/busi`` (590 images; the script stops with a message when it is absent) is split
into a validation part of about ``--val`` images, made of whole patient and near-duplicate groups
(:func:`detector.cv.image_groups`, :func:`detector.cv.hold_out`, seed 0), and the rest for
training. Then ``python -m detector train --coco … --images … --val-coco … --val-images …
--model single --out …`` runs in a subprocess, as a user would run it, with no other option
(the default recipe, ``detector/recipe.py``) unless more are given after ``--``. Prints each
epoch's time (training and validation) and validation AP50, and last:

    training N images, E epochs: M.M min
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
BUSI = ROOT.parent / "shared" / "data" / "busi"

from detector.cv import hold_out, image_groups, subset  # noqa: E402
from detector.data import load_coco  # noqa: E402
from detector.near_duplicates import hash_files  # noqa: E402


def split(coco: dict, images_dir: Path, val: int) -> tuple[dict, dict]:
    """(training, validation) COCO files; validation holds whole groups, about ``val`` images."""
    images = coco["images"]
    groups, _ = image_groups(images, "patient", hash_files(images_dir / i["file_name"]
                                                            for i in images))
    held = hold_out(groups, val / len(images), seed=0)
    val_ids = {images[i]["id"] for i in held}
    train_ids = {img["id"] for img in images} - val_ids
    return subset(coco, train_ids, "train"), subset(coco, val_ids, "val")


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1:] if "--" in argv else []
    argv = argv[:argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--val", type=int, default=90, help="validation images, about")
    parser.add_argument("--out", help="keep the run here (default: a temporary folder)")
    args = parser.parse_args(argv)
    if not (BUSI / "annotations.json").is_file():
        print(f"BUSI images not found under {BUSI}; nothing to time", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(args.out) if args.out else Path(tmp)
        base.mkdir(parents=True, exist_ok=True)
        train, val = split(load_coco(BUSI / "annotations.json"), BUSI, args.val)
        for name, part in (("train", train), ("val", val)):
            (base / f"{name}.json").write_text(json.dumps(part), encoding="utf-8")
        run = base / "run"
        command = [sys.executable, "-m", "detector", "train", "--coco", str(base / "train.json"),
                   "--images", str(BUSI), "--val-coco", str(base / "val.json"),
                   "--val-images", str(BUSI), "--model", "single", "--out", str(run), *extra]
        print(f"{len(train['images'])} training and {len(val['images'])} validation images",
              flush=True)
        started = time.perf_counter()
        subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
        minutes = (time.perf_counter() - started) / 60
        metrics = json.loads((run / "metrics.json").read_text(encoding="utf-8"))
    for row in metrics["epochs"]:
        print(f"epoch {row['epoch']}: {row['seconds']:.1f} s, AP50 {row['AP50']:.3f}")
    best = metrics["best"]
    print(f"best epoch {metrics['best_epoch']}: AP50 {best['AP50']:.3f}, AP {best['AP']:.3f}")
    print(f"training {len(train['images'])} images, {len(metrics['epochs'])} epochs: "
          f"{minutes:.1f} min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
