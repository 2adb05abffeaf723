"""Track propagation through a scene from keyframes: synthetic motion with known truth (the
algorithm), then a stored scene (boxes, events, fused offers, re-propagation)."""
from __future__ import annotations

import numpy as np
import pytest
from helpers import lesion_box, seed_scene, shifted, texture

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, LabelEvent, Scene
from annotator.services.flow_cache import FlowCache
from annotator.services.propagate import FlowPair, flow_pair, reversed_pair
from annotator.services.track_fuse import fused_box
from annotator.services.track_fuse import steer
from annotator.services.track_propagation import changed_positions, propagate_stored_track, propagate_track

DX, DY = 1.5, -1.0  # known motion per frame
START = {"x": 70.0, "y": 90.0, "w": 50.0, "h": 40.0}


def truth(i: int) -> dict[str, float]:
    return {**START, "x": START["x"] + DX * i, "y": START["y"] + DY * i}


def moving(n: int, cut: int | None = None) -> list[np.ndarray]:
    """The texture moving by (DX, DY) a frame; from frame ``cut`` on, another texture (a new
    view: the object left the plane) moving alike."""
    base, other = texture(), texture(seed=5)
    return [shifted(other if cut is not None and i >= cut else base, DX * i, DY * i) for i in range(n)]


def flows_of(frames: list[np.ndarray], bias: float = 0.0):
    """flow_at for a list of images; ``bias`` px added to every pair's forward flow in x (and
    taken from its backward flow): each direction of propagation drifts, in opposite senses."""
    cache = FlowCache()

    def pair(i: int) -> FlowPair:
        def compute() -> FlowPair:
            f = flow_pair(frames[i], frames[i + 1])
            add = np.array([bias, 0.0], np.float32)
            return FlowPair(f.forward + add, f.backward - add, f.scale, f.image_size, f.previous, f.following)
        return cache.get(i, compute)

    def flow_at(i: int, j: int) -> FlowPair:
        return pair(i) if j == i + 1 else reversed_pair(pair(j))
    return flow_at


def error(box: dict[str, float], i: int) -> float:
    t = truth(i)
    return max(abs(box[k] - t[k]) for k in ("x", "y", "w", "h"))


def test_the_box_follows_a_known_shift_forward_and_backward():
    frames = moving(20)
    flow_at = flows_of(frames)
    forward = propagate_track(20, {0: truth(0)}, flow_at)
    backward = propagate_track(20, {19: truth(19)}, flow_at)
    for result in (forward, backward):
        assert sorted(result.boxes) == list(range(20)) and not result.needs_look
        assert max(error(result.boxes[i], i) for i in range(20)) < 1.0
        assert min(b["confidence"] for b in result.boxes.values()) > 0.5


def test_blending_beats_either_direction_mid_span_and_meets_the_keyframes():
    frames = moving(20)
    flow_at = flows_of(frames, bias=0.3)
    forward_only = propagate_track(20, {0: truth(0)}, flow_at).boxes
    backward_only = propagate_track(20, {19: truth(19)}, flow_at).boxes
    both = propagate_track(20, {0: truth(0), 19: truth(19)}, flow_at).boxes
    for i in (8, 10, 11):
        assert error(both[i], i) < 0.5 * min(error(forward_only[i], i), error(backward_only[i], i))
    assert error(forward_only[10], 10) > 2.0  # the drift is real
    assert both[0] == {**truth(0), "confidence": 1.0, "keyframe": True}
    assert both[19] == {**truth(19), "confidence": 1.0, "keyframe": True}
    for i in range(1, 19):  # weights by distance: the nearer keyframe's chain counts more
        w = (19 - i) / 19
        assert both[i]["x"] == pytest.approx(w * forward_only[i]["x"] + (1 - w) * backward_only[i]["x"])


