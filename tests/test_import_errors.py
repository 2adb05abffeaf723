"""Bad input to the import is refused with a clear message and a suggested HTTP status, and
leaves nothing behind: no rows, no frame files, no temporary files."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import assert_nothing_left, data_files, shared_file, write_dicom, write_video

from annotator.db import db
from annotator.models import Patient, Video
from annotator.services import ImportRefused
from annotator.services.video_import import import_video


def refuse(app, path: Path, code: str = "P-1", **kw) -> ImportRefused:
    with pytest.raises(ImportRefused) as info:
        import_video(path, code, **kw)
    assert_nothing_left(app)
    assert str(info.value) and "\n" not in str(info.value)
    return info.value


def test_zero_byte_file(app, tmp_path):
    path = tmp_path / "empty.mp4"
    path.write_bytes(b"")
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 400 and "empty" in str(err)


def test_text_file_named_mp4(app, tmp_path):
    path = tmp_path / "notes.mp4"
    path.write_text("hello, this is not a video\n" * 20)
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 415 and "MP4" in str(err)


def test_truncated_mp4(app, tmp_path):
    whole = write_video(tmp_path / "whole.mp4", n=20, fourcc="mp4v").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 400 and "truncated" in str(err)


@pytest.mark.slow
def test_truncated_real_cine(app, tmp_path):
    data = shared_file("cine/abdominal-sample2-19fps.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) * 2 // 3])
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 400 and "truncated" in str(err)


def test_unsupported_codec(app, tmp_path):
    data = write_video(tmp_path / "ok.avi", n=5).read_bytes()
    path = tmp_path / "odd.avi"
    path.write_bytes(data.replace(b"MJPG", b"ZZZZ"))  # a codec no decoder knows
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 415 and "ZZZZ" in str(err)


def test_dicom_without_pixel_data(app, tmp_path):
    import numpy as np

    path = write_dicom(tmp_path / "nopix.dcm", np.zeros((2, 8, 8), np.uint8), "MONOCHROME2")
    import pydicom

    ds = pydicom.dcmread(path)
    del ds.PixelData
    ds.save_as(path, enforce_file_format=True)
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 400 and "pixel data" in str(err)


def test_frames_over_the_pixel_limit(app, tmp_path):
    path = write_video(tmp_path / "big.avi", n=5)
    app.config["SONOLABEL_MAX_FRAME_PIXELS"] = 100 * 100
    with app.app_context():
        err = refuse(app, path)
    assert err.status == 413 and "224x176" in str(err)


@pytest.mark.parametrize("code", ["../evil", "a/b", "a\\b", ".hidden", "", "x" * 65, "P 1", "é"])
def test_patient_codes_with_path_characters(app, tmp_path, code):
    path = write_video(tmp_path / "ok.avi", n=5)
    with app.app_context():
        err = refuse(app, path, code=code)
    assert err.status == 400 and "patient code" in str(err)


def test_patient_code_rules_accept_valid_codes(app, tmp_path):
    path = write_video(tmp_path / "ok.avi", n=10)
    with app.app_context():
        assert import_video(path, "A.b-C_9" + "x" * 57).created  # 64 characters


@pytest.mark.parametrize("mode", ["fixed:0", "fixed:", "sometimes", "fixed:-3"])
def test_bad_scene_mode(app, tmp_path, mode):
    path = write_video(tmp_path / "ok.avi", n=5)
    with app.app_context():
        err = refuse(app, path, scenes=mode)
    assert err.status == 400 and "scene mode" in str(err)


def test_failure_midway_removes_written_frames_but_keeps_shared_ones(app, tmp_path):
    path = write_video(tmp_path / "a.avi", n=30)

    def explode(done: int, total: int) -> None:
        if done == 12:
            raise RuntimeError("disk full")

    with app.app_context():
        with pytest.raises(RuntimeError):
            import_video(path, "P-1", progress=explode)
        assert_nothing_left(app)
        assert not list(Path(app.config["SONOLABEL_DATA_DIR"]).rglob("*.tmp"))
        # With the same frames already stored by another video, a failed import keeps them.
        import_video(path, "P-1")
        kept = data_files(app)
        twin = tmp_path / "a-copy.avi"
        twin.write_bytes(path.read_bytes() + b"\0" * 16)  # other source hash, same frames
        with pytest.raises(RuntimeError):
            import_video(twin, "P-1", progress=explode)
        assert data_files(app) == kept
        assert db.session.scalar(db.select(db.func.count(Video.id))) == 1


def test_same_file_for_another_patient_is_refused(app, tmp_path):
    path = write_video(tmp_path / "a.avi", n=10)
    with app.app_context():
        import_video(path, "P-1")
        with pytest.raises(ImportRefused) as info:
            import_video(path, "P-2")
        assert info.value.status == 409
        assert db.session.scalar(db.select(db.func.count(Patient.id))) == 1
