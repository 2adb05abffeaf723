"""Import speed of the real cine: import + scene extraction time / bare OpenCV decode time.

Runs in temporary instances (SQLite + a temporary data directory), interleaving a bare
``cv2.VideoCapture`` read loop over the same file with full imports (``--scenes auto``), and
reports medians over ``--repeats`` rounds. Goals: ratio <= 1.5 and >= 10x faster than real time.

    python bench/import_speed.py [--file PATH] [--repeats 3]
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DEFAULT_FILE = ROOT.parent / "shared" / "data" / "cine" / "abdominal-sample2-19fps.mp4"


def bare_decode(path: Path) -> tuple[float, float, int]:
    start, cpu = time.perf_counter(), time.process_time()
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return time.perf_counter() - start, time.process_time() - cpu, n


def one_import(path: Path, png_level: int) -> tuple[float, float, dict]:
    from annotator import create_app
    from annotator.db import db
    from annotator.services.video_import import import_video

    # Under bench/out (git-ignored), on the repository's disk: some hosts slow /tmp writes ~10x.
    out = ROOT / "bench" / "out"
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out) as tmp:
        app = create_app({"TESTING": True, "SECRET_KEY": "bench",
                          "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.sqlite",
                          "SONOLABEL_DATA_DIR": f"{tmp}/data",
                          "SONOLABEL_PNG_LEVEL": png_level})
        with app.app_context():
            db.create_all()
            start, cpu = time.perf_counter(), time.process_time()
            result = import_video(path, "BENCH-1", scenes="auto")
            elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
            summary = result.as_json() | {"fps": result.video.fps}
            db.session.remove()
            db.engine.dispose()
    return elapsed, cpu, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--png-level", type=int, default=1,
                        help="PNG compression level (the app's default is 1; 0 stores raw)")
    args = parser.parse_args(argv)
    if not args.file.exists():
        print(f"error: {args.file} is absent (the real cine lives in ../shared/data)", file=sys.stderr)
        return 2
    one_import(args.file, args.png_level)  # warm-up: imports, OpenCV/FFmpeg initialisation, page cache
    decodes, imports, decode_cpu, import_cpu, summary, n = [], [], [], [], {}, 0
    for _ in range(args.repeats):
        t, c, n = bare_decode(args.file)
        decodes.append(t)
        decode_cpu.append(c)
        t, c, summary = one_import(args.file, args.png_level)
        imports.append(t)
        import_cpu.append(c)
    decode, imp = statistics.median(decodes), statistics.median(imports)
    duration = n / summary["fps"]
    print(f"file: {args.file.name}: {n} frames, {duration:.1f} s of video at {summary['fps']:g} fps")
    print(f"PNG compression level {args.png_level}")
    print(f"result: {summary['frames']} frames, {summary['scenes']} scenes, roi {summary['roi']}")
    print("bare decode s: " + ", ".join(f"{t:.3f}" for t in decodes) + f" (median {decode:.3f})")
    print("import + scenes s: " + ", ".join(f"{t:.3f}" for t in imports) + f" (median {imp:.3f})")
    print(f"CPU s (all threads): decode {statistics.median(decode_cpu):.3f}, "
          f"import {statistics.median(import_cpu):.3f} on {os.cpu_count()} cores")
    print(f"ratio import/decode: {imp / decode:.2f}")
    print(f"speed vs real time: {duration / imp:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
