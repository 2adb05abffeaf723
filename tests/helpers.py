"""Helpers shared by the tests; the fixtures that use them are in conftest.py.

Test files import what they need from here (``from helpers import seed_scene``), never from
conftest.py or from one another.
"""
from __future__ import annotations

import functools
import hashlib
import io
import json
import shutil
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import pytest
import sqlalchemy as sa
from PIL import Image
from werkzeug.security import generate_password_hash

from annotator import create_app
from annotator.db import db
from annotator.models import (
    DEFAULT_CLASSES,
    Box,
    BoxSource,
    DatasetVersion,
    Frame,
    JobStatus,
    LabelClass,
    ModelVersion,
    Patient,
    Role,
    Scene,
    SceneStatus,
    User,
    Video,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
PASSWORD = "correct horse battery"


# --- real data, users and a served app ---------------------------------------------------------

def shared_file(relpath: str) -> Path:
    """A file from ../shared/data, or skip the test with the reason."""
    path = SHARED_DATA / relpath
    if not path.exists():
        pytest.skip(f"real data {relpath} absent (../shared/data is not beside this checkout)")
    return path


@functools.cache
def password_hash() -> str:
    """``PASSWORD`` hashed once per run, with one PBKDF2 round: the app's own hashing (scrypt)
    is slow on purpose, about 70 ms for every log-in, and the tests log in hundreds of times.
    Tests about the app's hashing make their hashes through the app."""
    return generate_password_hash(PASSWORD, method="pbkdf2:sha256:1")


def populate(app) -> None:
    """Tables, the label classes and a user of every role (named after the role)."""
    with app.app_context():
        db.create_all()
        # The migration seeds the classes too; create_all() is the fast path for tests.
        db.session.add_all(LabelClass(**spec) for spec in DEFAULT_CLASSES)
        for role in Role:
            db.session.add(User(username=role.value, role=role, password_hash=password_hash()))
        db.session.commit()


def make_live_app(tmp_path: Path, **config):
    """An app over a SQLite file with the classes and a user of every role."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path / 'live.sqlite'}",
                      "SONOLABEL_DATA_DIR": str(tmp_path / "data"), "SECRET_KEY": "browser-test",
                      **config})
    populate(app)
    return app


@contextmanager
def served(app) -> Iterator:
    """Serve ``app`` from a thread on a free loopback port; sets ``app.base_url``."""
    import threading

    from werkzeug.serving import make_server

    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    app.base_url = f"http://127.0.0.1:{server.server_port}"
    try:
        yield app
    finally:
        server.shutdown()
        thread.join(5)
        with app.app_context():
            db.engine.dispose()


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The browser tests' marks: ``pytestmark = BROWSER``.
BROWSER = [pytest.mark.browser,
           pytest.mark.skipif(not Path(CHROMIUM).exists(),
                              reason="Debian's chromium is not installed (apt-get install chromium)")]
WORKSPACE_READY = "#ws[data-ready='1']"


def canvas_point(page, x: float, y: float) -> tuple[float, float]:
    """Page coordinates of frame pixel (x, y) under the workspace's current zoom and pan."""
    return tuple(page.evaluate(
        """([x, y]) => { const r = document.getElementById('canvas').getBoundingClientRect();
            const v = window.sonolabel.view; return [r.left + v.ox + x * v.scale, r.top + v.oy + y * v.scale]; }""",
        [x, y]))


def settle(page) -> None:
    """Wait until the workspace has no request in flight."""
    # Waits are written as functions: Playwright evals a bare expression, which the page's
    # Content-Security-Policy (no 'unsafe-eval') refuses.
    page.wait_for_function("() => window.sonolabel.pending === 0")


def drag(page, start, end) -> None:
    """Drag the mouse between two frame pixels, as a hand would (in steps), then settle."""
    page.mouse.move(*canvas_point(page, *start))
    page.mouse.down()
    for t in (0.3, 0.6, 1.0):
        page.mouse.move(*canvas_point(page, start[0] + t * (end[0] - start[0]),
                                      start[1] + t * (end[1] - start[1])))
    page.mouse.up()
    settle(page)


def draw_box(page, b: dict) -> None:
    """Draw box ``b`` (x, y, w, h in frame pixels) with the mouse."""
    drag(page, (b["x"], b["y"]), (b["x"] + b["w"], b["y"] + b["h"]))


def go_to_frame(page, i: int) -> None:
    """Open frame ``i`` of the scene from the timeline strip."""
    page.click(f"#timeline span:nth-child({i + 1})")
    page.wait_for_function("(i) => window.sonolabel.cur === i", arg=i)


def logged_in_page(browser, app, role: str, path: str, ready: str):
    """A new browser page logged in as ``role`` on ``path`` once ``ready`` shows; ``page.errors``
    collects script errors and what the Content-Security-Policy blocked (only the console says)."""
    page = browser.new_context(viewport={"width": 1440, "height": 860}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda msg: errors.append(msg.text) if "Content Security Policy" in msg.text else None)
    page.errors = errors
    page.goto(f"{app.base_url}/login?next={path}")
    page.fill("input[name=username]", role)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector(ready)
    return page


# --- a small labelled scene written straight into the database and the frame store ----------

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


# --- job set-up: a labelled scene frozen into a dataset version, an untrained model ----------

def lesion_box(i: int, width: int, height: int) -> dict[str, float]:
    """Where seed_scene draws frame i's lesion (a disc drifting 2 px a frame), as a box."""
    r = 0.12 * height
    cx, cy = 0.4 * width + 2 * i, 0.5 * height
    return {"x": round(cx - r, 1), "y": round(cy - r, 1), "w": round(2 * r, 1), "h": round(2 * r, 1)}


def labelled_scene(app, frames: int = 4, width: int = 160, height: int = 120, patient: str = "P001",
                   status: SceneStatus = SceneStatus.new):
    """A seeded scene with a manual tumour box on every frame."""
    seeded = seed_scene(app, frames=frames, width=width, height=height, patient=patient, status=status)
    with app.app_context():
        for i, frame_id in enumerate(seeded.frame_ids):
            db.session.add(Box(frame_id=frame_id, class_id=1, source=BoxSource.manual,
                               **lesion_box(i, width, height)))
        db.session.commit()
    return seeded


def tiny_version(app, name: str = "tiny", **kw):
    """A one-part (train) dataset version of a labelled scene; returns (seeded, version id)."""
    from annotator.services.dataset_create import create_version
    from annotator.services.dataset_split import Selection, SplitSpec

    seeded = labelled_scene(app, **kw)
    with app.app_context():
        version = create_version(name, Selection(statuses=()), SplitSpec(ratios=(1.0, 0.0, 0.0)))
        return seeded, version.id


def retrain_two_patients(app) -> int:
    """Run a retrain job at once (1 epoch at 64 px, ``single``) on a version of two labelled
    patients split half train, half validation; returns the finished job's id."""
    from annotator.services.dataset_create import create_version
    from annotator.services.dataset_split import Selection, SplitSpec
    from annotator.services.job_runner import start_job

    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    labelled_scene(app, patient="P001")
    labelled_scene(app, patient="P002")
    with app.app_context():
        create_version("two", Selection(statuses=()), SplitSpec(ratios=(0.5, 0.5, 0.0)))
        job = start_job("retrain", {"dataset": "two", "model": "single", "epochs": "1", "size": "64"})
        assert job.status == JobStatus.succeeded, job.error
        return job.id


def untrained_model(app, kind: str = "two_frame", size: int = 64, active: bool = True) -> tuple[int, str]:
    """An untrained detector saved and registered as a model version; returns (id, name)."""
    import torch

    from detector.checkpoint import save_model
    from detector.model import ModelConfig, build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(arch=kind, num_classes=3, size=size), load_backbone_weights=False)
    categories = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]
    with app.app_context():
        version = ModelVersion(name=f"pending-{kind}", kind=kind, config={"size": size}, metrics={},
                               file_sha256="0" * 64, active=active)
        db.session.add(version)
        db.session.flush()
        version.name = f"{kind}-v{version.id}"
        folder = Path(app.config["SONOLABEL_DATA_DIR"]) / "models" / str(version.id)
        folder.mkdir(parents=True)
        save_model(folder / "model.pt", model, categories)
        version.file_sha256 = hashlib.sha256((folder / "model.pt").read_bytes()).hexdigest()
        db.session.commit()
        return version.id, version.name


