"""Pre-labels: a model version's boxes stored on scenes without touching anyone else's."""
from __future__ import annotations

import pytest
from helpers import seed_scene, tiny_version, untrained_model

from annotator.db import db
from annotator.models import Box, BoxSource, JobStatus, SceneRanking, SceneStatus
from annotator.services.job_runner import start_job


@pytest.fixture
def japp(app):
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    return app


def test_prelabel_replaces_only_its_own_unreviewed_boxes(japp):
    seeded, _ = tiny_version(japp)
    mv_id, name = untrained_model(japp)
    with japp.app_context():
        other = Box(frame_id=seeded.frame_ids[1], class_id=2, x=1, y=1, w=9, h=9,
                    source=BoxSource.model, score=0.7, model_version="someone-else")
        db.session.add(other)
        db.session.commit()
        manual_before = {b.id: (b.x, b.y, b.w, b.h) for b in db.session.scalars(
            db.select(Box).where(Box.source == BoxSource.manual))}

        job = start_job("prelabel", {"scene": str(seeded.scene_id)})
        assert job.status == JobStatus.succeeded, job.error
        mine = db.session.scalars(db.select(Box).where(Box.model_version == name)).all()
        assert mine and job.result["boxes"] == len(mine)
        assert all(b.source == BoxSource.model and b.score >= 0.1 for b in mine)
        assert {b.frame_id for b in mine} <= set(seeded.frame_ids)
        assert db.session.scalar(db.select(SceneRanking).where(
            SceneRanking.scene_id == seeded.scene_id, SceneRanking.model_version == name)) is not None

        # Accept one pre-label: it becomes manual and survives the re-run.
        from annotator.models import User
        from annotator.services.box_edits import accept_box

        annotator = db.session.scalar(db.select(User).filter_by(username="annotator"))
        accepted = accept_box(mine[0].id, {"row_version": mine[0].row_version}, annotator).box_data
        again = start_job("prelabel", {"scene": str(seeded.scene_id), "model_version": name})
        assert again.status == JobStatus.succeeded, again.error
        assert again.result["replaced"] == len(mine) - 1
        db.session.expire_all()
        assert db.session.get(Box, accepted["id"]).source == BoxSource.manual
        assert db.session.get(Box, other.id).model_version == "someone-else"
        for box_id, geometry in manual_before.items():
            box = db.session.get(Box, box_id)
            assert (box.x, box.y, box.w, box.h) == geometry and box.source == BoxSource.manual
        now = db.session.scalars(db.select(Box).where(Box.model_version == name,
                                                      Box.source == BoxSource.model)).all()
        assert len(now) == again.result["boxes"]
        # The replaced boxes leave audit events that review notes do not count as rejections.
        from annotator.services.event_log import review_notes

        assert review_notes(seeded.scene_id)["rejected"] == {}


def test_prelabel_skips_locked_scenes_and_batches_a_video(japp):
    seeded, _ = tiny_version(japp)
    locked = seed_scene(japp, frames=2, status=SceneStatus.submitted, patient="P002")
    untrained_model(japp)
    with japp.app_context():
        job = start_job("prelabel", {"scene": f"{seeded.scene_id},{locked.scene_id}"})
        assert job.status == JobStatus.succeeded, job.error
        assert job.result["skipped"] == [locked.scene_id] and job.result["scenes"] == 1
        on_locked = db.session.scalar(db.select(db.func.count(Box.id)).where(
            Box.frame_id.in_(locked.frame_ids)))
        assert on_locked == 0
        by_video = start_job("prelabel", {"video": seeded.video_id})
        assert by_video.status == JobStatus.succeeded and by_video.result["scenes"] == 1