def test_a_correction_repropagates_only_the_spans_it_bounds():
    frames = moving(26)
    flow_at = flows_of(frames, bias=0.3)
    keyframes = {0: truth(0), 19: truth(19)}
    before = propagate_track(26, keyframes, flow_at)
    keyframes[10] = {**truth(10), "x": truth(10)["x"] + 4.0}  # the annotator moved frame 10's box
    after = propagate_track(26, keyframes, flow_at, around=10)
    assert after.covered == range(1, 19)
    changed = changed_positions(before, after)
    assert 10 in changed and set(range(5, 16)) <= set(changed) and set(changed) <= set(range(1, 19))
    whole = propagate_track(26, keyframes, flow_at)
    for i in range(26):  # the partial run agrees with a full one where it ran, and left the rest
        expected = whole.boxes[i] if i in after.covered else before.boxes[i]
        assert (after.boxes if i in after.covered else before.boxes)[i] == pytest.approx(expected)


def test_propagation_stops_where_the_object_leaves_and_marks_the_frame():
    frames = moving(20, cut=12)
    result = propagate_track(20, {0: truth(0)}, flows_of(frames))
    assert result.needs_look == {12}
    assert sorted(result.boxes) == list(range(12))
    assert max(error(result.boxes[i], i) for i in range(12)) < 1.0
    # With a keyframe in the new view, the backward chain stops at the cut too; each side of
    # it keeps its own chain's boxes.
    both = propagate_track(20, {0: truth(0), 16: truth(16)}, flows_of(frames))
    assert both.needs_look == {11, 12} and sorted(both.boxes) == list(range(20))
    assert max(error(both.boxes[i], i) for i in range(20)) < 1.0


def test_propagation_stops_when_the_object_fades_out_of_a_moving_plane():
    """A dark lesion that fades away while the tissue around it keeps moving: the flow stays
    consistent, the box's content stops resembling its keyframe's."""
    base = texture().astype(np.float32)
    yy, xx = np.mgrid[0:200, 0:240]
    lesion = np.hypot(xx - 95.0, yy - 110.0) < 22

    def frame(i: int, depth: float) -> np.ndarray:
        return shifted(np.clip(base * (1 - depth * lesion), 0, 255).astype(np.uint8), DX * i, DY * i)

    fading = [frame(i, max(0.0, 0.8 * (1 - i / 10))) for i in range(20)]
    result = propagate_track(20, {0: truth(0)}, flows_of(fading))
    (stop,) = result.needs_look
    assert 3 <= stop <= 10 and sorted(result.boxes) == list(range(stop))
    staying = [frame(i, 0.8) for i in range(20)]
    assert sorted(propagate_track(20, {0: truth(0)}, flows_of(staying)).boxes) == list(range(20))


def _leaving(gone: int | None, n: int = 20) -> tuple[list[np.ndarray], dict[int, dict[str, float]]]:
    """Phantom-like: persistent speckle moving with the plane and a faint dark lesion (a
    quarter of the annotator's loose box) that fades out over frames ``gone - 2 .. gone``,
    as a lesion leaving the imaging plane does; the truth box per frame while it shows."""
    speckle = texture(seed=3).astype(np.float32)
    yy, xx = np.mgrid[0:200, 0:240]
    lesion = np.hypot(xx - 95.0, yy - 110.0) < 12
    frames, boxes = [], {}
    for i in range(n):
        depth = 0.6 if gone is None else 0.6 * max(0.0, min(1.0, (gone - i) / 2))
        image = (110 + speckle - speckle.mean()) * (1 - depth * lesion)
        frames.append(shifted(np.clip(image, 0, 255).astype(np.uint8), DX * i, DY * i))
        if depth > 0:
            boxes[i] = {"x": 79.0 + DX * i, "y": 94.0 + DY * i, "w": 32.0, "h": 32.0}
    return frames, boxes


