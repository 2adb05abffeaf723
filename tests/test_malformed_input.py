"""Malformed input that crashed or slipped through (issue 13), each refused by name: label
files with ids of the wrong type, 400-digit numbers, odd Label Studio rotations and region ids;
boxes of 1e-300 px by every way in; dataset names with a newline; upload errors that named the
server's file or echoed a 100,000-character patient code; CLI arguments that gave tracebacks.
On the CLI a refusal is exit 2 and ``error:`` lines, never a traceback; on the web a 4xx."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, frames_of, make_video, seed_scene, write_video

from annotator.db import db
from annotator.models import Box, DatasetVersion, LabelEvent, Scene
from annotator.services.prelabel import store_prelabels

BIG = str(2**63)
DIGITS_400 = "9" * 400


@pytest.fixture
def video(app):
    """A 6-frame, 64x48 video of two new scenes; its id."""
    with app.app_context():
        return make_video(app, "P1", ["new", "new"], frames_per_scene=3)


def refused_cleanly(result) -> str:
    """The output of a CLI refusal: exit 2, no traceback, the last line an ``error:``."""
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    assert result.output.strip().splitlines()[-1].startswith("error: ")
    return result.output


def _coco(**annotation) -> str:
    doc = {"images": [{"id": 1, "file_name": "a.png", "frame_index": 1, "width": 64, "height": 48}],
           "categories": [{"id": 7, "name": "tumor"}],
           "annotations": [{"id": 1, "image_id": 1, "category_id": 7, "bbox": [3, 4, 20, 10],
                            **annotation}]}
    return json.dumps(doc)


def test_a_label_file_with_nan_is_not_json(app, video, tmp_path):
    """JSON has no NaN: a file that writes one is refused before any field is read."""
    path = tmp_path / "labels.json"
    path.write_text(_coco().replace("[3, 4, 20, 10]", "[3, NaN, 20, 10]"))
    result = cli(app, "labels", "import", str(path), "--video", str(video))
    assert result.exit_code == 2
    assert result.output.strip() == f"error: {path} is not valid JSON: NaN is not a JSON number."


@pytest.mark.parametrize("text, problem", [
    (_coco(image_id=[1]), "annotation 1: 'image_id' must be an integer, got [1]"),
    (_coco(category_id=[7]), "annotation 1: 'category_id' must be an integer, got [7]"),
    (_coco().replace('"images": [{"id": 1', '"images": [{"id": [1]'),
     "image #0: needs an integer 'id', got [1]"),
    (_coco(bbox=[3, 4, 20, 10]).replace("[3, 4, 20, 10]", f"[{DIGITS_400}, 4, 20, 10]"),
     "annotation 1: 'bbox' must be [x, y, width, height] in pixels (finite numbers)"),
    (_coco(score=0.5).replace('"score": 0.5', f'"score": {DIGITS_400}'),
     "annotation 1: 'score' must be a number from 0 to 1, got an integer of more than 40 digits"),
    (_coco(track_id=2**40), "annotation 1: 'track_id' must be an integer from 0 to 2147483647"),
    (_coco(bbox=[0, 0, 1e-300, 1e-300]),
     "annotation 1: the box is 1e-300 x 1e-300 px; boxes are at least 0.5 px"),
])
def test_coco_fields_of_the_wrong_kind_are_named_and_nothing_is_imported(app, video, tmp_path,
                                                                         text, problem):
    path = tmp_path / "labels.json"
    path.write_text(text)
    output = refused_cleanly(cli(app, "labels", "import", str(path), "--video", str(video)))
    assert f"problem: {problem}" in output
    assert max(len(line) for line in output.splitlines()) < 300  # 400 digits are not echoed
    with app.app_context():
        assert boxes(video) == []
        assert db.session.scalar(sa.select(sa.func.count(LabelEvent.id))) == 0


def _task(region_id="r1", **value) -> str:
    region = {"id": region_id, "type": "rectanglelabels", "original_width": 64,
              "original_height": 48,
              "value": {"x": 10, "y": 10, "width": 25, "height": 25, "rotation": 0,
                        "rectanglelabels": ["tumor"], **value}}
    return json.dumps([{"id": 1, "data": {"frame_index": 1},
                        "annotations": [{"result": [region]}]}])


@pytest.mark.parametrize("text, problem", [
    (_task(rotation="5"), "region 'r1': 'rotation' must be a finite number of degrees, got '5'"),
    # JSON has no NaN: Label Studio never writes one, and a file that does is not JSON.
    (_task(rotation=math.nan), "is not valid JSON: NaN is not a JSON number"),
    (_task(rotation=30),
     "region 'r1': rotated boxes (30°) cannot be imported; boxes here are axis-aligned"),
    (_task(region_id=[1]), "region #0: 'id' must be a text or an integer, got [1]"),
    (_task().replace('"original_height": 48', '"original_height": 48, "image_rotation": 90'),
     "region 'r1': boxes drawn on a rotated image (90°) cannot be imported"),
    (_task().replace('"x": 10', f'"x": {DIGITS_400}'),
     "value needs finite numbers x, y, width and height, got {'x': 99999999999"),
    (_task(width=1e-300), "boxes are at least 0.5 px on a side"),
])
def test_labelstudio_rotations_and_region_ids_of_the_wrong_kind_are_named(app, video, tmp_path,
                                                                         text, problem):
    path = tmp_path / "export.json"
    path.write_text(text)
    output = refused_cleanly(cli(app, "labels", "import-labelstudio", str(path), "--video",
                                 str(video)))
    assert problem in output
    with app.app_context():
        assert boxes(video) == []


def test_labelstudio_full_turns_and_ids_that_are_numbers_import(app, video):
    from annotator.services.labelstudio_import import import_labelstudio

    tasks = json.loads(_task(region_id=3, rotation=360))
    with app.app_context():
        assert import_labelstudio(tasks, video).boxes_added == 1
        # Percent to pixels, kept as floats (never rounded to whole pixels).
        assert [b[2:6] for b in boxes(video)] == [pytest.approx((6.4, 4.8, 16.0, 12.0))]


def test_the_web_import_answers_400_naming_the_field(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("data_manager")

    def post(body: bytes):
        return s.post(f"/videos/{seeded.video_id}/labels",
                      {"file": (io.BytesIO(body), "labels.json"), "action": "check",
                       "format": "coco", "match": "frame_index"},
                      content_type="multipart/form-data")

    listed = post(_coco(image_id=[1]).replace('"frame_index": 1', '"frame_index": 0').encode())
    assert listed.status_code == 400
    assert "&#39;image_id&#39; must be an integer, got [1]" in listed.get_data(as_text=True)
    deep = post(b"[" * 100_000 + b"]" * 100_000)
    assert deep.status_code == 400 and "nested too deeply" in deep.get_data(as_text=True)


# --- boxes of 1e-300 px ------------------------------------------------------------------------

def test_a_1e300_px_box_is_refused_by_the_api_and_dropped_from_pre_labels(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    frame = seeded.frame_ids[0]
    for w, h in ((1e-300, 10), (10, 1e-300), (0.4, 0.4)):
        resp = s.json("POST", f"/api/frames/{frame}/boxes",
                      {"class_id": 1, "x": 0, "y": 0, "w": w, "h": h})
        assert resp.status_code == 400 and "0.5 px" in resp.get_json()["error"], resp.get_json()
    # A 1 px box that another tool sent back as 0.9999998 px is still a box.
    kept = s.json("POST", f"/api/frames/{frame}/boxes",
                  {"class_id": 1, "x": 0, "y": 0, "w": 0.9999998, "h": 1})
    assert kept.status_code == 201, kept.get_json()
    with app.app_context():
        scene = db.session.get(Scene, seeded.scene_id)
        created, _, _ = store_prelabels(scene, frames_of(seeded.video_id), [[
            {"box": [0, 0, 1e-300, 1e-300], "score": 0.9, "category": "tumor"},
            {"box": [5, 5, math.nan, 10], "score": 0.9, "category": "tumor"},
            {"box": [5, 5, 20, 10], "score": 0.9, "category": "tumor"}], []], "m1", None, 0.1)
        db.session.commit()
        assert created == 1
        stored = db.session.scalars(sa.select(Box).where(Box.model_version == "m1")).all()
        assert [(b.x, b.y, b.w, b.h) for b in stored] == [(5.0, 5.0, 20.0, 10.0)]
        assert db.session.scalar(sa.select(sa.func.min(Box.w))) >= 0.5


def test_a_box_with_less_than_half_a_pixel_inside_is_refused_on_import(app, video):
    from annotator.services.coco_import import import_coco
    from annotator.services.label_import import LabelImportRefused

    doc = json.loads(_coco(bbox=[-0.005, 4, 0.504, 10]))
    with app.app_context(), pytest.raises(LabelImportRefused, match="keeps less than 0.5 px"):
        import_coco(doc, video)
    doc["annotations"][0]["bbox"] = [0, 4, 0.9999998, 10]
    with app.app_context():
        assert import_coco(doc, video).boxes_added == 1


# --- dataset names -------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["v1\n", "\nv1", "v1\r", "v 1", ".v1", "x" * 65])
def test_dataset_names_must_match_whole(app, name):
    from helpers import world

    world(app, patients=3)
    refused_cleanly(cli(app, "datasets", "create", name, "--status", "any"))
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(DatasetVersion.id))) == 0


# --- uploads -------------------------------------------------------------------------------

def _upload(s, data: bytes, name: str, patient: str = "P-7", json_answer: bool = True):
    return s.post("/videos/upload", {"file": (io.BytesIO(data), name), "patient": patient,
                                     "scenes": "auto"}, content_type="multipart/form-data",
                  headers={"Accept": "application/json"} if json_answer else {})


def test_upload_errors_name_the_users_file_not_the_servers(app, login):
    s = login("data_manager")
    resp = _upload(s, b"this is not a video\n" * 10, "My scan (2).mp4")
    error = resp.get_json()["error"]
    assert resp.status_code == 415 and error.startswith("My_scan_2.mp4 is not a supported video")
    assert ".upload" not in error and "tmp" not in error
    long_name = "a" * 300 + ".mp4"
    error = _upload(s, b"", long_name).get_json()["error"]
    assert error == f"{'a' * 73}....mp4 is empty (0 bytes)"
    assert not list((Path(app.config["SONOLABEL_DATA_DIR"]) / "tmp").iterdir())


def test_a_long_patient_code_is_not_echoed_back(app, login, tmp_path):
    s = login("data_manager")
    video = write_video(tmp_path / "a.avi", n=5).read_bytes()
    code = "x" * 100_000
    resp = _upload(s, video, "a.avi", patient=code)
    assert resp.status_code == 400 and "patient code 'xxxx" in resp.get_json()["error"]
    assert len(resp.get_json()["error"]) < 200
    page = _upload(s, video, "a.avi", patient=code, json_answer=False)
    text = page.get_data(as_text=True)
    assert page.status_code == 400 and "is invalid" in text
    assert "x" * 64 in text and "x" * 65 not in text  # the form keeps what fits, the message less


# --- CLI arguments -------------------------------------------------------------------------

def test_bad_cli_arguments_are_one_error_line_and_exit_2(app, video, tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    empty = tmp_path / "empty.json"
    empty.write_text('{"images": [], "annotations": [], "categories": []}')
    cases = {
        ("labels", "import", str(empty), "--video", BIG): "'--video' must be a whole number",
        ("labels", "import", str(empty), "--video", "abc"): "'--video' must be a whole number",
        ("labels", "import-labelstudio", str(empty), "--video", "0"): "'--video' must be",
        ("labels", "import", str(deep), "--video", str(video)): "nested too deeply",
        ("labels", "import", str(tmp_path), "--video", str(video)): "Is a directory",
        ("labels", "import", str(tmp_path / "no.json"), "--video", str(video)): "No such file",
        ("export", "labelstudio", "--scene", BIG, "--out", str(tmp_path / "t.json")): "'--scene'",
        ("export", "labelstudio", "--scene", "1", "--out", str(tmp_path)): "Is a directory",
        ("datasets", "create", "v1", "--video", BIG): "'--video' must be a whole number",
        ("datasets", "create", "v1", "--video", "9" * 5000): "'--video' must be a whole number",
        ("datasets", "create", "v1", "--seed", BIG, "--status", "any"): "The seed is a whole",
        ("jobs", "show", BIG): "'JOB_ID' must be a whole number",
        ("jobs", "cancel", "0"): "'JOB_ID' must be a whole number",
        ("jobs", "list", "--limit", "0"): "'--limit' must be a whole number",
        ("videos", "import", str(tmp_path), "--patient", "P"): "is not a file",
        ("videos", "import", str(empty), "--patient", "x" * 100_000): "patient code 'xxx",
        ("videos", "import", str(empty), "--patient", "P", "--scenes", "fixed:\u00b2"): "scene mode",
        ("videos", "import", str(empty), "--patient", "P", "--scenes", "fixed:" + "9" * 5000):
            "scene mode",
    }
    for args, message in cases.items():
        output = refused_cleanly(cli(app, *args))
        assert message in output, (args[:3], output[-300:])
        assert len(output) < 500, args[:3]
