"""Track propagation speed on a 100-frame 512 px phantom sweep (2 cores by default).

    python bench/propagate_speed.py [--frames 100] [--size 512] [--threads 2] [--every 25]

Times, each printed on its own line:

* the flow fields of the scene, computed once (DIS MEDIUM both ways per pair of frames, what
  :func:`annotator.services.propagate.frame_flow` caches);
* one P step: the boxes of one frame carried to the next, with the pair's flow cached (a warm
  P) and without (the first P on a frame pair), algorithm only (no database, no HTTP);
* one re-propagation after a correction (the spans around one corrected keyframe);
* the whole scene: every object of the sweep propagated as a track from its keyframes (its
  first and last frame in the truth, and every ``--every`` frames between), flows cached.

Also printed: the mean IoU of the propagated boxes with the phantom's exact boxes, so a speed
gain that breaks the tracks shows. The goal is at most 1 s for the whole scene with cached
flows, and under 100 ms for a P step. The last line is ``scene of 100 frames: N ms``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator.services.boxes import iou  # noqa: E402
from annotator.services.flow_cache import FlowCache  # noqa: E402
from annotator.services.propagate import flow_pair, propagate_boxes, reversed_pair  # noqa: E402
from annotator.services.track_propagation import propagate_track  # noqa: E402
from detector.phantom import PhantomVideo  # noqa: E402


def tracks_of(truth: list[list[dict]]) -> dict[tuple, dict[int, dict]]:
    """Each phantom object's exact box per frame, keyed by (class, object id)."""
    tracks: dict[tuple, dict[int, dict]] = defaultdict(dict)
    for i, boxes in enumerate(truth):
        for b in boxes:
            x, y, w, h = b["bbox"]
            # a vessel cut in two pieces: keep the larger piece as the object's box
            key = (b["category_id"], b["local_id"])
            if key not in tracks or i not in tracks[key] or w * h > tracks[key][i]["w"] * tracks[key][i]["h"]:
                tracks[key][i] = {"x": float(x), "y": float(y), "w": float(w), "h": float(h)}
    return tracks


def keyframes_of(track: dict[int, dict], every: int) -> dict[int, dict]:
    seen = sorted(track)
    keys = {seen[0], seen[-1], *(i for i in seen if (i - seen[0]) % every == 0)}
    return {i: track[i] for i in keys}


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=25, help="frames between keyframes")
    ap.add_argument("--seed", type=int, default=3)
    args = ap.parse_args(argv)
    cv2.setNumThreads(args.threads)

    video = PhantomVideo.random(args.seed, 0, args.frames, args.size)
    images, truth = zip(*video.frames())
    tracks = {k: t for k, t in tracks_of(list(truth)).items() if len(t) >= 2}
    n = len(images)
    print(f"phantom sweep: {n} frames of {args.size} px, {len(tracks)} objects, "
          f"{sum(len(t) for t in tracks.values())} boxes, {args.threads} threads")

    cache = FlowCache()
    t = time.perf_counter()
    pairs = [cache.get(i, lambda i=i: flow_pair(images[i], images[i + 1])) for i in range(n - 1)]
    backs = [cache.get(("back", i), lambda i=i: reversed_pair(pairs[i])) for i in range(n - 1)]
    flows_s = time.perf_counter() - t
    print(f"flows of the scene computed once ({n - 1} pairs): {ms(flows_s)} "
          f"({ms(flows_s / (n - 1))} a pair)")

    def flow_at(i: int, j: int):  # as frame_flow: the reverse of a pair is built once
        return pairs[i] if j == i + 1 else backs[j]

    busiest = max(range(n - 1), key=lambda i: len(truth[i]))
    boxes = [{"x": float(b["bbox"][0]), "y": float(b["bbox"][1]), "w": float(b["bbox"][2]),
              "h": float(b["bbox"][3])} for b in truth[busiest]]
    t = time.perf_counter()
    propagate_boxes(images[busiest], images[busiest + 1], boxes, pairs[busiest])
    warm_s = time.perf_counter() - t
    t = time.perf_counter()
    propagate_boxes(images[busiest], images[busiest + 1], boxes)
    cold_s = time.perf_counter() - t
    print(f"one P step ({len(boxes)} boxes): {ms(warm_s)} with the pair's flow cached, "
          f"{ms(cold_s)} computing it")

    keyframes = {k: keyframes_of(t, args.every) for k, t in tracks.items()}
    t, cpu = time.perf_counter(), time.process_time()
    results = {k: propagate_track(n, keyframes[k], flow_at) for k in tracks}
    scene_s, scene_cpu = time.perf_counter() - t, time.process_time() - cpu

    longest = max(tracks, key=lambda k: len(tracks[k]))
    keys = sorted(keyframes[longest])
    middle = next((i for i in sorted(tracks[longest]) if i not in keys and i > keys[0]), keys[0])
    corrected = {**keyframes[longest], middle: tracks[longest][middle]}
    t = time.perf_counter()
    again = propagate_track(n, corrected, flow_at, around=middle)
    correction_s = time.perf_counter() - t
    print(f"one re-propagation after a correction (frames {again.covered.start}-"
          f"{again.covered.stop - 1} of the longest track): {ms(correction_s)}")

    overlaps = [iou(box, tracks[k][i]) for k, r in results.items() for i, box in r.boxes.items()
                if i in tracks[k] and not box.get("keyframe")]
    beyond = sum(1 for k, r in results.items() for i in r.boxes if i not in tracks[k])
    missed = sum(1 for k, r in results.items() for i in tracks[k] if i not in r.boxes)
    looks = sum(len(r.needs_look) for r in results.values())
    print(f"propagated boxes on the object's frames: {len(overlaps)}, mean IoU with the truth "
          f"{statistics.fmean(overlaps) if overlaps else 0:.2f}; truth boxes without one: {missed}; "
          f"boxes where the truth has none: {beyond}; frames marked needs a look: {looks}")
    print(f"whole scene, {len(tracks)} tracks from {sum(len(v) for v in keyframes.values())} "
          f"keyframes, flows cached: {ms(scene_s)} (CPU time {ms(scene_cpu)}: wall time grows "
          "when others share the cores)")
    print(f"scene of {n} frames: {scene_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
