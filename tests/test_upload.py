"""The browser's way in: the upload page imports a video, refuses bad files and oversized
uploads with a message and leaves nothing behind, and a data manager cuts a scene by range."""
from __future__ import annotations

import io
from pathlib import Path

from helpers import assert_nothing_left, write_video

from annotator.db import db
from annotator.models import Scene, Video


def upload(session, path_or_bytes, patient="P-7", name="clip.avi", json=False, **form):
    data = path_or_bytes.read_bytes() if isinstance(path_or_bytes, Path) else path_or_bytes
    fields = {"file": (io.BytesIO(data), name), "patient": patient, "scenes": "fixed",
              "scene_length": "10", **form}
    headers = {"Accept": "application/json"} if json else {}
    return session.post("/videos/upload", data=fields, content_type="multipart/form-data",
                        headers=headers)


def test_upload_imports_and_redirects_to_the_video(app, login, tmp_path):
    manager = login("data_manager")
    assert "Import a video" in manager.get("/videos/upload").get_data(as_text=True)
    resp = upload(manager, write_video(tmp_path / "a.avi", n=25))
    assert resp.status_code == 302 and "/videos/" in resp.headers["Location"]
    page = manager.get(resp.headers["Location"]).get_data(as_text=True)
    assert "Imported 25 frames in 3 scenes." in page
    again = upload(manager, write_video(tmp_path / "a.avi", n=25), json=True)
    assert again.status_code == 200 and again.get_json()["created"] is False
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(Video.id))) == 1
    assert not list((Path(app.config["SONOLABEL_DATA_DIR"]) / "tmp").iterdir())


def test_bad_uploads_get_a_message_and_leave_nothing(app, login, tmp_path):
    manager = login("data_manager")
    text = upload(manager, b"this is not a video\n" * 10, name="notes.mp4", json=True)
    assert text.status_code == 415 and "error" in text.get_json()
    empty = upload(manager, b"", name="empty.mp4")
    assert empty.status_code == 400 and "flash error" in empty.get_data(as_text=True)
    bad_code = upload(manager, write_video(tmp_path / "b.avi", n=5), patient="../etc", json=True)
    assert bad_code.status_code == 400 and "patient code" in bad_code.get_json()["error"]
    app.config["MAX_CONTENT_LENGTH"] = 2048
    big = upload(manager, write_video(tmp_path / "c.avi", n=10), json=True)
    assert big.status_code == 413 and big.get_json()["error"]
    with app.app_context():
        assert_nothing_left(app)
    assert not list((Path(app.config["SONOLABEL_DATA_DIR"]) / "tmp").glob("*"))


def test_scene_from_an_in_out_range(app, login, tmp_path):
    manager = login("data_manager")
    video_url = upload(manager, write_video(tmp_path / "a.avi", n=25)).headers["Location"]
    video_id = int(video_url.rstrip("/").rsplit("/", 1)[1])
    resp = manager.post(f"/videos/{video_id}/scenes", data={"first": "5", "last": "14"})
    assert resp.status_code == 302
    with app.app_context():
        ranges = sorted((s.first_frame, s.last_frame) for s in
                        db.session.scalars(db.select(Scene).filter_by(video_id=video_id)))
    assert (5, 14) in ranges and ranges[0] == (0, 4)
    assert sum(last - first + 1 for first, last in ranges) == 25
    wrong = manager.post(f"/videos/{video_id}/scenes", data={"first": "20", "last": "99"})
    assert wrong.status_code == 400
    assert login("annotator").post(f"/videos/{video_id}/scenes",
                                   data={"first": "0", "last": "3"}).status_code == 403
