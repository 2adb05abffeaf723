"""A round trip through a real Label Studio server (1.23.2, installed by `make labelstudio-venv`
into .venv-labelstudio, its own virtual environment): SonoLabel's tasks open there with their
images, edits made through its API come back as moves, deletions and new boxes, and nothing
else changes. The snapshot export it gives is recorded in tests/data (rerun with
SONOLABEL_RECORD_LABEL_STUDIO=1 to record it again; every run checks the recording still matches)
so the replay test checks the same outcome without the server. Video tasks are not exported
yet, so only image tasks make the trip.
"""
from __future__ import annotations

import copy
import json
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from helpers import (LABEL_STUDIO_SNAPSHOT, ROUND_TRIP_MOVE, ROUND_TRIP_NEW,
                     assert_round_trip_synced, boxes_by_id, cli, make_live_app, round_trip_video,
                     served)

from annotator.db import db
from annotator.models import Frame, Scene, SceneStatus

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
TOKEN = "5f0c1e2d3b4a59687766554433221100ffeeddcc"  # legacy tokens are 40 hex digits
REOPEN = ("--reopen", "--reason", "corrected in Label Studio", "--as", "admin")
START_S = 180  # about 25 s on a quiet machine; the first start also migrates its database


class LabelStudio:
    """A running server: its address and an HTTP session carrying the API token."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {TOKEN}"

    def call(self, method: str, path: str, **kw) -> Any:
        resp = self.http.request(method, self.url + path, timeout=60, **kw)
        assert resp.ok, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json() if resp.content else None

    def project(self, title: str, tasks: list[dict], config: str) -> int:
        project = self.call("POST", "/api/projects", json={"title": title, "label_config": config})
        self.call("POST", f"/api/projects/{project['id']}/import", json=tasks)
        return project["id"]

    def snapshot(self, project: int) -> list[dict]:
        """A snapshot export of every task with predictions in full (the Export button lists
        them as ids only)."""
        export = self.call("POST", f"/api/projects/{project}/exports", json={
            "title": "sonolabel round trip",
            "serialization_options": {"predictions": {"only_id": False}}})
        for _ in range(120):
            state = self.call("GET", f"/api/projects/{project}/exports/{export['id']}")
            if state["status"] == "completed":
                break
            assert state["status"] != "failed", state
            time.sleep(0.5)
        return self.call("GET", f"/api/projects/{project}/exports/{export['id']}/download",
                         params={"exportType": "JSON"})


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc: subprocess.Popen) -> None:
    """End the server and the workers it started (its own process group)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


@pytest.fixture(scope="session")
def label_studio(tmp_path_factory) -> Iterator[LabelStudio]:
    if not LABEL_STUDIO.exists():
        pytest.skip("Label Studio is not installed: `make labelstudio-venv` puts label-studio"
                    "==1.23.2 in .venv-labelstudio (see .venv-labelstudio/install.log if that failed)")
    home = tmp_path_factory.mktemp("label-studio")
    port = _free_port()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
           "LABEL_STUDIO_USERNAME": "sonolabel@example.org",
           "LABEL_STUDIO_PASSWORD": "round-trip-password", "LABEL_STUDIO_USER_TOKEN": TOKEN,
           "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true", "LATEST_VERSION_CHECK": "false"}
    log = home / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [str(LABEL_STUDIO), "start", "--no-browser", "--internal-host", "127.0.0.1",
             "--port", str(port)], cwd=home, env=env, stdout=out, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_S
        while True:
            try:
                if requests.get(url + "/health", timeout=2).ok:
                    break
            except requests.ConnectionError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = log.read_text(errors="replace")[-1500:]
                pytest.skip(f"Label Studio did not start on {url} within {START_S} s "
                            f"(exit {proc.poll()}); its log ends:\n{tail}")
            time.sleep(1)
        yield LabelStudio(url)
    finally:
        _stop(proc)


def _by_frame(tasks: list[dict]) -> dict[int, dict]:
    return {t["data"]["frame_index"]: t for t in tasks}


def _essence(tasks: list[dict]) -> list:
    """Per frame, the regions of each annotation and prediction: what an import reads, without
    the ids, times and links that differ from run to run."""
    def regions(group: dict) -> list:
        return [(r["id"], r["value"], r.get("score")) for r in group["result"]]

    return [(t["data"]["frame_index"], [regions(a) for a in t["annotations"]],
             [(p["model_version"], p["score"], regions(p)) for p in t["predictions"]])
            for t in sorted(tasks, key=lambda t: t["data"]["frame_index"])]


def _import(app, path: Path, video: int, *extra: str) -> dict:
    result = cli(app, "labels", "import-labelstudio", str(path), "--video", str(video), "--json",
                 *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def _changes(report: dict) -> tuple[int, int, int]:
    return report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]


def _frame_png(app, task: dict) -> bytes:
    with app.app_context():
        frame = db.session.scalar(db.select(Frame).filter_by(
            video_id=task["data"]["video_id"], frame_index=task["data"]["frame_index"]))
        return (Path(app.config["SONOLABEL_DATA_DIR"]) / frame.relpath).read_bytes()


def _images_load(app, tasks: list[dict]) -> None:
    """Every task's image, fetched as an annotator's browser would: no SonoLabel log-in."""
    for task in tasks:
        resp = requests.get(task["data"]["image"], timeout=30)
        assert resp.status_code == 200, (task["data"]["image"], resp.status_code)
        assert resp.headers["Content-Type"] == "image/png"
        assert resp.content == _frame_png(app, task)