def test_a_lesion_leaving_the_plane_over_moving_speckle_stops_the_chain_where_it_is_gone():
    """The speckle keeps moving with the plane, so the flow stays sure and the box keeps
    resembling its keyframe's; the lesion's own contrast against the tissue around it is what
    goes. The chain must stop on the first frame without the lesion, not carry on to the end."""
    frames, truth = _leaving(gone=10)
    result = propagate_track(20, {0: truth[0]}, flows_of(frames))
    assert max(truth) == 9 and result.needs_look == {10}
    assert sorted(result.boxes) == list(range(10))
    assert max(max(abs(result.boxes[i][k] - truth[i][k]) for k in ("x", "y", "w", "h")) for i in range(10)) < 1.5
    staying, truth = _leaving(gone=None)
    kept = propagate_track(20, {0: truth[0]}, flows_of(staying))
    assert not kept.needs_look and sorted(kept.boxes) == list(range(20))


def test_a_box_that_leaves_the_image_stops_the_chain():
    base = texture()
    frames = [shifted(base, 12.0 * i, 0.0) for i in range(12)]
    start = {"x": 150.0, "y": 80.0, "w": 40.0, "h": 40.0}
    result = propagate_track(12, {0: start}, flows_of(frames))
    assert len(result.needs_look) == 1
    stop = next(iter(result.needs_look))
    assert 4 <= stop <= 8 and all(i < stop for i in result.boxes)


def test_the_fused_box_is_the_overlapping_prelabel():
    box = {"x": 10.0, "y": 10.0, "w": 40.0, "h": 40.0}
    near = {"id": 7, "x": 12.0, "y": 8.0, "w": 42.0, "h": 40.0}
    far = {"id": 8, "x": 40.0, "y": 40.0, "w": 40.0, "h": 40.0}
    assert fused_box(box, [far, near]) is near
    assert fused_box(box, [far]) is None


def test_a_prelabel_steers_the_propagated_box_halfway_but_not_a_keyframe_nor_another_object():
    boxes = {0: {"x": 10.0, "y": 10.0, "w": 40.0, "h": 40.0, "confidence": 1.0, "keyframe": True},
             1: {"x": 10.0, "y": 10.0, "w": 40.0, "h": 40.0, "confidence": 0.9},
             2: {"x": 10.0, "y": 10.0, "w": 40.0, "h": 40.0, "confidence": 0.8}}
    near = {"x": 14.0, "y": 8.0, "w": 42.0, "h": 40.0}
    far = {"x": 40.0, "y": 40.0, "w": 40.0, "h": 40.0}
    steered = steer(boxes, {0: [near], 1: [far, near], 2: [far]})
    assert steered[0] == boxes[0] and steered[2] == boxes[2]
    assert steered[1] == {"x": 12.0, "y": 9.0, "w": 41.0, "h": 40.0, "confidence": 0.9}
    assert boxes[1]["x"] == 10.0  # the boxes given are left as they were


def test_the_flow_cache_computes_once_and_drops_the_least_recent_beyond_its_bound():
    cache = FlowCache(max_bytes=3 * 800)
    calls = []

    def make(key: str):
        return lambda: calls.append(key) or np.zeros(100)  # 800 bytes

    for key in ("a", "b", "a", "c", "d", "a", "b"):
        cache.get(key, make(key))
    # "a" was used again before "c" and "d" came, so "b" was the one dropped
    assert calls == ["a", "b", "c", "d", "b"] and len(cache) == 3


def test_keyframes_outside_the_scene_are_refused():
    with pytest.raises(ValueError):
        propagate_track(5, {5: START}, lambda i, j: None)


# --- stored -----------------------------------------------------------------------------------