# --- videos, frames and boxes as rows, with tiny PNGs in the data directory ------------------

_counter = iter(range(1, 10**9))


def write_png(app, image: np.ndarray) -> tuple[str, int, int]:
    """Store ``image`` as the frame store would; its SHA-256, width, height."""
    png = cv2.imencode(".png", image)[1].tobytes()
    sha = hashlib.sha256(png).hexdigest()
    path = Path(app.config["SONOLABEL_DATA_DIR"]) / "frames" / sha[:2] / f"{sha}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return sha, image.shape[1], image.shape[0]


def noise(width: int = 64, height: int = 48) -> np.ndarray:
    return np.random.default_rng(next(_counter)).integers(0, 255, (height, width), dtype=np.uint8)


def make_video(app, patient: str, scenes: list[str], frames_per_scene: int = 3,
               width: int = 64, height: int = 48, images: list[np.ndarray] | None = None) -> int:
    """A video of ``patient`` with one scene per status in ``scenes``; its id. Frame indices
    run 0, 1, 2, ... over the scenes in order; every frame has distinct content unless
    ``images`` gives them."""
    patient_row = db.session.scalar(sa.select(Patient).filter_by(code=patient)) or Patient(code=patient)
    n = next(_counter)
    video = Video(patient=patient_row, source_sha256=f"{n:064d}", source_name=f"{patient}-{n}.mp4",
                  container="mp4", codec="h264", fps=20.0, frame_count=len(scenes) * frames_per_scene,
                  width=width, height=height, roi_x=0, roi_y=0, roi_w=width, roi_h=height)
    db.session.add(video)
    index = 0
    for status in scenes:
        scene = Scene(video=video, first_frame=index, last_frame=index + frames_per_scene - 1,
                      status=SceneStatus(status))
        db.session.add(scene)
        for _ in range(frames_per_scene):
            image = images[index] if images is not None else noise(width, height)
            sha, w, h = write_png(app, image)
            db.session.add(Frame(video=video, scene=scene, frame_index=index,
                                 timestamp_ms=50.0 * index, sha256=sha, width=w, height=h))
            index += 1
    db.session.commit()
    return video.id


