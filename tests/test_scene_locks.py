"""Who may change a scene: imports respect the review lock (an admin reopens, audited), and an
assigned scene is edited only by its assignee, a data manager or an admin."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, finish_scene, labelled_scene, make_video, password_hash, seed_scene

from annotator.db import db
from annotator.models import Box, JobStatus, LabelEvent, ModelVersion, Role, Scene, SceneStatus, User
from annotator.services.job_runner import start_job


def _coco(frame_indexes: list[int], size: tuple[int, int] = (64, 48)) -> dict:
    return {"images": [{"id": i + 1, "frame_index": fi, "width": size[0], "height": size[1]}
                       for i, fi in enumerate(frame_indexes)],
            "annotations": [{"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [3, 4, 20, 10]}
                            for i in range(len(frame_indexes))],
            "categories": [{"id": 1, "name": "tumor"}]}


def _write(tmp_path: Path, doc: dict) -> str:
    path = tmp_path / "labels.json"
    path.write_text(json.dumps(doc))
    return str(path)


def _state(video_id: int) -> tuple:
    """What an import may change: the boxes, the scenes' status and comment, the events."""
    scenes = db.session.execute(sa.select(Scene.id, Scene.status, Scene.review_comment)
                                .where(Scene.video_id == video_id).order_by(Scene.id)).all()
    return boxes(video_id), [tuple(s) for s in scenes], db.session.scalar(
        sa.select(sa.func.count(LabelEvent.id)))


@pytest.fixture
def locked_video(app) -> tuple[int, list[int]]:
    """Frames 0-2 reviewed, 3-5 submitted, 6-8 new; (video id, scene ids in that order)."""
    with app.app_context():
        vid = make_video(app, "P1", ["reviewed", "submitted", "new"])
        return vid, list(db.session.scalars(sa.select(Scene.id).filter_by(video_id=vid)
                                            .order_by(Scene.first_frame)))


# --- imports and the review lock -------------------------------------------------------------

def test_an_import_into_submitted_or_reviewed_scenes_is_refused_naming_them(app, locked_video,
                                                                            tmp_path):
    vid, (reviewed, submitted, new) = locked_video
    with app.app_context():
        before = _state(vid)
    path = _write(tmp_path, _coco([1, 4, 7]))
    for extra in ((), ("--dry-run",), ("--status", "reviewed")):
        result = cli(app, "labels", "import", path, "--video", str(vid), *extra)
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert line.startswith(f"error: Scenes {reviewed} (reviewed), {submitted} (submitted) are "
                               "locked for review") and "--reopen --reason" in line
    # The Label Studio import is held to the same lock.
    tasks = [{"id": 1, "data": {"image": "f.png", "frame_index": 1}, "annotations": [{"result": [{
        "type": "rectanglelabels", "from_name": "label", "to_name": "image", "original_width": 64,
        "original_height": 48, "value": {"x": 10, "y": 10, "width": 20, "height": 20,
                                          "rectanglelabels": ["tumor"]}}]}]}]
    ls_path = tmp_path / "ls.json"
    ls_path.write_text(json.dumps(tasks))
    result = cli(app, "labels", "import-labelstudio", str(ls_path), "--video", str(vid))
    assert result.exit_code == 2 and f"Scene {reviewed} (reviewed) is locked" in result.output
    # A status move alone changes a locked scene too.
    result = cli(app, "labels", "import", _write(tmp_path, {**_coco([1]), "annotations": []}),
                 "--video", str(vid), "--status", "new")
    assert result.exit_code == 2 and f"Scene {reviewed} (reviewed) is locked" in result.output
    with app.app_context():
        assert _state(vid) == before

    # Only the unlocked scene: imported; importing it again is no change, so still allowed
    # once that scene is submitted.
    path = _write(tmp_path, _coco([7]))
    assert cli(app, "labels", "import", path, "--video", str(vid), "--status", "submitted").exit_code == 0
    again = cli(app, "labels", "import", path, "--video", str(vid), "--json")
    assert again.exit_code == 0 and json.loads(again.output)["duplicates_skipped"] == 1


