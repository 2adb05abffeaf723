"""Label Studio video tasks: a scene as an H.264 clip with its tracks as keyframe sequences,
the signed clip route, and a video-tracking export synced back (keyframes manual, frames
Label Studio interpolates as suggestions), refusals of shapes that cannot come back."""
from __future__ import annotations

import copy
import io
import json
import time
from pathlib import Path

import av
import pytest
from helpers import (TRACK_CLIP, assert_video_synced, boxes_by_id, cli, edit_video_tracks,
                     track_video)

from annotator.db import db
from annotator.models import Scene, SceneStatus
from annotator.services.labelstudio_video_import import shown_boxes
from annotator.services.signed_urls import clip_token

BASE = "http://sonolabel.test"
REOPEN = ("--reopen", "--reason", "tracks corrected in Label Studio", "--as", "admin")


def _export(app, tmp_path: Path, vid: int, *extra: str) -> list[dict]:
    out = tmp_path / "video-tasks.json"
    result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks", "--out",
                 str(out), *(extra or ("--image-url-base", BASE)))
    assert result.exit_code == 0, result.output
    return json.loads(out.read_text())


def _import(app, tasks: list[dict], tmp_path: Path, vid: int, *extra: str) -> dict:
    path = tmp_path / "back.json"
    path.write_text(json.dumps(tasks))
    result = cli(app, "labels", "import-labelstudio", str(path), "--video", str(vid), "--json",
                 *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def _changes(report: dict) -> tuple[int, int, int]:
    return report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]


def _refused(result) -> list[str]:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: "), result.output
    return lines


def test_a_scene_becomes_one_task_with_a_region_per_track(app, tmp_path):
    vid, ids = track_video(app)
    tasks = _export(app, tmp_path, vid)
    config = (tmp_path / "video-tasks.json.xml").read_text()
    assert '<Video name="video" value="$video" framerate="20"/>' in config
    assert '<VideoRectangle name="box" toName="video"/>' in config
    assert '<Label value="tumor"' in config and '<Label value="vessel"' in config
    assert [t["data"]["frame_indexes"] for t in tasks] == [list(range(8)), list(range(8, 12))]
    a = tasks[0]
    assert (a["data"]["clip_width"], a["data"]["clip_height"]) == TRACK_CLIP
    assert a["data"]["video"].startswith(f"{BASE}/signed/clips/")
    [annotation] = a["annotations"]
    regions = {r["id"]: r for r in annotation["result"]}
    assert sorted(regions) == ["t1", "t2"]  # the pre-label stays in SonoLabel
    t1, t2 = regions["t1"]["value"], regions["t2"]["value"]
    assert (t1["framesCount"], t1["duration"], t1["labels"]) == (8, 0.4, ["tumor"])
    assert regions["t1"]["type"] == "videorectangle" and regions["t1"]["from_name"] == "box"
    # Every box a keyframe; the last of a run disabled (track ends, or a gap follows).
    assert [(k["frame"], k["enabled"]) for k in t1["sequence"]] == [
        (1, True), (2, True), (3, True), (4, True), (5, False)]
    assert [(k["frame"], k["enabled"]) for k in t2["sequence"]] == [
        (3, True), (4, False), (7, True), (8, True)]
    first = t1["sequence"][0]
    W, H = TRACK_CLIP
    assert [first["x"] * W / 100, first["y"] * H / 100, first["width"] * W / 100,
            first["height"] * H / 100] == pytest.approx([40.5, 30.25, 30.5, 20.75])
    assert first["time"] == pytest.approx(0.05)
    meta = a["data"]["sonolabel_tracks"]["t1"]
    assert meta["track_id"] == 1
    assert meta["boxes"]["1"] == [ids["t1f0"], "manual"]
    assert meta["boxes"]["2"] == [ids["t1f1"], "propagated"]


def test_the_signed_clip_plays_as_h264_without_log_in(app, tmp_path):
    vid, _ = track_video(app)
    url = _export(app, tmp_path, vid)[0]["data"]["video"]
    anonymous = app.test_client()
    resp = anonymous.get(url.removeprefix(BASE))
    assert resp.status_code == 200 and resp.mimetype == "video/mp4"
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    with av.open(io.BytesIO(resp.data)) as clip:
        stream = clip.streams.video[0]
        assert stream.codec_context.name == "h264" and stream.codec_context.pix_fmt == "yuv420p"
        assert (stream.width, stream.height) == TRACK_CLIP and stream.average_rate == 20
        assert sum(1 for _ in clip.decode(video=0)) == 8
    assert resp.data[4:8] == b"ftyp" and resp.data.find(b"moov") < resp.data.find(b"mdat")
    part = anonymous.get(url.removeprefix(BASE), headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.data) == 100  # browsers seek with ranges
    with app.app_context():
        expired = clip_token(vid, 0, 7, (20, 1), days=1, now=time.time() - 2 * 86400)
    for bad in (expired, url.rsplit("/", 1)[1][:-6] + "x.mp4"):
        resp = anonymous.get(f"/signed/clips/{bad.removesuffix('.mp4')}.mp4")
        assert resp.status_code == 403


