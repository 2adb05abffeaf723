"""The effort bench's simulated annotator on the track strategies (bench/labeling_effort.py):
what it counts on motion with known truth. No model, no training."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import shifted, texture

from annotator.services.track_propagation import TrackBoxes

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import labeling_effort as effort  # noqa: E402

DX, DY = 1.5, -1.0  # known motion per frame
START = {"x": 70.0, "y": 90.0, "w": 50.0, "h": 40.0, "class_id": 1, "track": 7}
SIZE = (240, 200)


def box(i: int, **changes: float) -> dict:
    return {**START, "x": START["x"] + DX * i, "y": START["y"] + DY * i, **changes}


def views(n: int, cuts: tuple[int, ...] = ()) -> list[np.ndarray]:
    """A texture moving by (DX, DY) a frame; from each frame in ``cuts`` on, another texture
    (a new view: whatever was in the box has left the plane)."""
    textures = [texture(seed=5 * k) for k in range(len(cuts) + 1)]
    return [shifted(textures[sum(i >= c for c in cuts)], DX * i, DY * i) for i in range(n)]


def actions(counts: dict) -> dict:
    return {k: counts[k] for k in effort.ACTIONS}


def test_linear_motion_takes_two_keyframes_and_one_accept():
    flow_at = effort.scene_flows(views(20))
    truth = {i: box(i) for i in range(20)}
    counts, final, _ = effort.label_track(20, truth, flow_at, size=SIZE)
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 0, "accept": 1}
    assert counts["key"] == 1 and counts["look"] == 0  # one T, nothing re-propagated
    assert sorted(final) == list(range(20))
    assert min(effort.iou(final[i], truth[i]) for i in range(20)) > 0.9
    # With the first keyframe alone the chain reaches the last frame too.
    counts, _, _ = effort.label_track(20, truth, flow_at, policy="first", size=SIZE)
    assert actions(counts) == {"draw": 1, "adjust": 0, "delete": 0, "accept": 1}


def test_an_object_on_one_frame_is_one_draw():
    counts, final, _ = effort.label_track(20, {5: box(5)}, effort.scene_flows(views(20)), size=SIZE)
    assert actions(counts) == {"draw": 1, "adjust": 0, "delete": 0, "accept": 0}
    assert counts["key"] == 0 and sorted(final) == [5]


def test_an_object_leaving_with_the_view_leaves_no_box_behind():
    flow_at = effort.scene_flows(views(20, cuts=(12,)))
    counts, final, _ = effort.label_track(20, {i: box(i) for i in range(12)}, flow_at, size=SIZE)
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 0, "accept": 1}
    assert sorted(final) == list(range(12))


def test_where_propagation_stops_and_the_object_goes_on_a_keyframe_is_drawn():
    # Frames 7-13 are another view: the chain from frame 0 stops at 7, the one from frame 19
    # at 13, and the frames between have no box until a keyframe is drawn among them.
    flow_at = effort.scene_flows(views(20, cuts=(7, 14)))
    truth = {i: box(i) for i in range(20)}
    counts, final, _ = effort.label_track(20, truth, flow_at, size=SIZE)
    assert actions(counts) == {"draw": 3, "adjust": 0, "delete": 0, "accept": 1}
    assert counts["key"] == 2 and counts["look"] > 0  # the re-propagated frames are looked at again
    assert min(effort.iou(final[i], truth[i]) for i in range(20)) >= effort.GOOD_IOU


def never_stops(n: int, keyframes: dict, flow_at, around: int | None = None) -> TrackBoxes:
    """A track engine that interpolates between keyframes and carries the end ones to the
    scene's edges: a chain that never notices the object has gone."""
    keys = sorted(keyframes)
    out = TrackBoxes(covered=range(n))
    for i in range(n):
        if i in keyframes:
            out.boxes[i] = {**keyframes[i], "confidence": 1.0, "keyframe": True}
            continue
        a = max([k for k in keys if k < i], default=keys[0])
        b = min([k for k in keys if k > i], default=keys[-1])
        f = 0.0 if a == b else (i - a) / (b - a)
        out.boxes[i] = {**{g: keyframes[a][g] + f * (keyframes[b][g] - keyframes[a][g]) for g in "xywh"},
                        "confidence": 0.9}
    return out


