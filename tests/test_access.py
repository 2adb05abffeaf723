"""Every route x every role: anonymous -> log-in page (401 for the API), wrong role -> 403,
right role -> through; every state-changing route refuses a request without a CSRF token."""
from __future__ import annotations

import hashlib
import re
from pathlib import Path

import cv2
import numpy as np
import pytest

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, Patient, Role, Scene, User, Video

PUBLIC = {"static", "auth.login"}
STATE_CHANGING = {"POST", "PUT", "PATCH", "DELETE"}


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
        return {"version_id": version.id, "video_id": video.id, "scene_id": scene.id, "frame_id": frames[0].id, "box_id": box.id,
                "patient_id": patient.id}


def _routes(app):
    # Log-out last: it ends the sessions the walk uses.
    for rule in sorted(app.url_map.iter_rules(), key=lambda r: r.endpoint == "auth.logout"):
        if rule.endpoint in PUBLIC:
            continue
        for method in sorted(rule.methods - {"HEAD", "OPTIONS"}):
            yield rule, method


def _url(rule, ids) -> str:
    def fill(match: re.Match) -> str:
        name = match.group(1).split(":")[-1]
        assert name in ids, f"route {rule.rule} takes <{name}>: teach this test how to fill it"
        return str(ids[name])

    return re.sub(r"<([^>]+)>", fill, rule.rule)


def test_every_route_declares_roles(app):
    for rule, _ in _routes(app):
        view = app.view_functions[rule.endpoint]
        assert getattr(view, "allowed_roles", None), f"{rule.endpoint} has no role check"


def test_route_role_matrix(app, objects, login):
    sessions = {role.value: login(role.value) for role in Role}
    anonymous = app.test_client()
    checked = 0
    for rule, method in _routes(app):
        url = _url(rule, objects)
        allowed = {r.value for r in app.view_functions[rule.endpoint].allowed_roles}

        resp = anonymous.open(url, method=method)
        if url.startswith("/api/"):
            assert resp.status_code == 401, (method, url, resp.status_code)
        elif method == "GET":
            assert resp.status_code == 302 and "/login" in resp.headers["Location"], (method, url)
        else:
            assert resp.status_code == 302 and "/login" in resp.headers["Location"], (method, url)

        for role, session in sessions.items():
            if method == "GET":
                resp = session.get(url)
            else:
                resp = session.client.open(url, method=method, data={"csrf_token": session.csrf},
                                           headers={"X-CSRFToken": session.csrf})
            if role in allowed:
                assert resp.status_code not in (401, 403), (role, method, url, resp.status_code)
                if method == "GET":
                    assert resp.status_code in (200, 302), (role, method, url, resp.status_code)
            else:
                assert resp.status_code == 403, (role, method, url, resp.status_code)
        checked += 1
    assert checked >= 5


def test_state_changing_routes_need_csrf(app, objects, login):
    admin = login("admin")
    for rule, method in _routes(app):
        if method not in STATE_CHANGING:
            continue
        resp = admin.client.open(_url(rule, objects), method=method, data={}, json=None)
        assert resp.status_code == 400, (method, rule.rule, resp.status_code)
        assert "CSRF" in resp.get_data(as_text=True)


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
