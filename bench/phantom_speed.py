"""Phantom speed at 512 x 512: rendering alone (one process) and a whole set written to disk
(PNG + MP4 + COCO) by two worker processes, as frames per second.

    python bench/phantom_speed.py [--frames 40] [--videos 4]

The goal is >= 20 frames/s on 2 cores for the end-to-end number (the last line).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.phantom import PhantomVideo, generate, speckle_field  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=40, help="frames per video")
    ap.add_argument("--videos", type=int, default=4, help="videos in the end-to-end run")
    ap.add_argument("--size", type=int, default=512)
    args = ap.parse_args()
    size = args.size

    cv2.setNumThreads(1)
    speckle_field(0)  # built once per process; not part of a frame's cost
    video = PhantomVideo.random(0, 1, args.frames, size)
    video.frame(0)
    t, cpu = time.perf_counter(), time.process_time()
    for k in range(args.frames):
        video.frame(k)
    render_fps = args.frames / (time.perf_counter() - t)
    cpu_ms = (time.process_time() - cpu) / args.frames * 1000
    # CPU time per frame does not depend on what else the machine runs; wall time does.
    print(f"render only, 1 process, 1 thread: {render_fps:.1f} frames/s "
          f"({cpu_ms:.1f} ms CPU per frame)")

    with tempfile.TemporaryDirectory() as tmp:
        t = time.perf_counter()
        generate(Path(tmp) / "set", args.videos, args.frames, size, seed=0, workers=2)
        total = args.videos * args.frames
        e2e_fps = total / (time.perf_counter() - t)
    print(f"end to end (PNG + MP4 + COCO, 2 workers, process start-up included): "
          f"{e2e_fps:.1f} frames/s over {total} frames")
    print(f"phantom: {e2e_fps:.0f} fps at {size}x{size}")


if __name__ == "__main__":
    main()