def test_an_untouched_video_export_changes_nothing(app, tmp_path):
    vid, _ = track_video(app)
    tasks = _export(app, tmp_path, vid)
    with app.app_context():
        before = boxes_by_id(vid)
    report = _import(app, tasks, tmp_path, vid)
    assert _changes(report) == (0, 0, 0), report
    assert report["duplicates_skipped"] == 11  # every track box; the pre-label is not sent
    with app.app_context():
        assert boxes_by_id(vid) == before


def test_edited_tracks_sync_back_keyframes_manual_and_interpolated_frames_suggested(app, tmp_path):
    vid, ids = track_video(app)
    tasks = _export(app, tmp_path, vid)
    tasks[0]["annotations"][0]["result"] = edit_video_tracks(tasks[0]["annotations"][0]["result"])
    with app.app_context():
        before = boxes_by_id(vid)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(tasks))
    dry = cli(app, "labels", "import-labelstudio", str(path), "--video", str(vid), "--dry-run")
    assert dry.exit_code == 0, dry.output
    assert "frame 7: 0 added, 0 moved, 1 deleted, 0 unchanged" in dry.output
    assert "total: would add 5 boxes (3 manual, 2 propagated); 2 to move, 1 to delete" in dry.output
    with app.app_context():
        assert boxes_by_id(vid) == before
    report = _import(app, tasks, tmp_path, vid)
    assert _changes(report) == (5, 2, 1), report
    with app.app_context():
        assert_video_synced(vid, ids, before)
        after = boxes_by_id(vid)
    assert _changes(_import(app, tasks, tmp_path, vid)) == (0, 0, 0)
    with app.app_context():
        assert boxes_by_id(vid) == after


def test_a_reviewed_scene_edited_in_label_studio_needs_an_admin_reopen(app, tmp_path):
    vid, ids = track_video(app)
    tasks = _export(app, tmp_path, vid)
    t1 = tasks[1]["annotations"][0]["result"][0]["value"]["sequence"]
    t1[0]["y"] += 3.0
    path = tmp_path / "locked.json"
    path.write_text(json.dumps(tasks))
    lines = _refused(cli(app, "labels", "import-labelstudio", str(path), "--video", str(vid)))
    assert "reviewed" in lines[-1] and "--reopen" in lines[-1]
    report = _import(app, tasks, tmp_path, vid, *REOPEN)
    assert _changes(report) == (0, 1, 0)
    with app.app_context():
        scene = db.session.scalar(db.select(Scene).filter_by(video_id=vid, first_frame=8))
        assert scene.status == SceneStatus.returned


def test_label_studio_interpolates_between_enabled_keyframes_only():
    def kf(frame, x, enabled=True):
        return {"frame": frame, "enabled": enabled, "x": x, "y": 0.0, "width": 5.0, "height": 5.0}

    shown = shown_boxes([kf(2, 10.0), kf(4, 20.0, False), kf(6, 30.0)], 8)
    assert [(f, b["x"], key) for f, b, key in shown] == [
        (2, 10.0, True), (3, 15.0, False), (4, 20.0, True),  # hidden on 5: 4 is disabled
        (6, 30.0, True), (7, 30.0, False), (8, 30.0, False)]  # enabled last: held to the end


