"""Label Studio interchange: tasks and config that the SDK accepts, a lossless round trip,
refusals of bad exports, and the push to a server (wired through the SDK, loopback only)."""
from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, frames_of, make_box, make_video, world

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, LabelEvent
from annotator.services.labelstudio_export import LabelStudioRefused, labeling_config, push, scene_tasks


# Labels restored into reviewed scenes, which an admin reopens for the import.
RESTORE = ("--reopen", "--reason", "restore lost labels", "--as", "admin", "--status", "reviewed")


@pytest.fixture
def scene(app):
    """A 4-frame scene (64x48) with manual, propagated and model boxes and a reviewed-empty
    frame; (video id, scene id)."""
    with app.app_context():
        vid = make_video(app, "P1", ["reviewed"], frames_per_scene=4)
        f = frames_of(vid)
        make_box(f[0], 1, x=5, y=7, w=11, h=13)
        make_box(f[0], 2, x=0, y=0, w=64, h=48, source=BoxSource.model, score=0.9, model_version="m1")
        make_box(f[1], 1, x=6, y=7, w=11, h=13, source=BoxSource.propagated, track_id=3)
        make_box(f[1], 1, x=33, y=17, w=7, h=5, source=BoxSource.model, score=0.25, model_version="m2")
        make_box(f[1], 2, x=40, y=30, w=9, h=9, source=BoxSource.model, score=0.5, model_version="m1")
        f[2].reviewed_empty = True
        db.session.commit()
        return vid, f[0].scene_id


def test_tasks_hold_percent_boxes_predictions_and_pass_the_sdk_checks(app, scene):
    from label_studio_sdk.label_interface import LabelInterface

    with app.app_context():
        tasks = scene_tasks(scene[1], image_prefix="/data/local-files/?d=")
        config = LabelInterface(labeling_config())
    assert len(tasks) == 4
    first = tasks[0]
    assert first["data"]["image"] == f"/data/local-files/?d=v{scene[0]:06d}_f000000.png"
    assert first["data"]["frame_index"] == 0 and first["data"]["video_id"] == scene[0]
    [manual] = first["annotations"][0]["result"]
    assert manual["value"] == {"x": 100 * 5 / 64, "y": 100 * 7 / 48, "width": 100 * 11 / 64,
                               "height": 100 * 13 / 48, "rotation": 0, "rectanglelabels": ["tumor"]}
    assert (manual["original_width"], manual["original_height"]) == (64, 48)
    [pred] = first["predictions"]
    assert pred["model_version"] == "m1" and pred["score"] == 0.9
    assert pred["result"][0]["score"] == 0.9 and pred["result"][0]["value"]["width"] == 100.0
    second = {p["model_version"]: p for p in tasks[1]["predictions"]}
    assert set(second) == {"m1", "m2"} and second["m2"]["score"] == 0.25
    assert tasks[2]["annotations"] == [{"result": [], "ground_truth": False}]  # reviewed empty
    assert "annotations" not in tasks[3] and "predictions" not in tasks[3]
    for task in tasks:
        for ann in task.get("annotations", []):
            assert config.validate_annotation(ann)
        for p in task.get("predictions", []):
            assert config.validate_prediction(p, return_errors=True) == []


def test_round_trip_loses_nothing(app, scene, tmp_path):
    out = tmp_path / "tasks.json"
    result = cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "<RectangleLabels" in Path(f"{out}.xml").read_text()
    with app.app_context():
        before = boxes(scene[0])
        for b in db.session.scalars(sa.select(Box)):
            db.session.delete(b)
        for f in db.session.scalars(sa.select(Frame)):
            f.reviewed_empty = False
        db.session.commit()
    # What Label Studio hands back: percentages with float noise, its own ids and fields.
    tasks = json.loads(out.read_text())
    for n, task in enumerate(tasks, start=1):
        task["id"] = 100 + n
        for group in task.get("annotations", []) + task.get("predictions", []):
            for r in group["result"]:
                r["value"]["x"] += 1e-7
                r["value"]["width"] -= 1e-7
    out.write_text(json.dumps(tasks))
    # Restoring into a reviewed scene changes it: an admin reopens it for the import.
    imported = cli(app, "labels", "import-labelstudio", str(out), "--video", str(scene[0]),
                   *RESTORE)
    assert imported.exit_code == 0, imported.output
    with app.app_context():
        after = boxes(scene[0])
        # Coordinates come back as floats (never rounded), equal up to Label Studio's noise.
        assert sorted(map(_rounded, after), key=str) == sorted(map(_rounded, before), key=str)
        assert [f.reviewed_empty for f in frames_of(scene[0])] == [False, False, True, False]
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))
                                 .where(LabelEvent.action == "import")) == len(before)


def _rounded(row: tuple) -> tuple:
    return (*row[:2], *(round(v, 6) for v in row[2:6]), *row[6:])


