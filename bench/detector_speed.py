"""Frames per second of the single-frame and the streaming two-frame detector on this CPU.

    python bench/detector_speed.py [--size 512] [--frames 40] [--threads 2] [--video PATH]
                                   [--min-stride 8]

Both models are built with the bundled EfficientNet-Lite0 ImageNet body and untrained heads
(speed does not depend on training: proposal and detection counts are capped), saved, and run
through :class:`detector.predict.Predictor` exactly as a user would, on the same sequence of
640x480 frames (a synthetic moving texture, or the first frames of ``--video``). The two
models are timed in alternating rounds so that load from other processes falls on both
alike; the median time per frame is reported. The last three lines are

    single: N fps
    two_frame: N fps
    ratio two_frame/single: R    (time per frame, two_frame over single)
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from detector.checkpoint import save_model  # noqa: E402
from detector.flow import compute_flow  # noqa: E402
from detector.model import ModelConfig, build_model  # noqa: E402
from detector.predict import Predictor  # noqa: E402
from detector.recipe import MIN_STRIDE, MIN_STRIDES  # noqa: E402

CATEGORIES = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def synthetic_frames(count: int, w: int = 640, h: int = 480) -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    big = cv2.GaussianBlur(rng.integers(0, 256, (h + 4 * count, w + 4 * count))
                           .astype(np.uint8), (0, 0), 2.5)
    big = cv2.normalize(big, None, 0, 255, cv2.NORM_MINMAX)
    return [np.ascontiguousarray(big[2 * i:2 * i + h, 3 * i:3 * i + w]) for i in range(count)]


def video_frames(path: str, count: int) -> list[np.ndarray]:
    capture = cv2.VideoCapture(path)
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY))
    capture.release()
    if not frames:
        raise SystemExit(f"error: no frames read from {path}")
    return frames


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--frames", type=int, default=40, help="timed frames per model")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--video", help="take frames from this video instead")
    parser.add_argument("--min-stride", type=int, choices=MIN_STRIDES, default=MIN_STRIDE,
                        help="the finest feature map (4: the level for objects of a few pixels)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cv2.setNumThreads(1)

    rounds, per_round = 4, max(1, args.frames // 4)
    frames = video_frames(args.video, per_round + 3) if args.video else \
        synthetic_frames(per_round + 3)
    predictors = {}
    with tempfile.TemporaryDirectory() as tmp:
        for arch in ("single", "two_frame"):
            torch.manual_seed(0)
            model = build_model(ModelConfig(arch=arch, size=args.size, min_stride=args.min_stride))
            save_model(Path(tmp) / f"{arch}.pt", model, CATEGORIES)
            predictors[arch] = Predictor(Path(tmp) / f"{arch}.pt", score_threshold=0.05)

    times: dict[str, list[float]] = {arch: [] for arch in predictors}
    with torch.inference_mode():
        for arch, predictor in predictors.items():  # warm-up
            for frame in frames[:3]:
                predictor.step(frame)
        for _ in range(rounds):
            for arch, predictor in predictors.items():
                predictor.reset()
                predictor.step(frames[0])  # the first frame of a video has no flow to compute
                for frame in frames[1:per_round + 1]:
                    start = time.perf_counter()
                    predictor.step(frame)
                    times[arch].append(time.perf_counter() - start)

    small = [cv2.resize(f, (args.size // 2, args.size // 2 * f.shape[0] // f.shape[1]))
             for f in frames[:2]]
    flow_ms = []  # 3-4 ms a pair on the machine where the FAST preset was chosen
    for _ in range(20):
        start = time.perf_counter()
        compute_flow(small[1], small[0], args.size // 2)
        flow_ms.append(1000 * (time.perf_counter() - start))

    median = {arch: statistics.median(t) for arch, t in times.items()}
    print(f"input {args.size} px from {frames[0].shape[1]}x{frames[0].shape[0]} frames, "
          f"finest map stride {args.min_stride}, "
          f"{args.threads} threads, {len(times['single'])} timed frames per model")
    for arch, t in times.items():
        print(f"{arch}: median {1000 * median[arch]:.1f} ms, "
              f"p90 {1000 * float(np.percentile(t, 90)):.1f} ms per frame")
    print(f"DIS flow (FAST, {args.size // 2} px): median {statistics.median(flow_ms):.1f} ms")
    print(f"single: {1 / median['single']:.2f} fps")
    print(f"two_frame: {1 / median['two_frame']:.2f} fps")
    print(f"ratio two_frame/single: {median['two_frame'] / median['single']:.3f}")


if __name__ == "__main__":
    main()