def test_an_admin_reopens_locked_scenes_for_an_import_and_it_is_audited(app, locked_video, tmp_path):
    vid, (reviewed, submitted, new) = locked_video
    path = _write(tmp_path, _coco([1, 4, 7]))
    reopen = ("--reopen", "--reason", "Vessels were missed; imported from the CVAT pass.",
              "--as", "admin")
    with app.app_context():
        before = _state(vid)
    dry = cli(app, "labels", "import", path, "--video", str(vid), *reopen, "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert f"would reopen (back to returned): scenes {reviewed}, {submitted}" in dry.output
    with app.app_context():
        assert _state(vid) == before

    result = cli(app, "labels", "import", path, "--video", str(vid), *reopen, "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["scenes_reopened"] == [reviewed, submitted] and report["boxes_added"] == 3
    with app.app_context():
        admin = db.session.scalar(sa.select(User).filter_by(username="admin"))
        statuses = {s.id: (s.status, s.review_comment) for s in db.session.scalars(
            sa.select(Scene).filter_by(video_id=vid))}
        why = "Vessels were missed; imported from the CVAT pass."
        assert statuses == {reviewed: (SceneStatus.returned, why),
                            submitted: (SceneStatus.returned, why), new: (SceneStatus.new, "")}
        events = db.session.scalars(sa.select(LabelEvent).order_by(LabelEvent.id)).all()
        reopened = [e for e in events if e.action == "reopen"]
        assert [(e.scene_id, e.source, e.user_id, e.before, e.after) for e in reopened] == [
            (reviewed, "workflow", admin.id, {"status": "reviewed"}, {"status": "returned", "comment": why}),
            (submitted, "workflow", admin.id, {"status": "submitted"}, {"status": "returned", "comment": why})]
        imported = [e for e in events if e.action == "import"]
        assert len(imported) == 3 and {e.user_id for e in imported} == {admin.id}
        assert max(e.id for e in reopened) < min(e.id for e in imported)  # reopened, then changed


@pytest.mark.parametrize("extra, message", [
    (("--reopen", "--reason", "x", "--as", "annotator"), "Only an admin may reopen"),
    (("--reopen", "--reason", "x", "--as", "data_manager"), "Only an admin may reopen"),
    (("--reopen", "--as", "admin"), "needs a reason"),
    (("--reopen", "--reason", "   ", "--as", "admin"), "needs a reason"),
    (("--reopen", "--reason", "x"), "--reopen needs --as NAME"),
    (("--reason", "x", "--as", "admin"), "--reason goes with --reopen"),
    (("--reopen", "--reason", "x", "--as", "nobody"), "no active user 'nobody'"),
])
def test_only_an_admin_with_a_reason_reopens(app, locked_video, tmp_path, extra, message):
    vid, _ = locked_video
    with app.app_context():
        before = _state(vid)
    result = cli(app, "labels", "import", _write(tmp_path, _coco([1, 4])), "--video", str(vid), *extra)
    assert result.exit_code == 2 and message in result.output, result.output
    with app.app_context():
        assert _state(vid) == before


# --- the label-import page --------------------------------------------------------------------

def _post(s, video_id: int, doc: dict, action: str, **fields):
    return s.post(f"/videos/{video_id}/labels",
                  {"file": (io.BytesIO(json.dumps(doc).encode()), "labels.json"), "action": action,
                   **fields}, content_type="multipart/form-data")


def test_the_import_page_refuses_locked_scenes_and_only_an_admin_reopens_them(app, login):
    seeded = seed_scene(app, frames=3, status=SceneStatus.reviewed)
    sid, vid = seeded.scene_id, seeded.video_id
    doc = _coco([0, 2], size=(160, 120))
    dm, admin = login("data_manager"), login("admin")
    assert 'name="reopen"' not in dm.get(f"/videos/{vid}").get_data(as_text=True)
    assert 'name="reopen"' in admin.get(f"/videos/{vid}").get_data(as_text=True)

    for action in ("check", "import"):
        resp = _post(dm, vid, doc, action)
        text = resp.get_data(as_text=True)
        assert resp.status_code == 409 and "Nothing was imported" in text
        assert f"Scene {sid} (reviewed) is locked for review" in text
        assert "Ask an admin to reopen them" in text and 'id="reopen-import"' not in text
    resp = _post(dm, vid, doc, "import", reopen="1", reason="because")
    assert resp.status_code == 403 and "Only an admin may reopen" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(Box.id))) == 0
        assert db.session.get(Scene, sid).status == SceneStatus.reviewed
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0

    # An admin is offered the reopen on the refusal, for the file already sent.
    refused = _post(admin, vid, doc, "import").get_data(as_text=True)
    form = refused.split('id="reopen-import"')[1].split("</form>")[0]
    token = re.search(r'name="token" value="([0-9a-f]{32})"', form).group(1)
    fields = {"token": token, "reopen": "1", "format": "coco", "match": "frame_index", "status": ""}
    no_reason = admin.post(f"/videos/{vid}/labels", {**fields, "action": "import", "reason": " "})
    assert no_reason.status_code == 400 and "needs a reason" in no_reason.get_data(as_text=True)
    done = admin.post(f"/videos/{vid}/labels",
                      {**fields, "action": "import", "reason": "Re-drawn in CVAT"})
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and f"reopened (back to returned): scenes {sid}" in text
    assert "added 2 boxes" in text
    with app.app_context():
        scene = db.session.get(Scene, sid)
        assert (scene.status, scene.review_comment) == (SceneStatus.returned, "Re-drawn in CVAT")
        (event,) = db.session.scalars(sa.select(LabelEvent).filter_by(action="reopen")).all()
        assert event.user.username == "admin" and event.after["comment"] == "Re-drawn in CVAT"
    audit = admin.get(f"/scenes/{sid}/audit").get_data(as_text=True)
    assert "reopen" in audit and "Re-drawn in CVAT" in audit


