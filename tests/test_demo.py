"""`sonolabel demo`, the first half of the README's `make demo`: migrate an empty SQLite
instance, create an admin (password printed once), generate and import the synthetic sweep."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

SONOLABEL = str(Path(sys.executable).parent / "sonolabel")


def _demo(env: dict) -> subprocess.CompletedProcess:
    return subprocess.run([SONOLABEL, "demo", "--frames", "12"], env=env, capture_output=True,
                          text=True, timeout=300)


@pytest.mark.slow
def test_demo_sets_up_an_instance_once(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("SONOLABEL_")}
    env["SONOLABEL_INSTANCE_DIR"] = str(tmp_path / "instance")
    first = _demo(env)
    assert first.returncode == 0, first.stderr
    password = re.search(r"admin user: admin  password: (\S+)", first.stdout).group(1)
    assert "imported demo video 1: 12 frames" in first.stdout

    from annotator import create_app
    from annotator.db import db
    from annotator.models import Frame, Video

    os.environ["SONOLABEL_INSTANCE_DIR"] = env["SONOLABEL_INSTANCE_DIR"]
    try:
        app = create_app()
    finally:
        del os.environ["SONOLABEL_INSTANCE_DIR"]
    assert app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:///" + str(tmp_path))
    with app.app_context():
        video = db.session.get(Video, 1)
        source = next((tmp_path / "instance" / "data" / "demo").rglob("*.mp4"))
        cap = cv2.VideoCapture(str(source))
        decoded = 0
        while cap.read()[0]:
            decoded += 1
        assert (video.codec, video.frame_count, decoded) == ("avc1", 12, 12)
        stamps = db.session.scalars(db.select(Frame.timestamp_ms).where(Frame.video_id == 1)
                                    .order_by(Frame.frame_index)).all()
        assert len(stamps) == 12 and all(abs(t - i * 1000 / 15) < 0.5 for i, t in enumerate(stamps))
    client = app.test_client()
    page = client.get("/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    resp = client.post("/login", data={"username": "admin", "password": password,
                                       "csrf_token": token})
    assert resp.status_code == 302
    assert client.get(f"/videos/{video.id}").status_code == 200

    again = _demo(env)
    assert again.returncode == 0, again.stderr
    assert "password" not in again.stdout and "imported" not in again.stdout
