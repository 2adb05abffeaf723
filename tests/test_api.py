"""The workspace JSON API: roles, CSRF, optimistic locking, audit events, pre-label review,
undo, bad input, and the OpenAPI document that describes it."""
from __future__ import annotations

import copy

import jsonschema
import pytest
from helpers import finish_scene, seed_scene

from annotator.db import db
from annotator.models import Box, LabelEvent, Role


def counts(app) -> tuple[int, int]:
    with app.app_context():
        return (db.session.scalar(db.select(db.func.count(Box.id))),
                db.session.scalar(db.select(db.func.count(LabelEvent.id))))


def events(app, **filters) -> list[LabelEvent]:
    with app.app_context():
        rows = db.session.scalars(db.select(LabelEvent).filter_by(**filters).order_by(LabelEvent.id)).all()
        db.session.expunge_all()
        return rows


def draw(s, frame_id, **box):
    payload = {"class_id": 1, "x": 10, "y": 12, "w": 30, "h": 20, **box}
    return s.json("POST", f"/api/frames/{frame_id}/boxes", payload)


@pytest.fixture
def seeded(app):
    return seed_scene(app, frames=3, prelabels=4)


# ---------- roles and CSRF ----------

def _workspace_rules(app):
    return [r for r in app.url_map.iter_rules() if r.endpoint.split(".")[0] in ("api", "workspace")]


def test_every_workspace_route_is_role_checked_and_refuses_other_roles(app, seeded, login):
    """Route x role: each role gets 403 exactly where the route's allowed_roles leaves it out."""
    rules = _workspace_rules(app)
    assert len(rules) >= 18
    box_id = seeded.prelabel_ids[0]
    ids = {"scene_id": seeded.scene_id, "frame_id": seeded.frame_ids[0], "box_id": box_id}
    sessions = {role: login(role.value) for role in Role}
    for rule in rules:
        view = app.view_functions[rule.endpoint]
        assert hasattr(view, "allowed_roles"), f"{rule} is not guarded by roles_required"
        url = rule.build({k: v for k, v in ids.items() if k in rule.arguments})[1]
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            for role, s in sessions.items():
                # An empty object: allowed roles are refused for the input (400/409), not the role.
                resp = s.json(method, url, {} if method != "GET" else None)
                denied = role not in view.allowed_roles
                assert (resp.status_code == 403) == denied, (rule.rule, method, role, resp.status_code)
    assert counts(app) == (4, 0)  # nothing was written by all those refusals


def test_not_logged_in_gets_401_json(client, seeded):
    resp = client.get(f"/api/scenes/{seeded.scene_id}")
    assert resp.status_code == 401 and resp.get_json()["error"]


def test_state_change_without_csrf_token_is_refused(app, seeded, login):
    s = login("annotator")
    before = counts(app)
    resp = s.client.post(f"/api/frames/{seeded.frame_ids[0]}/boxes",
                         json={"class_id": 1, "x": 1, "y": 1, "w": 5, "h": 5})
    assert resp.status_code == 400 and "CSRF" in resp.get_json()["error"]
    resp = s.client.post(f"/api/boxes/{seeded.prelabel_ids[0]}/accept", json={"row_version": 1},
                         headers={"X-CSRFToken": "forged"})
    assert resp.status_code == 400
    assert counts(app) == before


def test_roles_on_the_workflow(app, seeded, login):
    annotator, reviewer, manager = login("annotator"), login("reviewer"), login("data_manager")
    assert draw(reviewer, seeded.frame_ids[0]).status_code == 403
    assert draw(manager, seeded.frame_ids[0]).status_code == 403
    assert manager.get(f"/api/scenes/{seeded.scene_id}").status_code == 200
    assert draw(annotator, seeded.frame_ids[0]).status_code == 201
    finish_scene(annotator, seeded.scene_id)
    resp = annotator.json("POST", f"/api/scenes/{seeded.scene_id}/status", {"status": "submitted"})
    assert resp.status_code == 200
    resp = annotator.json("POST", f"/api/scenes/{seeded.scene_id}/status", {"status": "reviewed"})
    assert resp.status_code == 403 and "annotator may not" in resp.get_json()["error"]
    resp = reviewer.json("POST", f"/api/scenes/{seeded.scene_id}/status", {"status": "reviewed"})
    assert resp.status_code == 200 and resp.get_json()["scene"]["status"] == "reviewed"