def frames_of(video_id: int) -> list[Frame]:
    """The frames of a video in order."""
    return list(db.session.scalars(sa.select(Frame).filter_by(video_id=video_id).order_by(Frame.frame_index)))


def make_box(frame: Frame, class_id: int = 1, x: float = 4, y: float = 6, w: float = 10,
             h: float = 8, **kw) -> Box:
    box = Box(frame=frame, class_id=class_id, x=x, y=y, w=w, h=h, **kw)
    db.session.add(box)
    return box


def label_all(video_id: int) -> None:
    """One tumour box on every frame, and a vessel box on every other one."""
    for f in frames_of(video_id):
        make_box(f, 1, x=2 + f.frame_index, y=3, w=12, h=9)
        if f.frame_index % 2:
            make_box(f, 2, x=30, y=20, w=8, h=8)
    db.session.commit()


def world(app, patients: int = 4, statuses: tuple[str, ...] = ("reviewed", "reviewed", "new")
          ) -> dict[str, list[int]]:
    """``patients`` patients with one labelled video each; patient code -> [video id]."""
    out: dict[str, list[int]] = {}
    with app.app_context():
        for p in range(patients):
            code = f"P{p + 1:02d}"
            vid = make_video(app, code, list(statuses))
            label_all(vid)
            out[code] = [vid]
    return out


