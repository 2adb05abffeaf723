"""A round trip through a real Label Studio server (1.23.2, installed by `make labelstudio-venv`
into .venv-labelstudio, its own virtual environment): SonoLabel's image tasks and video tasks
open there with their images and clips (signed links, and a local-files folder), edits made
through its API come back as moves, deletions and new boxes (for video tasks: keyframes moved,
removed, added, tracks ended), and nothing else changes. Its exports (snapshot JSON of image
and of video tasks, COCO) are recorded in tests/data (rerun with SONOLABEL_RECORD_LABEL_STUDIO=1
to record them again; every run checks the recordings still match) so the replay tests check
the same outcome without the server.
"""
from __future__ import annotations

import copy
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import time
import zipfile
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests
from helpers import (CHROMIUM, LABEL_STUDIO_COCO, LABEL_STUDIO_SNAPSHOT, LABEL_STUDIO_VIDEO_SNAPSHOT,
                     ROUND_TRIP_MOVE, ROUND_TRIP_NEW, assert_round_trip_synced,
                     assert_video_synced, boxes_by_id, cli, edit_video_tracks, make_live_app,
                     round_trip_video, served, track_video)

from annotator.db import db
from annotator.models import Box, Frame, Scene, SceneStatus

ROOT = Path(__file__).resolve().parents[1]
LABEL_STUDIO = ROOT / ".venv-labelstudio" / "bin" / "label-studio"
TOKEN = "5f0c1e2d3b4a59687766554433221100ffeeddcc"  # legacy tokens are 40 hex digits
USER, PASSWORD = "sonolabel@example.org", "round-trip-password"
REOPEN = ("--reopen", "--reason", "corrected in Label Studio", "--as", "admin")
START_S = 180  # about 25 s on a quiet machine; the first start also migrates its database
RECORD = bool(os.environ.get("SONOLABEL_RECORD_LABEL_STUDIO"))


class LabelStudio:
    """A running server: its address, an HTTP session carrying the API token, and the folder
    it serves local files from (its LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT)."""

    def __init__(self, url: str, files: Path) -> None:
        self.url = url
        self.files = files
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

    def local_storage(self, project: int, folder: Path) -> None:
        """Add ``folder`` as the project's local-files source storage (set-up B), not synced:
        it only lets Label Studio serve the files the imported tasks name."""
        self.call("POST", "/api/storages/localfiles", json={
            "project": project, "path": str(folder), "title": "sonolabel", "use_blob_urls": False})

    def fetch(self, url: str) -> requests.Response:
        """A task's media as the annotator's browser gets it: a link of Label Studio's own
        (local files) with its log-in, any other link as it is."""
        if url.startswith("/"):
            return self.http.get(self.url + url, timeout=60)
        return requests.get(url, timeout=60)

    def coco(self, project: int) -> dict:
        """Label Studio's COCO export of the project (a zip holding result.json)."""
        resp = self.http.get(f"{self.url}/api/projects/{project}/export", timeout=60,
                             params={"exportType": "COCO", "download_resources": "false"})
        assert resp.ok, resp.text[:500]
        with zipfile.ZipFile(io.BytesIO(resp.content)) as z:
            return json.loads(z.read("result.json"))

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
    files = home / "files"
    files.mkdir()
    env = {**os.environ, "LABEL_STUDIO_BASE_DATA_DIR": str(home / "data"),
           # set-up B as the README gives it
           "LABEL_STUDIO_LOCAL_FILES_SERVING_ENABLED": "true",
           "LABEL_STUDIO_LOCAL_FILES_DOCUMENT_ROOT": str(files),
           "LABEL_STUDIO_USERNAME": USER,
           "LABEL_STUDIO_PASSWORD": PASSWORD, "LABEL_STUDIO_USER_TOKEN": TOKEN,
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
        yield LabelStudio(url, files)
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


def _coco_essence(path: Path) -> list:
    """A COCO export's images (in order, without the names: their links expire) and boxes."""
    doc = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in doc["categories"]}
    return [(img["id"], img["width"], img["height"],
             sorted((names[a["category_id"]], [round(v, 6) for v in a["bbox"]])
                    for a in doc["annotations"] if a["image_id"] == img["id"]))
            for img in doc["images"]]


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


def _images_load(app, tasks: list[dict], ls: LabelStudio | None = None) -> None:
    """Every task's image, fetched as an annotator's browser would: no SonoLabel log-in."""
    for task in tasks:
        resp = ls.fetch(task["data"]["image"]) if ls else requests.get(task["data"]["image"], timeout=30)
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
        # Its COCO export (images/<hash>__<token>.png, ids from 0) finds the same boxes here.
        coco = tmp_path / "coco.json"
        coco.write_text(json.dumps(ls.coco(project), indent=1) + "\n")
        if RECORD:
            shutil.copyfile(coco, LABEL_STUDIO_COCO)
        assert _coco_essence(coco) == _coco_essence(LABEL_STUDIO_COCO)
        result = cli(app, "labels", "import", str(coco), "--video", str(vid), "--match",
                     "file_name", "--dry-run", "--json")
        assert result.exit_code == 0, result.output
        report = json.loads(result.output.strip().splitlines()[-1])
        assert (report["boxes_added"], report["duplicates_skipped"]) == (0, 4), report

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
        if RECORD:
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