def test_a_json_client_gets_409_with_the_locked_scenes(app, login):
    seeded = seed_scene(app, frames=2, status=SceneStatus.submitted)
    s = login("data_manager")
    resp = s.client.post(f"/videos/{seeded.video_id}/labels",
                         data={"file": (io.BytesIO(json.dumps(_coco([1], (160, 120))).encode()),
                                        "l.json"), "action": "import", "csrf_token": s.csrf},
                         headers={"Accept": "application/json"}, content_type="multipart/form-data")
    assert resp.status_code == 409
    body = resp.get_json()
    assert body["locked_scenes"] == {str(seeded.scene_id): "submitted"}
    assert f"Scene {seeded.scene_id} (submitted) is locked" in body["error"]


# --- assignment --------------------------------------------------------------------------------

@pytest.fixture
def alice(app) -> str:
    """A second annotator; log in with ``login("alice")``."""
    with app.app_context():
        db.session.add(User(username="alice", role=Role.annotator, password_hash=password_hash()))
        db.session.commit()
    return "alice"


def _assign(app, scene_id: int, name: str | None) -> None:
    with app.app_context():
        user = db.session.scalar(sa.select(User).filter_by(username=name)) if name else None
        db.session.get(Scene, scene_id).assignee_id = user.id if user else None
        db.session.commit()


