"""What to label next: disagreement between the model and flow, and the next-scene choice."""
from __future__ import annotations

import pytest
from helpers import seed_scene, shifted, texture

from annotator.db import db
from annotator.models import SceneStatus, User
from annotator.services.ranking import frame_disagreement, scene_disagreement, store_ranking


def box(x, y, w=30, h=30, class_id=1, score=0.9):
    return {"x": x, "y": y, "w": w, "h": h, "class_id": class_id, "score": score}


def test_frame_disagreement():
    assert frame_disagreement([], []) == 0.0
    assert frame_disagreement([box(10, 10)], [box(10, 10)]) == pytest.approx(0.0)
    assert frame_disagreement([box(10, 10)], []) == 1.0
    assert frame_disagreement([box(10, 10)], [box(10, 10, class_id=2)]) == 1.0  # another class
    half = frame_disagreement([box(10, 10)], [box(20, 10)])  # IoU 0.5
    assert half == pytest.approx(0.5)
    assert frame_disagreement([box(10, 10), box(100, 100)], [box(10, 10)]) == pytest.approx(0.5)


def test_a_stable_model_ranks_below_a_flickering_one():
    frames = [texture()]
    for _ in range(3):
        frames.append(shifted(frames[-1], 4, 0))
    stable = [[box(60 + 4 * t, 80)] for t in range(4)]
    flicker = [[box(60, 80)], [], [box(120, 40)], [box(60 + 12, 80, score=0.4)]]
    a, b = scene_disagreement(frames, stable), scene_disagreement(frames, flicker)
    assert a["disagreement"] < 0.15 and b["disagreement"] > 0.8
    assert b["score"] > a["score"]
    assert b["uncertainty"] > a["uncertainty"]  # the 0.4 box


def test_next_scene_takes_returned_then_highest_ranked_open_scene(app, login):
    scenes = [seed_scene(app, frames=2, patient=f"P{i}").scene_id for i in range(4)]
    submitted = seed_scene(app, frames=2, patient="P9", status=SceneStatus.submitted).scene_id
    with app.app_context():
        for sid, score in zip(scenes, (0.1, 0.9, 0.5, 0.3)):
            store_ranking(sid, "m", {"score": score})
        store_ranking(submitted, "m", {"score": 5.0})
        reviewer = db.session.scalar(db.select(User).filter_by(username="reviewer"))
        from annotator.models import Scene

        db.session.get(Scene, scenes[2]).assignee_id = reviewer.id  # taken by someone else
        db.session.commit()
    s = login("annotator")
    resp = s.get("/scenes/next")
    assert resp.status_code == 302 and resp.headers["Location"].endswith(f"/scenes/{scenes[1]}/label")
    resp = s.get(f"/scenes/next?after={scenes[1]}")
    assert resp.headers["Location"].endswith(f"/scenes/{scenes[3]}/label")
    with app.app_context():
        from annotator.models import Scene

        db.session.get(Scene, scenes[0]).status = SceneStatus.returned
        db.session.commit()
    assert s.get("/scenes/next").headers["Location"].endswith(f"/scenes/{scenes[0]}/label")