def cli(app, *args: str):
    return app.test_cli_runner().invoke(args=list(args))


def version_row(app, name: str) -> DatasetVersion:
    return db.session.scalar(sa.select(DatasetVersion).filter_by(name=name))


def boxes(video_id: int) -> list[tuple]:
    """The boxes of a video, frame by frame, as tuples of their stored fields."""
    rows = db.session.execute(
        sa.select(Frame.frame_index, Box.class_id, Box.x, Box.y, Box.w, Box.h, Box.source, Box.score,
                  Box.model_version, Box.track_id, Box.author_id)
        .join(Frame).where(Frame.video_id == video_id).order_by(Frame.frame_index, Box.id)).all()
    return [tuple(r) for r in rows]


# --- video and DICOM files to import -------------------------------------------------------

W, H = 224, 176
# The fan: apex above the top edge, so the sector is a trapezoid with an arc at the bottom.
SECTOR = np.array([[92, 30], [132, 30], [196, 150], [112, 166], [28, 150]], np.int32)
TEXT_ORG = (4, 14)  # burned-in "patient" text, top-left, outside the sector


def sector_mask() -> np.ndarray:
    mask = np.zeros((H, W), np.uint8)
    cv2.fillConvexPoly(mask, SECTOR, 255)
    return mask


def synthetic_frames(n: int, seed: int = 0, colour_blob: bool = False) -> list[np.ndarray]:
    """Moving speckle inside a sector, static white text and a logo outside it (BGR)."""
    rng = np.random.default_rng(seed)
    mask = sector_mask()
    frames = []
    for i in range(n):
        img = np.full((H, W, 3), 40, np.uint8)  # the scanner's grey interface
        speckle = rng.integers(30, 220, (H, W), dtype=np.uint8)
        speckle = cv2.GaussianBlur(speckle, (3, 3), 0)
        img[mask > 0] = speckle[mask > 0, None]
        if colour_blob:
            cv2.circle(img, (112 + (i % 5), 100), 10, (0, 0, 230), -1)  # red "Doppler"
        cv2.putText(img, "DOE^JANE 1951", TEXT_ORG, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        cv2.rectangle(img, (190, 40), (214, 60), (255, 255, 255), -1)  # a static logo
        frames.append(img)
    return frames


def write_video(path: Path, n: int = 30, fourcc: str = "MJPG", fps: float = 15.0, **kw) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    assert writer.isOpened(), f"OpenCV cannot write {fourcc}"
    for frame in synthetic_frames(n, **kw):
        writer.write(frame)
    writer.release()
    return path


def write_dicom(path: Path, frames: np.ndarray, photometric: str, **extra) -> Path:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.3.1"  # US multi-frame
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.PatientName = "DOE^JANE"
    ds.Modality = "US"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames.shape[1:3]
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PhotometricInterpretation = photometric
    if frames.ndim == 4:
        ds.SamplesPerPixel = 3
        ds.PlanarConfiguration = 0
    else:
        ds.SamplesPerPixel = 1
    for key, value in extra.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(frames).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def data_files(app) -> list[Path]:
    """Every file in the data directory but the frame store's lock (``frames/.lock``)."""
    root = Path(app.config["SONOLABEL_DATA_DIR"])
    return sorted(p for p in root.rglob("*") if p.is_file() and p != root / "frames" / ".lock")


def assert_nothing_left(app) -> None:
    for model in (Video, Frame, Scene, Patient):
        assert db.session.scalar(db.select(db.func.count()).select_from(model)) == 0, model
    assert data_files(app) == []


# --- textures for the flow tests ----------------------------------------------------------

def texture(h: int = 200, w: int = 240, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 255, (h, w)).astype(np.uint8), (0, 0), 2.0)


def shifted(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, image.shape[::-1], borderMode=cv2.BORDER_REFLECT)


# --- a tiny COCO video set for the detector tests -------------------------------------------