def _video_essence(tasks: list[dict]) -> list:
    """Per video task, the regions of its annotations: what an import reads."""
    return [(t["data"]["frame_indexes"], [[(r["id"], r["value"]) for r in a["result"]]
                                          for a in t["annotations"]])
            for t in sorted(tasks, key=lambda t: t["data"]["frame_indexes"][0])]


def _clips_load(ls: LabelStudio, tasks: list[dict], files: list[Path]) -> None:
    """Every task's clip answers 200 with video/mp4, the bytes SonoLabel encoded."""
    for task, path in zip(tasks, files):
        resp = ls.fetch(task["data"]["video"])
        assert resp.status_code == 200, (task["data"]["video"], resp.status_code)
        assert resp.headers["Content-Type"] == "video/mp4"
        assert resp.content == path.read_bytes()


def _clip_files(app, tasks: list[dict]) -> list[Path]:
    from annotator.services.labelstudio_clips import ensure_clip, range_frames

    with app.app_context():
        return [ensure_clip(range_frames(t["data"]["video_id"], t["data"]["frame_indexes"][0],
                                         t["data"]["frame_indexes"][-1]), (20, 1)) for t in tasks]


def _editor_shows(ls: LabelStudio, project: int, task: int, frames: int) -> dict | None:
    """What Label Studio's own video editor, in Chromium, shows of each region of the task's
    annotation: {region id: [(frame, x, y, width, height), ...]} over the clip's frames, once
    it has loaded the clip and counted its ``frames`` (waits for that); None without Chromium."""
    sync_api = pytest.importorskip("playwright.sync_api")
    if not Path(CHROMIUM).exists():
        return None
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.goto(f"{ls.url}/user/login")
            page.fill("input[name=email]", USER)
            page.fill("input[name=password]", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_load_state("load")
            page.goto(f"{ls.url}/projects/{project}/data?task={task}")
            # window.Htx: the editor's store, which Label Studio exposes to its own tests.
            page.wait_for_function("window.Htx?.annotationStore?.selected?.regions?.length > 0",
                                   timeout=60000)
            page.wait_for_function("document.querySelector('video')?.readyState >= 2", timeout=60000)
            page.wait_for_function(
                "n => window.Htx.annotationStore.selected.names.get('video').length === n",
                arg=frames, timeout=60000)
            return {"frames": frames, **page.evaluate("""(n) => Object.fromEntries(
                window.Htx.annotationStore.selected.regions.map(r => [r.cleanId || r.id,
                  Array.from({length: n}, (_, i) => i + 1)
                    .filter(f => r.isInLifespan(f) && r.getShape(f))
                    .map(f => { const s = r.getShape(f); return [f, s.x, s.y, s.width, s.height]; })]))""",
                frames)}
        finally:
            browser.close()


def _parser_shows(task: dict) -> dict:
    """What SonoLabel's import reads of the same annotation (keyframes, interpolated frames)."""
    from annotator.services.labelstudio_video_import import shown_boxes

    n = len(task["data"]["frame_indexes"])
    [annotation] = task["annotations"]
    out: dict = {"frames": n}
    for region in annotation["result"]:
        keys = sorted(({"enabled": True, **k} for k in region["value"]["sequence"]),
                      key=lambda k: k["frame"])
        out[region["id"]] = [[f, b["x"], b["y"], b["width"], b["height"]]
                             for f, b, _ in sorted(shown_boxes(keys, n), key=lambda s: s[0])]
    return out


@pytest.mark.slow
def test_video_tasks_round_trip_through_a_real_label_studio(label_studio, tmp_path):
    """A video's scenes as video tasks: each clip plays from its signed link, tracks edited
    through the API as an annotator would (a keyframe moved, one removed, a track extended,
    one ended, one drawn) show in Label Studio's editor as the import reads them, and come
    back as exactly those boxes, and only once."""
    ls = label_studio
    with served(make_live_app(tmp_path)) as app:
        vid, ids = track_video(app)
        out = tmp_path / "video-tasks.json"
        result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks",
                     "--out", str(out), "--image-url-base", app.base_url)
        assert result.exit_code == 0, result.output
        project = ls.project("SonoLabel video tasks", json.loads(out.read_text()),
                             Path(f"{out}.xml").read_text())
        tasks = sorted(ls.snapshot(project), key=lambda t: t["data"]["frame_indexes"][0])
        assert [t["data"]["frame_indexes"] for t in tasks] == [list(range(8)), list(range(8, 12))]
        _clips_load(ls, tasks, _clip_files(app, tasks))
        untouched = tmp_path / "untouched.json"
        untouched.write_text(json.dumps(tasks))
        dry = _import(app, untouched, vid, "--dry-run")
        assert _changes(dry) == (0, 0, 0) and dry["duplicates_skipped"] == 11

        [annotation] = tasks[0]["annotations"]
        ls.call("PATCH", f"/api/annotations/{annotation['id']}",
                json={"result": edit_video_tracks(annotation["result"])})
        exported = sorted(ls.snapshot(project), key=lambda t: t["data"]["frame_indexes"][0])
        path = tmp_path / "video-snapshot.json"
        path.write_text(json.dumps(exported, indent=1) + "\n")
        if RECORD:
            shutil.copyfile(path, LABEL_STUDIO_VIDEO_SNAPSHOT)
        assert _video_essence(exported) == _video_essence(
            json.loads(LABEL_STUDIO_VIDEO_SNAPSHOT.read_text()))
        # Label Studio's editor shows the edited tracks on exactly the frames, and with the
        # interpolated boxes, that the import turns into boxes.
        shows = _editor_shows(ls, project, exported[0]["id"], 8)
        if shows is not None:
            expected = _parser_shows(exported[0])
            assert shows.keys() == expected.keys() and shows["frames"] == expected["frames"]
            for region in expected.keys() - {"frames"}:
                assert [s[0] for s in shows[region]] == [e[0] for e in expected[region]], region
                assert shows[region] == [pytest.approx(e) for e in expected[region]], region
        with app.app_context():
            before = boxes_by_id(vid)
        assert _changes(_import(app, path, vid)) == (5, 2, 1)
        with app.app_context():
            assert_video_synced(vid, ids, before)
            after = boxes_by_id(vid)
        assert _changes(_import(app, path, vid)) == (0, 0, 0)
        with app.app_context():
            assert boxes_by_id(vid) == after


