"""Video and DICOM import: decoding order and count, ROI crop and de-identification, lossless
content-addressed storage, idempotent re-import, scenes, and the ``videos import`` CLI."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import (
    H,
    SECTOR,
    TEXT_ORG,
    W,
    data_files,
    frames_of,
    sector_mask,
    shared_file,
    synthetic_frames,
    write_dicom,
    write_video,
)

from annotator.db import db
from annotator.models import Frame, Patient, Scene, Video
from annotator.services.video_import import import_video


def cv2_frame_count(path: Path) -> int:
    cap = cv2.VideoCapture(str(path))
    n = 0
    while cap.read()[0]:
        n += 1
    cap.release()
    return n


def stored_image(app, frame: Frame, flags: int = cv2.IMREAD_UNCHANGED) -> np.ndarray:
    path = Path(app.config["SONOLABEL_DATA_DIR"]) / frame.relpath
    data = path.read_bytes()
    assert hashlib.sha256(data).hexdigest() == frame.sha256, "file content must match its address"
    image = cv2.imdecode(np.frombuffer(data, np.uint8), flags)
    assert image is not None
    return image


@pytest.mark.parametrize("fourcc,suffix", [("MJPG", "avi"), ("mp4v", "mp4")])
def test_synthetic_video_is_cropped_deidentified_and_stored(app, tmp_path, fourcc, suffix):
    path = write_video(tmp_path / f"clip.{suffix}", n=30, fourcc=fourcc)
    with app.app_context():
        result = import_video(path, "P-001", scenes="fixed:10")
        video = result.video
        assert result.created and result.frames == cv2_frame_count(path) == 30
        assert video.frame_count == 30 and video.container == suffix
        assert video.deidentified and "hull" in video.deid_method
        # The ROI is the sector's bounding box, plus codec flicker at its edge (blocks of 8 px).
        sx, sy, sw, sh = cv2.boundingRect(SECTOR)
        x, y, w, h = result.roi
        assert abs(x - sx) <= 10 and abs(y - sy) <= 10
        assert abs(x + w - sx - sw) <= 10 and abs(y + h - sy - sh) <= 10
        assert y > TEXT_ORG[1] + 4, "the burned-in text rows must be outside the ROI"
        frames = frames_of(video.id)
        assert [f.frame_index for f in frames] == list(range(30))
        stamps = [f.timestamp_ms for f in frames]
        assert stamps[0] == pytest.approx(0.0, abs=1) and all(b > a for a, b in zip(stamps, stamps[1:]))
        assert stamps[10] == pytest.approx(10 * 1000 / 15, abs=2)
        inside = sector_mask()[y:y + h, x:x + w]
        far_outside = cv2.dilate(inside, np.ones((25, 25), np.uint8)) == 0
        for frame in frames[::7]:
            image = stored_image(app, frame)
            assert image.shape[:2] == (h, w) == (frame.height, frame.width)
            assert image.ndim == 2, "a grey video is stored single-channel"
            # Corners of the rectangle beside the sector (and the logo there) are blanked.
            assert far_outside.any() and image[far_outside].max() == 0
            assert image[inside > 0].std() > 10, "the speckle inside the sector is kept"
        scenes = db.session.scalars(db.select(Scene).where(Scene.video_id == video.id)
                                    .order_by(Scene.first_frame)).all()
        assert [(s.first_frame, s.last_frame) for s in scenes] == [(0, 9), (10, 19), (20, 29)]
        assert all(f.scene_id == scenes[f.frame_index // 10].id for f in frames)


def cv2_frames(path: Path) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            return frames
        frames.append(frame)


@pytest.mark.parametrize("fourcc,suffix", [("MJPG", "avi"), ("mp4v", "mp4"), ("mp4v", "mov")])
def test_stored_frames_are_what_opencv_decodes(app, tmp_path, fourcc, suffix):
    """Frame i holds what ``cv2.VideoCapture`` gives as frame i, in grey: the order training code
    sees, and the luma range (full for MJPG, expanded from 16..235 for MPEG-4) it sees."""
    path = write_video(tmp_path / f"clip.{suffix}", n=24, fourcc=fourcc)
    decoded = cv2_frames(path)
    with app.app_context():
        result = import_video(path, "P-001", scenes="none")
        x, y, w, h = result.roi
        inside = sector_mask()[y:y + h, x:x + w] > 0
        frames = frames_of(result.video.id)
        assert len(frames) == len(decoded) == 24
        for frame in frames:
            stored = stored_image(app, frame).astype(int)
            expected = cv2.cvtColor(decoded[frame.frame_index][y:y + h, x:x + w],
                                    cv2.COLOR_BGR2GRAY).astype(int)
            # Speckle is random per frame: any other frame would differ by ~50 on average. The
            # encoder's chroma is 1 off neutral, which moves OpenCV's grey (not the luma) by 1.
            diff = np.abs(stored[inside] - expected[inside])
            assert diff.max() <= 3 and diff.mean() <= 1.5, frame.frame_index


def turn_mp4(path: Path) -> Path:
    """Give the MP4's video track a display matrix that turns it 90 degrees clockwise, as phones
    write when filming upright."""
    import struct

    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    assert at > 0 and data[at + 4] == 0, "a version-0 track header"
    one, w = 1 << 16, 1 << 30  # 16.16 and 2.30 fixed point
    data[at + 44:at + 80] = struct.pack(">9i", 0, one, 0, -one, 0, 0, H * one, 0, w)
    path.write_bytes(bytes(data))
    return path


def test_turned_video_is_stored_as_opencv_shows_it(app, tmp_path):
    path = turn_mp4(write_video(tmp_path / "phone.mp4", n=20, fourcc="mp4v"))
    decoded = cv2_frames(path)
    assert decoded[0].shape[:2] == (W, H), "OpenCV shows the turned picture"
    with app.app_context():
        result = import_video(path, "P-001", scenes="none")
        assert (result.video.width, result.video.height) == (H, W)
        x, y, w, h = result.roi
        assert h > w, "the sector's bounding box turned with the picture"
        for frame in frames_of(result.video.id)[::5]:
            stored = stored_image(app, frame).astype(int)
            expected = cv2.cvtColor(decoded[frame.frame_index][y:y + h, x:x + w],
                                    cv2.COLOR_BGR2GRAY).astype(int)
            inside = stored > 0
            diff = np.abs(stored[inside] - expected[inside])
            assert inside.mean() > 0.5 and diff.max() <= 3 and diff.mean() <= 1.5


def write_lossless(path: Path, pix_fmt: str, n: int = 12, **kw) -> list[np.ndarray]:
    """An FFV1 (lossless) AVI in ``pix_fmt``, written with PyAV; returns the frames it holds."""
    import av

    frames = synthetic_frames(n, **kw)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("ffv1", rate=15)
        stream.width, stream.height, stream.pix_fmt = W, H, pix_fmt
        for image in frames:
            if pix_fmt == "gray":
                image = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
            frame = av.VideoFrame.from_ndarray(image, format="gray" if image.ndim == 2 else "bgr24")
            out.mux(stream.encode(frame))
        out.mux(stream.encode())
    return frames


@pytest.mark.parametrize("pix_fmt,colour", [("gray", False), ("bgr0", False), ("bgr0", True)])
def test_lossless_sources_are_stored_exactly(app, tmp_path, pix_fmt, colour):
    frames = write_lossless(tmp_path / "clip.avi", pix_fmt, colour_blob=colour)
    with app.app_context():
        result = import_video(tmp_path / "clip.avi", "P-001", scenes="none")
        x, y, w, h = result.roi
        inside = sector_mask()[y:y + h, x:x + w] > 0
        for frame in frames_of(result.video.id):
            stored = stored_image(app, frame)
            source = frames[frame.frame_index][y:y + h, x:x + w]
            if colour:
                assert stored.ndim == 3 and np.array_equal(stored[inside], source[inside])
            else:
                grey = cv2.cvtColor(source, cv2.COLOR_BGR2GRAY)
                assert stored.ndim == 2 and np.array_equal(stored[inside], grey[inside])


def test_reimport_is_idempotent(app, tmp_path):
    path = write_video(tmp_path / "clip.avi", n=20)
    with app.app_context():
        first = import_video(path, "P-001")
        files = data_files(app)
        again = import_video(path, "P-001", source_name="renamed.avi")
        assert not again.created and again.video.id == first.video.id
        assert (again.frames, again.scenes, again.roi) == (first.frames, first.scenes, first.roi)
        assert db.session.scalar(db.select(db.func.count(Video.id))) == 1
        assert db.session.scalar(db.select(db.func.count(Frame.id))) == 20
        assert db.session.scalar(db.select(db.func.count(Patient.id))) == 1
        assert data_files(app) == files


def test_colour_frames_stay_colour(app, tmp_path):
    path = write_video(tmp_path / "doppler.avi", n=12, colour_blob=True)
    with app.app_context():
        result = import_video(path, "P-002", scenes="none")
        x, y, _, _ = result.roi
        image = stored_image(app, frames_of(result.video.id)[0])
        assert image.ndim == 3
        b, g, r = image[100 - y, 112 - x]
        assert r > 150 and b < 80 and g < 80


@pytest.mark.slow
def test_real_cine_import(app):
    path = shared_file("cine/abdominal-sample2-19fps.mp4")
    with app.app_context():
        result = import_video(path, "LIVER-01")
        video = result.video
        assert result.frames == cv2_frame_count(path) == video.frame_count == 454
        assert video.fps == pytest.approx(19.0)
        x, y, w, h = result.roi
        # The sector lies in x ~190..950, y ~45..624 of the 1146x624 screen; the text panels are
        # the header (y < 42), the left scales (x < 180) and the right parameter panel (x > 1020).
        assert y >= 42 and x >= 180 and x + w <= 1020
        assert 600 <= w <= 800 and 500 <= h <= 624
        assert video.deidentified
        # 454 frames at the default scene length 20, no content cut in this single sweep.
        assert result.scenes >= 23
        frames = frames_of(video.id)
        assert len(frames) == 454 and all(f.scene_id is not None for f in frames)
        image = stored_image(app, frames[200])
        assert image.shape == (h, w)
        # Frame 200 is OpenCV's frame 200 (grey), up to the rounding of its colour conversion.
        cap = cv2.VideoCapture(str(path))
        cap.set(cv2.CAP_PROP_POS_FRAMES, 200)
        expected = cv2.cvtColor(cap.read()[1][y:y + h, x:x + w], cv2.COLOR_BGR2GRAY).astype(int)
        inside = image > 0
        assert np.abs(image[inside].astype(int) - expected[inside]).max() <= 3
        # Outside the fan (the top corners of the rectangle) everything is 0; inside it is image.
        assert image[:40, :60].max() == 0 and image[:40, -60:].max() == 0
        assert image[h // 2 - 50:h // 2 + 50, w // 2 - 50:w // 2 + 50].mean() > 30


@pytest.mark.slow
def test_real_dicom_cine_import(app):
    import pydicom

    path = shared_file("dicom/greyscale-cine-27f.dcm")
    original = pydicom.dcmread(path).pixel_array
    with app.app_context():
        result = import_video(path, "DCM-01", scenes="none")
        assert result.frames == 27 and result.video.container == "dicom"
        assert result.video.fps == pytest.approx(1000 / 33.333, rel=1e-3)
        x, y, w, h = result.roi
        # Burned-in name/DOB header (rows 0-40) and the left parameter text (x < 95) are cut off.
        assert y >= 45 and x >= 90 and 500 <= w <= 640 and h >= 400
        frames = frames_of(result.video.id)
        stamps = [f.timestamp_ms for f in frames]
        assert stamps[1] - stamps[0] == pytest.approx(33.333, abs=0.01)
        image = stored_image(app, frames[5])
        assert image.ndim == 2 and image.shape == (h, w)
        # Lossless inside the image: the stored pixels are the DICOM's own values.
        inner = (slice(h // 2, h // 2 + 100), slice(w // 2 - 100, w // 2 + 100))
        assert np.array_equal(image[inner], original[5][y:y + h, x:x + w][inner])


def test_dicom_monochrome2_and_monochrome1(app, tmp_path):
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2GRAY) for f in synthetic_frames(10)])
    m2 = write_dicom(tmp_path / "m2.dcm", grey, "MONOCHROME2", FrameTime="50")
    m1 = write_dicom(tmp_path / "m1.dcm", 255 - grey, "MONOCHROME1", CineRate=25)
    with app.app_context():
        r2 = import_video(m2, "P-1", scenes="none")
        r1 = import_video(m1, "P-1", scenes="none")
        assert r2.frames == r1.frames == 10
        assert r2.video.fps == pytest.approx(20.0) and r1.video.fps == pytest.approx(25.0)
        assert r2.roi == r1.roi
        x, y, w, h = r2.roi
        assert y > TEXT_ORG[1] + 4
        inside = sector_mask()[y:y + h, x:x + w] > 0
        for a, b in zip(frames_of(r2.video.id), frames_of(r1.video.id)):
            ia, ib = stored_image(app, a), stored_image(app, b)
            # MONOCHROME1 is inverted on import, so both store the same bright-is-echo image.
            assert np.array_equal(ia, ib)
            assert np.array_equal(ia[inside], grey[a.frame_index][y:y + h, x:x + w][inside])


@pytest.mark.parametrize("photometric", ["RGB", "YBR_FULL"])
def test_dicom_colour(app, tmp_path, photometric):
    from pydicom.pixels import convert_color_space

    rgb = np.stack([cv2.cvtColor(f, cv2.COLOR_BGR2RGB) for f in synthetic_frames(8, colour_blob=True)])
    data = rgb if photometric == "RGB" else convert_color_space(rgb, "RGB", "YBR_FULL")
    vector = [0] + [40.0] * 7
    path = write_dicom(tmp_path / "c.dcm", data, photometric, FrameTimeVector=vector)
    with app.app_context():
        result = import_video(path, "P-1", scenes="none")
        assert result.frames == 8
        frames = frames_of(result.video.id)
        assert [f.timestamp_ms for f in frames] == pytest.approx([40.0 * i for i in range(8)])
        x, y, _, _ = result.roi
        image = stored_image(app, frames[0])
        assert image.ndim == 3
        b, g, r = (int(v) for v in image[100 - y, 112 - x])
        assert r > 200 and g < 40 and b < 40


def test_cli_import_json(app, tmp_path):
    path = write_video(tmp_path / "clip.avi", n=25)
    runner = app.test_cli_runner()
    result = runner.invoke(args=["videos", "import", str(path), "--patient", "P-9",
                                 "--scenes", "fixed:10", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert set(out) == {"video_id", "frames", "scenes", "roi", "skipped_frames"}
    assert out["frames"] == 25 and out["scenes"] == 3 and len(out["roi"]) == 4
    again = runner.invoke(args=["videos", "import", str(path), "--patient", "P-9"])
    assert again.exit_code == 0 and "already imported" in again.stdout
    listed = runner.invoke(args=["videos", "list", "--json"])
    assert json.loads(listed.stdout.splitlines()[0])["video_id"] == out["video_id"]


def test_cli_refusal_exits_2_with_one_line(app, tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    result = app.test_cli_runner().invoke(args=["videos", "import", str(bad), "--patient", "P-1"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "MP4" in lines[0]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Video.id))) == 0