def test_a_stored_track_is_propagated_as_suggestions_and_a_correction_rewrites_its_spans(app):
    seeded = seed_scene(app, frames=8, width=200, height=160)
    ids = seeded.frame_ids
    with app.app_context():
        for i in (0, 7):
            db.session.add(Box(frame_id=ids[i], class_id=1, source=BoxSource.manual, track_id=5,
                               **lesion_box(i, 200, 160)))
        # another track and a pending pre-label of the class over the lesion on frame 4
        db.session.add(Box(frame_id=ids[2], class_id=1, source=BoxSource.manual, track_id=6,
                           x=150, y=10, w=20, h=20))
        db.session.add(Box(frame_id=ids[4], class_id=1, source=BoxSource.model, score=0.8,
                           **{**lesion_box(4, 200, 160), "x": lesion_box(4, 200, 160)["x"] + 2}))
        db.session.commit()
        scene = db.session.get(Scene, seeded.scene_id)
        result = propagate_stored_track(scene, 5, None)
        assert result.changed == [1, 2, 3, 4, 5, 6] and result.needs_look == []
        stored = {b.frame.frame_index: b for b in db.session.scalars(db.select(Box).filter_by(track_id=5))}
        for i in range(1, 7):
            box = stored[i]
            assert box.source == BoxSource.propagated and box.class_id == 1 and 0 < box.score <= 1
            assert abs(box.x - lesion_box(i, 200, 160)["x"]) < 2.0
        assert stored[0].source == stored[7].source == BoxSource.manual
        (offer,) = result.offers
        assert offer["frame_index"] == 4 and offer["track_id"] == 5
        assert offer["x"] == lesion_box(4, 200, 160)["x"] + 2
        events = db.session.scalars(db.select(LabelEvent).where(LabelEvent.id.in_(result.event_ids))).all()
        assert sorted(e.frame_id for e in events if e.action == "propagate") == ids[1:7]
        assert all(e.box_id == stored[ids.index(e.frame_id)].id for e in events if e.action == "propagate")

        # The annotator corrects frame 3 (it becomes a keyframe): only frames 1-6 may change.
        untouched = {i: (stored[i].id, stored[i].x) for i in (0, 7)}
        corrected = stored[3]
        corrected.source, corrected.x = BoxSource.manual, corrected.x + 6
        db.session.commit()
        again = propagate_stored_track(scene, 5, None, changed=corrected.frame)
        assert again.changed and set(again.changed) <= {1, 2, 4, 5, 6}
        now = {b.frame.frame_index: b for b in db.session.scalars(db.select(Box).filter_by(track_id=5))}
        assert {i: (now[i].id, now[i].x) for i in (0, 7)} == untouched
        assert now[3].source == BoxSource.manual and len(now) == 8
        assert db.session.scalar(db.select(db.func.count(Box.id)).filter_by(track_id=6)) == 1

        # A box drawn on frame 5, where the track has a propagated box, replaces it.
        db.session.add(Box(frame_id=ids[5], class_id=1, source=BoxSource.manual, track_id=5,
                           **lesion_box(5, 200, 160)))
        db.session.commit()
        third = propagate_stored_track(scene, 5, None, changed=db.session.get(Frame, ids[5]))
        assert 5 in third.changed and set(third.changed) <= {4, 5, 6}
        on5 = db.session.scalars(db.select(Box).filter_by(frame_id=ids[5], track_id=5)).all()
        assert [b.source for b in on5] == [BoxSource.manual]


def test_a_track_without_a_drawn_box_is_refused(app):
    from annotator.services.propagate import PropagationRefused

    seeded = seed_scene(app, frames=3)
    with app.app_context():
        with pytest.raises(PropagationRefused, match="no drawn box"):
            propagate_stored_track(db.session.get(Scene, seeded.scene_id), 9, None)


def test_the_route_propagates_a_track_and_refuses_bad_input(app, login):
    seeded = seed_scene(app, frames=5, width=200, height=160)
    with app.app_context():
        for i in (0, 4):
            db.session.add(Box(frame_id=seeded.frame_ids[i], class_id=1, source=BoxSource.manual,
                               track_id=3, **lesion_box(i, 200, 160)))
        db.session.commit()
    s = login("annotator")
    url = f"/scenes/{seeded.scene_id}/propagate-track"
    resp = s.json("POST", url, {"track_id": 3})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["changed_frames"] == [1, 2, 3] and data["scene"]["status"] == "in_progress"
    assert [f["frame_index"] for f in data["frames"]] == [1, 2, 3]
    assert all(b["source"] == "propagated" and b["track_id"] == 3 for f in data["frames"] for b in f["boxes"])
    again = s.json("POST", url, {"track_id": 3, "frame_id": seeded.frame_ids[2]}).get_json()
    assert again["changed_frames"] == []  # nothing moved: nothing rewritten
    for body, status, words in (({"track_id": "x"}, 400, "'track_id' must be"),
                                ({"track_id": 8}, 400, "no drawn box"),
                                ({"track_id": 3, "frame_id": 10**6}, 404, "is not in scene")):
        resp = s.json("POST", url, body)
        assert resp.status_code == status and words in resp.get_json()["error"], resp.get_json()


