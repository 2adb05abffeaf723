"""Scene workflow: new -> in_progress -> submitted -> reviewed | returned, the comment the
annotator sees, the locks, and the pages (lists with filters, review queue, audit)."""
from __future__ import annotations

import pytest
from helpers import finish_scene, seed_scene

from annotator.db import db
from annotator.models import LabelEvent, Scene, SceneStatus


def status(s, scene_id, to, comment=""):
    return s.json("POST", f"/api/scenes/{scene_id}/status", {"status": to, "comment": comment})


def test_full_cycle_with_return_and_resubmit(app, login):
    seeded = seed_scene(app, prelabels=2)
    sid, fid = seeded.scene_id, seeded.frame_ids[0]
    ann, rev = login("annotator"), login("reviewer")

    resp = status(ann, sid, "submitted")
    assert resp.status_code == 409 and "new" in resp.get_json()["error"]
    assert status(ann, sid, "in_progress").get_json()["scene"]["status"] == "in_progress"
    ann.json("POST", f"/api/boxes/{seeded.prelabel_ids[0]}/accept", {"row_version": 1})
    # The review gate: the untouched frames and the undecided pre-label are named.
    resp = status(ann, sid, "submitted")
    assert resp.status_code == 409 and resp.get_json()["unfinished_frames"] == [0, 1, 2, 3]
    assert "Frames 1-3 have no box" in resp.get_json()["error"]
    assert "frame 0 has 1 pre-label undecided" in resp.get_json()["error"]
    ann.json("POST", f"/api/boxes/{seeded.prelabel_ids[1]}/reject", {"row_version": 1})
    finish_scene(ann, sid)
    assert status(ann, sid, "submitted").status_code == 200

    # Submitted scenes are locked for editing.
    resp = ann.json("POST", f"/api/frames/{fid}/boxes", {"class_id": 1, "x": 1, "y": 1, "w": 9, "h": 9})
    assert resp.status_code == 409 and "submitted" in resp.get_json()["error"]
    assert ann.get(f"/api/scenes/{sid}").get_json()["permissions"]["edit"] is False

    # The reviewer sees it in the queue with who made the boxes and how they relate to pre-labels.
    queue = rev.get("/review")
    assert queue.status_code == 200 and f'data-scene="{sid}"' in queue.get_data(as_text=True)
    data = rev.get(f"/api/scenes/{sid}").get_json()
    assert data["permissions"]["review"] is True
    accepted = data["review"]["origins"][str(seeded.prelabel_ids[0])]
    assert accepted["kind"] == "accepted" and accepted["model_version"] == "two-frame-v3"
    assert [r["id"] for r in data["review"]["rejected"][str(fid)]] == [seeded.prelabel_ids[1]]
    assert [c["state"] for c in data["coverage"]] == ["boxes", "empty", "empty", "empty"]
    assert next(b for b in data["boxes"][str(fid)] if b["id"] == seeded.prelabel_ids[0])["author"] == "annotator"

    resp = status(rev, sid, "returned")
    assert resp.status_code == 400 and "comment" in resp.get_json()["error"]
    resp = status(rev, sid, "returned", "  Vessel at the top left is missing.  ")
    assert resp.status_code == 200
    assert resp.get_json()["scene"]["review_comment"] == "Vessel at the top left is missing."

    # The annotator sees the comment, in the scene and in the list.
    assert ann.get(f"/api/scenes/{sid}").get_json()["scene"]["review_comment"].startswith("Vessel")
    assert "Vessel at the top left" in ann.get("/scenes?status=returned").get_data(as_text=True)
    resp = ann.json("POST", f"/api/frames/{fid}/boxes", {"class_id": 2, "x": 1, "y": 1, "w": 30, "h": 8})
    assert resp.status_code == 201 and resp.get_json()["scene"]["status"] == "in_progress"
    assert status(ann, sid, "submitted").status_code == 200
    assert status(rev, sid, "reviewed").get_json()["scene"]["status"] == "reviewed"
    assert status(ann, sid, "in_progress").status_code == 409  # only a reviewer reopens

    with app.app_context():
        moves = [(e.before["status"], e.after["status"]) for e in db.session.scalars(
            db.select(LabelEvent).filter_by(action="status").order_by(LabelEvent.id))]
    assert moves == [("new", "in_progress"), ("in_progress", "submitted"), ("submitted", "returned"),
                     ("returned", "in_progress"), ("in_progress", "submitted"), ("submitted", "reviewed")]