# ---------- boxes, events, locking ----------

def test_create_update_delete_write_events_with_before_after_source(app, seeded, login):
    s = login("annotator")
    fid = seeded.frame_ids[1]
    resp = draw(s, fid, class_id=2)
    assert resp.status_code == 201
    data = resp.get_json()
    box = data["box"]
    assert (box["x"], box["y"], box["w"], box["h"], box["class_id"], box["source"]) == (10, 12, 30, 20, 2, "manual")
    assert box["author"] == "annotator" and box["row_version"] == 1
    # The first edit starts the scene and assigns it.
    assert data["scene"]["status"] == "in_progress" and data["scene"]["assignee"] == "annotator"

    resp = s.json("PATCH", f"/api/boxes/{box['id']}", {"row_version": 1, "x": 40, "class_id": 1})
    assert resp.status_code == 200
    moved = resp.get_json()["box"]
    assert (moved["x"], moved["y"], moved["class_id"], moved["row_version"]) == (40, 12, 1, 2)

    resp = s.json("DELETE", f"/api/boxes/{box['id']}", {"row_version": 2})
    assert resp.status_code == 200 and resp.get_json()["box"] is None

    evs = events(app, box_id=box["id"])
    assert [e.action for e in evs] == ["create", "update", "delete"]
    assert all(e.source == "manual" and e.frame_id == fid and e.scene_id == seeded.scene_id for e in evs)
    assert evs[0].before is None and evs[0].after["class_id"] == 2
    assert evs[1].before["x"] == 10 and evs[1].after["x"] == 40 and evs[1].after["class_id"] == 1
    assert evs[2].before["row_version"] == 2 and evs[2].after is None
    status_events = events(app, action="status")
    assert [(e.before, e.after["status"]) for e in status_events] == [({"status": "new"}, "in_progress")]


def test_a_deleted_box_id_is_never_given_to_a_new_box(app, seeded, login):
    """Label Studio exports and the audit log name boxes by id."""
    s = login("annotator")
    newest = draw(s, seeded.frame_ids[0]).get_json()["box"]
    assert s.json("DELETE", f"/api/boxes/{newest['id']}", {"row_version": 1}).status_code == 200
    again = draw(s, seeded.frame_ids[0]).get_json()["box"]
    assert again["id"] > newest["id"]
    assert [e.action for e in events(app, box_id=again["id"])] == ["create"]


def test_stale_row_version_gets_409_and_the_saved_box_is_unchanged(app, seeded, login):
    alice, admin = login("annotator"), login("admin")
    box = draw(alice, seeded.frame_ids[0]).get_json()["box"]
    assert admin.json("PATCH", f"/api/boxes/{box['id']}", {"row_version": 1, "w": 50}).status_code == 200
    before = counts(app)
    resp = alice.json("PATCH", f"/api/boxes/{box['id']}", {"row_version": 1, "x": 0})
    assert resp.status_code == 409
    body = resp.get_json()
    assert "changed by" in body["error"] and body["box"]["w"] == 50 and body["box"]["row_version"] == 2
    assert alice.json("DELETE", f"/api/boxes/{box['id']}", {"row_version": 1}).status_code == 409
    saved = alice.get(f"/api/frames/{seeded.frame_ids[0]}/boxes").get_json()["boxes"]
    mine = next(b for b in saved if b["id"] == box["id"])
    assert (mine["x"], mine["w"], mine["row_version"]) == (10, 50, 2)
    assert counts(app) == before


def test_concurrent_commit_is_caught_by_the_version_column(app, seeded, login):
    """Two writers that both read version 1: the second UPDATE matches no row -> 409."""
    from annotator.models import User
    from annotator.services import box_edits
    from annotator.services.workflow import Conflict

    s = login("annotator")
    box_id = draw(s, seeded.frame_ids[0]).get_json()["box"]["id"]
    with app.app_context():
        user = db.session.scalar(db.select(User).filter_by(username="annotator"))
        box = db.session.get(Box, box_id)
        assert box.row_version == 1
        # Another session commits version 2 after ours loaded version 1.
        with db.engine.begin() as conn:
            conn.execute(db.update(Box).where(Box.id == box_id).values(x=1, row_version=2))
        with pytest.raises(Conflict):
            box_edits.update_box(box_id, {"row_version": 1, "x": 99}, user)
    assert s.get(f"/api/frames/{seeded.frame_ids[0]}/boxes").get_json()["boxes"][-1]["x"] == 1