# --- a track started from a pending pre-label ---------------------------------------------------

def _prelabelled(app, frames: int = 6) -> tuple:
    """A scene whose only box is a pending pre-label over the lesion on frame 0."""
    seeded = seed_scene(app, frames=frames, width=200, height=160)
    with app.app_context():
        pre = Box(frame_id=seeded.frame_ids[0], class_id=1, source=BoxSource.model, score=0.9,
                  model_version="m1", **lesion_box(0, 200, 160))
        db.session.add(pre)
        db.session.commit()
        return seeded, pre.id


def _state(app) -> list[tuple]:
    with app.app_context():
        return sorted((b.id, b.frame_id, b.source.value, b.track_id) for b in db.session.scalars(db.select(Box)))


def test_t_on_a_prelabel_starts_a_track_from_it_and_one_undo_takes_it_back(app, login):
    seeded, pre_id = _prelabelled(app)
    s = login("annotator")
    url = f"/scenes/{seeded.scene_id}/propagate-track"
    before = _state(app)
    resp = s.json("POST", url, {"box_id": pre_id})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["track_id"] == 1 and data["started_from"] == pre_id
    assert data["changed_frames"] == [1, 2, 3, 4, 5]
    # The pre-label comes back with its track: still the detector's box, pending.
    seed = next(b for f in data["frames"] if f["frame_index"] == 0 for b in f["boxes"])
    assert (seed["id"], seed["source"], seed["track_id"]) == (pre_id, "model", 1)
    carried = [b for f in data["frames"] if f["frame_index"] > 0 for b in f["boxes"]]
    assert len(carried) == 5 and all(b["source"] == "propagated" and b["track_id"] == 1 for b in carried)
    for b in carried:
        assert abs(b["x"] - lesion_box(seeded.frame_ids.index(b["frame_id"]), 200, 160)["x"]) < 2.0
    listed = s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["tracks"]
    assert [(t["track_id"], t["keyframes"], t["pending"]) for t in listed] == [(1, [], [0, 1, 2, 3, 4, 5])]
    events = s.get(f"/api/scenes/{seeded.scene_id}/events").get_json()["events"]
    (update,) = [e for e in events if e["action"] == "update"]
    assert update["box_id"] == pre_id and update["before"]["track_id"] is None
    assert update["after"]["track_id"] == 1 and update["after"]["source"] == "model"
    # The seed is the track's keyframe: T on the track (or on the seed again) changes nothing.
    assert s.json("POST", url, {"track_id": 1}).get_json()["changed_frames"] == []
    assert s.json("POST", url, {"box_id": pre_id}).get_json()["started_from"] is None

    undo = s.json("POST", "/api/events/revert", {"event_ids": data["undo"]})
    assert undo.status_code == 200, undo.get_json()
    assert _state(app) == before
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert feedback["m1"]["accepted"] == feedback["m1"]["rejected"] == 0