@pytest.mark.parametrize("start, to, code", [
    (SceneStatus.new, "reviewed", 409),
    (SceneStatus.in_progress, "reviewed", 409),
    (SceneStatus.reviewed, "submitted", 409),
    (SceneStatus.in_progress, "new", 409),
    (SceneStatus.in_progress, "finished", 400),
])
def test_illegal_transitions_are_refused_with_a_message(app, login, start, to, code):
    seeded = seed_scene(app, status=start)
    resp = status(login("admin"), seeded.scene_id, to, "why")
    assert resp.status_code == code and resp.get_json()["error"]
    with app.app_context():
        assert db.session.scalar(db.select(db.func.count(LabelEvent.id))) == 0


def test_review_notes_show_edited_and_rejected_prelabels(app, login):
    seeded = seed_scene(app, prelabels=3)
    a, b, c = seeded.prelabel_ids
    ann = login("annotator")
    ann.json("PATCH", f"/api/boxes/{a}", {"row_version": 1, "w": 12})  # half the model's width
    ann.json("POST", f"/api/boxes/{b}/reject", {"row_version": 1})
    notes = login("reviewer").get(f"/api/scenes/{seeded.scene_id}").get_json()["review"]
    edited = notes["origins"][str(a)]
    assert edited["kind"] == "edited" and edited["iou"] == 0.5 and edited["model_box"]["w"] == 24
    assert [r["id"] for r in notes["rejected"][str(seeded.frame_ids[0])]] == [b]
    assert notes["origins"][str(c)]["kind"] == "pending"


def test_pages_render_for_every_role(app, login):
    seeded = seed_scene(app, prelabels=1)
    login("annotator").json("POST", f"/api/boxes/{seeded.prelabel_ids[0]}/reject", {"row_version": 1})
    for role in ("admin", "annotator", "reviewer", "data_manager"):
        s = login(role)
        for url in ("/scenes", "/review", f"/scenes/{seeded.scene_id}/label",
                    f"/scenes/{seeded.scene_id}/audit", f"/frames/{seeded.frame_ids[0]}/audit"):
            resp = s.get(url)
            assert resp.status_code == 200, (role, url)
    s = login("reviewer")
    audit = s.get(f"/scenes/{seeded.scene_id}/audit").get_data(as_text=True)
    assert "reject" in audit and "annotator" in audit and "two-frame-v3" in audit
    label = s.get(f"/scenes/{seeded.scene_id}/label").get_data(as_text=True)
    assert 'id="canvas"' in label and "workspace.js" in label
    assert "two-frame-v3" in s.get("/scenes").get_data(as_text=True)  # the model feedback table


def test_scene_list_filters_on_the_page(app, login):
    one = seed_scene(app, patient="P001")
    two = seed_scene(app, patient="P002", status=SceneStatus.submitted)
    s = login("reviewer")
    page = s.get("/scenes?patient=P002").get_data(as_text=True)
    assert f'data-scene="{two.scene_id}"' in page and f'data-scene="{one.scene_id}"' not in page
    page = s.get("/review").get_data(as_text=True)
    assert f'data-scene="{two.scene_id}"' in page and f'data-scene="{one.scene_id}"' not in page
    page = s.get(f"/scenes?video_id={one.video_id}&status=new").get_data(as_text=True)
    assert f'data-scene="{one.scene_id}"' in page and f'data-scene="{two.scene_id}"' not in page


# ---------- assignment ----------

def _assignees(app, *scene_ids: int) -> list[str | None]:
    with app.app_context():
        return [s.assignee.username if s.assignee else None
                for s in (db.session.get(Scene, i) for i in scene_ids)]