def test_boxes_carried_where_the_object_is_not_cost_a_delete_each(monkeypatch):
    monkeypatch.setattr(effort, "propagate_track", never_stops)
    # Past the object's last frame (it left the plane at frame 14)
    counts, final, _ = effort.label_track(20, {i: box(i) for i in range(14)}, None, size=SIZE)
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 6, "accept": 1}
    assert sorted(final) == list(range(14))
    # In a gap (frames 6-11): the boxes there are deleted, and the two runs accepted apart.
    truth = {i: box(i) for i in [*range(6), *range(12, 20)]}
    counts, final, _ = effort.label_track(20, truth, None, size=SIZE)
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 6, "accept": 2}
    assert sorted(final) == sorted(truth)


def test_a_box_carried_onto_the_object_where_it_is_too_small_to_draw_is_kept(monkeypatch):
    # The object goes on after frame 13 but shrinks under --min-box: the truth an annotator
    # draws ends there, yet the boxes carried over it (IoU >= 0.5) are correct, not strays.
    monkeypatch.setattr(effort, "propagate_track", never_stops)
    small = [[box(i)] if i >= 14 else [] for i in range(20)]
    small[18] = [box(18, x=5.0, y=5.0)]  # elsewhere: the carried box there is a stray
    counts, final, _ = effort.label_track(20, {i: box(i) for i in range(14)}, None, size=SIZE,
                                          small=small)
    # the stray deleted on frame 18 splits the track: two spans to accept
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 1, "accept": 2}
    assert (counts["strays"], counts["small"]) == (1, 5)
    assert sorted(final) == [*range(18), 19]
    # Frame by frame: a proposal on a small object is accepted with the frame, not deleted.
    assert effort.review([box(0), box(0, x=5.0, y=5.0)], [box(0)], small=[box(0, x=5.0, y=5.0)]) == \
        {"draw": 0, "adjust": 0, "delete": 0, "accept": 1}
    assert effort.review([box(0, x=5.0, y=5.0)], [], small=[box(0, x=5.0, y=5.0, class_id=2)]) == \
        {"draw": 0, "adjust": 0, "delete": 1, "accept": 0}


def test_a_propagation_leaving_more_to_delete_than_to_draw_is_undone(monkeypatch):
    # An object on the scene's last 3 frames: 17 boxes carried back over the tissue before
    # it. Undo (one action) and drawing the middle frame beat 17 deletes.
    monkeypatch.setattr(effort, "propagate_track", never_stops)
    counts, final, _ = effort.label_track(20, {i: box(i) for i in (17, 18, 19)}, None, size=SIZE)
    assert actions(counts) == {"draw": 3, "adjust": 0, "delete": 1, "accept": 0}
    assert sorted(final) == [17, 18, 19]


def test_a_drifting_track_gets_a_keyframe_at_its_worst_frame(monkeypatch):
    # The object speeds up midway: interpolating between the end keyframes misses it at the
    # middle; one correction there (an adjust: the box still overlaps) fixes the rest.
    monkeypatch.setattr(effort, "propagate_track", never_stops)
    truth = {i: box(i, x=70.0 + (3.0 * i if i <= 10 else 30.0 + 0.5 * (i - 10))) for i in range(20)}
    counts, final, _ = effort.label_track(20, truth, None, size=SIZE)
    assert actions(counts) == {"draw": 2, "adjust": 1, "delete": 0, "accept": 1}
    assert counts["key"] == 2 and counts["look"] > 0
    assert min(effort.iou(final[i], truth[i]) for i in range(20)) >= effort.GOOD_IOU


def test_tracks_follow_the_region_on_screen_not_the_phantom_name():
    # A vessel region whose phantom track id changes at frame 3 (another branch now covers most
    # of it) is one object to a person; a second piece of an object on a frame is another track.
    truth = [[box(i, track=1 if i < 3 else 2)] for i in range(6)]
    truth[4].append(box(4, x=5.0, y=5.0, w=20.0, h=20.0, track=2))
    tracks = effort.annotator_tracks(truth)
    assert [sorted(t) for t in tracks] == [list(range(6)), [4]]