def test_starting_a_track_from_a_box_refuses_bad_input_and_writes_nothing(app, login):
    seeded, pre_id = _prelabelled(app)
    s = login("annotator")
    url = f"/scenes/{seeded.scene_id}/propagate-track"
    other, _ = _prelabelled(app)
    with app.app_context():
        foreign = db.session.scalar(db.select(Box.id).filter_by(frame_id=other.frame_ids[0]))
    before = _state(app)
    for body, status, words in (({}, 400, "Name the track"),
                                ({"box_id": "x"}, 400, "'box_id' must be"),
                                ({"box_id": 10**6}, 404, "is not in scene"),
                                ({"box_id": foreign}, 404, "is not in scene"),
                                ({"box_id": pre_id, "track_id": 4}, 409, "is not in track 4")):
        resp = s.json("POST", url, body)
        assert resp.status_code == status and words in resp.get_json()["error"], (body, resp.get_json())
    assert _state(app) == before
    # A drawn box on the seed's frame, in the seed's track: two boxes to start from there.
    assert s.json("POST", url, {"box_id": pre_id}).status_code == 200
    drawn = s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
                   {"class_id": 1, "track_id": 1, **lesion_box(0, 200, 160)})
    assert drawn.status_code == 201, drawn.get_json()
    before = _state(app)
    resp = s.json("POST", url, {"track_id": 1})
    assert resp.status_code == 400 and "2 boxes to start from on frame 0" in resp.get_json()["error"]
    assert _state(app) == before


def test_a_rejected_seed_leaves_suggestions_without_a_keyframe_and_an_edited_one_stays_the_keyframe(app, login):
    seeded, pre_id = _prelabelled(app)
    s = login("annotator")
    url = f"/scenes/{seeded.scene_id}/propagate-track"
    assert s.json("POST", url, {"box_id": pre_id}).status_code == 200
    seed = s.get(f"/api/frames/{seeded.frame_ids[0]}/boxes").get_json()["boxes"][0]
    moved = s.json("PATCH", f"/api/boxes/{pre_id}", {"x": seed["x"] + 3, "row_version": seed["row_version"]})
    assert moved.status_code == 200, moved.get_json()
    assert (moved.get_json()["box"]["source"], moved.get_json()["box"]["track_id"]) == ("manual", 1)
    feedback = {v["model_version"]: v for v in s.get("/api/model-feedback").get_json()["versions"]}
    assert feedback["m1"]["accepted"] == 1  # an edited pre-label counts as accepted
    again = s.json("POST", url, {"track_id": 1, "frame_id": seeded.frame_ids[0]})
    assert again.status_code == 200 and again.get_json()["changed_frames"], again.get_json()

    # Rejected instead: the propagated boxes stay, suggestions of a track with nothing to start from.
    seeded, pre_id = _prelabelled(app)
    url = f"/scenes/{seeded.scene_id}/propagate-track"
    started = s.json("POST", url, {"box_id": pre_id}).get_json()
    seed = next(b for f in started["frames"] if f["frame_index"] == 0 for b in f["boxes"])
    assert s.json("POST", f"/api/boxes/{pre_id}/reject", {"row_version": seed["row_version"]}).status_code == 200
    tracks = s.get(f"/api/scenes/{seeded.scene_id}/tracks").get_json()["tracks"]
    assert [(t["track_id"], t["keyframes"], t["pending"]) for t in tracks] == [(started["track_id"], [], [1, 2, 3, 4, 5])]
    resp = s.json("POST", url, {"track_id": started["track_id"]})
    assert resp.status_code == 400 and "draw or accept a box first" in resp.get_json()["error"]


def test_a_repropagation_after_a_correction_asks_for_a_second_look_only_where_the_box_moved_visibly(app):
    seeded = seed_scene(app, frames=8, width=200, height=160)
    ids = seeded.frame_ids
    with app.app_context():
        for i in (0, 7):
            db.session.add(Box(frame_id=ids[i], class_id=1, source=BoxSource.manual, track_id=5,
                               **lesion_box(i, 200, 160)))
        db.session.commit()
        scene = db.session.get(Scene, seeded.scene_id)
        first = propagate_stored_track(scene, 5, None)
        assert first.changed == [1, 2, 3, 4, 5, 6]
        corrected = db.session.scalar(db.select(Box).filter_by(frame_id=ids[3], track_id=5))
        corrected.source, corrected.x = BoxSource.manual, corrected.x + 12
        db.session.commit()
        again = propagate_stored_track(scene, 5, None, changed=corrected.frame)
        assert again.look_again and set(again.look_again) <= set(again.changed)
        assert 3 not in again.look_again and 2 in again.look_again  # next to the correction: moved most