def _edits(seeded, event_ids: list[int]) -> list[tuple[str, str, dict]]:
    """Every route that changes a scene's labels, with a valid body."""
    fid, (p1, p2, *_) = seeded.frame_ids[0], seeded.prelabel_ids
    return [
        ("POST", f"/api/frames/{fid}/boxes", {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20}),
        ("PATCH", f"/api/boxes/{p1}", {"row_version": 1, "w": 12}),
        ("DELETE", f"/api/boxes/{p1}", {"row_version": 1}),
        ("POST", f"/api/boxes/{p1}/accept", {"row_version": 1}),
        ("POST", f"/api/boxes/{p2}/reject", {"row_version": 1}),
        ("POST", f"/api/frames/{fid}/accept-above", {"threshold": 0.5}),
        ("POST", f"/api/frames/{seeded.frame_ids[1]}/no-findings", {"empty": True}),
        ("POST", f"/api/frames/{seeded.frame_ids[1]}/no-findings", {"empty": False}),  # a no-op
        ("POST", "/api/events/revert", {"event_ids": event_ids}),
        ("POST", f"/scenes/{seeded.scene_id}/propagate", {"frame_id": fid}),
        ("POST", f"/api/scenes/{seeded.scene_id}/status", {"status": "submitted"}),
    ]