@pytest.mark.parametrize("payload, message", [
    ({"class_id": 1, "x": 150, "y": 10, "w": 30, "h": 20}, "outside"),
    ({"class_id": 1, "x": -5, "y": 10, "w": 30, "h": 20}, "outside"),
    ({"class_id": 1, "x": 10, "y": 10, "w": 0, "h": 20}, "width and height"),
    ({"class_id": 1, "x": 10, "y": 10, "w": 10, "h": -3}, "width and height"),
    ({"class_id": 9, "x": 10, "y": 10, "w": 10, "h": 10}, "Unknown class"),
    ({"class_id": "tumor", "x": 10, "y": 10, "w": 10, "h": 10}, "Unknown class"),
    ({"class_id": 1, "x": "10", "y": 10, "w": 10, "h": 10}, "must be a number"),
    ({"class_id": 1, "x": 10, "y": 10, "w": 10, "h": None}, "'h' must be a number"),
])
def test_bad_box_is_refused_with_a_message_and_nothing_written(app, seeded, login, payload, message):
    s = login("annotator")
    before = counts(app)
    resp = s.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes", payload)
    assert resp.status_code == 400 and message in resp.get_json()["error"]
    resp = s.json("PATCH", f"/api/boxes/{seeded.prelabel_ids[0]}", {"row_version": 1, **payload})
    assert resp.status_code == 400 and message in resp.get_json()["error"]
    assert counts(app) == before
    assert s.get(f"/api/scenes/{seeded.scene_id}").get_json()["scene"]["status"] == "new"


def test_not_json_and_missing_objects(app, seeded, login):
    s = login("annotator")
    resp = s.client.post(f"/api/frames/{seeded.frame_ids[0]}/boxes", data="x=1",
                         headers={"X-CSRFToken": s.csrf})
    assert resp.status_code == 400 and "JSON object" in resp.get_json()["error"]
    assert draw(s, 999999).status_code == 404
    assert s.json("PATCH", "/api/boxes/999999", {"row_version": 1, "x": 1}).status_code == 404
    assert s.json("PATCH", f"/api/boxes/{seeded.prelabel_ids[0]}", {"x": 1}).status_code == 400
    assert s.get("/api/scenes/999999").status_code == 404


# ---------- pre-labels ----------

def test_accept_reject_and_counts_per_model_version(app, login):
    s = login("annotator")
    v3 = seed_scene(app, prelabels=4, model_version="v3")
    v4 = seed_scene(app, prelabels=2, model_version="v4", patient="P002")
    a, b, c, d = v3.prelabel_ids
    resp = s.json("POST", f"/api/boxes/{a}/accept", {"row_version": 1})
    assert resp.status_code == 200
    accepted = resp.get_json()["box"]
    assert accepted["source"] == "manual" and accepted["author"] == "annotator" and accepted["model_version"] == "v3"
    assert s.json("POST", f"/api/boxes/{b}/reject", {"row_version": 1}).status_code == 200
    # Deleting a pre-label is a rejection too; moving one accepts it with the correction.
    assert s.json("DELETE", f"/api/boxes/{c}", {"row_version": 1}).status_code == 200
    assert s.json("PATCH", f"/api/boxes/{d}", {"row_version": 1, "x": 3}).status_code == 200
    assert s.json("POST", f"/api/boxes/{v4.prelabel_ids[0]}/reject", {"row_version": 1}).status_code == 200
    # An accepted box is manual now: it cannot be accepted or rejected again.
    assert s.json("POST", f"/api/boxes/{a}/accept", {"row_version": 2}).status_code == 409
    assert s.json("POST", f"/api/boxes/{a}/reject", {"row_version": 2}).status_code == 409

    ev = events(app, box_id=a)[0]
    assert (ev.action, ev.source, ev.before["source"], ev.before["model_version"], ev.before["score"]) == \
        ("accept", "model", "model", "v3", 0.9)
    assert ev.after["source"] == "manual"
    assert [e.action for e in events(app, box_id=c)] == ["reject"]
    assert [e.action for e in events(app, box_id=d)] == ["accept"]

    rows = {r["model_version"]: r for r in s.get("/api/model-feedback").get_json()["versions"]}
    assert (rows["v3"]["accepted"], rows["v3"]["rejected"], rows["v3"]["pending"]) == (2, 2, 0)
    assert rows["v3"]["acceptance_rate"] == 0.5
    assert (rows["v4"]["accepted"], rows["v4"]["rejected"], rows["v4"]["pending"]) == (0, 1, 1)
    only_v4 = s.get(f"/api/model-feedback?scene_id={v4.scene_id}").get_json()["versions"]
    assert [(r["model_version"], r["rejected"]) for r in only_v4] == [("v4", 1)]


