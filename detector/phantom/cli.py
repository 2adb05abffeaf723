"""``python -m detector phantom --out DIR --videos N --frames M --size 512 --seed S``."""
from __future__ import annotations

import argparse
import os
import sys

from .writer import generate


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line on stderr, exit code 2
        print(f"error: {message}", file=sys.stderr)
        raise SystemExit(2)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m detector phantom",
                description="Generate synthetic liver ultrasound sweeps with exact COCO boxes.")
    p.add_argument("--out", required=True, help="output folder (must be new or empty)")
    p.add_argument("--videos", type=_positive(int), default=1, help="number of videos")
    p.add_argument("--frames", type=_positive(int), default=60, help="frames per video")
    p.add_argument("--size", type=_positive(int), default=512, help="square image size, px")
    p.add_argument("--seed", type=int, default=0, help="random seed (reproducible output)")
    p.add_argument("--probe", choices=["convex", "linear"], default="convex")
    p.add_argument("--scene-len", type=_positive(int), default=5,
                   help="frames per scene (scene_id runs)")
    p.add_argument("--fps", type=_positive(float), default=15.0, help="video frame rate")
    p.add_argument("--min-box-mm", type=float, default=3.0,
                   help="smallest visible width and height of a labelled object, mm")
    p.add_argument("--workers", type=_positive(int), default=min(2, os.cpu_count() or 1),
                   help="parallel processes (one video each)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing phantom set in --out")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not 32 <= args.size <= 4096:
        print("error: --size must be between 32 and 4096", file=sys.stderr)
        return 2
    if args.min_box_mm < 0:
        print("error: --min-box-mm must not be negative", file=sys.stderr)
        return 2
    try:
        path = generate(args.out, args.videos, args.frames, args.size, args.seed,
                        probe=args.probe, scene_len=args.scene_len, fps=args.fps,
                        min_box_mm=args.min_box_mm, workers=args.workers,
                        progress=not args.quiet, overwrite=args.overwrite)
    except (FileExistsError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    import json

    coco = json.loads(path.read_text())
    print(f"wrote {len(coco['images'])} frames of {args.videos} video(s), "
          f"{len(coco['annotations'])} boxes, codec {coco['info']['codec']}: {path}")
    return 0