def test_version_export_and_import_by_file_name(app, tmp_path):
    codes = world(app, patients=3)
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    out = tmp_path / "v1.json"
    result = cli(app, "export", "labelstudio", "v1", "--out", str(out), "--image-prefix", "/data/upload/")
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    assert len(tasks) == 3 * 2 * 3 and {t["data"]["split"] for t in tasks} == {"train", "val", "test"}
    vid = codes["P01"][0]
    with app.app_context():
        before = boxes(vid)
        for b in db.session.scalars(sa.select(Box).join(Frame).where(Frame.video_id == vid)):
            db.session.delete(b)
        db.session.commit()
    # Label Studio's uploads prefix file names with 8 hex digits.
    for t in tasks:
        t["data"]["image"] = t["data"]["image"].replace("/data/upload/", "/data/upload/1/0123abcd-")
        del t["data"]["frame_index"]
    out.write_text(json.dumps(tasks))
    r = cli(app, "labels", "import-labelstudio", str(out), "--video", str(vid), "--match", "file_name",
            *RESTORE)
    assert r.exit_code == 0, r.output
    with app.app_context():
        reviewed = [row for row in before if row[0] < 6]  # the new third scene is in no version
        assert sorted(boxes(vid), key=str) == sorted(reviewed, key=str)


def test_bad_exports_are_reported_and_nothing_is_imported(app, scene, tmp_path):
    with app.app_context():
        tasks = scene_tasks(scene[1])
    tasks[0]["id"] = tasks[1]["id"] = 5  # ids collide
    r0 = tasks[0]["annotations"][0]["result"][0]
    tasks[2]["annotations"][0]["result"] = [
        {**r0, "id": "rot", "value": {**r0["value"], "rotation": 30}},
        {**r0, "id": "lbl", "value": {**r0["value"], "rectanglelabels": ["cyst"]}},
        {**r0, "id": "out", "value": {**r0["value"], "x": 95.0}},
        {**r0, "id": "size", "original_width": 640},
        {**r0, "id": "kind", "type": "polygonlabels"},
        {**r0, "id": "dup"}, {**r0, "id": "dup"},
    ]
    tasks[3]["data"]["frame_index"] = 77
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tasks))
    result = cli(app, "labels", "import-labelstudio", str(path), "--video", str(scene[0]))
    assert result.exit_code == 2
    text = result.output
    for expected in ("task id 5 is used twice", "rotated boxes", "unknown class 'cyst'",
                     "lies outside the 64x48 frame", "original_width 640 differs",
                     "a polygon (polygonlabels) cannot be imported", "region id 'dup' is used twice",
                     "has no stored frame 77"):
        assert expected in text, expected
    assert text.strip().splitlines()[-1].startswith("error: ")
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0
    path.write_text('{"tasks": 1}')
    result = cli(app, "labels", "import-labelstudio", str(path), "--video", str(scene[0]))
    assert result.exit_code == 2 and "expected a list of tasks" in result.output


def test_push_refuses_bad_addresses_cleanly(app, scene):
    with app.app_context():
        tasks = scene_tasks(scene[1])
        config = labeling_config()
    with pytest.raises(LabelStudioRefused, match="not a Label Studio address"):
        push("ftp://example.org", "t", "x", tasks, config)
    with pytest.raises(LabelStudioRefused, match="access token"):
        push("http://127.0.0.1:9", "", "x", tasks, config)
    with pytest.raises(LabelStudioRefused, match="Could not reach Label Studio at http://127.0.0.1:9"):
        push("http://127.0.0.1:9", "token", "x", tasks, config, timeout=2, retries=0)
    result = cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--out", "/dev/null/x.json",
                 "--push", "nope://x", "--token", "t")
    assert result.exit_code == 2 and "not a Label Studio address" in result.output


class _FakeLabelStudio(BaseHTTPRequestHandler):
    """Just enough of Label Studio's API for a project create and a task import."""

    seen: list = []

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.seen.append((self.path, self.headers.get("Authorization"), body))
        if self.path.rstrip("/") == "/api/projects":
            answer = {"id": 42, "title": body.get("title"), "label_config": body.get("label_config")}
        elif self.path.startswith("/api/projects/42/import"):
            answer = {"task_count": len(body), "annotation_count": 0, "prediction_count": 0,
                      "duration": 0.0, "file_upload_ids": [], "could_be_tasks_list": False,
                      "found_formats": [], "data_columns": []}
        else:
            self.send_response(404)
            self.end_headers()
            return
        data = json.dumps(answer).encode()
        self.send_response(201)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args) -> None:
        pass


def test_push_creates_a_project_and_imports_the_tasks(app, scene):
    server = HTTPServer(("127.0.0.1", 0), _FakeLabelStudio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    _FakeLabelStudio.seen = []
    try:
        with app.app_context():
            tasks = scene_tasks(scene[1])
            project = push(f"http://127.0.0.1:{server.server_port}", "secret", "SonoLabel scene",
                           tasks, labeling_config(), timeout=5, retries=0)
    finally:
        server.shutdown()
    assert project == 42
    (p1, auth1, create), (p2, auth2, imported) = _FakeLabelStudio.seen
    assert auth1 == auth2 == "Token secret"
    assert create["title"] == "SonoLabel scene" and "<RectangleLabels" in create["label_config"]
    assert len(imported) == len(tasks) and imported[0]["data"] == tasks[0]["data"]
