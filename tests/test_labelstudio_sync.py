"""Label Studio imports are a sync: boxes moved, deleted, drawn or left alone in Label Studio
come back as moves, deletions, new boxes or nothing; its plain JSON export (predictions as
ids) and its COCO export import too. The files are built in the shapes Label Studio writes."""
from __future__ import annotations

import copy
import io
import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, frames_of, make_box, make_video

from annotator.db import db
from annotator.models import Box, BoxSource, LabelEvent, Scene, SceneStatus, User
from annotator.services.box_edits import reject_box
from annotator.services.labelstudio_export import scene_tasks
from annotator.services.signed_urls import frame_token

W, H = 160, 120


@pytest.fixture
def scene(app):
    """An in-progress 3-frame scene (160x120): frame 0 holds three manual boxes with edges off
    whole pixels and a pending pre-label, frame 1 a propagated box and two pre-labels.
    (video id, scene id, {name: box id})."""
    with app.app_context():
        vid = make_video(app, "P1", ["in_progress"], frames_per_scene=3, width=W, height=H)
        f = frames_of(vid)
        ids = {
            "a": make_box(f[0], 1, x=47.6, y=20.3, w=30.25, h=22.7),
            "b": make_box(f[0], 2, x=100.1, y=60.9, w=20.4, h=15.35),
            "c": make_box(f[0], 1, x=5.5, y=80.2, w=12.6, h=11.1),
            "p0": make_box(f[0], 2, x=10.4, y=10.6, w=25.3, h=19.9, source=BoxSource.model,
                           score=0.91, model_version="two-frame-v3"),
            "t": make_box(f[1], 1, x=48.7, y=21.1, w=30.25, h=22.7, source=BoxSource.propagated,
                          track_id=4),
            "p1": make_box(f[1], 1, x=147.6, y=2.4, w=11.9, h=9.3, source=BoxSource.model,
                           score=0.4, model_version="two-frame-v3"),
            "p2": make_box(f[1], 2, x=0.3, y=100.7, w=33.3, h=19.1, source=BoxSource.model,
                           score=0.77, model_version="other"),
        }
        db.session.commit()
        return vid, f[0].scene_id, {k: b.id for k, b in ids.items()}


def _from_label_studio(app, scene_id: int) -> list[dict]:
    """The scene's tasks as a Label Studio snapshot export gives them back: its task,
    annotation and prediction ids, times, and float noise on every percentage."""
    with app.app_context():
        tasks = scene_tasks(scene_id)
    for n, task in enumerate(tasks, start=1):
        task["id"] = 40 + n
        for k, ann in enumerate(task.get("annotations", []), start=1):
            ann.update(id=100 * n + k, completed_by=1, was_cancelled=False,
                       created_at="2026-03-01T10:00:00.000000Z",
                       updated_at="2026-03-01T10:00:00.000000Z", lead_time=3.2)
        for k, pred in enumerate(task.get("predictions", []), start=1):
            pred.update(id=1000 * n + k, task=task["id"], created_at="2026-03-01T09:00:00Z")
        for group in task.get("annotations", []) + task.get("predictions", []):
            for region in group["result"]:
                region["origin"] = "manual"
                for key in ("x", "width"):
                    region["value"][key] *= 1 + 3e-9
    return tasks


def _region(task: dict, rid: str) -> dict:
    return next(r for r in task["annotations"][0]["result"] if r["id"] == rid)


def _write(tmp_path: Path, doc, name: str = "export.json") -> str:
    path = tmp_path / name
    path.write_text(json.dumps(doc))
    return str(path)


def _import(app, path: str, video: int, *extra: str) -> dict:
    result = cli(app, "labels", "import-labelstudio", path, "--video", str(video), "--json", *extra)
    assert result.exit_code == 0, result.output
    return json.loads(result.output.strip().splitlines()[-1])


def _events(source: str) -> list[tuple]:
    return [tuple(r) for r in db.session.execute(
        sa.select(LabelEvent.action, LabelEvent.box_id).where(LabelEvent.source == source)
        .order_by(LabelEvent.id))]


