"""Rejecting a scene's remaining pre-labels in one change: the confirmed count, what is left
alone (tracks, accepted boxes, other scenes), the audit, model feedback, one undo, the gate."""
from __future__ import annotations

from helpers import lesion_box, seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource, LabelEvent, SceneStatus


def _prelabel(frame_id: int, score: float, track_id: int | None = None, x: float = 10) -> Box:
    return Box(frame_id=frame_id, class_id=1, source=BoxSource.model, score=score, model_version="two-frame-v3",
               track_id=track_id, x=x, y=10, w=24, h=20)


def _scene(app, status: SceneStatus = SceneStatus.new):
    """Frames 0-3: two pre-labels on frame 0 (0.9, 0.3), one hidden-by-threshold pre-label on
    frame 2 (0.15), a pre-label a track started from on frame 1, a drawn box on frame 3."""
    seeded = seed_scene(app, frames=4, prelabels=2, status=status)
    with app.app_context():
        f = seeded.frame_ids
        db.session.add_all([_prelabel(f[2], 0.15), _prelabel(f[1], 0.8, track_id=1),
                            Box(frame_id=f[3], class_id=1, source=BoxSource.manual, track_id=1,
                                **lesion_box(3, 160, 120))])
        db.session.commit()
    return seeded


def _boxes(app) -> list[tuple]:
    with app.app_context():
        return sorted((b.id, b.frame_id, b.source.value, b.track_id) for b in db.session.scalars(db.select(Box)))


def test_rejects_every_pending_pre_label_outside_tracks_in_one_undoable_change(app, login):
    seeded = _scene(app)
    other = seed_scene(app, frames=2, prelabels=1)  # another scene's pre-label is never touched
    s = login("annotator")
    url = f"/api/scenes/{seeded.scene_id}/pre-labels/reject"
    before = _boxes(app)

    resp = s.json("POST", url, {"count": 3})
    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["rejected"] == 3 and body["frames"] == [0, 2]
    left = [(b[1], b[2], b[3]) for b in _boxes(app)]
    f = seeded.frame_ids
    assert sorted(left) == sorted([(f[1], "model", 1), (f[3], "manual", 1), (other.frame_ids[0], "model", None)])
    assert sum(len(v) for v in body["scene_boxes"].values()) == 2
    with app.app_context():
        rejects = db.session.scalars(db.select(LabelEvent).where(LabelEvent.action == "reject")).all()
        assert sorted(e.box_id for e in rejects) == sorted(seeded.prelabel_ids + [b[0] for b in before
                                                                             if b[1] == f[2]])
    feedback = {r["model_version"]: r for r in s.get(f"/api/model-feedback?scene_id={seeded.scene_id}")
                .get_json()["versions"]}
    assert feedback["two-frame-v3"]["rejected"] == 3

    assert len(body["undo_ids"]) == 3
    assert s.json("POST", "/api/events/revert", {"event_ids": body["undo_ids"]}).status_code == 200
    assert _boxes(app) == before


def test_a_count_that_is_not_the_scenes_is_refused_and_nothing_changes(app, login):
    seeded = _scene(app)
    s = login("annotator")
    url = f"/api/scenes/{seeded.scene_id}/pre-labels/reject"
    before = _boxes(app)
    missing = s.json("POST", url, {})
    assert missing.status_code == 400 and "'count'" in missing.get_json()["error"]
    assert s.json("POST", url, {"count": "3"}).status_code == 400
    stale = s.json("POST", url, {"count": 2})  # a pre-label arrived after the person confirmed
    assert stale.status_code == 409
    assert "3 pending pre-label(s)" in stale.get_json()["error"] and "frames 0, 2" in stale.get_json()["error"]
    assert stale.get_json()["pending"] == 3
    assert s.json("POST", "/api/scenes/999999/pre-labels/reject", {"count": 0}).status_code == 404
    assert _boxes(app) == before


def test_a_locked_scene_refuses_and_an_empty_one_answers_nothing_to_do(app, login):
    locked = _scene(app, status=SceneStatus.submitted)
    s = login("annotator")
    before = _boxes(app)
    resp = s.json("POST", f"/api/scenes/{locked.scene_id}/pre-labels/reject", {"count": 3})
    assert resp.status_code == 409 and _boxes(app) == before

    clean = seed_scene(app, frames=2)
    resp = s.json("POST", f"/api/scenes/{clean.scene_id}/pre-labels/reject", {"count": 0})
    assert resp.status_code == 200 and resp.get_json()["rejected"] == 0 and resp.get_json()["undo_ids"] == []


def test_after_the_tracks_are_accepted_it_leaves_the_gate_nothing_undecided(app, login):
    seeded = _scene(app)
    s = login("annotator")
    assert s.json("POST", f"/api/scenes/{seeded.scene_id}/tracks/accept", {"track_id": 1}).status_code == 200
    assert s.json("POST", f"/api/scenes/{seeded.scene_id}/pre-labels/reject", {"count": 3}).status_code == 200
    coverage = s.get(f"/api/scenes/{seeded.scene_id}").get_json()["coverage"]
    assert [row["undecided"] for row in coverage] == [0, 0, 0, 0]