@pytest.mark.slow
def test_local_files_tasks_open_in_a_real_label_studio(label_studio, tmp_path):
    """Set-up B as the README gives it: the server started with local-files serving on and the
    document root, a local-files storage added to the project (not synced), tasks.json
    imported; every image and clip answers 200 from Label Studio itself."""
    ls = label_studio
    app = make_live_app(tmp_path)
    vid, _ = round_trip_video(app)
    assert cli(app, "datasets", "create", "v1", "--ratios", "1,0,0").exit_code == 0
    folder = ls.files / "sonolabel-v1"
    result = cli(app, "export", "labelstudio", "v1", "--local-files", str(folder))
    assert result.exit_code == 0, result.output
    project = ls.project("SonoLabel v1 (local files)",
                         json.loads((folder / "tasks.json").read_text()),
                         (folder / "labeling-config.xml").read_text())
    ls.local_storage(project, folder)
    tasks = ls.snapshot(project)
    assert sorted(t["data"]["frame_index"] for t in tasks) == [0, 1, 2]
    _images_load(app, tasks, ls)

    videos = ls.files / "sonolabel-video"
    result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks",
                 "--local-files", str(videos))
    assert result.exit_code == 0, result.output
    project = ls.project("SonoLabel video (local files)",
                         json.loads((videos / "tasks.json").read_text()),
                         (videos / "labeling-config.xml").read_text())
    ls.local_storage(project, videos)
    tasks = sorted(ls.snapshot(project), key=lambda t: t["data"]["frame_indexes"][0])
    assert len(tasks) == 2
    _clips_load(ls, tasks, [videos / "videos" / t["data"]["video"].rsplit("/", 1)[1]
                            for t in tasks])


def test_recorded_label_studio_video_export_replays(tmp_path):
    """The video-tracking snapshot the real server gave after the edits syncs the same way."""
    app = make_live_app(tmp_path)
    vid, ids = track_video(app)
    with app.app_context():
        before = boxes_by_id(vid)
    report = _import(app, LABEL_STUDIO_VIDEO_SNAPSHOT, vid)
    assert _changes(report) == (5, 2, 1), report
    with app.app_context():
        assert_video_synced(vid, ids, before)
        after = boxes_by_id(vid)
    assert _changes(_import(app, LABEL_STUDIO_VIDEO_SNAPSHOT, vid)) == (0, 0, 0)
    with app.app_context():
        assert boxes_by_id(vid) == after


def test_recorded_label_studio_coco_export_imports(tmp_path):
    """Label Studio's COCO export (names images/<hash>__<signed link>.png, ids and categories
    from 0) brings back the boxes of the frames it names, exactly, once."""
    app = make_live_app(tmp_path)
    vid, ids = round_trip_video(app)
    with app.app_context():
        gone = {name: boxes_by_id(vid)[ids[name]] for name in ("a", "b", "c", "d")}
        for name in gone:
            db.session.delete(db.session.get(Box, ids[name]))
        db.session.commit()
    args = ("labels", "import", str(LABEL_STUDIO_COCO), "--video", str(vid), "--match",
            "file_name", "--json", *REOPEN)
    result = cli(app, *args)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output.strip().splitlines()[-1])
    assert (report["images_matched"], report["boxes_added"]) == (3, 4), report
    with app.app_context():
        back = sorted(row[:6] for row in boxes_by_id(vid).values() if row[0] < 2)
    for got, sent in zip(back, sorted(row[:6] for row in gone.values()), strict=True):
        assert got[:2] == sent[:2] and got[2:] == pytest.approx(sent[2:], abs=1e-9)
    again = json.loads(cli(app, *args).output.strip().splitlines()[-1])
    assert again["boxes_added"] == 0
