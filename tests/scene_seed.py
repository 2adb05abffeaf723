"""A small labelled scene written straight into the database and the frame store, for the
workspace and API tests (no video import involved)."""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, Patient, Scene, SceneStatus, Video


@dataclass
class Seeded:
    scene_id: int
    video_id: int
    frame_ids: list[int]
    prelabel_ids: list[int] = field(default_factory=list)
    width: int = 0
    height: int = 0


def _frame_png(i: int, width: int, height: int) -> bytes:
    """A speckled fan of grey with a dark round lesion that drifts a little from frame to frame."""
    rng = np.random.default_rng(i)
    yy, xx = np.mgrid[0:height, 0:width]
    base = 90 + 60 * np.exp(-((xx - width / 2) ** 2) / (2 * (width / 3) ** 2)) * (1 - yy / (1.6 * height))
    lesion = ((xx - (0.4 * width + 2 * i)) ** 2 + (yy - 0.5 * height) ** 2) < (0.12 * height) ** 2
    vessel = np.abs(yy - (0.3 * height + 0.15 * xx)) < 0.03 * height
    img = base * (1 - 0.65 * lesion) * (1 - 0.7 * vessel) + rng.normal(0, 14, (height, width))
    buf = io.BytesIO()
    Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def seed_scene(app, frames: int = 4, width: int = 160, height: int = 120, prelabels: int = 0,
               patient: str = "P001", status: SceneStatus = SceneStatus.new,
               model_version: str = "two-frame-v3") -> Seeded:
    """A video with one scene of ``frames`` frames; ``prelabels`` model boxes on the first frame
    with scores 0.9, 0.3, 0.8, 0.2, ... ."""
    data_dir = Path(app.config["SONOLABEL_DATA_DIR"])
    with app.app_context():
        pat = db.session.scalar(db.select(Patient).filter_by(code=patient)) or Patient(code=patient)
        n_videos = db.session.scalar(db.select(db.func.count(Video.id)))
        video = Video(patient=pat, source_sha256=hashlib.sha256(f"{patient}{n_videos}".encode()).hexdigest(),
                      source_name=f"clip{n_videos}.mp4", container="mp4", codec="h264", fps=10.0,
                      frame_count=frames, width=width, height=height, roi_x=0, roi_y=0, roi_w=width,
                      roi_h=height, deidentified=True)
        scene = Scene(video=video, first_frame=0, last_frame=frames - 1, status=status)
        db.session.add_all([pat, video, scene])
        rows = []
        for i in range(frames):
            png = _frame_png(i + 100 * n_videos, width, height)
            sha = hashlib.sha256(png).hexdigest()
            frame = Frame(video=video, scene=scene, frame_index=i, timestamp_ms=100.0 * i, sha256=sha,
                          width=width, height=height)
            path = data_dir / frame.relpath
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(png)
            rows.append(frame)
        db.session.add_all(rows)
        db.session.flush()
        boxes = []
        for k in range(prelabels):
            score = [0.9, 0.3, 0.8, 0.2, 0.7, 0.1][k % 6]
            boxes.append(Box(frame=rows[0], class_id=1 + k % 2, x=10 + 30 * k % (width - 40), y=10 + 20 * k % (height - 40),
                             w=24, h=20, source=BoxSource.model, score=score, model_version=model_version))
        db.session.add_all(boxes)
        db.session.commit()
        return Seeded(scene.id, video.id, [f.id for f in rows], [b.id for b in boxes], width, height)