def test_untouched_boxes_and_predictions_come_back_unchanged_twice(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    assert _region(tasks[0], f"b{ids['a']}")["value"]["x"] != 100 * 47.6 / W  # noise is there
    with app.app_context():
        before = boxes(vid)
    path = _write(tmp_path, tasks)
    for _ in range(2):
        report = _import(app, path, vid)
        assert (report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]) == (0, 0, 0)
        assert report["duplicates_skipped"] == len(before) and report["frames"] == {}
        with app.app_context():
            assert boxes(vid) == before  # float edges stored as they were, nothing rounded
            assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0


def test_moved_deleted_new_and_untouched_boxes_sync(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    first = tasks[0]
    moved = _region(first, f"b{ids['a']}")
    moved["value"]["x"] += 5.0  # 8 px to the right
    moved["value"]["height"] -= 2.5  # 3 px shorter
    first["annotations"][0]["result"].remove(_region(first, f"b{ids['b']}"))
    drawn = copy.deepcopy(_region(first, f"b{ids['c']}"))
    drawn.update(id="Xk3p9Qa1Zc")  # Label Studio's own region id, no SonoLabel box behind it
    drawn["value"].update(x=60.0, y=70.0, rectanglelabels=["vessel"])
    first["annotations"][0]["result"].append(drawn)
    first["annotations"][0]["updated_at"] = "2026-03-02T08:00:00.000000Z"
    path = _write(tmp_path, tasks)
    with app.app_context():
        before = boxes(vid)

    dry = cli(app, "labels", "import-labelstudio", path, "--video", str(vid), "--dry-run")
    assert dry.exit_code == 0, dry.output
    lines = dry.output.splitlines()
    assert "frame 0: 1 added, 1 moved, 1 deleted, 2 unchanged" in lines
    assert any(line.startswith("total: would add 1 boxes (1 manual); 1 to move, 1 to delete, "
                               "5 already present") for line in lines)
    assert lines[-1] == "dry run: nothing was written"
    with app.app_context():
        assert boxes(vid) == before

    report = _import(app, path, vid)
    assert (report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]) == (1, 1, 1)
    assert report["frames"] == {"0": {"added": 1, "moved": 1, "deleted": 1, "unchanged": 2}}
    with app.app_context():
        a = db.session.get(Box, ids["a"])
        assert (a.x, a.y, a.w, a.h) == pytest.approx((55.6, 20.3, 30.25, 19.7), abs=1e-6)
        assert a.source == BoxSource.manual
        assert db.session.get(Box, ids["b"]) is None
        assert db.session.get(Box, ids["c"]) is not None and db.session.get(Box, ids["p0"])
        new = db.session.scalars(sa.select(Box).where(Box.id.not_in(list(ids.values())))).one()
        assert (new.class_id, new.x, new.y) == (2, pytest.approx(96.0), pytest.approx(84.0))
        assert _events("labelstudio") == [("update", ids["a"]), ("delete", ids["b"])]
    again = _import(app, path, vid)  # the same file once more changes nothing
    assert (again["boxes_added"], again["boxes_moved"], again["boxes_deleted"]) == (0, 0, 0)


@pytest.mark.parametrize("newest_first", [True, False])
def test_the_most_recent_annotation_is_the_truth_for_its_frame(app, scene, tmp_path,
                                                               newest_first):
    """A second annotation made from scratch (Label Studio's ids, none of SonoLabel's) wins
    over the exported one by its update time, wherever it is listed."""
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    first = tasks[0]
    exported = first["annotations"][0]
    redo = copy.deepcopy(exported)
    redo.update(id=999, updated_at="2026-03-05T12:00:00Z", created_at="2026-03-05T11:00:00Z")
    kept = [r for r in redo["result"] if r["id"] != f"b{ids['b']}"]
    for n, region in enumerate(kept):
        region["id"] = f"ls{n}"
    kept[0]["value"]["y"] += 0.5  # box a, redrawn 0.6 px lower: still box a (IoU >= 0.9)
    redo["result"] = kept
    first["annotations"] = [redo, exported] if newest_first else [exported, redo]
    report = _import(app, _write(tmp_path, tasks), vid)
    assert (report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]) == (0, 1, 1)
    with app.app_context():
        assert db.session.get(Box, ids["a"]).y == pytest.approx(20.9)
        assert db.session.get(Box, ids["b"]) is None
        assert db.session.get(Box, ids["c"]) is not None


