"""Track propagation speed on a 100-frame 512 px phantom sweep (2 cores by default).

    python bench/propagate_speed.py [--frames 100] [--size 512] [--threads 2] [--every 25]

Times, each printed on its own line:

* the flow fields of the scene, computed once (DIS MEDIUM both ways per pair of frames, what
  :func:`annotator.services.propagate.frame_flow` caches);
* one P step: the boxes of one frame carried to the next, with the pair's flow cached (a warm
  P) and without (the first P on a frame pair), algorithm only (no database, no HTTP);
* one re-propagation after a correction (the spans around one corrected keyframe);
* the whole scene: every object of the sweep propagated as a track from its keyframes (its
  first and last frame in the truth, and every ``--every`` frames between), flows cached;
* one P step through HTTP: the request the workspace sends for key P
  (``POST /scenes/<id>/propagate``, one frame on) answered by the app (Flask test client, SQLite,
  the frames imported from a phantom MP4 through the import service), each frame pair's first
  P (its flow computed, frames read from their PNGs) and the same P again (flow cached).

Also printed: the mean IoU of the propagated boxes with the phantom's exact boxes, so a speed
gain that breaks the tracks shows, and where the propagated boxes lie: on their own object
(the truth has it on that frame), on another object of the class (the phantom's vessel boxes
are per connected region, named after the branch covering most of it, so a vessel box carried
on often lands on the same vessel under another name), or over tissue where the phantom has
no object of the class covering half the box (stray: an object that left the plane, followed). The goal is at most 1 s for the whole scene with cached
flows, and under 100 ms for a P step. The last line is ``scene of 100 frames: N ms``.
"""
from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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


def covered(box: dict, truth: dict) -> float:
    """The share of ``box`` inside ``truth``."""
    ix = max(0.0, min(box["x"] + box["w"], truth["x"] + truth["w"]) - max(box["x"], truth["x"]))
    iy = max(0.0, min(box["y"] + box["h"], truth["y"] + truth["h"]) - max(box["y"], truth["y"]))
    return ix * iy / max(box["w"] * box["h"], 1e-9)


def p_step_http(frames: int, size: int, seed: int) -> tuple[list[float], list[float], int]:
    """Server times (s) of key P's request: each frame pair's first P, and the same P again
    with the pair's flow cached; and the number of boxes carried per step."""
    sys.path.insert(0, str(ROOT / "tests"))
    from helpers import PASSWORD, make_live_app, phantom_scene

    from annotator.db import db
    from annotator.models import Box, BoxSource
    from annotator.services.flow_cache import FLOWS

    with tempfile.TemporaryDirectory() as tmp:
        app = make_live_app(Path(tmp))
        scene = phantom_scene(app, Path(tmp) / "phantom", frames=frames, size=size, seed=seed)
        with app.app_context():
            db.session.add_all(Box(frame_id=scene.frame_ids[0], class_id=b["category_id"],
                                   source=BoxSource.manual, track_id=k + 1,
                                   **{g: b[g] for g in ("x", "y", "w", "h")})
                               for k, b in enumerate(scene.truth[0]))
            db.session.commit()
        client = app.test_client()
        csrf = re.search(r'name="csrf_token"[^>]*value="([^"]+)"',
                         client.get("/login").get_data(as_text=True)).group(1)
        client.post("/login", data={"username": "annotator", "password": PASSWORD, "csrf_token": csrf})
        url = f"/scenes/{scene.scene_id}/propagate"

        def step(frame_id: int) -> float:
            t = time.perf_counter()
            resp = client.post(url, json={"frame_id": frame_id, "frames": 1},
                               headers={"X-CSRFToken": csrf, "Accept": "application/json"})
            spent = time.perf_counter() - t
            if resp.status_code != 200:
                raise SystemExit(f"P answered {resp.status_code}: {resp.get_json()}")
            return spent

        FLOWS.clear()
        cold = [step(f) for f in scene.frame_ids[:-1]]  # each pair's flow computed once, here
        warm = [step(f) for f in scene.frame_ids[:-1]]  # the same steps again: flows cached
        with app.app_context():
            db.engine.dispose()
        return cold, warm, len(scene.truth[0])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--every", type=int, default=25, help="frames between keyframes")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--http-frames", type=int, default=10,
                    help="frames of the imported phantom scene the P requests run on (0: skip)")
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
    beyond = [(k, i, box) for k, r in results.items() for i, box in r.boxes.items() if i not in tracks[k]]
    of_class = [[(c, t) for (c, _), tr in tracks.items() for j, t in tr.items() if j == i]
                for i in range(n)]
    stray = sum(1 for (c, _), i, box in beyond
                if max((covered(box, t) for cc, t in of_class[i] if cc == c), default=0.0) < 0.5)
    missed = sum(1 for k, r in results.items() for i in tracks[k] if i not in r.boxes)
    looks = sum(len(r.needs_look) for r in results.values())
    print(f"propagated boxes on the object's frames: {len(overlaps)}, mean IoU with the truth "
          f"{statistics.fmean(overlaps) if overlaps else 0:.2f}; truth boxes without one: {missed}; "
          f"frames marked needs a look: {looks}")
    print(f"propagated boxes where the truth has not the object: {len(beyond)}, on another object of "
          f"its class: {len(beyond) - stray}, over tissue (stray): {stray}")
    if args.http_frames > 1:
        cold, warm, carried = p_step_http(args.http_frames, args.size, args.seed)
        print(f"one P step through HTTP (POST /scenes/<id>/propagate, {carried} boxes, "
              f"{len(cold)} steps): median {ms(statistics.median(cold))} (max {ms(max(cold))}) "
              f"for a pair's first P, {ms(statistics.median(warm))} (max {ms(max(warm))}) "
              "with its flow cached")
    print(f"whole scene, {len(tracks)} tracks from {sum(len(v) for v in keyframes.values())} "
          f"keyframes, flows cached: {ms(scene_s)} (CPU time {ms(scene_cpu)}: wall time grows "
          "when others share the cores)")
    print(f"scene of {n} frames: {scene_s * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
