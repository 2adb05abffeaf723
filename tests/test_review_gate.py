"""The review gate: a scene is submitted only when every frame has a decided box or a "no
findings" mark; an admin may override with a reason, audited."""
from __future__ import annotations

from helpers import finish_scene, seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource, LabelEvent, Scene, SceneStatus
from annotator.services.review_gate import spans


def submit(s, scene_id, **extra):
    return s.json("POST", f"/api/scenes/{scene_id}/status", {"status": "submitted", **extra})


def _scene_state(app, scene_id):
    with app.app_context():
        scene = db.session.get(Scene, scene_id)
        actions = [e.action for e in db.session.scalars(
            db.select(LabelEvent).filter_by(scene_id=scene_id).order_by(LabelEvent.id))]
        return scene.status, actions


def test_an_unfinished_scene_is_refused_naming_its_frames(app, login):
    seeded = seed_scene(app, frames=20, prelabels=2, status=SceneStatus.in_progress)
    ann = login("annotator")
    fids = seeded.frame_ids
    # Frame 1 gets a drawn box, frame 2 the "no findings" mark; frame 0 keeps 2 pre-labels.
    ann.json("POST", f"/api/frames/{fids[1]}/boxes", {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    ann.json("POST", f"/api/frames/{fids[2]}/no-findings", {"empty": True})
    with app.app_context():  # frame 3: a box carried by P, not yet accepted
        db.session.add(Box(frame_id=fids[3], class_id=1, x=5, y=5, w=20, h=20,
                           source=BoxSource.propagated, score=0.8))
        db.session.commit()
    before = _scene_state(app, seeded.scene_id)
    resp = submit(ann, seeded.scene_id)
    body = resp.get_json()
    assert resp.status_code == 409
    assert "Frames 4-19 have no box and no \"no findings\" mark" in body["error"]
    assert "frame 0 has 2 pre-labels undecided; frame 3 has 1 propagated box undecided" in body["error"]
    assert body["unfinished_frames"] == [0, *range(3, 20)]
    assert body["first_unfinished_frame_id"] == fids[0]
    assert _scene_state(app, seeded.scene_id) == before  # nothing written

    # The reviewer (and the workspace) see the same per frame.
    coverage = login("reviewer").get(f"/api/scenes/{seeded.scene_id}").get_json()["coverage"]
    assert [c["state"] for c in coverage[:5]] == ["undecided", "boxes", "empty", "undecided", "missing"]
    assert coverage[0]["undecided"] == 2 and coverage[1]["boxes"] == 1 and coverage[2]["empty"]


def test_a_finished_scene_submits(app, login):
    seeded = seed_scene(app, frames=3, prelabels=2)
    ann = login("annotator")
    finish_scene(ann, seeded.scene_id)
    resp = submit(ann, seeded.scene_id)
    assert resp.status_code == 200 and resp.get_json()["scene"]["status"] == "submitted"
    assert "override_gate" not in _scene_state(app, seeded.scene_id)[1]


def test_an_admin_overrides_with_a_reason_and_it_is_audited(app, login):
    seeded = seed_scene(app, frames=5, status=SceneStatus.in_progress)
    admin = login("admin")
    assert submit(admin, seeded.scene_id).status_code == 409  # admins meet the gate too
    resp = submit(admin, seeded.scene_id, override="   ")
    assert resp.status_code == 400 and "reason" in resp.get_json()["error"]
    resp = submit(admin, seeded.scene_id, override="Frames 1-4 are out of plane; the surgeon agreed.")
    assert resp.status_code == 200 and resp.get_json()["scene"]["status"] == "submitted"
    with app.app_context():
        event = db.session.scalar(db.select(LabelEvent).filter_by(action="override_gate"))
        assert event.before == {"status": "in_progress", "unfinished_frames": [0, 1, 2, 3, 4]}
        assert event.after == {"status": "submitted",
                               "reason": "Frames 1-4 are out of plane; the surgeon agreed."}
        assert event.user.username == "admin"
    audit = login("reviewer").get(f"/scenes/{seeded.scene_id}/audit").get_data(as_text=True)
    assert "override gate" in audit and "unfinished frames 0, 1, 2, 3, 4" in audit
    assert "reason: “Frames 1-4 are out of plane" in audit


def test_only_an_admin_may_override(app, login):
    seeded = seed_scene(app, frames=3, status=SceneStatus.in_progress)
    before = _scene_state(app, seeded.scene_id)
    resp = submit(login("annotator"), seeded.scene_id, override="I am sure")
    assert resp.status_code == 403 and "Only an admin" in resp.get_json()["error"]
    resp = login("reviewer").json("POST", f"/api/scenes/{seeded.scene_id}/status",
                                  {"status": "returned", "comment": "x", "override": "why"})
    assert resp.status_code in (400, 409)
    assert _scene_state(app, seeded.scene_id) == before


def test_spans_name_runs_of_frames():
    assert spans([3, 4, 7, 8, 9, 10, 18]) == "3, 4, 7-10, 18"
    assert spans([5]) == "5"
