"""Fused boxes through the JSON API: a track propagated over a frame with a pending pre-label
of its class is offered the detector's edges; accepting the offer keeps the track, resolves
the pre-label (counted as accepted), is audited and undone in one step."""
from __future__ import annotations

from helpers import lesion_box, seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource


def _scene_with_offer(app, login):
    """Track 5 drawn on frames 0 and 7, a pre-label over the lesion on frame 4 (2 px to the
    right of the flow's box), another of the other class there, and one far off on frame 2."""
    seeded = seed_scene(app, frames=8, width=200, height=160)
    ids = seeded.frame_ids
    with app.app_context():
        for i in (0, 7):
            db.session.add(Box(frame_id=ids[i], class_id=1, source=BoxSource.manual, track_id=5,
                               **lesion_box(i, 200, 160)))
        lesion4 = lesion_box(4, 200, 160)
        pre = Box(frame_id=ids[4], class_id=1, source=BoxSource.model, score=0.8, model_version="m1",
                  **{**lesion4, "x": lesion4["x"] + 2, "w": lesion4["w"] + 1})
        other_class = Box(frame_id=ids[4], class_id=2, source=BoxSource.model, score=0.9,
                          model_version="m1", **lesion4)
        far = Box(frame_id=ids[2], class_id=1, source=BoxSource.model, score=0.9, model_version="m1",
                  x=150, y=5, w=20, h=20)
        db.session.add_all([pre, other_class, far])
        db.session.commit()
        pre_id, other_id, far_id = pre.id, other_class.id, far.id
    s = login("annotator")
    resp = s.json("POST", f"/scenes/{seeded.scene_id}/propagate-track", {"track_id": 5})
    assert resp.status_code == 200, resp.get_json()
    return seeded, s, resp.get_json(), pre_id, other_id, far_id


def test_a_propagated_track_offers_the_overlapping_prelabel_and_the_offer_is_listed(app, login):
    seeded, s, propagated, pre_id, _, _ = _scene_with_offer(app, login)
    (offer,) = propagated["fused"]
    assert offer["prelabel_id"] == pre_id and offer["track_id"] == 5 and offer["frame_index"] == 4
    carried = next(b for f in propagated["frames"] if f["frame_index"] == 4 for b in f["boxes"]
                   if b["source"] == "propagated")
    assert offer["box_id"] == carried["id"]
    assert offer["x"] == lesion_box(4, 200, 160)["x"] + 2  # the detector's edges
    listed = s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()
    assert listed["offers"] == [offer]


def test_accepting_an_offer_fuses_audits_counts_and_undoes(app, login):
    seeded, s, propagated, pre_id, other_id, far_id = _scene_with_offer(app, login)
    (offer,) = propagated["fused"]
    url = f"/api/scenes/{seeded.scene_id}/tracks/fuse"
    resp = s.json("POST", url, {"box_id": offer["box_id"], "prelabel_id": offer["prelabel_id"]})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["offers"] == []
    on4 = data["scene_boxes"][str(seeded.frame_ids[4])]
    fused = next(b for b in on4 if b["track_id"] == 5)
    # The detector's edges, the track's identity, the annotator's box; nothing else on frame 4.
    assert fused["id"] == pre_id and fused["source"] == "manual"
    assert {k: fused[k] for k in ("x", "y", "w", "h")} == {k: offer[k] for k in ("x", "y", "w", "h")}
    assert sorted(b["id"] for b in on4) == sorted([pre_id, other_id])
    track = next(t for t in data["tracks"] if t["track_id"] == 5)
    assert 4 in track["keyframes"] and 4 not in track["pending"]

    events = s.get(f"/api/scenes/{seeded.scene_id}/events").get_json()["events"]
    fuse_events = [e for e in events if e["id"] in data["event_ids"]]
    assert sorted(e["action"] for e in fuse_events) == ["accept", "replace"]
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert feedback["m1"]["accepted"] == 1 and feedback["m1"]["rejected"] == 0

    # The same offer again, or a box that is not a propagated box of a track, is refused.
    again = s.json("POST", url, {"box_id": offer["box_id"], "prelabel_id": pre_id})
    assert again.status_code == 404, again.get_json()
    wrong = s.json("POST", url, {"box_id": pre_id, "prelabel_id": other_id})
    assert wrong.status_code == 409 and "not a propagated box" in wrong.get_json()["error"]

    # One undo brings back the propagated box and the pending pre-label, and the offer.
    undo = s.json("POST", "/api/events/revert", {"event_ids": data["undo_ids"]})
    assert undo.status_code == 200, undo.get_json()
    with app.app_context():
        restored = db.session.get(Box, offer["box_id"])
        pre = db.session.get(Box, pre_id)
        assert restored.source == BoxSource.propagated and restored.track_id == 5
        assert pre.source == BoxSource.model and pre.track_id is None
    assert s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["offers"] == [offer]
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert feedback["m1"]["accepted"] == 0


