"""Import speed of the real cine: import + scene extraction time / bare OpenCV decode time.

Runs in temporary instances (SQLite + a temporary data directory under ``--data-root``),
interleaving a bare ``cv2.VideoCapture`` read loop over the same file with full imports
(``--scenes auto``), and reports medians over ``--repeats`` rounds. Goals: ratio <= 1.5 and
>= 10x faster than real time.

Every import writes into a fresh store, and nothing is deleted until the end: ext4 without
a journal skips inodes freed in the last minutes when it allocates new ones, so deleting each
run's 454 files would make the next run's file creation many times slower than an import
ever meets in use. The script prints what creating an empty file costs in the data root at
its start: about 0.02 ms of CPU when nothing was deleted there lately; when it reports much
more (a run of this script or of the tests minutes before), wait a few minutes and re-run.

    python bench/import_speed.py [--file PATH] [--repeats 3] [--data-root DIR]
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


def one_import(path: Path, data_root: Path) -> tuple[float, float, dict]:
    from annotator import create_app
    from annotator.db import db
    from annotator.services.video_import import import_video

    tmp = tempfile.mkdtemp(dir=data_root)  # removed with the data root at the end
    app = create_app({"TESTING": True, "SECRET_KEY": "bench",
                      "SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.sqlite",
                      "SONOLABEL_DATA_DIR": f"{tmp}/data"})
    with app.app_context():
        db.create_all()
        start, cpu = time.perf_counter(), time.process_time()
        result = import_video(path, "BENCH-1", scenes="auto")
        elapsed, cpu = time.perf_counter() - start, time.process_time() - cpu
        summary = result.as_json() | {"fps": result.video.fps}
        db.session.remove()
        db.engine.dispose()
    return elapsed, cpu, summary


def file_creation_ms(data_root: Path, n: int = 200) -> float:
    """CPU milliseconds to create (and close) one empty file in the data root."""
    tmp = tempfile.mkdtemp(dir=data_root)
    cpu = time.process_time()
    for i in range(n):
        os.close(os.open(os.path.join(tmp, str(i)), os.O_CREAT | os.O_WRONLY, 0o644))
    return (time.process_time() - cpu) / n * 1e3


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", type=Path, default=DEFAULT_FILE)
    parser.add_argument("--repeats", type=int, default=3)
    # On the repository's disk by default, like an instance folder (some hosts mount /tmp in RAM).
    parser.add_argument("--data-root", type=Path, default=ROOT / "bench" / "out")
    args = parser.parse_args(argv)
    if not args.file.exists():
        print(f"error: {args.file} is absent (the real cine lives in ../shared/data)", file=sys.stderr)
        return 2
    args.data_root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=args.data_root) as root:
        return measure(args.file, Path(root), args.repeats)


def measure(path: Path, data_root: Path, repeats: int) -> int:
    creation = file_creation_ms(data_root)
    one_import(path, data_root)  # warm-up: imports, FFmpeg initialisation, page cache
    decodes, decode_cpu, imports, import_cpu, n, summary = [], [], [], [], 0, {}
    for _ in range(repeats):
        t, c, n = bare_decode(path)
        decodes.append(t)
        decode_cpu.append(c)
        t, c, summary = one_import(path, data_root)
        imports.append(t)
        import_cpu.append(c)
    decode, imp = statistics.median(decodes), statistics.median(imports)
    duration = n / summary["fps"]
    print(f"file: {path.name}: {n} frames, {duration:.1f} s of video at {summary['fps']:g} fps")
    print(f"result: {summary['frames']} frames, {summary['scenes']} scenes, roi {summary['roi']}")
    print(f"data root: {data_root.parent} (creating an empty file there: {creation:.3f} ms of CPU)")
    print("bare decode s: " + ", ".join(f"{t:.3f}" for t in decodes) + f" (median {decode:.3f}, "
          f"CPU {statistics.median(decode_cpu):.3f} s on {os.cpu_count()} cores)")
    print("import + scenes s: " + ", ".join(f"{t:.3f}" for t in imports) + f" (median {imp:.3f}, "
          f"CPU {statistics.median(import_cpu):.3f} s)")
    print(f"ratio import/decode: {imp / decode:.2f}")
    print(f"speed vs real time: {duration / imp:.1f}x")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