@pytest.mark.parametrize("edit, problem", [
    (lambda t: t["annotations"][0]["result"].append(
        {"id": "poly1", "type": "polygonlabels", "from_name": "p", "to_name": "video",
         "value": {"points": [[1, 2], [3, 4], [5, 1]], "polygonlabels": ["tumor"]}}),
     "region 'poly1': a polygon (polygonlabels) cannot be imported: SonoLabel takes "
     "videorectangle tracks in video tasks"),
    (lambda t: t["annotations"][0]["result"][0]["value"].pop("sequence"),
     "region 't1': a video region needs a non-empty 'value.sequence' of keyframes"),
    (lambda t: t["data"].pop("frame_indexes"),
     "no 'data.frame_indexes' list: only video tasks exported by SonoLabel"),
    (lambda t: t["annotations"][0]["result"][0]["value"]["sequence"][0].update(rotation=30),
     "rotated boxes (30°) cannot be imported"),
    (lambda t: t["annotations"][0]["result"][0]["value"]["sequence"][0].update(frame=9),
     "'frame' must be an integer from 1 to the clip's 8 frames, got 9"),
])
def test_shapes_that_cannot_come_back_are_named(app, tmp_path, edit, problem):
    vid, _ = track_video(app)
    tasks = _export(app, tmp_path, vid)
    edit(tasks[0])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(tasks))
    with app.app_context():
        before = boxes_by_id(vid)
    lines = _refused(cli(app, "labels", "import-labelstudio", str(path), "--video", str(vid)))
    assert any(problem in line for line in lines if line.startswith("problem: ")), lines
    with app.app_context():
        assert boxes_by_id(vid) == before


def test_video_tasks_in_a_local_files_folder(app, tmp_path):
    vid, _ = track_video(app)
    out = tmp_path / "root" / "sonolabel-v7"
    result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks",
                 "--local-files", str(out))
    assert result.exit_code == 0, result.output
    tasks = json.loads((out / "tasks.json").read_text())
    assert "<VideoRectangle" in (out / "labeling-config.xml").read_text()
    for task in tasks:
        relative = task["data"]["video"].removeprefix("/data/local-files/?d=")
        assert relative.startswith("sonolabel-v7/videos/") and relative.endswith(".mp4")
        assert (tmp_path / "root" / relative).read_bytes()[4:8] == b"ftyp"


@pytest.mark.parametrize("extra, message", [
    ((), "video tasks need --image-url-base URL"),
    (("--image-url-base", BASE, "--predictions"), "pending pre-labels stay in SonoLabel"),
    (("--image-prefix", "/x/"), "--image-prefix is for image tasks"),
])
def test_video_task_refusals(app, tmp_path, extra, message):
    vid, _ = track_video(app)
    result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks", "--out",
                 str(tmp_path / "x.json"), *extra)
    [line] = _refused(result)
    assert message in line


def test_a_scene_export_and_a_version_export_give_the_same_task(app, tmp_path):
    vid, _ = track_video(app)
    with app.app_context():
        scene_id = db.session.scalar(db.select(Scene.id).filter_by(video_id=vid, first_frame=8))
    out = tmp_path / "scene.json"
    result = cli(app, "export", "labelstudio", "--scene", str(scene_id), "--video-tasks",
                 "--out", str(out), "--image-url-base", BASE)
    assert result.exit_code == 0, result.output
    [scene_task] = json.loads(out.read_text())
    assert cli(app, "datasets", "create", "v7", "--ratios", "1,0,0").exit_code == 0
    result = cli(app, "export", "labelstudio", "v7", "--video-tasks", "--out",
                 str(tmp_path / "v7.json"), "--image-url-base", BASE)
    assert result.exit_code == 0, result.output
    [version_task] = json.loads((tmp_path / "v7.json").read_text())  # only B is reviewed
    assert version_task["data"]["split"] == "train"
    strip = copy.deepcopy(version_task)
    del strip["data"]["split"]
    for task in (strip, scene_task):  # links signed a second apart differ in their expiry
        assert task["data"].pop("video").startswith(f"{BASE}/signed/clips/")
    assert strip == scene_task


@pytest.mark.browser
def test_chromium_plays_the_clip(live, browser, tmp_path):
    """Label Studio plays data.video in the annotator's browser: Chromium loads the signed
    clip, knows its size and length, and seeks to its last frame."""
    vid, _ = track_video(live)
    url = _export(live, tmp_path, vid, "--image-url-base", live.base_url)[0]["data"]["video"]
    page = browser.new_page()
    page.set_content(f'<video id="v" src="{url}" muted preload="auto"></video>')
    page.wait_for_function("document.getElementById('v').readyState >= 2", timeout=20000)
    size = page.evaluate("(() => { const v = document.getElementById('v');"
                         " return [v.videoWidth, v.videoHeight, v.duration, v.error]; })()")
    assert size == [*TRACK_CLIP, pytest.approx(0.4, abs=0.01), None]
    page.evaluate("document.getElementById('v').currentTime = 0.375")
    page.wait_for_function("!document.getElementById('v').seeking", timeout=10000)
    assert page.evaluate("document.getElementById('v').error") is None