def test_a_good_pre_label_starts_the_track_and_the_rest_are_retired_or_deleted():
    flow_at = effort.scene_flows(views(20))
    truth = [[box(i)] for i in range(20)]
    plain = effort.simulate_tracks(truth, flow_at, size=SIZE)
    assert actions(plain) == {"draw": 2, "adjust": 0, "delete": 0, "accept": 1}
    # the scene played once to find the objects, each frame checked once
    assert (plain["play"], plain["played"], plain["look"]) == (1, 20, 20)
    prelabels = [[] for _ in range(20)]
    prelabels[0] = [{**box(0, x=box(0)["x"] + 1), "score": 0.9}]           # starts the track (T)
    prelabels[4] = [{**box(4, x=5.0, y=5.0), "score": 0.9}]                 # a false positive
    prelabels[8] = [{**box(8, x=5.0, y=5.0), "score": 0.8}]                 # another
    prelabels[10] = [{**box(10, y=box(10)["y"] - 1), "score": 0.9}]         # retired by the accept
    prelabels[15] = [{**box(15, x=5.0, y=5.0), "score": 0.2}]               # hidden by the slider
    with_model = effort.simulate_tracks(truth, flow_at, prelabels, show_score=0.5, size=SIZE,
                                        policy="clearest")
    # nothing drawn: T on the pre-label, one accept for the track, and one Shift+N rejects the
    # false positives left, the hidden one too (the review gate counts it as undecided)
    assert actions(with_model) == {"draw": 0, "adjust": 0, "delete": 1, "accept": 1}
    assert (with_model["seeded"], with_model["retired"], with_model["rejected"]) == (1, 1, 3)
    only_hidden = [[] for _ in range(20)]
    only_hidden[0], only_hidden[15] = prelabels[0], prelabels[15]
    assert effort.simulate_tracks(truth, flow_at, only_hidden, show_score=0.5, size=SIZE,
                                  policy="clearest")["delete"] == 1
    nothing_left = [[] for _ in range(20)]
    nothing_left[0] = prelabels[0]
    assert effort.simulate_tracks(truth, flow_at, nothing_left, show_score=0.5, size=SIZE,
                                  policy="clearest")["delete"] == 0


def test_a_correction_takes_the_fused_box_where_the_detector_found_the_object(monkeypatch):
    monkeypatch.setattr(effort, "propagate_track", never_stops)
    truth = {i: box(i, x=70.0 + (3.0 * i if i <= 10 else 30.0 + 0.5 * (i - 10))) for i in range(20)}
    counts, final, fused = effort.label_track(20, truth, None, offers=dict(truth), size=SIZE)
    # the drifting middle frame is corrected with U (an accept) instead of an adjust
    assert actions(counts) == {"draw": 2, "adjust": 0, "delete": 0, "accept": 2}
    assert len(fused) == 1 and min(effort.iou(final[i], truth[i]) for i in range(20)) >= effort.GOOD_IOU


def test_time_model_states_a_source_for_every_figure():
    assert set(effort.SOURCES) == set(effort.SECONDS) >= {*effort.ACTIONS, "look"}
    counts = {**effort.new_counts(), "draw": 2, "accept": 1, "look": 20}
    assert effort.seconds(counts) == pytest.approx(2 * 7.0 + 1.75 + 20 * 1.55)


def test_prelabels_that_steer_the_track_hold_an_object_sliding_through_the_tissue():
    """The object moves 1 px a frame more than the tissue (a vessel's cross-section sliding as
    the plane sweeps): the flow's box falls behind, 9 px by frame 9, and needs a correction;
    steered by the detector's boxes on the object, each box is halfway between the two and
    none needs one."""
    n = 12
    flow_at = effort.scene_flows(views(n))
    truth = {i: box(i, x=START["x"] + (DX + 1.0) * i) for i in range(n)}
    alone, _, _ = effort.label_track(n, truth, flow_at, policy="first", size=SIZE)
    assert actions(alone) == {"draw": 1, "adjust": 1, "delete": 0, "accept": 1}
    detector = {i: [{**b, "score": 0.9}] for i, b in truth.items()}
    steered, final, _ = effort.label_track(n, truth, flow_at, policy="first", size=SIZE,
                                           steering=detector)
    assert actions(steered) == {"draw": 1, "adjust": 0, "delete": 0, "accept": 1}
    assert min(effort.iou(final[i], truth[i]) for i in range(n)) >= effort.GOOD_IOU
