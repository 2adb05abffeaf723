"""Rough edges a surgeon hit in the browser: scene lists in reading order with box counts and
thumbnails, "Next scene" staying in the video, "1 box", the pre-label button without a model,
the Jobs page saying no worker runs, and the tick boxes of a new dataset version."""
from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from helpers import frames_of, make_box, make_video, seed_scene

from annotator.db import db
from annotator.job_pages import no_worker_minutes
from annotator.models import Job, JobStatus, ModelVersion, Scene


def _scene_ids(app, video_id):
    with app.app_context():
        return [s.id for s in db.session.scalars(db.select(Scene).filter_by(video_id=video_id)
                                                 .order_by(Scene.first_frame))]


def test_scene_lists_read_by_video_and_first_frame_with_box_counts_and_thumbnails(app, login):
    with app.app_context():
        one = make_video(app, "P1", ["new", "new", "new"])
        two = make_video(app, "P2", ["new"])
        make_box(frames_of(one)[4])
        make_box(frames_of(one)[5])
        db.session.commit()
    first, second, third = _scene_ids(app, one)
    with app.app_context():  # the newest change first would read 3, 2, 1
        for i, sid in enumerate((third, second, first)):
            db.session.get(Scene, sid).updated_at = datetime(2030, 1, 1, tzinfo=timezone.utc) - timedelta(hours=i)
        db.session.commit()
    page = login("annotator").get("/scenes").get_data(as_text=True)
    order = [int(i) for i in re.findall(r'<tr data-scene="(\d+)"', page)]
    assert order == [first, second, third, *_scene_ids(app, two)]
    row = page[page.index(f'<tr data-scene="{second}"'):]
    row = row[:row.index("</tr>")]
    assert '<td class="box-count">2</td>' in row
    with app.app_context():
        assert f'src="/frames/{frames_of(one)[3].id}.png"' in row


def test_next_scene_stays_in_the_video(app, login):
    with app.app_context():
        video = make_video(app, "P1", ["new", "new", "new"])
        make_video(app, "P2", ["new"])
    first, second, _ = _scene_ids(app, video)
    resp = login("annotator").get(f"/scenes/next?after={first}")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/scenes/{second}/label")


def test_one_box_is_not_boxes(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes", {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    page = s.get(f"/scenes/{seeded.scene_id}").get_data(as_text=True)
    assert "· 1 box" in page and "1 boxes" not in page and "0 boxes" in page


def test_prelabel_button_says_why_without_an_active_model(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    page = s.get(f"/scenes/{seeded.scene_id}/label").get_data(as_text=True)
    assert re.search(r'<button id="prelabel"[^>]* disabled', page) and "No model is active yet" in page
    with app.app_context():
        db.session.add(ModelVersion(name="m1", kind="two_frame", config={}, metrics={}, file_sha256="0" * 64,
                                    active=True))
        db.session.commit()
    page = s.get(f"/scenes/{seeded.scene_id}/label").get_data(as_text=True)
    assert not re.search(r'<button id="prelabel"[^>]* disabled', page) and "No model is active yet" not in page


def test_jobs_page_says_when_no_worker_has_been_seen(app, login):
    now = datetime.now(timezone.utc)
    with app.app_context():
        db.session.add(Job(kind="prelabel", params={}, status=JobStatus.queued, created_at=now - timedelta(minutes=7)))
        db.session.commit()
        assert no_worker_minutes(now) == 7
    page = login("annotator").get("/jobs").get_data(as_text=True)
    assert "no worker has been seen for 7 minutes" in page and "sonolabel worker" in page
    with app.app_context():  # a worker busy on another job answers for itself
        db.session.add(Job(kind="prelabel", params={}, status=JobStatus.running, worker="h:1",
                           heartbeat_at=now - timedelta(seconds=20)))
        db.session.commit()
        assert no_worker_minutes(now) is None
    assert "no worker has been seen" not in login("annotator").get("/jobs").get_data(as_text=True)


def test_new_dataset_ticks_sit_with_their_words(app, login):
    page = login("data_manager").get("/datasets/new").get_data(as_text=True)
    ticks = re.findall(r'<label class="(\w+)"><input type="(checkbox|radio)"', page)
    assert ticks and all(cls == "tick" for cls, _ in ticks)