def test_accept_all_above_threshold(app, seeded, login):
    s = login("annotator")
    fid = seeded.frame_ids[0]
    resp = s.json("POST", f"/api/frames/{fid}/accept-above", {"threshold": 0.5})
    assert resp.status_code == 200
    boxes = resp.get_json()["boxes"]
    assert sorted((b["score"], b["source"]) for b in boxes) == [
        (0.2, "model"), (0.3, "model"), (0.8, "manual"), (0.9, "manual")]
    assert len(resp.get_json()["undo_ids"]) == 2
    assert s.json("POST", f"/api/frames/{fid}/accept-above", {"threshold": 1.5}).status_code == 400


def test_no_findings_rejects_leftover_prelabels_and_refuses_frames_with_boxes(app, seeded, login):
    s = login("annotator")
    f0, f1 = seeded.frame_ids[:2]
    resp = s.json("POST", f"/api/frames/{f0}/no-findings", {"empty": True})
    assert resp.status_code == 200 and resp.get_json()["reviewed_empty"] is True
    assert s.get(f"/api/frames/{f0}/boxes").get_json()["boxes"] == []
    assert len(events(app, action="reject")) == 4 and len(events(app, action="mark_empty")) == 1
    # Drawing on a "no findings" frame clears the mark.
    draw(s, f0)
    assert s.get(f"/api/frames/{f0}/boxes").get_json()["reviewed_empty"] is False
    draw(s, f1)
    resp = s.json("POST", f"/api/frames/{f1}/no-findings", {"empty": True})
    assert resp.status_code == 409 and "delete them" in resp.get_json()["error"]


# ---------- undo ----------

def test_undo_and_redo_restore_recorded_states(app, seeded, login):
    s = login("annotator")
    fid = seeded.frame_ids[0]
    created = draw(s, fid).get_json()
    box_id = created["box"]["id"]
    moved = s.json("PATCH", f"/api/boxes/{box_id}", {"row_version": 1, "x": 50}).get_json()
    deleted = s.json("DELETE", f"/api/boxes/{box_id}", {"row_version": 2}).get_json()

    undo_delete = s.json("POST", "/api/events/revert", {"event_ids": deleted["undo_ids"]}).get_json()
    assert undo_delete["box"]["id"] == box_id and undo_delete["box"]["x"] == 50
    undo_move = s.json("POST", "/api/events/revert", {"event_ids": moved["undo_ids"]})
    assert undo_move.status_code == 200 and undo_move.get_json()["box"]["x"] == 10
    redo_move = s.json("POST", "/api/events/revert", {"event_ids": undo_move.get_json()["undo_ids"]})
    assert redo_move.get_json()["box"]["x"] == 50

    # Undo of the accept and the reject of pre-labels: the counts go back.
    p1, p2 = seeded.prelabel_ids[:2]
    acc = s.json("POST", f"/api/boxes/{p1}/accept", {"row_version": 1}).get_json()
    rej = s.json("POST", f"/api/boxes/{p2}/reject", {"row_version": 1}).get_json()
    assert s.json("POST", "/api/events/revert", {"event_ids": acc["undo_ids"] + rej["undo_ids"]}).status_code == 200
    boxes = {b["id"]: b for b in s.get(f"/api/frames/{fid}/boxes").get_json()["boxes"]}
    assert boxes[p1]["source"] == "model" and boxes[p2]["source"] == "model" and boxes[p2]["score"] == 0.3
    row = s.get("/api/model-feedback").get_json()["versions"][0]
    assert (row["accepted"], row["rejected"], row["pending"]) == (0, 0, 4)
    assert [e.action for e in events(app, box_id=box_id)] == ["create", "update", "delete", "revert", "revert", "revert"]