def test_a_fuse_of_boxes_that_are_not_one_object_is_refused(app, login):
    seeded, s, propagated, pre_id, other_id, far_id = _scene_with_offer(app, login)
    url = f"/api/scenes/{seeded.scene_id}/tracks/fuse"
    carried4 = propagated["fused"][0]["box_id"]
    carried2 = next(b["id"] for f in propagated["frames"] if f["frame_index"] == 2 for b in f["boxes"]
                    if b["source"] == "propagated")
    for body, status, words in (
            ({"box_id": carried4, "prelabel_id": other_id}, 409, "not one object"),  # other class
            ({"box_id": carried2, "prelabel_id": far_id}, 409, "not one object"),  # no overlap
            ({"box_id": carried2, "prelabel_id": pre_id}, 409, "not one object"),  # other frame
            ({"box_id": "x", "prelabel_id": pre_id}, 400, "'box_id' must be"),
            ({"box_id": carried4}, 400, "'prelabel_id' must be"),
            ({"box_id": 10**6, "prelabel_id": pre_id}, 404, "is not in scene")):
        resp = s.json("POST", url, body)
        assert resp.status_code == status and words in resp.get_json()["error"], (body, resp.get_json())
    reviewer = login("reviewer")
    resp = reviewer.json("POST", url, {"box_id": carried4, "prelabel_id": pre_id})
    assert resp.status_code == 403


def test_accepting_the_track_retires_an_offered_prelabel_instead_of_leaving_it_undecided(app, login):
    seeded, s, propagated, pre_id, other_id, far_id = _scene_with_offer(app, login)
    resp = s.json("POST", f"/api/scenes/{seeded.scene_id}/tracks/accept", {"track_id": 5})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    # The offered pre-label was the track's object: retired, no offer left; the others stay.
    assert data["retired"] == 1 and data["offers"] == []
    pending = sorted(b["id"] for boxes in data["scene_boxes"].values() for b in boxes if b["source"] == "model")
    assert pending == sorted([other_id, far_id])
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert (feedback["m1"]["accepted"], feedback["m1"]["rejected"], feedback["m1"]["pending"]) == (0, 0, 2)
    assert s.json("POST", "/api/events/revert", {"event_ids": data["undo_ids"]}).status_code == 200
    assert s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["offers"] == propagated["fused"]


def test_prelabels_shown_at_the_slider_steer_the_track_halfway_to_their_edges(app, login):
    """With the workspace's threshold, a pre-label of the track's class shown at it moves the
    propagated box on its frame halfway to the detector's edges; one under it, one of another
    class and one that is not the same object move nothing."""
    seeded, s, plain_run, pre_id, _, _ = _scene_with_offer(app, login)
    url = f"/scenes/{seeded.scene_id}/propagate-track"

    def carried(answer, index):
        return next(b for f in answer["frames"] if f["frame_index"] == index for b in f["boxes"]
                    if b["source"] == "propagated")

    flow4 = carried(plain_run, 4)
    high = s.json("POST", url, {"track_id": 5, "threshold": 0.9})  # the 0.8 pre-label is hidden
    assert high.status_code == 200 and high.get_json()["changed_frames"] == []
    steered = s.json("POST", url, {"track_id": 5, "threshold": 0.5})
    assert steered.status_code == 200, steered.get_json()
    answer = steered.get_json()
    assert answer["changed_frames"] == [4]  # the far pre-label on frame 2 is another object
    box = carried(answer, 4)
    detector = s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["offers"][0]
    assert detector["prelabel_id"] == pre_id
    for k in ("x", "w"):
        assert abs(box[k] - (flow4[k] + detector[k]) / 2) <= 0.051  # stored to 0.1 px
    assert box["track_id"] == 5 and box["source"] == "propagated"
    for bad in (1.5, "high"):
        refused = s.json("POST", url, {"track_id": 5, "threshold": bad})
        assert refused.status_code == 400 and "threshold" in refused.get_json()["error"]
