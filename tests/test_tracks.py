"""Tracks through the API: every box in a track, class change, split, merge, accept a span;
each audited, refusals 4xx with nothing written, locks and assignment respected."""
from __future__ import annotations

import pytest
from helpers import lesion_box, seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource, LabelEvent, Scene, SceneStatus, User


def _box(frame_id: int, i: int, track_id: int, source: BoxSource = BoxSource.manual, class_id: int = 1) -> Box:
    return Box(frame_id=frame_id, class_id=class_id, source=source, track_id=track_id,
               score=0.8 if source != BoxSource.manual else None, **lesion_box(i, 160, 120))


@pytest.fixture
def track(app):
    """A 4-frame scene with track 1: drawn on frames 0 and 3, propagated on 1 and 2."""
    seeded = seed_scene(app, frames=4)
    with app.app_context():
        for i, fid in enumerate(seeded.frame_ids):
            db.session.add(_box(fid, i, 1, BoxSource.manual if i in (0, 3) else BoxSource.propagated))
        db.session.commit()
    return seeded


def _snapshot(app) -> tuple:
    with app.app_context():
        return (db.session.scalar(db.select(db.func.count(LabelEvent.id))),
                sorted((b.id, b.track_id, b.class_id, b.source.value)
                       for b in db.session.scalars(db.select(Box))))


def _tracks(s, scene_id: int) -> dict[int, dict]:
    resp = s.get(f"/api/scenes/{scene_id}/tracks")
    assert resp.status_code == 200
    return {t["track_id"]: t for t in resp.get_json()["tracks"]}


def test_a_drawn_box_starts_a_track_or_joins_the_chosen_one(app, login):
    seeded = seed_scene(app, frames=3)
    s = login("annotator")
    draw = lambda i, **kw: s.json("POST", f"/api/frames/{seeded.frame_ids[i]}/boxes",
                                  {"class_id": 1, **lesion_box(i, 160, 120), **kw})
    assert draw(0).get_json()["box"]["track_id"] == 1
    assert draw(1).get_json()["box"]["track_id"] == 2
    assert draw(2, track_id=1).get_json()["box"]["track_id"] == 1
    before = _snapshot(app)
    for kw, words in (({"track_id": 9}, "has no track 9"), ({"track_id": 1}, "already has a drawn box"),
                      ({"track_id": "1"}, "'track_id' must be")):
        resp = draw(0, **kw)
        assert resp.status_code == 400 and words in resp.get_json()["error"], resp.get_json()
    assert _snapshot(app) == before
    tracks = _tracks(s, seeded.scene_id)
    assert tracks[1]["frames"] == [0, 2] and tracks[1]["keyframes"] == [0, 2]
    assert tracks[1]["state"] == "accepted" and tracks[2]["frames"] == [1]


def test_a_deleted_tracks_number_is_not_given_to_a_new_track(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    draw = lambda i: s.json("POST", f"/api/frames/{seeded.frame_ids[i]}/boxes",
                            {"class_id": 1, **lesion_box(i, 160, 120)}).get_json()["box"]
    assert draw(0)["track_id"] == 1
    newest = draw(1)
    assert newest["track_id"] == 2
    assert s.json("DELETE", f"/api/boxes/{newest['id']}", {"row_version": 1}).status_code == 200
    assert draw(1)["track_id"] == 3


def test_accepted_pre_labels_each_start_a_track(app, login):
    seeded = seed_scene(app, frames=2, prelabels=3)
    s = login("annotator")
    first = s.get(f"/api/frames/{seeded.frame_ids[0]}/boxes").get_json()["boxes"][0]
    assert first["track_id"] is None
    accepted = s.json("POST", f"/api/boxes/{first['id']}/accept", {"row_version": first["row_version"]})
    assert accepted.get_json()["box"]["track_id"] == 1
    rest = s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/accept-above", {"threshold": 0.0}).get_json()
    assert sorted(b["track_id"] for b in rest["boxes"]) == [1, 2, 3]


def test_key_p_carries_the_track_id(app, login):
    seeded = seed_scene(app, frames=3)
    s = login("annotator")
    drawn = s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
                   {"class_id": 1, **lesion_box(0, 160, 120)}).get_json()["box"]
    resp = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": seeded.frame_ids[0], "frames": 2})
    assert resp.status_code == 200, resp.get_json()
    carried = [b for f in resp.get_json()["frames"] for b in f["boxes"]]
    assert len(carried) == 2 and {b["track_id"] for b in carried} == {drawn["track_id"]}


