"""Import of existing COCO labels into an imported video: matching, sources, audit events,
status, dry runs, round trips of this tool's own export, and all-or-nothing refusals."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, frames_of, make_box, make_video, world

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, LabelEvent, Scene, SceneStatus, Video
from annotator.services.coco_import import import_coco
from annotator.services.label_import import LabelImportRefused


@pytest.fixture
def video(app):
    """A 6-frame video (two scenes of 3, both new) without boxes; its id."""
    with app.app_context():
        return make_video(app, "P1", ["new", "new"], frames_per_scene=3)


def other_tool_coco() -> dict:
    """What another tool writes: its own category ids, 0-based ids, a model box with a score."""
    return {
        "images": [{"id": 0, "file_name": "a.png", "frame_index": 1, "width": 64, "height": 48},
                   {"id": 1, "file_name": "b.png", "frame_index": 4, "width": 64, "height": 48}],
        "categories": [{"id": 7, "name": "Tumor"}, {"id": 9, "name": "vessel"},
                       {"id": 11, "name": "liver"}],
        "annotations": [
            {"id": 0, "image_id": 0, "category_id": 7, "bbox": [3, 4, 20, 10], "area": 200, "iscrowd": 0},
            {"id": 1, "image_id": 1, "category_id": 9, "bbox": [10.5, 2, 5, 5], "score": 0.75,
             "model_version": "other-v2"},
        ],
    }


def write(tmp_path: Path, data, name: str = "ann.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def test_import_by_frame_index_with_sources_events_and_status(app, video, tmp_path):
    result = cli(app, "labels", "import", write(tmp_path, other_tool_coco()), "--video", str(video),
                 "--status", "reviewed")
    assert result.exit_code == 0, result.output
    assert "added 2 boxes (1 manual, 1 model)" in result.output
    assert "'liver' is not a class here" in result.output  # unused unknown class: a warning only
    with app.app_context():
        assert boxes(video) == [
            (1, 1, 3.0, 4.0, 20.0, 10.0, BoxSource.manual, None, None, None, None),
            (4, 2, 10.5, 2.0, 5.0, 5.0, BoxSource.model, 0.75, "other-v2", None, None)]
        events = db.session.scalars(sa.select(LabelEvent).where(LabelEvent.action == "import")).all()
        box_ids = set(db.session.scalars(sa.select(Box.id)))
        assert {e.box_id for e in events} == box_ids and len(events) == 2
        assert all(e.user_id is None and e.after["id"] == e.box_id for e in events)
        assert {e.source for e in events} == {"manual", "model"}
        scenes = db.session.scalars(sa.select(Scene).filter_by(video_id=video)).all()
        assert {s.status for s in scenes} == {SceneStatus.reviewed}
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))
                                 .where(LabelEvent.action == "status")) == 2


def test_dry_run_reports_and_writes_nothing(app, video, tmp_path):
    result = cli(app, "labels", "import", write(tmp_path, other_tool_coco()), "--video", str(video),
                 "--status", "reviewed", "--dry-run", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["dry_run"] and report["boxes_added"] == 2 and report["images_matched"] == 2
    assert sorted(report["scenes_status"].values()) == ["reviewed", "reviewed"]
    with app.app_context():
        assert boxes(video) == []
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0
        assert {s.status for s in db.session.scalars(sa.select(Scene))} == {SceneStatus.new}


def test_match_by_file_name(app, video, tmp_path):
    with app.app_context():
        sha2 = frames_of(video)[2].sha256
    data = other_tool_coco()
    data["images"] = [{"id": 0, "file_name": f"frames/{sha2}.png"},
                      {"id": 1, "file_name": f"some/dir/v{video:06d}_f000005.png"}]
    result = cli(app, "labels", "import", write(tmp_path, data), "--video", str(video),
                 "--match", "file_name")
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert [b[0] for b in boxes(video)] == [2, 5]


def test_own_export_round_trips_and_a_second_import_adds_nothing(app, tmp_path):
    codes = world(app, patients=3)
    with app.app_context():
        video_ids = [v for vids in codes.values() for v in vids]
        f = frames_of(video_ids[0])[0]
        make_box(f, 2, x=1, y=2, w=3, h=4, source=BoxSource.model, score=0.5, model_version="m")
        f.boxes[0].track_id = 4
        empty = frames_of(video_ids[1])[0]
        for b in list(empty.boxes):
            db.session.delete(b)
        empty.reviewed_empty = True
        db.session.commit()
        empty_id = empty.id
        # The pending pre-label is a suggestion, not ground truth: the export leaves it out.
        before = {v: [r for r in boxes(v) if r[6] is BoxSource.manual] for v in video_ids}
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    out = tmp_path / "coco"
    assert cli(app, "export", "coco", "v1", "--out", str(out)).exit_code == 0
    with app.app_context():  # forget every label of the reviewed scenes
        for b in db.session.scalars(sa.select(Box).join(Frame).join(Scene)
                                    .where(Scene.status == SceneStatus.reviewed)):
            db.session.delete(b)
        db.session.get(Frame, empty_id).reviewed_empty = False
        db.session.commit()
    for part in ("train", "val", "test"):
        for v in video_ids:
            # Restoring into reviewed scenes changes them: an admin reopens them for the import.
            r = cli(app, "labels", "import", str(out / part / "annotations.json"), "--video", str(v),
                    "--reopen", "--reason", "restore lost labels", "--as", "admin",
                    "--status", "reviewed")
            if r.exit_code == 2:  # the part holds other patients' videos only
                assert "no image of the file matches a frame of video" in r.output
                assert "belong to other videos" in r.output
                continue
            assert r.exit_code == 0, r.output
    with app.app_context():
        after = {v: boxes(v) for v in video_ids}
        assert db.session.get(Frame, empty_id).reviewed_empty
    # Every manual box comes back, all but its author.
    strip = lambda rows: sorted(r[:10] for r in rows)  # noqa: E731
    assert {v: strip(r) for v, r in after.items()} == {v: strip(r) for v, r in before.items()}
    part = next(p for p in ("train", "val", "test")
                if any(i["video_id"] == video_ids[0]
                       for i in json.loads((out / p / "annotations.json").read_text())["images"]))
    again = cli(app, "labels", "import", str(out / part / "annotations.json"), "--video",
                str(video_ids[0]), "--json")
    report = json.loads(again.output)
    assert report["boxes_added"] == 0 and report["duplicates_skipped"] == sum(
        1 for r in before[video_ids[0]] if r[0] < 6)  # the reviewed scenes: frames 0-5


def _problems(app, tmp_path, data, video, *extra) -> list[str]:
    result = cli(app, "labels", "import", write(tmp_path, data), "--video", str(video), *extra)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert lines[-1].startswith("error: ") and "nothing was imported" in lines[-1]
    return [line for line in lines if line.startswith("problem: ")]


def test_bad_input_is_reported_problem_by_problem_and_nothing_is_imported(app, video, tmp_path):
    data = other_tool_coco()
    data["categories"].append({"id": 12, "name": "cyst"})
    data["images"].append({"id": 1, "file_name": "c.png", "frame_index": 2})  # id collides
    data["images"].append({"id": 5, "file_name": "d.png", "frame_index": 99})  # no such frame
    data["images"].append({"id": 6, "file_name": "e.png", "frame_index": 3, "width": 640})
    data["annotations"] += [
        {"id": 1, "image_id": 0, "category_id": 7, "bbox": [1, 1, 2, 2]},  # id collides
        {"id": 2, "image_id": 0, "category_id": 12, "bbox": [1, 1, 2, 2]},  # unknown class
        {"id": 3, "image_id": 0, "category_id": 7, "bbox": [60, 40, 10, 10]},  # outside 64x48
        {"id": 4, "image_id": 0, "category_id": 7, "bbox": [1, 1, 0, 2]},  # empty
        {"id": 5, "image_id": 0, "category_id": 7, "bbox": [1, 1, 2]},  # malformed
        {"id": 6, "image_id": 42, "category_id": 7, "bbox": [1, 1, 2, 2]},  # no such image
    ]
    problems = _problems(app, tmp_path, data, video, "--status", "reviewed")
    text = "\n".join(problems)
    for expected in ("image id 1 is used twice", "has no stored frame 99", "width 640 is neither",
                     "annotation id 1 is used twice", "unknown class 'cyst'",
                     "lies outside the 64x48 frame", "must be positive", "'bbox' must be",
                     "image_id 42 is not an image"):
        assert expected in text, expected
    with app.app_context():
        assert boxes(video) == []
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0
        assert {s.status for s in db.session.scalars(sa.select(Scene))} == {SceneStatus.new}


@pytest.mark.parametrize("text, message", [
    ("{not json", "is not valid JSON"), ("[1, 2]", "not a COCO object"),
    ('{"images": [], "annotations": {}}', "'annotations' is missing or not a list"),
])
def test_malformed_files_are_refused(app, video, tmp_path, text, message):
    result = cli(app, "labels", "import", write(tmp_path, text), "--video", str(video))
    assert result.exit_code == 2 and message in result.output


def test_unknown_video_and_service_api(app, video):
    with app.app_context():
        with pytest.raises(LabelImportRefused, match="no video 999"):
            import_coco(other_tool_coco(), 999)
        report = import_coco(other_tool_coco(), video)
        assert report.boxes_added == 2 and not report.dry_run


def test_boxes_drawn_on_the_uncropped_video_move_by_the_sector_roi(app, video, tmp_path):
    with app.app_context():
        v = db.session.get(Video, video)
        v.width, v.height, v.roi_x, v.roi_y = 200, 150, 30, 40  # frames are the 64x48 crop
        db.session.commit()
    source = {"images": [{"id": 1, "file_name": "screen.png", "frame_index": 2, "width": 200, "height": 150}],
              "categories": [{"id": 1, "name": "tumor"}],
              "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [40, 50, 10, 8]},
                              # straddles the sector's left edge: clipped to what lies inside
                              {"id": 2, "image_id": 1, "category_id": 1, "bbox": [20, 60, 20, 5]}]}
    result = cli(app, "labels", "import", write(tmp_path, source), "--video", str(video))
    assert result.exit_code == 0, result.output
    with app.app_context():
        assert [b[2:6] for b in boxes(video)] == [(10.0, 10.0, 10.0, 8.0), (0.0, 20.0, 10.0, 5.0)]
    source["annotations"] = [{"id": 3, "image_id": 1, "category_id": 1, "bbox": [0, 0, 10, 10]}]
    outside = cli(app, "labels", "import", write(tmp_path, source, "out.json"), "--video", str(video))
    assert outside.exit_code == 2 and "outside the ultrasound sector" in outside.output
