"""Labelling effort: a simulated annotator replays held-out ground truth and counts actions.

    python bench/labeling_effort.py [--run RUN_DIR] [--videos 3] [--frames 40] [--size 256]

Strategies, each per held-out phantom sweep (exact boxes on every frame):

* manual: every box drawn on every frame;
* interpolation every k frames: key frames drawn (a box seen before costs one adjust), the
  frames between get boxes interpolated linearly per track between the key frames;
* flow propagation: the first frame drawn, then each frame starts from the previous frame's
  finished boxes carried by optical flow (``annotator.services.propagate``, as key P does);
* pre-labels + propagation: the first frame starts from the model's boxes; each later frame
  from the previous frame's finished boxes carried by flow plus the model's boxes where no
  carried box of their class overlaps them (the app's rule: a carried box takes the place of
  a pre-label it overlaps; pre-labels elsewhere catch objects entering the plane).

The simulated annotator, per frame, matches the proposed boxes to the truth (same class,
greedy by IoU): IoU >= 0.7 is accepted as is (one "accept all" action per frame, Shift+Y),
0.3-0.7 is adjusted (one action; an edited pre-label counts as accepted), a proposal left
unmatched is deleted (one action) and a truth box left unmatched is drawn (one action).
Boxes under ``--min-box`` pixels on either side are ignored (an annotator would not draw
them either). Proposals with a confidence under ``--threshold`` (0.5) are hidden, as by the
workspace's threshold slider.

The model: ``--run`` takes a trained run directory (``python -m detector train``); without it
a small two-frame model is trained here on a separate phantom set (``--train-videos``,
``--train-iters``, size ``--size``), which takes a few minutes on 2 CPU cores.
``../shared/data/rus-abdominal`` labels isolated frames (no consecutive labelled frames), so
it cannot be replayed as a sequence; the bench says so and uses the phantom only.

The last line is ``manual / (pre-labels + propagation) = N.Nx``.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator.services.boxes import greedy_match, iou  # noqa: E402
from annotator.services.propagate import DUPLICATE_IOU, propagate_boxes  # noqa: E402

GOOD_IOU, ADJUST_IOU, SHOW_SCORE = 0.7, 0.3, 0.5


def review(proposals: list[dict], truth: list[dict], show_score: float = SHOW_SCORE) -> dict[str, int]:
    """Actions to turn ``proposals`` into ``truth`` on one frame."""
    shown = [p for p in proposals if p.get("score", 1.0) >= show_score]
    matched = greedy_match(shown, truth, ADJUST_IOU)
    return {"draw": len(truth) - len(matched),
            "adjust": sum(1 for overlap, _, _ in matched if overlap < GOOD_IOU),
            "delete": len(shown) - len(matched),
            "accept": int(any(overlap >= GOOD_IOU for overlap, _, _ in matched))}


def load_sequences(coco_path: Path, min_box: float) -> list[dict]:
    coco = json.loads(coco_path.read_text())
    by_image = defaultdict(list)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        if w >= min_box and h >= min_box:
            by_image[a["image_id"]].append({"x": x, "y": y, "w": w, "h": h,
                                            "class_id": a["category_id"], "track": a.get("track_id")})
    videos = defaultdict(list)
    for img in coco["images"]:
        videos[img["video_id"]].append(img)
    out = []
    for vid, imgs in sorted(videos.items()):
        imgs.sort(key=lambda im: im["frame_index"])
        out.append({"video": vid, "files": [coco_path.parent / "images" / im["file_name"] for im in imgs],
                    "truth": [by_image[im["id"]] for im in imgs]})
    return out


def interpolated(truth: list[list[dict]], k: int) -> tuple[list[list[dict]], dict[str, int]]:
    """Proposals for every frame from key frames every k (and the last frame), and the cost of
    the key frames themselves."""
    n = len(truth)
    keys = sorted(set(range(0, n, k)) | {n - 1})
    cost = {"draw": 0, "adjust": 0, "delete": 0, "accept": 0}
    seen: set = set()
    proposals: list[list[dict]] = [[] for _ in range(n)]
    for key in keys:
        for box in truth[key]:
            cost["adjust" if box["track"] in seen else "draw"] += 1
            seen.add(box["track"])
    for a, b in zip(keys, keys[1:]):
        at_b = {box["track"]: box for box in truth[b]}
        for box in truth[a]:
            other = at_b.get(box["track"])
            for t in range(a + 1, b):
                if other is None:
                    continue  # the track ends: an interpolating tool stops it at the key frame
                f = (t - a) / (b - a)
                proposals[t].append({**{c: box[c] + f * (other[c] - box[c]) for c in "xywh"},
                                     "class_id": box["class_id"]})
    for key in keys:
        proposals[key] = None  # drawn, not reviewed
    return proposals, cost


def add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] += value


def simulate(seq: dict, predictions: list[list[dict]] | None, ks: list[int],
             show_score: float = SHOW_SCORE) -> dict[str, dict]:
    truth, n = seq["truth"], len(seq["truth"])
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in seq["files"]]
    results: dict[str, dict] = {}
    manual = {"draw": sum(len(t) for t in truth), "adjust": 0, "delete": 0, "accept": 0}
    results["manual"] = manual
    for k in ks:
        proposals, cost = interpolated(truth, k)
        total = dict(cost)
        for t in range(n):
            if proposals[t] is not None:
                add(total, review(proposals[t], truth[t]))
        results[f"interpolation k={k}"] = total
    total = {"draw": len(truth[0]), "adjust": 0, "delete": 0, "accept": 0}
    for t in range(1, n):
        carried = [{**b, "score": b["confidence"]} for b in propagate_boxes(images[t - 1], images[t], truth[t - 1])]
        add(total, review(carried, truth[t]))
    results["flow propagation"] = total
    if predictions is not None:
        total = {"draw": 0, "adjust": 0, "delete": 0, "accept": 0}
        for t in range(n):
            carried = [] if t == 0 else [
                {**b, "score": b["confidence"]} for b in propagate_boxes(images[t - 1], images[t], truth[t - 1])
                if b["confidence"] >= show_score]
            # The app's rule: a carried box takes the place of a pre-label it overlaps.
            model = [p for p in predictions[t] if p["score"] >= show_score and not any(
                c["class_id"] == p["class_id"] and iou(c, p) >= DUPLICATE_IOU for c in carried)]
            add(total, review(carried + model, truth[t], show_score))
        results["pre-labels + propagation"] = total
    return results


def predict(run: Path, seqs: list[dict]) -> list[list[list[dict]]]:
    from detector.predict import Predictor

    predictor = Predictor(run, score_threshold=0.3)
    out = []
    for seq in seqs:
        predictor.reset()
        frames = []
        for f in seq["files"]:
            dets = predictor.step(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
            frames.append([{"x": d["box"][0], "y": d["box"][1], "w": d["box"][2], "h": d["box"][3],
                            "class_id": d["label"], "score": d["score"]} for d in dets])
        out.append(frames)
    return out


def train_model(work: Path, args: argparse.Namespace) -> Path:
    from detector.phantom import generate
    from detector.train import TrainConfig, train

    coco = generate(work / "train", videos=args.train_videos, frames=args.train_frames,
                    size=args.size, seed=args.seed + 100)
    run = work / "run"
    t0 = time.time()
    train(TrainConfig(coco=str(coco), images=str(coco.parent / "images"), out=str(run), model="two_frame",
                      epochs=1000, max_iters=args.train_iters, size=args.size, batch=4,
                      lr=1e-3, warmup_iters=50, seed=args.seed))
    print(f"trained a two-frame model on {args.train_videos} phantom sweeps x {args.train_frames} "
          f"frames for {args.train_iters} iterations in {time.time() - t0:.0f} s", file=sys.stderr)
    return run


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="trained run directory for the pre-labels")
    p.add_argument("--videos", type=int, default=3)
    p.add_argument("--frames", type=int, default=40)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--k", default="5,10", help="interpolation key-frame spacings")
    p.add_argument("--min-box", type=float, default=6.0)
    p.add_argument("--train-videos", type=int, default=8)
    p.add_argument("--train-frames", type=int, default=24)
    p.add_argument("--train-iters", type=int, default=400)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--threshold", type=float, default=SHOW_SCORE,
                   help="score under which pre-labels and carried boxes are hidden")
    args = p.parse_args(argv)
    import torch

    from detector.phantom import generate

    torch.set_num_threads(args.threads)
    ks = [int(k) for k in args.k.split(",")]
    rus = ROOT.parent / "shared" / "data" / "rus-abdominal"
    if rus.exists():
        print("rus-abdominal: labels are on isolated frames (no consecutive labelled frames), so "
              "its sequences cannot be replayed; phantom sweeps only.", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        coco = generate(work / "test", videos=args.videos, frames=args.frames, size=args.size,
                        seed=args.seed)
        seqs = load_sequences(coco, args.min_box)
        run = args.run or train_model(work, args)
        predictions = predict(run, seqs)
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for seq, preds in zip(seqs, predictions):
            for name, counts in simulate(seq, preds, ks, args.threshold).items():
                add(totals[name], counts)
    frames = sum(len(s["truth"]) for s in seqs)
    boxes = sum(len(t) for s in seqs for t in s["truth"])
    print(f"{len(seqs)} held-out phantom sweeps, {frames} frames, {boxes} boxes "
          f"(>= {args.min_box:g} px)")
    print(f"{'strategy':<28}{'draw':>7}{'adjust':>8}{'delete':>8}{'accept':>8}{'total':>8}"
          f"{'per frame':>11}{'vs manual':>11}")
    manual_total = sum(totals["manual"].values())
    for name, c in totals.items():
        total = sum(c.values())
        print(f"{name:<28}{c['draw']:>7}{c['adjust']:>8}{c['delete']:>8}{c['accept']:>8}{total:>8}"
              f"{total / frames:>11.2f}{manual_total / max(1, total):>10.1f}x")
    best = sum(totals["pre-labels + propagation"].values())
    interp = min(sum(c.values()) for n, c in totals.items() if n.startswith("interpolation"))
    print(f"pre-labels + propagation vs best interpolation: {interp / max(1, best):.1f}x fewer actions")
    print(f"manual / (pre-labels + propagation) = {manual_total / max(1, best):.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
