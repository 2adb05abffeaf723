"""Make docs/phantom_strip.png: six frames of one phantom sweep with their ground-truth boxes
(tumour red, vessel cyan), for the README.

    python bench/phantom_strip.py [--seed 2] [--video 2] [--out docs/phantom_strip.png]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from detector.phantom import TUMOR, PhantomVideo  # noqa: E402

COLOURS = {TUMOR: (242, 200, 94), 2: (53, 57, 229)}  # BGR of the class table: tumour #5ec8f2, vessel #e53935


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--video", type=int, default=2)
    ap.add_argument("--frames", type=int, default=40, help="length of the sweep")
    ap.add_argument("--tile", type=int, default=320, help="width of one frame in the strip, px")
    ap.add_argument("--out", default=str(ROOT / "docs" / "phantom_strip.png"))
    args = ap.parse_args()

    video = PhantomVideo.random(args.seed, args.video, args.frames, 512)
    rows, cols = np.nonzero(video.geom.sector)
    crop = (slice(rows.min(), rows.max() + 1), slice(cols.min(), cols.max() + 1))
    tiles = []
    for k in np.linspace(0, args.frames - 1, 6).round().astype(int):
        image, boxes, _ = video.frame(int(k))
        bgr = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        for b in boxes:
            x, y, w, h = b["bbox"]
            cv2.rectangle(bgr, (x, y), (x + w - 1, y + h - 1), COLOURS[b["category_id"]], 2)
        bgr = bgr[crop]
        scale = args.tile / bgr.shape[1]
        bgr = cv2.resize(bgr, (args.tile, int(round(bgr.shape[0] * scale))),
                         interpolation=cv2.INTER_AREA)
        cv2.putText(bgr, f"frame {k}", (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1,
                    cv2.LINE_AA)
        tiles.append(bgr)
    strip = np.vstack([np.hstack(tiles[:3]), np.hstack(tiles[3:])])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), strip, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    print(f"{out}: {strip.shape[1]}x{strip.shape[0]}, {out.stat().st_size // 1024} KB")


if __name__ == "__main__":
    main()
