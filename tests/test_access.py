"""Who may do what: every route x anonymous and every role, as one explicit table
(``MATRIX``), kept in step with the url map; every state-changing route refuses a request
without a CSRF token; log-in refuses wrong passwords and inactive users."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, Patient, Scene, User, Video

STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}
ROLES = ("admin", "data_manager", "annotator", "reviewer")

# What each route answers, "METHOD rule": (anonymous, admin, data_manager, annotator, reviewer).
# Anonymous 302 is a redirect to the log-in page, 401 the API's "login required"; 403 is "your
# role may not do this". A role that may gets through to the view: a page (200), a redirect
# (302), or, as the walk sends state-changing routes only the CSRF token, the view's refusal of
# the empty request (400). The walk goes down the table in this order, log-out last.
MATRIX: dict[str, tuple[int, int, int, int, int]] = {
    # public
    "GET /static/<path:filename>":                     (200, 200, 200, 200, 200),
    "GET /favicon.ico":                                (200, 200, 200, 200, 200),
    "GET /login":                                      (200, 200, 200, 200, 200),
    "POST /login":                                     (400, 401, 401, 401, 401),
    # videos and scenes
    "GET /":                                           (302, 302, 302, 302, 302),
    "GET /videos":                                     (302, 200, 200, 200, 200),
    "GET /videos/<int:video_id>":                      (302, 200, 200, 200, 200),
    "POST /videos/<int:video_id>/scenes":              (302, 400, 400, 403, 403),
    "POST /videos/<int:video_id>/labels":              (302, 400, 400, 403, 403),
    "GET /scenes/<int:scene_id>":                      (302, 200, 200, 200, 200),
    "GET /frames/<int:frame_id>.png":                  (302, 200, 200, 200, 200),
    "GET /signed/frames/<token>.png":                  (200, 200, 200, 200, 200),  # token: frame's signed link
    "GET /signed/clips/<clip>.mp4":                    (200, 200, 200, 200, 200),  # clip: scene clip's signed link
    "GET /videos/upload":                              (302, 200, 200, 403, 403),
    "POST /videos/upload":                             (302, 400, 400, 403, 403),
    # the labelling workspace
    "GET /scenes":                                     (302, 200, 200, 200, 200),
    "POST /scenes/assign":                             (302, 302, 302, 403, 403),
    "GET /review":                                     (302, 200, 200, 200, 200),
    "GET /scenes/<int:scene_id>/label":                (302, 200, 200, 200, 200),
    "GET /scenes/<int:scene_id>/audit":                (302, 200, 200, 200, 200),
    "GET /frames/<int:frame_id>/audit":                (302, 200, 200, 200, 200),
    "POST /scenes/<int:scene_id>/propagate":           (302, 400, 403, 400, 403),
    "POST /scenes/<int:scene_id>/propagate-track":     (302, 400, 403, 400, 403),
    "GET /scenes/next":                                (302, 302, 403, 302, 403),
    # the JSON API
    "GET /api/scenes":                                 (401, 200, 200, 200, 200),
    "GET /api/scenes/<int:scene_id>":                  (401, 200, 200, 200, 200),
    "GET /api/frames/<int:frame_id>/boxes":            (401, 200, 200, 200, 200),
    "POST /api/frames/<int:frame_id>/boxes":           (401, 400, 403, 400, 403),
    "PATCH /api/boxes/<int:box_id>":                   (401, 400, 403, 400, 403),
    "DELETE /api/boxes/<int:box_id>":                  (401, 400, 403, 400, 403),
    "POST /api/boxes/<int:box_id>/accept":             (401, 400, 403, 400, 403),
    "POST /api/boxes/<int:box_id>/reject":             (401, 400, 403, 400, 403),
    "POST /api/frames/<int:frame_id>/accept-above":    (401, 400, 403, 400, 403),
    "POST /api/frames/<int:frame_id>/no-findings":     (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/pre-labels/reject": (401, 400, 403, 400, 403),
    "POST /api/events/revert":                         (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/status":          (401, 400, 403, 400, 400),
    "POST /api/scenes/assign":                         (401, 400, 400, 403, 403),
    "GET /api/scenes/<int:scene_id>/events":           (401, 200, 200, 200, 200),
    "GET /api/scenes/<int:scene_id>/tracks":           (401, 200, 200, 200, 200),
    "POST /api/scenes/<int:scene_id>/tracks/class":    (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/tracks/accept":   (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/tracks/split":    (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/tracks/merge":    (401, 400, 403, 400, 403),
    "POST /api/scenes/<int:scene_id>/tracks/fuse":     (401, 400, 403, 400, 403),
    "GET /api/model-feedback":                         (401, 200, 200, 200, 200),
    "GET /api/openapi.json":                           (401, 200, 200, 200, 200),
    # datasets
    "GET /datasets":                                   (302, 200, 200, 403, 403),
    "GET /datasets/new":                               (302, 200, 200, 403, 403),
    "POST /datasets":                                  (302, 400, 400, 403, 403),
    "GET /datasets/<int:version_id>":                  (302, 200, 200, 403, 403),
    "POST /datasets/<int:version_id>/delete":          (302, 302, 302, 403, 403),
    "GET /datasets/<int:version_id>/download":         (302, 200, 200, 403, 403),
    "GET /datasets/<int:version_id>/labelstudio.json": (302, 200, 200, 403, 403),
    "GET /datasets/labelstudio-config.xml":            (302, 200, 200, 403, 403),
    # jobs (which kinds a role may start is checked by the job tests) and models
    "GET /jobs":                                       (302, 200, 200, 200, 200),
    "GET /jobs/status.json":                           (302, 200, 200, 200, 200),
    "POST /jobs/start":                                (302, 302, 302, 302, 302),
    "POST /jobs/cancel":                               (302, 302, 302, 302, 302),
    "GET /models":                                     (302, 200, 200, 200, 200),
    "POST /models/activate":                           (302, 302, 403, 403, 403),
    "GET /models/report":                              (302, 302, 302, 302, 302),
    # label classes (admins)
    "GET /classes":                                    (302, 200, 403, 403, 403),
    "POST /classes":                                   (302, 302, 403, 403, 403),
    "POST /classes/update":                            (302, 302, 403, 403, 403),
    "POST /classes/delete":                            (302, 302, 403, 403, 403),
    # last: it ends the sessions the walk uses
    "POST /logout":                                    (302, 302, 302, 302, 302),
}
PUBLIC = {"GET /static/<path:filename>", "GET /favicon.ico", "GET /login", "POST /login",
          "GET /signed/frames/<token>.png", "GET /signed/clips/<clip>.mp4"}


@pytest.fixture
def objects(app):
    """One patient, video, scene, frame (with its PNG) and box; returns their ids."""
    with app.app_context():
        image = np.random.default_rng(0).integers(0, 255, (48, 64), dtype=np.uint8)
        png = cv2.imencode(".png", image)[1].tobytes()
        sha = hashlib.sha256(png).hexdigest()
        patient = Patient(code="P001")
        video = Video(patient=patient, source_sha256="0" * 64, source_name="a.mp4", container="mp4",
                      codec="h264", fps=20.0, frame_count=2, width=64, height=48,
                      roi_x=0, roi_y=0, roi_w=64, roi_h=48)
        scene = Scene(video=video, first_frame=0, last_frame=1)
        frames = [Frame(video=video, scene=scene, frame_index=i, timestamp_ms=50.0 * i, sha256=sha,
                        width=64, height=48) for i in range(2)]
        box = Box(frame=frames[0], class_id=1, x=5, y=5, w=10, h=10, source=BoxSource.model,
                  score=0.9, model_version="m1")
        db.session.add_all([patient, video, scene, *frames, box])
        db.session.commit()
        path = Path(app.config["SONOLABEL_DATA_DIR"]) / frames[0].relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png)
        from annotator.services.dataset_create import create_version
        from annotator.services.dataset_split import Selection, SplitSpec

        version = create_version("v1", Selection(statuses=()), SplitSpec(ratios=(1.0, 0.0, 0.0)))
        from annotator.services.signed_urls import clip_token, frame_token

        return {"version_id": version.id, "video_id": video.id, "scene_id": scene.id, "frame_id": frames[0].id, "box_id": box.id,
                "patient_id": patient.id, "token": frame_token(frames[0].id),
                "clip": clip_token(video.id, 0, 1, (20, 1))}


def _rules(app) -> dict[str, object]:
    """Every route the app serves, as "METHOD rule" -> its url-map rule."""
    return {f"{method} {rule.rule}": rule for rule in app.url_map.iter_rules()
            for method in rule.methods - {"HEAD", "OPTIONS"}}


def _url(route: str, ids) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1).split(":")[-1]
        assert name in ids, f"route {route} takes <{name}>: teach this test how to fill it"
        return str(ids[name])

    return re.sub(r"<([^>]+)>", fill, route.split(" ", 1)[1])


def _unlisted(app) -> list[str]:
    return sorted(_rules(app).keys() - MATRIX.keys())


def test_matrix_lists_every_route(app):
    assert not _unlisted(app), (f"routes without a row in tests/test_access.py MATRIX: "
                                f"{_unlisted(app)}; add one saying what anonymous and each role get")
    stale = sorted(MATRIX.keys() - _rules(app).keys())
    assert not stale, f"MATRIX rows for routes the app no longer has: {stale}"


def test_a_new_route_without_a_row_is_named(app):
    app.add_url_rule("/reports/<int:report_id>", "reports.show", lambda report_id: "", methods=["GET", "POST"])
    assert _unlisted(app) == ["GET /reports/<int:report_id>", "POST /reports/<int:report_id>"]


def test_every_route_declares_roles(app):
    for route, rule in _rules(app).items():
        if route not in PUBLIC:
            view = app.view_functions[rule.endpoint]
            assert getattr(view, "allowed_roles", None), f"{rule.endpoint} has no role check"


def test_route_role_matrix(app, objects, login):
    sessions = {role: login(role) for role in ROLES}
    anonymous = app.test_client()
    ids = {**objects, "filename": "app.css"}
    wrong = []
    for route, expected in MATRIX.items():
        method, url = route.split(" ", 1)[0], _url(route, ids)
        got = []
        resp = anonymous.open(url, method=method)
        if resp.status_code == 302:
            assert "/login" in resp.headers["Location"], (route, resp.headers["Location"])
        got.append(resp.status_code)
        for role in ROLES:
            session = sessions[role]
            if method == "GET":
                resp = session.get(url)
            else:
                resp = session.client.open(url, method=method, data={"csrf_token": session.csrf},
                                           headers={"X-CSRFToken": session.csrf})
            got.append(resp.status_code)
        if tuple(got) != expected:
            wrong.append(f"{route}: expected {expected}, got {tuple(got)}")
    assert not wrong, "(anonymous, " + ", ".join(ROLES) + ")\n" + "\n".join(wrong)


def test_state_changing_routes_need_csrf(app, objects, login):
    admin = login("admin")
    for route in MATRIX:
        method = route.split(" ", 1)[0]
        if method not in STATE_CHANGING or route in ("POST /logout", "POST /login"):
            continue
        resp = admin.client.open(_url(route, objects), method=method, data={}, json=None)
        assert resp.status_code == 400, (route, resp.status_code)
        assert "CSRF" in resp.get_data(as_text=True)
    logout = admin.client.post("/logout")
    assert logout.status_code == 400 and "CSRF" in logout.get_data(as_text=True)
    login_page = app.test_client().post("/login", data={"username": "admin", "password": "x"})
    assert login_page.status_code == 400 and "CSRF" in login_page.get_data(as_text=True)


def test_login_rejects_wrong_password_and_inactive_users(app, client):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"username": "admin", "password": "nope", "csrf_token": token})
    assert resp.status_code == 401 and "Wrong user name or password" in resp.get_data(as_text=True)
    with app.app_context():
        u = db.session.scalar(db.select(User).filter_by(username="annotator"))
        u.active = False
        db.session.commit()
    resp = client.post("/login", data={"username": "annotator", "password": "correct horse battery",
                                       "csrf_token": token})
    assert resp.status_code == 401


def test_login_redirects_only_to_local_paths(client):
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    resp = client.post("/login?next=https://evil.example/x",
                       data={"username": "admin", "password": "correct horse battery", "csrf_token": token})
    assert resp.status_code == 302 and resp.headers["Location"] == "/videos"