def test_undo_and_redo_of_no_findings_restore_the_mark_and_the_prelabels(app, seeded, login):
    s = login("annotator")
    f0, f1 = seeded.frame_ids[:2]

    def state(fid):
        data = s.get(f"/api/frames/{fid}/boxes").get_json()
        return data["reviewed_empty"], sorted((b["id"], b["source"]) for b in data["boxes"])

    prelabels = state(f0)
    assert prelabels[0] is False and len(prelabels[1]) == 4
    marked = s.json("POST", f"/api/frames/{f0}/no-findings", {"empty": True}).get_json()
    assert state(f0) == (True, [])
    undone = s.json("POST", "/api/events/revert", {"event_ids": marked["undo_ids"]})
    assert undone.status_code == 200 and state(f0) == prelabels
    row = s.get("/api/model-feedback").get_json()["versions"][0]
    assert (row["rejected"], row["pending"]) == (0, 4)
    redone = s.json("POST", "/api/events/revert", {"event_ids": undone.get_json()["undo_ids"]})
    assert redone.status_code == 200 and state(f0) == (True, [])
    s.json("POST", "/api/events/revert", {"event_ids": redone.get_json()["undo_ids"]})
    assert state(f0) == prelabels

    # A frame without boxes: marking and clearing are undone too, and undoing a box drawn on a
    # marked frame marks it again.
    marked = s.json("POST", f"/api/frames/{f1}/no-findings", {"empty": True}).get_json()
    drawn = draw(s, f1).get_json()
    assert state(f1)[0] is False
    assert s.json("POST", "/api/events/revert", {"event_ids": drawn["undo_ids"]}).status_code == 200
    assert state(f1) == (True, [])
    cleared = s.json("POST", f"/api/frames/{f1}/no-findings", {"empty": False}).get_json()
    s.json("POST", "/api/events/revert", {"event_ids": cleared["undo_ids"]})
    assert state(f1) == (True, [])
    assert [e.action for e in events(app, frame_id=f1, box_id=None)][-2:] == ["unmark_empty", "revert"]

    # Undoing a mark that changed since, or marking again a frame that has boxes now: refused.
    s.json("POST", f"/api/frames/{f1}/no-findings", {"empty": False})
    draw(s, f1)
    before = counts(app)
    assert s.json("POST", "/api/events/revert", {"event_ids": marked["undo_ids"]}).status_code == 409
    resp = s.json("POST", "/api/events/revert", {"event_ids": cleared["undo_ids"]})
    assert resp.status_code == 409 and "has boxes now" in resp.get_json()["error"]
    assert counts(app) == before


def test_undo_of_a_box_someone_else_changed_is_refused(app, seeded, login):
    alice, admin = login("annotator"), login("admin")
    created = draw(alice, seeded.frame_ids[0]).get_json()
    admin.json("PATCH", f"/api/boxes/{created['box']['id']}", {"row_version": 1, "y": 60})
    before = counts(app)
    resp = alice.json("POST", "/api/events/revert", {"event_ids": created["undo_ids"]})
    assert resp.status_code == 409
    assert counts(app) == before
    assert alice.json("POST", "/api/events/revert", {"event_ids": []}).status_code == 400


# ---------- reading ----------

def test_scene_payload_lists_frames_boxes_classes(app, seeded, login):
    s = login("data_manager")
    data = s.get(f"/api/scenes/{seeded.scene_id}").get_json()
    assert [c["name"] for c in data["classes"]] == ["tumor", "vessel"]
    assert data["classes"][0]["color"] == "#5ec8f2" and data["classes"][1]["color"] == "#e53935"
    assert [f["id"] for f in data["frames"]] == seeded.frame_ids
    assert data["frames"][0]["image_url"] == f"/frames/{seeded.frame_ids[0]}.png"
    assert len(data["boxes"][str(seeded.frame_ids[0])]) == 4
    assert data["permissions"] == {"edit": False, "review": False, "submit": False}
    img = s.get(data["frames"][0]["image_url"])
    assert img.status_code == 200 and img.headers["ETag"] and "max-age" in img.headers["Cache-Control"]


def test_scene_list_filters(app, login):
    a = seed_scene(app, patient="P001")
    b = seed_scene(app, patient="P002")
    s = login("annotator")
    draw(s, b.frame_ids[0])
    ids = lambda q: [x["id"] for x in s.get(f"/api/scenes{q}").get_json()["scenes"]]  # noqa: E731
    assert sorted(ids("")) == sorted([a.scene_id, b.scene_id])
    assert ids("?status=in_progress") == [b.scene_id]
    assert ids("?patient=P001") == [a.scene_id]
    assert ids(f"?video_id={a.video_id}") == [a.scene_id]
    assert ids("?assignee=annotator") == [b.scene_id]
    assert ids("?assignee=-") == [a.scene_id]
    assert s.get("/api/scenes?status=done").status_code == 400