def test_only_the_assignee_edits_an_assigned_scene(app, login, alice):
    seeded = seed_scene(app, prelabels=4)
    sid = seeded.scene_id
    _assign(app, sid, "annotator")
    owner, other = login("annotator"), login(alice)
    resp = other.json("POST", f"/api/scenes/{sid}/status", {"status": "in_progress"})
    assert resp.status_code == 403 and "assigned to annotator" in resp.get_json()["error"]
    drawn = owner.json("POST", f"/api/frames/{seeded.frame_ids[2]}/boxes",
                       {"class_id": 2, "x": 1, "y": 1, "w": 9, "h": 9}).get_json()
    with app.app_context():
        before = _state(seeded.video_id)
    for method, url, body in _edits(seeded, drawn["undo_ids"]):
        resp = other.json(method, url, body)
        assert resp.status_code == 403, (method, url, resp.get_json())
        assert resp.get_json()["error"].startswith(f"Scene {sid} is assigned to annotator"), url
    with app.app_context():
        assert _state(seeded.video_id) == before

    # The assignee can; so can an admin, and the scene stays the assignee's.
    for method, url, body in _edits(seeded, drawn["undo_ids"])[:2]:
        assert owner.json(method, url, body).status_code in (200, 201), url
    made = login("admin").json("POST", f"/api/frames/{seeded.frame_ids[3]}/boxes",
                               {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    assert made.status_code == 201 and made.get_json()["scene"]["assignee"] == "annotator"
    assert owner.json("POST", "/api/events/revert", {"event_ids": drawn["undo_ids"]}).status_code == 200
    finish_scene(owner, sid)
    assert owner.json("POST", f"/api/scenes/{sid}/status", {"status": "submitted"}).status_code == 200
    # Reviewers keep reviewing.
    assert login("reviewer").json("POST", f"/api/scenes/{sid}/status",
                                  {"status": "returned", "comment": "Check frame 3."}).status_code == 200


def test_the_workspace_offers_edit_tools_only_to_whom_the_server_lets_edit(app, login, alice):
    seeded = seed_scene(app)
    _assign(app, seeded.scene_id, "annotator")
    perms = {name: login(name).get(f"/api/scenes/{seeded.scene_id}").get_json()["permissions"]
             for name in ("annotator", alice, "admin", "reviewer")}
    assert perms["annotator"]["edit"] and perms["annotator"]["submit"]
    assert not perms["alice"]["edit"] and not perms["alice"]["submit"]
    assert perms["admin"]["edit"] and not perms["reviewer"]["edit"]


def test_the_audit_of_a_frame_in_a_scene_lists_only_that_scene_s_events(app, login):
    one, two = seed_scene(app), seed_scene(app)
    s = login("annotator")
    s.json("POST", f"/api/frames/{two.frame_ids[0]}/boxes", {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    resp = s.get(f"/api/scenes/{one.scene_id}/events?frame_id={two.frame_ids[0]}")
    assert resp.status_code == 200 and resp.get_json()["events"] == []
    own = s.get(f"/api/scenes/{two.scene_id}/events?frame_id={two.frame_ids[0]}").get_json()["events"]
    assert [e["action"] for e in own if e.get("box_id")] == ["create"]


def test_an_unassigned_scene_goes_to_whoever_edits_it_first(app, login, alice):
    seeded = seed_scene(app)
    first = login(alice).json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
                              {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    assert first.status_code == 201 and first.get_json()["scene"]["assignee"] == "alice"
    late = login("annotator").json("POST", f"/api/frames/{seeded.frame_ids[1]}/boxes",
                                   {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20})
    assert late.status_code == 403 and "is assigned to alice" in late.get_json()["error"]
    # Taken back by a data manager, it is open to the next editor again.
    dm = login("data_manager")
    assert dm.json("POST", "/api/scenes/assign", {"scene_ids": [seeded.scene_id],
                                                  "assignee": None}).status_code == 200
    assert login("annotator").json("POST", f"/api/frames/{seeded.frame_ids[1]}/boxes",
                                   {"class_id": 1, "x": 5, "y": 5, "w": 20, "h": 20}).status_code == 201


def test_jobs_of_a_data_manager_or_admin_run_on_any_scene_but_not_an_annotators(app, alice,
                                                                              monkeypatch):
    """Pre-label and propagate jobs: an annotator's skip or fail on another's scene; a data
    manager's or admin's run there; the review lock holds for everyone."""
    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    seeded = labelled_scene(app, frames=3)
    locked = labelled_scene(app, frames=2, status=SceneStatus.reviewed, patient="P002")
    _assign(app, seeded.scene_id, "annotator")
    monkeypatch.setattr("detector.predict.Predictor", _OneBoxModel)
    with app.app_context():
        version = ModelVersion(name="fake-v1", kind="single", config={}, metrics={},
                               file_sha256="0" * 64, active=True)
        db.session.add(version)
        db.session.commit()
        folder = Path(app.config["SONOLABEL_DATA_DIR"]) / "models" / str(version.id)
        folder.mkdir(parents=True)
        (folder / "model.pt").write_bytes(b"weights")
        users = {u.username: u for u in db.session.scalars(sa.select(User))}
        scenes = f"{seeded.scene_id},{locked.scene_id}"

        job = start_job("prelabel", {"scene": scenes}, users["alice"])
        assert job.status == JobStatus.succeeded, job.error
        assert job.result["skipped"] == [seeded.scene_id, locked.scene_id]
        assert any("is assigned to annotator" in line for line in job.log_tail.splitlines())
        job = start_job("prelabel", {"scene": scenes}, users["data_manager"])
        assert job.status == JobStatus.succeeded and job.result["skipped"] == [locked.scene_id]
        assert job.result["boxes"] == 3

        job = start_job("propagate", {"scene": seeded.scene_id}, users["alice"])
        assert job.status == JobStatus.failed and "is assigned to annotator" in job.error
        job = start_job("propagate", {"scene": seeded.scene_id}, users["admin"])
        assert job.status == JobStatus.succeeded, job.error
        job = start_job("propagate", {"scene": locked.scene_id}, users["admin"])
        assert job.status == JobStatus.failed and "reviewed" in job.error
        assert db.session.get(Scene, seeded.scene_id).assignee.username == "annotator"


class _OneBoxModel:
    """Stands in for the detector: one tumour box per frame."""

    names = ["background", "tumor"]  # as a Predictor gives its model's categories

    def __init__(self, *args, **kwargs) -> None:
        pass

    def reset(self) -> None:
        pass

    def step(self, image) -> list[dict]:
        return [{"box": [10.0, 10.0, 30.0, 20.0], "label": 1, "category": "tumor", "score": 0.9}]
