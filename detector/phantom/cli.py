"""``python -m detector phantom --out DIR --videos N --frames M --size 512 --seed S``."""
from __future__ import annotations

import argparse
import os

from ..cli import CliParser, fail, positive
from .writer import generate


def build_parser() -> argparse.ArgumentParser:
    p = CliParser(prog="python -m detector phantom",
                  description="Generate synthetic liver ultrasound sweeps with exact COCO boxes.")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--videos", type=positive(int), default=1, help="number of videos")
    p.add_argument("--frames", type=positive(int), default=60, help="frames per video")
    p.add_argument("--size", type=positive(int), default=512, help="square image size, px")
    p.add_argument("--seed", type=int, default=0, help="random seed (reproducible output)")
    p.add_argument("--probe", choices=["convex", "linear"], default="convex")
    p.add_argument("--scene-len", type=positive(int), default=5,
                   help="frames per scene (scene_id runs)")
    p.add_argument("--fps", type=positive(float), default=15.0, help="video frame rate")
    p.add_argument("--min-box-mm", type=float, default=3.0,
                   help="smallest visible width and height of a labelled object, mm")
    p.add_argument("--workers", type=positive(int), default=min(2, os.cpu_count() or 1),
                   help="parallel processes (one video each)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing phantom set in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 32 <= args.size <= 4096:
        return fail("--size must be between 32 and 4096")
    if args.min_box_mm < 0:
        return fail("--min-box-mm must not be negative")
    try:
        path = generate(args.out, args.videos, args.frames, args.size, args.seed,
                        probe=args.probe, scene_len=args.scene_len, fps=args.fps,
                        min_box_mm=args.min_box_mm, workers=args.workers,
                        progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        return fail(str(exc))
    import json

    coco = json.loads(path.read_text())
    print(f"wrote {len(coco['images'])} frames of {args.videos} video(s), "
          f"{len(coco['annotations'])} boxes, codec {coco['info']['codec']}: {path}")
    return 0