def test_events_newest_first_per_scene_and_frame(app, seeded, login):
    s = login("annotator")
    draw(s, seeded.frame_ids[0])
    draw(s, seeded.frame_ids[1])
    evs = s.get(f"/api/scenes/{seeded.scene_id}/events").get_json()["events"]
    assert [e["action"] for e in evs] == ["create", "create", "status"]
    assert evs[0]["frame_id"] == seeded.frame_ids[1] and evs[0]["user"] == "annotator"
    one = s.get(f"/api/scenes/{seeded.scene_id}/events?frame_id={seeded.frame_ids[0]}").get_json()["events"]
    assert [e["frame_id"] for e in one] == [seeded.frame_ids[0]]


# ---------- OpenAPI ----------

def _resolve(schema, components):
    """OpenAPI 3.0 schema -> JSON Schema: inline $refs and turn ``nullable`` into a null type."""
    if isinstance(schema, list):
        return [_resolve(s, components) for s in schema]
    if not isinstance(schema, dict):
        return schema
    if "$ref" in schema:
        return _resolve(components[schema["$ref"].rsplit("/", 1)[1]], components)
    out = {k: _resolve(v, components) for k, v in schema.items() if k != "nullable"}
    if schema.get("nullable"):
        out = {"anyOf": [out, {"type": "null"}]}
    return out


def test_openapi_documents_every_api_route_and_matches_real_answers(app, seeded, login):
    s = login("annotator")
    spec = s.get("/api/openapi.json").get_json()
    assert spec["openapi"].startswith("3.")
    documented = {(path, m.upper()) for path, ops in spec["paths"].items() for m in ops}
    served = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/"):
            path = rule.rule.replace("<int:", "{").replace(">", "}")
            served |= {(path, m) for m in rule.methods - {"HEAD", "OPTIONS"}}
    assert documented == served
    components = spec["components"]["schemas"]

    def check(path, method, resp):
        op = spec["paths"][path][method]
        assert str(resp.status_code) in op["responses"], (path, method, resp.status_code)
        schema = op["responses"][str(resp.status_code)]["content"]["application/json"]["schema"]
        jsonschema.validate(resp.get_json(), _resolve(copy.deepcopy(schema), components))

    fid, sid = seeded.frame_ids[0], seeded.scene_id
    created = draw(s, fid)
    check("/api/frames/{frame_id}/boxes", "post", created)
    box = created.get_json()["box"]
    check("/api/boxes/{box_id}", "patch", s.json("PATCH", f"/api/boxes/{box['id']}", {"row_version": 1, "x": 3}))
    check("/api/boxes/{box_id}", "patch", s.json("PATCH", f"/api/boxes/{box['id']}", {"row_version": 1, "x": 4}))
    check("/api/frames/{frame_id}/boxes", "post", draw(s, fid, w=-1))
    check("/api/scenes/{scene_id}", "get", s.get(f"/api/scenes/{sid}"))
    check("/api/scenes", "get", s.get("/api/scenes"))
    check("/api/frames/{frame_id}/boxes", "get", s.get(f"/api/frames/{fid}/boxes"))
    check("/api/scenes/{scene_id}/events", "get", s.get(f"/api/scenes/{sid}/events"))
    check("/api/boxes/{box_id}/accept", "post",
          s.json("POST", f"/api/boxes/{seeded.prelabel_ids[0]}/accept", {"row_version": 1}))
    check("/api/model-feedback", "get", s.get("/api/model-feedback"))
    dm = login("data_manager")
    check("/api/scenes/assign", "post",
          dm.json("POST", "/api/scenes/assign", {"scene_ids": [sid], "assignee": "annotator"}))
    check("/api/scenes/assign", "post",
          dm.json("POST", "/api/scenes/assign", {"scene_ids": [sid], "assignee": "reviewer"}))
    finish_scene(s, sid)
    check("/api/scenes/{scene_id}/status", "post",
          s.json("POST", f"/api/scenes/{sid}/status", {"status": "submitted"}))
