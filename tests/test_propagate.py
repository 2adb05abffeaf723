"""Flow propagation: the algorithm on textures moved by a known amount, and the stored result
(key P's endpoint and the scene-wide job)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest
from helpers import labelled_scene, lesion_box, shifted, texture

from annotator.db import db
from annotator.models import Box, BoxSource, JobStatus, SceneStatus
from annotator.services.boxes import iou
from annotator.services.propagate import FlowPair, flow_pair, propagate_boxes


def zoomed(image: np.ndarray, s: float, centre: tuple[float, float]) -> np.ndarray:
    m = cv2.getRotationMatrix2D(centre, 0, s)
    return cv2.warpAffine(image, m, image.shape[::-1], borderMode=cv2.BORDER_REFLECT)


def test_a_box_follows_a_shift():
    a = texture()
    b = shifted(a, 6.0, -4.0)
    box = {"x": 80.0, "y": 70.0, "w": 50.0, "h": 40.0, "class_id": 1}
    (moved,) = propagate_boxes(a, b, [box])
    assert moved["x"] == pytest.approx(86.0, abs=0.7) and moved["y"] == pytest.approx(66.0, abs=0.7)
    assert moved["w"] == pytest.approx(50.0, rel=0.05) and moved["class_id"] == 1
    assert moved["confidence"] > 0.8


def test_a_box_grows_with_a_zoom_and_confidence_drops_on_a_new_view():
    a = texture()
    b = zoomed(a, 1.12, (120.0, 100.0))
    box = {"x": 95.0, "y": 75.0, "w": 50.0, "h": 50.0}
    (moved,) = propagate_boxes(a, b, [box])
    assert moved["w"] == pytest.approx(56.0, rel=0.04) and moved["h"] == pytest.approx(56.0, rel=0.04)
    assert moved["x"] + moved["w"] / 2 == pytest.approx(120.0, abs=1.5)
    unrelated = texture(seed=7)
    (lost,) = propagate_boxes(a, unrelated, [box])
    assert lost["confidence"] < 0.5 * moved["confidence"]


def test_a_box_pushed_out_of_the_image_is_dropped_and_one_half_out_is_clipped():
    a = texture()
    b = shifted(a, 30.0, 0.0)
    forward = np.zeros((*a.shape, 2), np.float32)
    forward[..., 0] = 30.0
    flow = FlowPair(forward, -forward, 1.0, a.shape, a, b)  # a uniform 30 px pan to the right
    out = propagate_boxes(a, b, [{"x": 215.0, "y": 50.0, "w": 24.0, "h": 24.0},
                                 {"x": 190.0, "y": 50.0, "w": 30.0, "h": 24.0}], flow)
    assert len(out) == 1
    assert (out[0]["x"], out[0]["w"]) == (pytest.approx(220.0), pytest.approx(20.0))


def test_flow_runs_at_reduced_resolution_for_large_frames():
    a = texture(600, 900)
    flow = flow_pair(a, shifted(a, 9, 0), max_side=300)
    assert flow.forward.shape[:2] == (200, 300) and flow.scale == pytest.approx(1 / 3)
    (moved,) = propagate_boxes(a, shifted(a, 9, 0), [{"x": 400.0, "y": 300.0, "w": 90.0, "h": 60.0}], flow)
    assert moved["x"] == pytest.approx(409.0, abs=1.5)


# --- stored ----------------------------------------------------------------------------------

def boxes_of(app, frame_id: int) -> list[Box]:
    with app.app_context():
        return db.session.scalars(db.select(Box).where(Box.frame_id == frame_id).order_by(Box.id)).all()


def test_key_p_propagates_to_the_next_frame_and_undo_removes_it(app, login):
    seeded = labelled_scene(app, frames=3, width=200, height=160)
    f0, f1, f2 = seeded.frame_ids
    with app.app_context():  # frame 1 keeps no manual box, so the carried box is added there
        db.session.execute(db.delete(Box).where(Box.frame_id == f1))
        db.session.commit()
    s = login("annotator")
    resp = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": f0})
    assert resp.status_code == 200, resp.get_json()
    data = resp.get_json()
    assert data["created"] == 1 and data["scene"]["status"] == "in_progress"
    (box,) = boxes_of(app, f1)
    assert box.source == BoxSource.propagated and 0 < box.score <= 1
    truth = lesion_box(1, 200, 160)
    assert iou({"x": box.x, "y": box.y, "w": box.w, "h": box.h}, truth) > 0.7
    assert [b["id"] for b in data["frames"][0]["boxes"]] == [box.id]

    # Again: the unreviewed propagated box is replaced, not doubled.
    again = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": f0}).get_json()
    assert again["replaced"] == 1 and len(boxes_of(app, f1)) == 1
    undo = s.json("POST", "/api/events/revert", {"event_ids": again["undo_ids"]})
    assert undo.status_code == 200 and boxes_of(app, f1) == []

    # A frame that has its own manual box keeps it, and gets no duplicate.
    manual = boxes_of(app, f2)
    resp = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": f1})
    assert resp.status_code == 400  # frame 1 has nothing to carry any more
    resp = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": f0, "frames": 2})
    assert resp.status_code == 200
    after = boxes_of(app, f2)
    assert [(b.id, b.x, b.source) for b in after] == [(b.id, b.x, b.source) for b in manual]


def test_propagate_refusals(app, login):
    seeded = labelled_scene(app, frames=2)
    s = login("annotator")
    url = f"/scenes/{seeded.scene_id}/propagate"
    assert s.json("POST", url, {"frame_id": seeded.frame_ids[1]}).status_code == 400  # last frame
    assert s.json("POST", url, {"frame_id": 999}).status_code == 404
    assert s.json("POST", url, {"frame_id": seeded.frame_ids[0], "frames": 0}).status_code == 400
    assert login("reviewer").json("POST", url, {"frame_id": seeded.frame_ids[0]}).status_code == 403
    locked = labelled_scene(app, frames=2, status=SceneStatus.submitted, patient="P002")
    resp = s.json("POST", f"/scenes/{locked.scene_id}/propagate", {"frame_id": locked.frame_ids[0]})
    assert resp.status_code == 409


def test_scene_job_carries_boxes_through_the_scene(app):
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    seeded = labelled_scene(app, frames=5, width=200, height=160)
    with app.app_context():
        db.session.execute(db.delete(Box).where(Box.frame_id.in_(seeded.frame_ids[1:])))
        db.session.commit()
        from annotator.services.job_runner import start_job

        job = start_job("propagate", {"scene": seeded.scene_id, "from_frame": 0})
        assert job.status == JobStatus.succeeded, job.error
        assert job.result["frames"] == 4 and job.result["boxes"] == 4
    scores = []
    for i, frame_id in enumerate(seeded.frame_ids[1:], start=1):
        (box,) = boxes_of(app, frame_id)
        assert iou({"x": box.x, "y": box.y, "w": box.w, "h": box.h}, lesion_box(i, 200, 160)) > 0.6
        scores.append(box.score)
    assert scores == sorted(scores, reverse=True)  # confidence decays along the chain


def test_a_carried_box_takes_the_place_of_an_overlapping_pre_label_only(app, login):
    seeded = labelled_scene(app, frames=2, width=200, height=160)
    f0, f1 = seeded.frame_ids
    truth = lesion_box(1, 200, 160)
    with app.app_context():
        db.session.execute(db.delete(Box).where(Box.frame_id == f1))
        # A sloppy pre-label on the lesion, and one on something that entered the plane.
        db.session.add_all([
            Box(frame_id=f1, class_id=1, source=BoxSource.model, score=0.9, model_version="m1",
                x=truth["x"] + 3, y=truth["y"] - 2, w=truth["w"] + 4, h=truth["h"]),
            Box(frame_id=f1, class_id=2, source=BoxSource.model, score=0.8, model_version="m1",
                x=150, y=10, w=20, h=20)])
        db.session.commit()
    s = login("annotator")
    data = s.json("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": f0}).get_json()
    assert data["created"] == 1 and data["replaced"] == 1
    kept = {(b.source, b.class_id) for b in boxes_of(app, f1)}
    assert kept == {(BoxSource.propagated, 1), (BoxSource.model, 2)}
    with app.app_context():
        from annotator.models import LabelEvent

        (event,) = db.session.scalars(db.select(LabelEvent).where(LabelEvent.action == "replace")).all()
        assert event.source == "model" and event.before["model_version"] == "m1"
    assert s.get(f"/api/scenes/{seeded.scene_id}").status_code == 200
    undo = s.json("POST", "/api/events/revert", {"event_ids": data["undo_ids"]})
    assert undo.status_code == 200  # undo puts the pre-label back
    assert {(b.source, b.class_id) for b in boxes_of(app, f1)} == {(BoxSource.model, 1), (BoxSource.model, 2)}
    with app.app_context():  # neither the replacement nor its undo counts against the model
        from annotator.services.event_log import model_feedback

        (m1,) = [r for r in model_feedback(seeded.scene_id) if r["model_version"] == "m1"]
        assert (m1["accepted"], m1["rejected"], m1["pending"]) == (0, 0, 2)