def test_a_prediction_taken_into_the_annotation_is_accepted(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    second = tasks[1]
    [pred] = [p for p in second["predictions"] if p["model_version"] == "two-frame-v3"]
    taken = copy.deepcopy(pred["result"][0])
    taken.pop("score")
    second["annotations"][0]["result"].append(taken)
    report = _import(app, _write(tmp_path, tasks), vid)
    assert (report["boxes_added"], report["boxes_moved"], report["boxes_deleted"]) == (0, 1, 0)
    assert report["warnings"] == []  # its prediction, still listed, is the accepted box
    with app.app_context():
        p1 = db.session.get(Box, ids["p1"])
        assert p1.source == BoxSource.manual and p1.x == 147.6  # accepted where it was
        assert db.session.get(Box, ids["t"]).source == BoxSource.propagated  # untouched
        assert _events("labelstudio") == [("accept", ids["p1"])]


def test_plain_json_export_imports_annotations_and_skips_prediction_ids(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    for task in tasks:  # what the Export button gives: predictions by id
        task["predictions"] = [p["id"] for p in task.get("predictions", [])]
        task.update(total_annotations=len(task.get("annotations", [])), cancelled_annotations=0,
                    total_predictions=len(task["predictions"]), inner_id=task["id"],
                    file_upload=None, drafts=[], project=1)
    del tasks[0]["annotations"][0]["result"][0]
    result = cli(app, "labels", "import-labelstudio", _write(tmp_path, tasks), "--video",
                 str(vid))
    assert result.exit_code == 0, result.output
    said = [line for line in result.output.splitlines() if "listed by id only" in line]
    assert said == ["warning: 3 prediction(s) skipped: predictions are listed by id only: export "
                    "a snapshot with full predictions (serialization_options "
                    "predictions.only_id=false)"]
    assert "total: added 0 boxes (none); 0 moved, 1 deleted" in result.output
    with app.app_context():
        assert db.session.get(Box, ids["a"]) is None
        assert db.session.get(Box, ids["p1"]) is not None  # pre-labels are not deleted


def _label_studio_coco(vid: int, other: int) -> dict:
    """Label Studio's COCO export of a two-video project: images downloaded as
    ``images/<8 hex>__<name>``, ids and categories numbered from 0 (alphabetically)."""
    images = [(0, f"images/1f3a9c2e__v{vid:06d}_f000000.png"),
              (1, f"images/77ab01fe__0123abcd-v{vid:06d}_f000002.png"),  # an upload, too
              (2, f"images/c0ffee00__v{other:06d}_f000000.png")]
    boxes_ = [(0, 0, 1, [47.6, 20.3, 30.25, 22.7]), (1, 0, 0, [5.5, 80.2, 12.6, 11.1]),
              (2, 1, 1, [10.0, 10.0, 20.0, 20.0]), (3, 2, 0, [1.0, 1.0, 5.0, 5.0])]
    return {"images": [{"width": W, "height": H, "id": i, "file_name": name} for i, name in images],
            "categories": [{"id": 0, "name": "tumor"}, {"id": 1, "name": "vessel"}],
            "annotations": [{"id": a, "image_id": i, "category_id": c, "segmentation": [],
                             "bbox": bbox, "ignore": 0, "iscrowd": 0, "area": bbox[2] * bbox[3]}
                            for a, i, c, bbox in boxes_],
            "info": {"year": 2026, "version": "1.0", "description": "",
                     "contributor": "Label Studio", "url": "", "date_created": "2026-03-01"}}


def test_label_studio_coco_export_imports_by_file_name(app, tmp_path):
    with app.app_context():
        vid = make_video(app, "P1", ["new"], frames_per_scene=3, width=W, height=H)
        other = make_video(app, "P2", ["new"], frames_per_scene=1, width=W, height=H)
    path = _write(tmp_path, _label_studio_coco(vid, other))
    result = cli(app, "labels", "import", path, "--video", str(vid), "--match", "file_name",
                 "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["images_matched"] == 2 and report["images_skipped"] == 1
    assert report["boxes_added"] == 3
    with app.app_context():
        got = sorted(b[:6] for b in boxes(vid))
        assert got == [pytest.approx(row) for row in [
            (0, 1, 5.5, 80.2, 12.6, 11.1), (0, 2, 47.6, 20.3, 30.25, 22.7),
            (2, 2, 10.0, 10.0, 20.0, 20.0)]]
        assert boxes(other) == []
    again = cli(app, "labels", "import", path, "--video", str(vid), "--match", "file_name", "--json")
    assert json.loads(again.output)["boxes_added"] == 0


def test_a_reviewed_scene_is_not_synced_without_an_admin_reopening_it(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    _region(tasks[0], f"b{ids['a']}")["value"]["x"] += 5.0
    path = _write(tmp_path, tasks)
    with app.app_context():
        db.session.get(Scene, sid).status = SceneStatus.reviewed
        db.session.commit()
        before = boxes(vid)
    untouched = _write(tmp_path, _from_label_studio(app, sid), "untouched.json")
    assert _import(app, untouched, vid)["boxes_moved"] == 0  # nothing to change: not refused
    result = cli(app, "labels", "import-labelstudio", path, "--video", str(vid), "--dry-run")
    assert result.exit_code == 2 and "reviewed" in result.output
    with app.app_context():
        assert boxes(vid) == before


def test_the_video_page_shows_the_sync_diff_before_importing(app, scene, login):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    _region(tasks[0], f"b{ids['a']}")["value"]["x"] += 5.0
    tasks[0]["annotations"][0]["result"].remove(_region(tasks[0], f"b{ids['c']}"))
    s = login("data_manager")
    checked = s.post(f"/videos/{vid}/labels",
                     {"file": (io.BytesIO(json.dumps(tasks).encode()), "tasks.json"),
                      "action": "check", "format": "labelstudio", "match": "frame_index"},
                     content_type="multipart/form-data")
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200 and "Check passed: nothing was written yet" in text
    assert "frame 0: 0 added, 1 moved, 1 deleted, 2 unchanged" in text
    assert "total: would add 0 boxes (none); 1 to move, 1 to delete, 5 already present" in text
    with app.app_context():
        assert db.session.get(Box, ids["c"]) is not None


def test_an_annotation_time_that_is_not_a_time_is_named_and_nothing_changes(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    tasks[0]["annotations"][0]["updated_at"] = "yesterday"
    result = cli(app, "labels", "import-labelstudio", _write(tmp_path, tasks), "--video", str(vid))
    assert result.exit_code == 2
    assert "task 41, annotation #0: 'updated_at' must be an ISO 8601 time, got 'yesterday'" \
        in result.output


def test_label_studio_coco_of_signed_image_links_matches_their_frames(app, tmp_path):
    """Tasks whose images are signed links come back from Label Studio's COCO export named
    ``<8 hex>__<token>.png``: the token names the frame, even once expired."""
    with app.app_context():
        vid = make_video(app, "P1", ["new"], frames_per_scene=2, width=W, height=H)
        other = make_video(app, "P2", ["new"], frames_per_scene=1, width=W, height=H)
        mine, theirs = frames_of(vid)[1].id, frames_of(other)[0].id
        names = [f"images/5e6f7a8b__{frame_token(mine, 1, now=0)}.png",
                 f"images/9a8b7c6d__{frame_token(theirs, 1, now=0)}.png"]
    doc = _label_studio_coco(vid, other)
    for img, name in zip(doc["images"][1:], names):
        img["file_name"] = name
    result = cli(app, "labels", "import", _write(tmp_path, doc), "--video", str(vid), "--match",
                 "file_name", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert (report["images_matched"], report["images_skipped"], report["boxes_added"]) == (2, 1, 3)
    with app.app_context():
        assert sorted({b[0] for b in boxes(vid)}) == [0, 1]


def test_a_prediction_of_a_pre_label_rejected_since_the_export_stays_out(app, scene, tmp_path):
    vid, sid, ids = scene
    tasks = _from_label_studio(app, sid)
    with app.app_context():
        admin = db.session.scalar(sa.select(User).filter_by(username="admin"))
        reject_box(ids["p2"], {"row_version": db.session.get(Box, ids["p2"]).row_version}, admin)
    report = _import(app, _write(tmp_path, tasks), vid)
    assert report["boxes_added"] == 0
    assert report["warnings"] == ["1 prediction(s) of pre-labels accepted or rejected here since "
                                  "the export were left as they are"]