@pytest.mark.slow
def test_round_trip_through_a_real_label_studio(label_studio, tmp_path):
    ls = label_studio
    with served(make_live_app(tmp_path)) as app:
        vid, ids = round_trip_video(app)
        assert cli(app, "datasets", "create", "v1", "--ratios", "1,0,0").exit_code == 0

        # A dataset version: tasks open with their images and come back unchanged.
        out = tmp_path / "v1.json"
        result = cli(app, "export", "labelstudio", "v1", "--out", str(out),
                     "--image-url-base", app.base_url)
        assert result.exit_code == 0, result.output
        project = ls.project("SonoLabel v1", json.loads(out.read_text()),
                             Path(f"{out}.xml").read_text())
        version_tasks = ls.snapshot(project)
        assert sorted(t["data"]["frame_index"] for t in version_tasks) == [0, 1, 2]
        _images_load(app, version_tasks)
        untouched = tmp_path / "v1-back.json"
        untouched.write_text(json.dumps(version_tasks))
        dry = _import(app, untouched, vid, "--dry-run")
        assert _changes(dry) == (0, 0, 0) and dry["duplicates_skipped"] == 4

        # The video as it is now, pending pre-labels as predictions.
        out = tmp_path / "video.json"
        result = cli(app, "export", "labelstudio", "--video", str(vid), "--out", str(out),
                     "--image-url-base", app.base_url)
        assert result.exit_code == 0, result.output
        project = ls.project("SonoLabel video", json.loads(out.read_text()),
                             Path(f"{out}.xml").read_text())
        tasks = _by_frame(ls.snapshot(project))
        assert sorted(tasks) == [0, 1, 2, 3, 4, 5]
        _images_load(app, list(tasks.values()))
        assert [len(tasks[i]["predictions"]) for i in range(6)] == [0, 0, 0, 1, 1, 0]
        untouched = tmp_path / "video-back.json"
        untouched.write_text(json.dumps(list(tasks.values())))
        dry = _import(app, untouched, vid, "--dry-run")  # predictions in full: none added twice
        assert _changes(dry) == (0, 0, 0) and dry["duplicates_skipped"] == 7

        # Edit as an annotator would: the exported annotation of frame 0 updated (box a moved,
        # box b deleted), a new annotation with one box on the bare frame 5.
        [first] = tasks[0]["annotations"]
        edited = copy.deepcopy(first["result"])
        moved = next(r for r in edited if r["id"] == f"b{ids['a']}")
        for key, delta in ROUND_TRIP_MOVE.items():
            moved["value"][key] += delta
        edited = [r for r in edited if r["id"] != f"b{ids['b']}"]
        ls.call("PATCH", f"/api/annotations/{first['id']}", json={"result": edited})
        drawn = {"id": "Lq7rT2xZpA", "type": "rectanglelabels", "from_name": "label",
                 "to_name": "image", "original_width": 160, "original_height": 120,
                 "image_rotation": 0, "value": dict(ROUND_TRIP_NEW)}
        ls.call("POST", f"/api/tasks/{tasks[5]['id']}/annotations",
                json={"result": [drawn], "was_cancelled": False, "ground_truth": False})

        exported = sorted(ls.snapshot(project), key=lambda t: t["data"]["frame_index"])
        path = tmp_path / "snapshot.json"
        path.write_text(json.dumps(exported, indent=1) + "\n")
        if os.environ.get("SONOLABEL_RECORD_LABEL_STUDIO"):
            shutil.copyfile(path, LABEL_STUDIO_SNAPSHOT)
        # The recording the replay test reads is still what this server gives.
        assert _essence(exported) == _essence(json.loads(LABEL_STUDIO_SNAPSHOT.read_text()))
        with app.app_context():
            before = boxes_by_id(vid)
        report = _import(app, path, vid, *REOPEN)
        assert _changes(report) == (1, 1, 1), report
        with app.app_context():
            assert_round_trip_synced(vid, ids, before)
            after = boxes_by_id(vid)
        again = _import(app, path, vid, *REOPEN)
        assert _changes(again) == (0, 0, 0), again
        with app.app_context():
            assert boxes_by_id(vid) == after


def test_recorded_label_studio_export_replays(tmp_path):
    """The snapshot export the real server gave (recorded by the test above) syncs the same
    way: a moved, b deleted, the drawn box added, predictions and the rest untouched, once."""
    if not LABEL_STUDIO_SNAPSHOT.exists():
        pytest.fail(f"{LABEL_STUDIO_SNAPSHOT} is missing: run the round-trip test to record it")
    app = make_live_app(tmp_path)
    vid, ids = round_trip_video(app)
    with app.app_context():
        before = boxes_by_id(vid)
    report = _import(app, LABEL_STUDIO_SNAPSHOT, vid, *REOPEN)
    assert _changes(report) == (1, 1, 1), report
    assert report["frames"] == {"0": {"added": 0, "moved": 1, "deleted": 1, "unchanged": 1},
                                "5": {"added": 1, "moved": 0, "deleted": 0, "unchanged": 0}}
    with app.app_context():
        assert_round_trip_synced(vid, ids, before)
        assert db.session.scalar(db.select(Scene.status).filter_by(first_frame=0)) \
            == SceneStatus.returned  # the reviewed scene, reopened by the admin
        after = boxes_by_id(vid)
    assert _changes(_import(app, LABEL_STUDIO_SNAPSHOT, vid, *REOPEN)) == (0, 0, 0)
    with app.app_context():
        assert boxes_by_id(vid) == after