def test_data_manager_assigns_scenes_and_each_change_is_audited(app, login):
    one, two = seed_scene(app, patient="P001"), seed_scene(app, patient="P002")
    dm = login("data_manager")
    resp = dm.json("POST", "/api/scenes/assign",
                   {"scene_ids": [one.scene_id, two.scene_id], "assignee": "annotator"})
    assert resp.status_code == 200
    assert resp.get_json()["scenes"] == [{"id": one.scene_id, "assignee": "annotator"},
                                         {"id": two.scene_id, "assignee": "annotator"}]
    assert _assignees(app, one.scene_id, two.scene_id) == ["annotator", "annotator"]
    # The assignee finds them under "My scenes"; a first edit keeps the assignment.
    s = login("annotator")
    mine = s.get("/scenes?assignee=annotator").get_data(as_text=True)
    assert f'data-scene="{one.scene_id}"' in mine and f'data-scene="{two.scene_id}"' in mine
    assert s.json("POST", f"/api/frames/{one.frame_ids[0]}/boxes",
                  {"class_id": 1, "x": 1, "y": 1, "w": 9, "h": 9}).status_code == 201
    # Taken back from one scene; assigning the same again writes nothing.
    dm.json("POST", "/api/scenes/assign", {"scene_ids": [two.scene_id], "assignee": None})
    dm.json("POST", "/api/scenes/assign", {"scene_ids": [one.scene_id], "assignee": "annotator"})
    assert _assignees(app, one.scene_id, two.scene_id) == ["annotator", None]
    with app.app_context():
        assigns = db.session.scalars(db.select(LabelEvent).filter_by(action="assign")
                                     .order_by(LabelEvent.id)).all()
        assert [(e.scene_id, e.before, e.after) for e in assigns] == [
            (one.scene_id, {"assignee": None}, {"assignee": "annotator"}),
            (two.scene_id, {"assignee": None}, {"assignee": "annotator"}),
            (two.scene_id, {"assignee": "annotator"}, {"assignee": None})]
        assert {e.user.username for e in assigns} == {"data_manager"}
    audit = dm.get(f"/scenes/{two.scene_id}/audit").get_data(as_text=True)
    assert "assign" in audit


@pytest.mark.parametrize("payload, code, message", [
    ({"scene_ids": [1], "assignee": "reviewer"}, 400, "scenes go to annotators"),
    ({"scene_ids": [1], "assignee": "nobody-here"}, 400, "no active user"),
    ({"scene_ids": [1, 999], "assignee": "annotator"}, 404, "No scene 999"),
    ({"scene_ids": [], "assignee": "annotator"}, 400, "non-empty list"),
    ({"scene_ids": ["1"], "assignee": "annotator"}, 400, "non-empty list"),
    ({"scene_ids": [1], "assignee": 7}, 400, "user name"),
])
def test_assignment_refusals_change_nothing(app, login, payload, code, message):
    seeded = seed_scene(app)
    assert seeded.scene_id == 1
    dm = login("data_manager")
    resp = dm.json("POST", "/api/scenes/assign", payload)
    assert resp.status_code == code and message in resp.get_json()["error"], resp.get_json()
    assert _assignees(app, 1) == [None]
    with app.app_context():
        assert not db.session.scalars(db.select(LabelEvent).filter_by(action="assign")).all()


def test_assign_form_on_the_scene_list(app, login):
    one, two = seed_scene(app, patient="P001"), seed_scene(app, patient="P002")
    dm = login("data_manager")
    page = dm.get("/scenes?patient=P002").get_data(as_text=True)
    assert 'id="assign-form"' in page and "<option>annotator</option>" in page
    assert "<option>reviewer</option>" not in page.split('id="assign-form"')[1].split("</form>")[0]
    resp = dm.post("/scenes/assign", {"scene_id": [str(two.scene_id)], "to": "annotator",
                                      "filter_patient": "P002"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/scenes?patient=P002")
    assert "1 scene assigned to annotator." in dm.get(resp.headers["Location"]).get_data(as_text=True)
    assert _assignees(app, one.scene_id, two.scene_id) == [None, "annotator"]
    resp = dm.post("/scenes/assign", {"scene_id": [str(two.scene_id)], "to": ""}, follow_redirects=True)
    assert "1 scene unassigned." in resp.get_data(as_text=True)
    resp = dm.post("/scenes/assign", {"to": "annotator"}, follow_redirects=True)
    assert "Tick the scenes to assign first." in resp.get_data(as_text=True)
    assert _assignees(app, one.scene_id, two.scene_id) == [None, None]
    # Other roles see no assignment form.
    assert 'id="assign-form"' not in login("annotator").get("/scenes").get_data(as_text=True)