def test_a_track_changes_class_on_every_frame_audited(app, login, track):
    s = login("annotator")
    url = f"/api/scenes/{track.scene_id}/tracks/class"
    before = _snapshot(app)
    for body, status in (({"track_id": 1, "class_id": 99}, 400), ({"track_id": 7, "class_id": 2}, 404),
                         ({"class_id": 2}, 400)):
        assert s.json("POST", url, body).status_code == status
    assert _snapshot(app) == before
    resp = s.json("POST", url, {"track_id": 1, "class_id": 2})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["tracks"][0]["class_id"] == 2 and data["scene"]["status"] == "in_progress"
    with app.app_context():
        assert {b.class_id for b in db.session.scalars(db.select(Box))} == {2}
        # Sources kept: a propagated box stays a suggestion, whatever its class.
        assert sorted(b.source.value for b in db.session.scalars(db.select(Box))) == \
            ["manual", "manual", "propagated", "propagated"]
        updates = db.session.scalars(db.select(LabelEvent).filter_by(action="update")).all()
        assert len(updates) == 4 and all(e.after["class_id"] == 2 for e in updates)
    undo = s.json("POST", "/api/events/revert", {"event_ids": data["undo_ids"]})
    assert undo.status_code == 200
    assert _tracks(s, track.scene_id)[1]["class_id"] == 1


def test_split_then_merge_and_a_merge_over_a_shared_frame_is_refused(app, login, track):
    s = login("annotator")
    base = f"/api/scenes/{track.scene_id}/tracks"
    before = _snapshot(app)
    for at in (0, 9):  # every box, or none, on one side: nothing to split
        resp = s.json("POST", f"{base}/split", {"track_id": 1, "frame_index": at})
        assert resp.status_code == 400 and "nothing to split" in resp.get_json()["error"]
    assert _snapshot(app) == before
    resp = s.json("POST", f"{base}/split", {"track_id": 1, "frame_index": 2})
    assert resp.status_code == 200, resp.get_json()
    assert resp.get_json()["new_track_id"] == 2
    tracks = _tracks(s, track.scene_id)
    assert tracks[1]["frames"] == [0, 1] and tracks[2]["frames"] == [2, 3]
    # A third track overlapping track 1 on frame 1 cannot be merged into it.
    draw = s.json("POST", f"/api/frames/{track.frame_ids[1]}/boxes", {"class_id": 1, "x": 1, "y": 1, "w": 9, "h": 9})
    assert draw.get_json()["box"]["track_id"] == 3
    before = _snapshot(app)
    refused = s.json("POST", f"{base}/merge", {"track_id": 1, "other": 3})
    assert refused.status_code == 409 and refused.get_json()["frames"] == [1]
    assert "both have a box on frames 1" in refused.get_json()["error"]
    assert s.json("POST", f"{base}/merge", {"track_id": 1, "other": 1}).status_code == 400
    assert _snapshot(app) == before
    merged = s.json("POST", f"{base}/merge", {"track_id": 1, "other": 2})
    assert merged.status_code == 200, merged.get_json()
    assert _tracks(s, track.scene_id)[1]["frames"] == [0, 1, 2, 3]
    with app.app_context():
        moves = [(e.before["track_id"], e.after["track_id"])
                 for e in db.session.scalars(db.select(LabelEvent).filter_by(action="update"))]
    assert moves == [(1, 2), (1, 2), (2, 1), (2, 1)]


def test_accepting_a_span_makes_its_suggestions_manual_for_the_gate_and_the_reviewer(app, login, track):
    s = login("annotator")
    url = f"/api/scenes/{track.scene_id}/tracks/accept"
    before = _snapshot(app)
    for body, status in (({"track_id": 1, "from_frame": 3, "to_frame": 1}, 400),
                         ({"track_id": 1, "from_frame": 3}, 409)):  # only a keyframe there
        assert s.json("POST", url, body).status_code == status
    assert _snapshot(app) == before
    resp = s.json("POST", url, {"track_id": 1, "from_frame": 1, "to_frame": 1})
    assert resp.status_code == 200, resp.get_json()
    t = resp.get_json()["tracks"][0]
    assert t["accepted"] == [1] and t["pending"] == [2] and t["keyframes"] == [0, 3]
    gate = s.json("POST", f"/api/scenes/{track.scene_id}/status", {"status": "submitted"})
    assert gate.status_code == 409 and "2" in gate.get_json()["error"]
    t = s.json("POST", url, {"track_id": 1}).get_json()["tracks"][0]
    assert t["accepted"] == [1, 2] and t["state"] == "accepted"
    assert s.json("POST", f"/api/scenes/{track.scene_id}/status", {"status": "submitted"}).status_code == 200
    with app.app_context():
        accepts = db.session.scalars(db.select(LabelEvent).filter_by(action="accept")).all()
        assert [e.source for e in accepts] == ["propagated", "propagated"]
        listed = [e.after for e in db.session.scalars(db.select(LabelEvent).filter_by(action="accept_track"))]
        assert listed == [{"track_id": 1, "frames": [1], "spans": "1"},
                          {"track_id": 1, "frames": [2], "spans": "2"}]
    origins = s.get(f"/api/scenes/{track.scene_id}").get_json()["review"]["origins"]
    assert sorted(o["kind"] for o in origins.values()) == ["accepted", "accepted", "drawn", "drawn"]
    audit = login("reviewer").get(f"/scenes/{track.scene_id}/audit").get_data(as_text=True)
    assert "accept track" in audit and '"frames": [1]' in audit


