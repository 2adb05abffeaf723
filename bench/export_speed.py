"""Time of the COCO JSON export of a large version: goal <= 2 s for 100,000 boxes on 20,000 frames.

    python bench/export_speed.py [--frames 20000] [--boxes 100000] [--repeats 3]

Builds a synthetic database in a temporary SQLite file with bulk inserts (100 patients, one
video each, scenes of 20 frames, all reviewed, boxes spread evenly), plans a split by patient
(selection, split and leakage guard: timed and printed apart), then times what is the export
proper: reading frames and boxes, building every part's COCO document and writing the JSON
files (image files are taken as already stored, as they are in the frame store). Median over
``--repeats``. The last line is

    export: N s for 100000 boxes / 20000 frames
"""
from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import tempfile
import time
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from annotator import create_app  # noqa: E402
from annotator.db import db  # noqa: E402
from annotator.models import (  # noqa: E402
    DEFAULT_CLASSES, Box, Frame, LabelClass, Patient, Scene, SceneStatus, Video)


def populate(frames: int, boxes: int, patients: int = 100, scene_len: int = 20) -> None:
    db.session.execute(sa.insert(LabelClass), DEFAULT_CLASSES)
    per_video = frames // patients
    db.session.execute(sa.insert(Patient), [{"id": p + 1, "code": f"P{p + 1:04d}"} for p in range(patients)])
    db.session.execute(sa.insert(Video), [
        {"id": p + 1, "patient_id": p + 1, "source_sha256": f"{p:064d}", "source_name": f"v{p}.mp4",
         "container": "mp4", "codec": "h264", "fps": 20.0, "frame_count": per_video, "width": 512,
         "height": 512, "roi_x": 0, "roi_y": 0, "roi_w": 512, "roi_h": 512} for p in range(patients)])
    scenes, frame_rows = [], []
    for p in range(patients):
        for first in range(0, per_video, scene_len):
            sid = len(scenes) + 1
            scenes.append({"id": sid, "video_id": p + 1, "first_frame": first,
                           "last_frame": min(first + scene_len, per_video) - 1,
                           "status": SceneStatus.reviewed, "review_comment": ""})
            for i in range(first, min(first + scene_len, per_video)):
                fid = len(frame_rows) + 1
                frame_rows.append({"id": fid, "video_id": p + 1, "scene_id": sid, "frame_index": i,
                                   "timestamp_ms": 50.0 * i,
                                   "sha256": hashlib.sha256(str(fid).encode()).hexdigest(),
                                   "width": 512, "height": 512, "reviewed_empty": False})
    db.session.execute(sa.insert(Scene), scenes)
    db.session.execute(sa.insert(Frame), frame_rows)
    n_frames = len(frame_rows)
    db.session.execute(sa.insert(Box), [
        {"frame_id": b % n_frames + 1, "class_id": 1 + b % 2, "x": float(10 + b % 300),
         "y": float(20 + b % 250), "w": 40.0, "h": 30.0, "source": "manual", "row_version": 1}
        for b in range(boxes)])
    db.session.commit()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20000)
    parser.add_argument("--boxes", type=int, default=100000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)

    from annotator.services.coco_export import build_coco, dump
    from annotator.services.dataset_split import Selection, SplitSpec, plan_version

    with tempfile.TemporaryDirectory() as tmp:
        app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp}/bench.sqlite",
                          "SONOLABEL_DATA_DIR": f"{tmp}/data", "SECRET_KEY": "bench"})
        with app.app_context():
            db.create_all()
            t0 = time.perf_counter()
            populate(args.frames, args.boxes)
            print(f"populated in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            plan = plan_version(Selection(), SplitSpec())
            print(f"selection, split and leakage guard: {time.perf_counter() - t0:.2f} s")
            times = []
            for r in range(args.repeats):
                db.session.expire_all()
                out = Path(tmp) / f"out{r}"
                t0 = time.perf_counter()
                docs = build_coco(plan.frames, plan.class_ids)
                for part, doc in docs.items():
                    (out / part).mkdir(parents=True)
                    data, _ = dump(doc, {"version": "bench", "split": part})
                    (out / part / "annotations.json").write_bytes(data)
                times.append(time.perf_counter() - t0)
            n_boxes = sum(len(d["annotations"]) for d in docs.values())
            n_images = sum(len(d["images"]) for d in docs.values())
            print("runs: " + ", ".join(f"{t:.2f}" for t in times) + " s")
            db.session.remove()
            db.engine.dispose()
    print(f"export: {statistics.median(times):.2f} s for {n_boxes} boxes / {n_images} frames")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