def make_tiny_coco(root: Path, videos: int = 2, frames: int = 4, w: int = 96, h: int = 80,
                   seed: int = 0) -> Path:
    """Textured frames with one bright moving blob each; frames chained by video_id and
    frame_index. Returns the COCO path; images are in ``root / "img"``."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    images, anns = [], []
    for v in range(videos):
        background = cv2.GaussianBlur(rng.integers(0, 90, (h + 40, w + 40)).astype(np.uint8),
                                      (0, 0), 1.5)
        cx, cy = rng.uniform(25, w - 35), rng.uniform(25, h - 30)
        for f in range(frames):
            image = background[2 * f:2 * f + h, 3 * f:3 * f + w].copy()
            x, y = int(cx + 2 * f), int(cy + f)
            cv2.circle(image, (x, y), 10, 230, -1)
            name = f"v{v}_{f:03d}.png"
            cv2.imwrite(str(root / "img" / name), image)
            image_id = len(images) + 1
            images.append({"id": image_id, "file_name": name, "width": w, "height": h,
                           "video_id": f"v{v}", "frame_index": f})
            anns.append({"id": len(anns) + 1, "image_id": image_id, "category_id": 1,
                         "bbox": [x - 11, y - 11, 22, 22], "area": 484, "iscrowd": 0})
    coco = {"info": {}, "images": images, "annotations": anns,
            "categories": [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]}
    path = root / "ann.json"
    path.write_text(json.dumps(coco))
    return path


# --- the review gate -----------------------------------------------------------------------

def finish_scene(s, scene_id: int) -> None:
    """Decide every frame through the API, as the annotator would before submitting: accept
    the pending pre-labels and propagated boxes, mark box-less frames "no findings"."""
    data = s.get(f"/api/scenes/{scene_id}").get_json()
    for frame in data["frames"]:
        boxes = data["boxes"][str(frame["id"])]
        for box in boxes:
            if box["source"] != "manual":
                resp = s.json("POST", f"/api/boxes/{box['id']}/accept", {"row_version": box["row_version"]})
                assert resp.status_code == 200, resp.get_json()
        if not boxes and not frame["reviewed_empty"]:
            resp = s.json("POST", f"/api/frames/{frame['id']}/no-findings", {"empty": True})
            assert resp.status_code == 200, resp.get_json()


# --- a Label Studio round trip: the scene sent there and what must come back ----------------

# Label Studio 1.23.2's snapshot export of round_trip_video's tasks after the edits the
# round-trip test makes (recorded by test_labelstudio_server.py with
# SONOLABEL_RECORD_LABEL_STUDIO=1; its replay test reads it).
LABEL_STUDIO_SNAPSHOT = Path(__file__).parent / "data" / "labelstudio-1.23.2-snapshot.json"
# Its COCO export of the dataset version's project (frames 0-2, untouched).
LABEL_STUDIO_COCO = Path(__file__).parent / "data" / "labelstudio-1.23.2-coco.json"


def round_trip_video(app) -> tuple[int, dict[str, int]]:
    """A 160x120 video with a reviewed scene (frames 0-2) and an in-progress one (3-5) for the
    Label Studio round trip: manual boxes a, b, c on frame 0 and d on frame 1 (edges off whole
    pixels), frame 2 reviewed empty, manual e and pending pre-label p1 on frame 3, pre-label p2
    alone on frame 4, frame 5 bare. (video id, {name: box id}); on a fresh database the ids
    are always the same, which the recorded export relies on."""
    with app.app_context():
        vid = make_video(app, "P1", ["reviewed", "in_progress"], frames_per_scene=3,
                         width=160, height=120)
        f = frames_of(vid)
        f[2].reviewed_empty = True
        made = {
            "a": make_box(f[0], 1, x=47.6, y=20.3, w=30.25, h=22.7),
            "b": make_box(f[0], 2, x=100.1, y=60.9, w=20.4, h=15.35),
            "c": make_box(f[0], 1, x=5.5, y=80.2, w=12.6, h=11.1),
            "d": make_box(f[1], 1, x=49.1, y=21.3, w=30.25, h=22.7),
            "e": make_box(f[3], 2, x=20.2, y=30.3, w=40.4, h=25.5),
            "p1": make_box(f[3], 1, x=147.6, y=2.4, w=11.9, h=9.3, source=BoxSource.model,
                           score=0.4, model_version="two-frame-v3"),
            "p2": make_box(f[4], 2, x=0.3, y=100.7, w=33.3, h=19.1, source=BoxSource.model,
                           score=0.77, model_version="other"),
        }
        db.session.commit()
        return vid, {name: box.id for name, box in made.items()}


# In Label Studio (percent of 160x120): box a moved 5 % right and made 2.5 % shorter, box b
# deleted (one edit of the exported annotation), a vessel box drawn on the bare frame 5 (a new
# annotation); nothing else touched.
ROUND_TRIP_MOVE = {"x": 5.0, "height": -2.5}
ROUND_TRIP_NEW = {"x": 60.0, "y": 70.0, "width": 10.0, "height": 12.5, "rotation": 0,
                  "rectanglelabels": ["vessel"]}


def boxes_by_id(video_id: int) -> dict[int, tuple]:
    """The boxes of a video by id, as tuples of their stored fields."""
    rows = db.session.execute(
        sa.select(Box.id, Frame.frame_index, Box.class_id, Box.x, Box.y, Box.w, Box.h, Box.source,
                  Box.score, Box.model_version, Box.track_id).join(Frame)
        .where(Frame.video_id == video_id)).all()
    return {r[0]: tuple(r[1:]) for r in rows}


def assert_round_trip_synced(video_id: int, ids: dict[str, int], before: dict[int, tuple]) -> None:
    """What SonoLabel holds after importing the edited export: a moved, b gone, one new vessel
    box on frame 5, everything else (pre-labels included) exactly as ``before``."""
    now = boxes_by_id(video_id)
    assert ids["b"] not in now
    frame, cls, *xywh, source = now[ids["a"]][:7]
    assert (frame, cls, source) == (0, 1, BoxSource.manual)
    assert xywh == pytest.approx([55.6, 20.3, 30.25, 19.7], abs=1e-6)
    [new] = set(now) - set(before)
    frame, cls, *xywh, source = now[new][:7]
    assert (frame, cls, source) == (5, 2, BoxSource.manual)
    assert xywh == pytest.approx([96.0, 84.0, 16.0, 15.0], abs=1e-6)
    for name in ("c", "d", "e", "p1", "p2"):  # floats as they were: nothing rounded or copied
        assert now[ids[name]] == before[ids[name]], name
    assert len(now) == len(before)


# --- a Label Studio video round trip: a scene's tracks sent as one video task ----------------

LABEL_STUDIO_VIDEO_SNAPSHOT = (Path(__file__).parent / "data"
                               / "labelstudio-1.23.2-video-snapshot.json")
TRACK_CLIP = (162, 122)  # the 161x121 frames' clip: padded to even sides


def track_video(app) -> tuple[int, dict[str, int]]:
    """A 161x121 video (odd sides: its clips are padded) with an in-progress scene A (frames
    0-7) and a reviewed scene B (8-11). In A, track 1 (tumour): drawn on 0 and 4, propagated on
    1-3 (what T gives); track 2 (vessel): drawn on 2 and 3, a gap, propagated on 6, drawn on 7;
    a pending pre-label on 1. In B, track 1 drawn on 8 and 9. (video id, {name: box id});
    on a fresh database the ids are always the same, which the recorded export relies on."""
    with app.app_context():
        vid = make_video(app, "P7", ["in_progress", "in_progress", "reviewed"],
                         frames_per_scene=4, width=161, height=121)
        f = frames_of(vid)
        a, merged = f[0].scene, f[4].scene  # scene A takes frames 4-7 too
        for frame in f[4:8]:
            frame.scene = a
        a.last_frame = 7
        db.session.flush()
        db.session.delete(merged)
        db.session.flush()
        f = frames_of(vid)
        prop = {"source": BoxSource.propagated, "score": 0.8}
        made = {
            "t1f0": make_box(f[0], 1, x=40.5, y=30.25, w=30.5, h=20.75, track_id=1),
            "t1f1": make_box(f[1], 1, x=42.5, y=31.25, w=30.5, h=20.75, track_id=1, **prop),
            "t1f2": make_box(f[2], 1, x=44.5, y=32.25, w=30.5, h=20.75, track_id=1, **prop),
            "t1f3": make_box(f[3], 1, x=46.5, y=33.25, w=30.5, h=20.75, track_id=1, **prop),
            "t1f4": make_box(f[4], 1, x=48.5, y=34.25, w=30.5, h=20.75, track_id=1),
            "t2f2": make_box(f[2], 2, x=100.1, y=70.3, w=20.2, h=15.1, track_id=2),
            "t2f3": make_box(f[3], 2, x=101.1, y=70.3, w=20.2, h=15.1, track_id=2),
            "t2f6": make_box(f[6], 2, x=104.1, y=71.3, w=20.2, h=15.1, track_id=2, **prop),
            "t2f7": make_box(f[7], 2, x=105.1, y=71.3, w=20.2, h=15.1, track_id=2),
            "pre": make_box(f[1], 2, x=5.5, y=90.5, w=12.0, h=10.0, source=BoxSource.model,
                            score=0.6, model_version="two-frame-v3"),
            "Bf8": make_box(f[8], 1, x=60.0, y=40.0, w=25.0, h=20.0, track_id=1),
            "Bf9": make_box(f[9], 1, x=61.0, y=40.0, w=25.0, h=20.0, track_id=1),
        }
        db.session.commit()
        return vid, {name: box.id for name, box in made.items()}


# The new track drawn in Label Studio (percent of the 162x122 clip): frames 1 and 3.
VIDEO_NEW_TRACK = [{"frame": 1, "enabled": True, "rotation": 0, "x": 10.0, "y": 10.0,
                    "width": 20.0, "height": 25.0, "time": 0.05},
                   {"frame": 3, "enabled": False, "rotation": 0, "x": 14.0, "y": 12.0,
                    "width": 20.0, "height": 25.0, "time": 0.15}]


def edit_video_tracks(result: list[dict]) -> list[dict]:
    """Scene A's regions edited as an annotator would in Label Studio's video editor: track 1's
    keyframe on frame 3 moved 5 % right, its keyframe 4 removed (now interpolated), its end
    moved from frame 5 to a new keyframe on frame 7; track 2 ended at frame 7 (keyframe 8
    removed, 7 disabled); a new track drawn on frames 1-3."""
    import copy

    result = copy.deepcopy(result)
    t1 = next(r for r in result if r["id"] == "t1")["value"]["sequence"]
    k3 = next(k for k in t1 if k["frame"] == 3)
    k3["x"] += 5.0
    t1[:] = [k for k in t1 if k["frame"] != 4]
    k5 = next(k for k in t1 if k["frame"] == 5)
    k5["enabled"] = True
    t1.append({**k5, "frame": 7, "enabled": False, "x": k5["x"] + 4.0, "time": 0.35})
    t2 = next(r for r in result if r["id"] == "t2")["value"]["sequence"]
    t2[:] = [k for k in t2 if k["frame"] != 8]
    t2[-1]["enabled"] = False
    value = {"framesCount": 8, "duration": 0.4, "sequence": copy.deepcopy(VIDEO_NEW_TRACK),
             "labels": ["vessel"]}
    result.append({"id": "Vq1nE7kT0w", "type": "videorectangle", "from_name": "box",
                   "to_name": "video", "origin": "manual", "value": value})
    return result


def assert_video_synced(video_id: int, ids: dict[str, int], before: dict[int, tuple]) -> None:
    """What SonoLabel holds after importing the edited video task (see edit_video_tracks)."""
    now = boxes_by_id(video_id)
    W, H = TRACK_CLIP
    assert ids["t2f7"] not in now
    for name in ("t1f0", "t1f1", "t1f4", "t2f2", "t2f3", "t2f6", "pre", "Bf8", "Bf9"):
        assert now[ids[name]] == before[ids[name]], name  # untouched: not even float noise
    frame, cls, *xywh, source = now[ids["t1f2"]][:7]
    assert (frame, cls, source) == (2, 1, BoxSource.manual)  # moved there: accepted
    assert xywh == pytest.approx([44.5 + 0.05 * W, 32.25, 30.5, 20.75], abs=1e-6)
    frame, cls, *xywh, source = now[ids["t1f3"]][:7]
    assert (frame, cls, source) == (3, 1, BoxSource.propagated)  # interpolated: a suggestion
    assert xywh == pytest.approx([(44.5 + 0.05 * W + 48.5) / 2, 33.25, 30.5, 20.75], abs=1e-6)
    added = sorted((r[0], r[1], r[6], r[9]) for r in (now[i] for i in set(now) - set(before)))
    assert added == [(0, 2, BoxSource.manual, 3), (1, 2, BoxSource.propagated, 3),
                     (2, 2, BoxSource.manual, 3), (5, 1, BoxSource.propagated, 1),
                     (6, 1, BoxSource.manual, 1)]
    f5 = next(r for r in (now[i] for i in set(now) - set(before)) if r[0] == 5)
    assert f5[2:6] == pytest.approx([48.5 + 0.02 * W, 34.25, 30.5, 20.75], abs=1e-6)
    f1 = next(r for r in (now[i] for i in set(now) - set(before)) if r[0] == 1)
    assert f1[2:6] == pytest.approx([0.12 * W, 0.11 * H, 0.2 * W, 0.25 * H], abs=1e-6)
    assert len(now) == len(before) + 5 - 1


# --- a phantom sweep imported through the app's import service ------------------------------

@dataclass
class PhantomScene:
    scene_id: int
    video_id: int
    frame_ids: list[int]
    # per frame, the phantom's exact boxes in stored-frame pixels (the sector crop applied):
    # {"category_id", "track_id", "x", "y", "w", "h"}
    truth: list[list[dict]]
    width: int
    height: int


def phantom_scene(app, folder: Path, frames: int = 20, size: int = 512, seed: int = 3,
                  patient: str = "PH001") -> PhantomScene:
    """A synthetic liver sweep (``detector.phantom``) written as MP4 and imported through
    :func:`annotator.services.video_import.import_video` as one scene, with its exact boxes."""
    from annotator.services.video_import import import_video
    from detector.phantom.writer import generate

    coco = json.loads(generate(folder, videos=1, frames=frames, size=size, seed=seed).read_text())
    with app.app_context():
        result = import_video(next(folder.rglob("*.mp4")), patient, scenes="none")
        video_id, (rx, ry, rw, rh) = result.video.id, result.roi
        rows = db.session.scalars(sa.select(Frame).where(Frame.video_id == video_id)
                                  .order_by(Frame.frame_index)).all()
        scene_id, frame_ids = rows[0].scene_id, [f.id for f in rows]
        width, height = rows[0].width, rows[0].height
    by_image: dict[int, list[dict]] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        x0, y0 = max(x - rx, 0.0), max(y - ry, 0.0)
        x1, y1 = min(x + w - rx, float(rw)), min(y + h - ry, float(rh))
        if x1 - x0 >= 1 and y1 - y0 >= 1:
            by_image.setdefault(a["image_id"], []).append(
                {"category_id": a["category_id"], "track_id": a["track_id"],
                 "x": float(x0), "y": float(y0), "w": float(x1 - x0), "h": float(y1 - y0)})
    order = {img["id"]: img["frame_index"] for img in coco["images"]}
    truth: list[list[dict]] = [[] for _ in range(len(frame_ids))]
    for image_id, boxes in by_image.items():
        if order[image_id] < len(truth):
            truth[order[image_id]] = boxes
    return PhantomScene(scene_id, video_id, frame_ids, truth, width, height)