def test_track_operations_respect_roles_locks_and_assignment(app, login, track):
    base = f"/api/scenes/{track.scene_id}/tracks"
    body = {"track_id": 1, "class_id": 2}
    before = _snapshot(app)
    assert login("reviewer").json("POST", f"{base}/class", body).status_code == 403
    with app.app_context():
        scene = db.session.get(Scene, track.scene_id)
        scene.assignee_id = db.session.scalar(db.select(User.id).filter_by(username="admin"))
        db.session.commit()
    s = login("annotator")
    resp = s.json("POST", f"{base}/class", body)
    assert resp.status_code == 403 and "assigned to admin" in resp.get_json()["error"]
    with app.app_context():
        scene = db.session.get(Scene, track.scene_id)
        scene.assignee_id, scene.status = None, SceneStatus.submitted
        db.session.commit()
    for op, payload in (("class", body), ("accept", {"track_id": 1}),
                        ("split", {"track_id": 1, "frame_index": 2}), ("merge", {"track_id": 1, "other": 1})):
        resp = s.json("POST", f"{base}/{op}", payload)
        assert resp.status_code in (400, 409), (op, resp.get_json())
    assert _snapshot(app) == before
    assert s.json("POST", f"/api/scenes/{10**6}/tracks/class", body).status_code == 404


def test_accepting_a_track_started_from_a_prelabel_accepts_it_and_retires_its_duplicates(app, login):
    """Track 1 started from a pre-label on frame 0; on frame 3 a pending pre-label of its class
    over the lesion (the detector's duplicate of the track's box), one of the other class
    there, one far off on frame 2, and one over the lesion on frame 5, outside the span."""
    seeded = seed_scene(app, frames=6, width=200, height=160)
    ids = seeded.frame_ids
    pre = lambda i, class_id=1, **kw: Box(frame_id=ids[i], class_id=class_id, source=BoxSource.model, score=0.7,
                                          model_version="m1", **{**lesion_box(i, 200, 160), **kw})
    with app.app_context():
        boxes = [pre(0), pre(3, x=lesion_box(3, 200, 160)["x"] + 3), pre(3, class_id=2), pre(2, x=150, y=5, w=20, h=20),
                 pre(5)]
        db.session.add_all(boxes)
        db.session.commit()
        seed_id, dup_id, other_id, far_id, late_id = (b.id for b in boxes)
    s = login("annotator")
    started = s.json("POST", f"/scenes/{seeded.scene_id}/propagate-track", {"box_id": seed_id})
    assert started.status_code == 200 and started.get_json()["track_id"] == 1, started.get_json()
    coverage = {r["index"]: r for r in s.get(f"/api/scenes/{seeded.scene_id}").get_json()["coverage"]}
    assert coverage[3]["undecided"] == 3
    before = _snapshot(app)

    resp = s.json("POST", f"/api/scenes/{seeded.scene_id}/tracks/accept", {"track_id": 1, "to_frame": 4})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["retired"] == 1
    kept = {b["id"] for boxes in data["scene_boxes"].values() for b in boxes if b["source"] == "model"}
    assert kept == {other_id, far_id, late_id}  # other class, no overlap, outside the span
    track = next(t for t in data["tracks"] if t["track_id"] == 1)
    assert track["accepted"] == [0, 1, 2, 3, 4] and track["pending"] == [5]
    coverage = {r["index"]: r for r in s.get(f"/api/scenes/{seeded.scene_id}").get_json()["coverage"]}
    assert coverage[3]["undecided"] == 1 and coverage[0]["state"] == "boxes"
    gate = s.json("POST", f"/api/scenes/{seeded.scene_id}/status", {"status": "submitted"})
    assert gate.status_code == 409
    assert sorted(gate.get_json()["unfinished_frames"]) == [2, 3, 5]
    with app.app_context():
        accepts = {e.box_id: e.source for e in db.session.scalars(db.select(LabelEvent).filter_by(action="accept"))}
        assert accepts[seed_id] == "model" and list(accepts.values()).count("propagated") == 4
        (replace,) = db.session.scalars(db.select(LabelEvent).filter_by(action="replace", box_id=dup_id)).all()
        assert replace.after is None and replace.id in data["undo_ids"]
    # The seed counts as an accepted pre-label; the retired duplicate is not a rejection.
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert (feedback["m1"]["accepted"], feedback["m1"]["rejected"], feedback["m1"]["pending"]) == (1, 0, 3)

    # One undo: the accepted boxes are suggestions again and the retired pre-label is back.
    undo = s.json("POST", "/api/events/revert", {"event_ids": data["undo_ids"]})
    assert undo.status_code == 200, undo.get_json()
    assert _snapshot(app)[1] == before[1]
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert (feedback["m1"]["accepted"], feedback["m1"]["rejected"], feedback["m1"]["pending"]) == (0, 0, 5)
    assert s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["tracks"][0]["accepted"] == []
