"""Label classes managed in the app: the ``sonolabel classes`` commands and the admin page, stable
ids, audit events, refusals, and new classes flowing through imports, exports, the workspace
API, pre-labels and undo."""
from __future__ import annotations

import json

import pytest
import sqlalchemy as sa
from helpers import boxes, cli, make_video, seed_scene, shared_file, tiny_version, untrained_model

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, JobStatus, LabelClass, LabelEvent
from annotator.services.classes import add_class, update_class
from annotator.services.coco_export import build_coco, frames_of_scenes
from annotator.services.coco_import import import_coco
from annotator.services.label_import import LabelImportRefused
from annotator.services.labelstudio_export import labeling_config


def listed(app) -> list[dict]:
    result = cli(app, "classes", "list", "--json")
    assert result.exit_code == 0, result.output
    return json.loads(result.output)


def refused(app, *args: str) -> str:
    """The one ``error:`` line of a refused command (exit 2)."""
    result = cli(app, "classes", *args)
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


def test_add_rename_recolor_delete_with_stable_ids_and_audit(app):
    result = cli(app, "classes", "add", "liver", "--color", "#A0522D")
    assert result.exit_code == 0, result.output
    assert "id 3, hotkey 3" in result.output
    assert cli(app, "classes", "add", "kidney", "--color", "#00ff00", "--hotkey", "7").exit_code == 0
    assert [(c["id"], c["name"], c["color"], c["hotkey"], c["boxes"]) for c in listed(app)] == [
        (1, "tumor", "#5ec8f2", 1, 0), (2, "vessel", "#e53935", 2, 0),
        (3, "liver", "#a0522d", 3, 0), (4, "kidney", "#00ff00", 7, 0)]

    assert cli(app, "classes", "rename", "Liver", "liver parenchyma", "--color", "#123456").exit_code == 0
    assert cli(app, "classes", "hotkey", "kidney", "4").exit_code == 0
    assert cli(app, "classes", "recolor", "kidney", "#abcdef").exit_code == 0
    by_name = {c["name"]: c for c in listed(app)}
    assert by_name["liver parenchyma"]["id"] == 3 and by_name["liver parenchyma"]["color"] == "#123456"
    assert by_name["kidney"]["hotkey"] == 4 and by_name["kidney"]["color"] == "#abcdef"

    # A deleted class's id is never given again, even when it was the highest.
    assert cli(app, "classes", "delete", "kidney").exit_code == 0
    result = cli(app, "classes", "add", "spleen", "--color", "#ffffff")
    assert "id 5, hotkey 4" in result.output, result.output
    with app.app_context():
        events = db.session.execute(sa.select(LabelEvent.action, LabelEvent.before, LabelEvent.after)
                                    .where(LabelEvent.source == "classes").order_by(LabelEvent.id)).all()
    assert [e.action for e in events] == ["class_add", "class_add", "class_update", "class_update",
                                          "class_update", "class_delete", "class_add"]
    assert events[2].before["name"] == "liver" and events[2].after["name"] == "liver parenchyma"
    assert events[5].before["id"] == 4 and events[5].after is None


def test_refusals_are_one_line_and_change_nothing(app):
    assert "class name" in refused(app, "add", "bad/name", "--color", "#112233")
    assert "class name" in refused(app, "add", "x" * 65, "--color", "#112233")
    assert "class name" in refused(app, "add", " padded", "--color", "#112233")
    assert "'#rrggbb'" in refused(app, "add", "liver", "--color", "red")
    assert "digit from 1 to 9" in refused(app, "add", "liver", "--color", "#112233", "--hotkey", "0")
    assert "'vessel'" in refused(app, "add", "liver", "--color", "#112233", "--hotkey", "2")
    assert "exists" in refused(app, "add", "Tumor", "--color", "#112233")
    assert "exists" in refused(app, "rename", "tumor", "VESSEL")
    assert "No class" in refused(app, "rename", "nothing", "else")
    assert "Nothing to change" in refused(app, "recolor", "tumor", "#5EC8F2")
    for n in range(3, 10):
        assert cli(app, "classes", "add", f"c{n}", "--color", "#010101").exit_code == 0
    assert "at most nine" in refused(app, "add", "tenth", "--color", "#010101")
    assert len(listed(app)) == 9
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count()).select_from(LabelEvent)) == 7


def test_a_class_in_use_cannot_be_deleted(app):
    seeded, _ = tiny_version(app)  # manual tumour boxes, frozen into version "tiny"
    line = refused(app, "delete", "tumor")
    assert "a class in use cannot be deleted" in line.lower() and "box(es)" in line and "tiny" in line
    with app.app_context():
        db.session.execute(sa.delete(Box))
        db.session.commit()
    line = refused(app, "delete", "tumor")  # the frozen version still has its boxes
    assert "dataset version(s) tiny" in line and "box(es)" not in line
    prelabel = seed_scene(app, frames=2, prelabels=2)  # pending pre-labels count as use too
    assert "box(es)" in refused(app, "delete", "vessel")
    with app.app_context():
        db.session.execute(sa.delete(Box).where(Box.id.in_(prelabel.prelabel_ids)))
        db.session.commit()
    assert cli(app, "classes", "delete", "vessel").exit_code == 0
    assert [c["name"] for c in listed(app)] == ["tumor"]


def test_undo_does_not_bring_back_a_box_of_a_deleted_class(app, login):
    seeded = seed_scene(app, frames=2)
    with app.app_context():
        liver = add_class("liver", "#a0522d")
        liver_id = liver.id
    annotator = login("annotator")
    made = annotator.json("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
                          {"class_id": liver_id, "x": 10, "y": 10, "w": 20, "h": 20})
    assert made.status_code == 201, made.get_json()
    box = made.get_json()["box"]
    gone = annotator.json("DELETE", f"/api/boxes/{box['id']}", {"row_version": box["row_version"]})
    assert gone.status_code == 200, gone.get_json()
    assert cli(app, "classes", "delete", "liver").exit_code == 0
    undo = annotator.json("POST", "/api/events/revert", {"event_ids": gone.get_json()["event_ids"]})
    assert undo.status_code == 409 and "was deleted" in undo.get_json()["error"]


def test_admin_page_lists_adds_renames_and_refuses_deleting_a_class_in_use(app, login):
    seed_scene(app, frames=2, prelabels=1)  # one vessel-free tumour pre-label
    admin = login("admin")
    page = admin.get("/classes").get_data(as_text=True)
    assert 'fill="#5ec8f2"' in page and "<kbd>1</kbd>" in page and "tumor" in page
    resp = admin.post("/classes", {"name": "liver", "color": "#A0522D", "hotkey": ""},
                      follow_redirects=True)
    assert "Added &#39;liver&#39; (hotkey 3)" in resp.get_data(as_text=True)
    with app.app_context():
        liver_id = db.session.scalar(sa.select(LabelClass.id).filter_by(name="liver"))
    resp = admin.post("/classes/update", {"class_id": str(liver_id), "name": "liver", "color": "#00ff00",
                                          "hotkey": "5"}, follow_redirects=True)
    assert resp.status_code == 200 and 'fill="#00ff00"' in resp.get_data(as_text=True)
    resp = admin.post("/classes/delete", {"class_id": "1"}, follow_redirects=True)
    assert "A class in use cannot be deleted" in resp.get_data(as_text=True)
    resp = admin.post("/classes", {"name": "liver", "color": "#000000"}, follow_redirects=True)
    assert "exists" in resp.get_data(as_text=True)
    with app.app_context():
        assert db.session.get(LabelClass, 1) is not None
        assert db.session.scalar(sa.select(sa.func.count(LabelClass.id))) == 3
        assert db.session.scalar(sa.select(LabelEvent.user_id).where(LabelEvent.action == "class_add")) \
            is not None
    assert login("data_manager").get("/classes").status_code == 403
    assert 'href="/classes"' not in login("data_manager").get("/videos").get_data(as_text=True)


def liver_coco() -> dict:
    return {"images": [{"id": 1, "file_name": "a.png", "frame_index": 1, "width": 64, "height": 48}],
            "categories": [{"id": 3, "name": "liver"}, {"id": 2, "name": "vessel"}],
            "annotations": [{"id": 1, "image_id": 1, "category_id": 3, "bbox": [3, 4, 20, 10]},
                            {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 4, 9, 9]}]}


def test_a_new_class_flows_through_import_export_workspace_and_labelstudio(app, login):
    with app.app_context():
        video = make_video(app, "P1", ["new"], frames_per_scene=3)
        with pytest.raises(LabelImportRefused) as err:
            import_coco(liver_coco(), video)
        assert "unknown class 'liver'" in err.value.message
        assert "sonolabel classes add 'liver' --color" in err.value.message
        add_class("liver", "#a0522d", 5)
        import_coco(liver_coco(), video)
        liver = db.session.scalar(sa.select(LabelClass).filter_by(name="liver"))
        assert [b[:2] for b in boxes(video)] == [(1, liver.id), (1, 2)]

        scene_id = db.session.scalar(sa.select(Frame.scene_id).where(Frame.video_id == video))
        doc = build_coco({"train": frames_of_scenes([scene_id])})["train"]
        assert {"id": liver.id, "name": "liver", "supercategory": "liver"} in doc["categories"]
        assert {a["category_id"] for a in doc["annotations"]} == {liver.id, 2}
        assert '<Label value="liver" background="#a0522d"/>' in labeling_config()

    api = login("annotator").json("GET", f"/api/scenes/{scene_id}").get_json()
    assert {"id": liver.id, "name": "liver", "color": "#a0522d", "hotkey": 5} in api["classes"]


def test_labelstudio_unknown_class_says_how_to_add_it(app):
    from annotator.services.labelstudio_import import import_labelstudio

    with app.app_context():
        video = make_video(app, "P1", ["new"], frames_per_scene=2)
        task = {"data": {"image": "/data/x.png", "frame_index": 0}, "annotations": [{"result": [{
            "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": 64, "original_height": 48,
            "value": {"x": 10, "y": 10, "width": 30, "height": 30, "rectanglelabels": ["Kidney"]}}]}]}
        with pytest.raises(LabelImportRefused) as err:
            import_labelstudio([task], video)
        assert any("unknown class 'Kidney'" in p and "sonolabel classes add 'Kidney'" in p
                   for p in err.value.problems), err.value.problems


def test_prelabels_map_model_classes_to_class_ids_by_name(app):
    from annotator.services.prelabel import missing_class_lines, store_prelabels

    seeded = seed_scene(app, frames=1)
    with app.app_context():
        liver = add_class("liver", "#a0522d").id
        frame = db.session.get(Frame, seeded.frame_ids[0])
        detections = [[{"box": [5, 5, 30, 30], "category": "Liver", "score": 0.9},
                       {"box": [50, 5, 30, 30], "category": "kidney", "score": 0.9},
                       {"box": [90, 5, 30, 30], "category": "vessel", "score": 0.8}]]
        made, _, _ = store_prelabels(frame.scene, [frame], detections, "m-v1", None, 0.1)
        db.session.commit()
        assert made == 2
        assert sorted(db.session.scalars(sa.select(Box.class_id))) == [2, liver]
        assert missing_class_lines(["tumor", "Liver", "kidney"]) == [
            "model class 'kidney' has no SonoLabel class: its boxes are skipped; add it with: "
            "sonolabel classes add 'kidney' --color '#rrggbb' (or on the Classes page)"]


@pytest.mark.slow
def test_a_prelabel_job_logs_the_model_classes_it_skips(app):
    from annotator.services.job_runner import start_job

    app.config["SONOLABEL_JOBS_IMMEDIATE"] = True
    seeded, _ = tiny_version(app)
    untrained_model(app)  # classes tumor and vessel
    with app.app_context():
        update_class("vessel", name="vessels")
        job = start_job("prelabel", {"scene": str(seeded.scene_id), "min_score": 0.0})
        assert job.status == JobStatus.succeeded, job.error
        assert "model class 'vessel' has no SonoLabel class: its boxes are skipped" in job.log_tail
        made = db.session.scalars(sa.select(Box.class_id).where(Box.source == BoxSource.model)).all()
        assert made and set(made) == {1}


@pytest.mark.slow
def test_rus_abdominal_liver_labels_import_after_classes_add(app, tmp_path):
    """The shared real data's liver labels, refused before and imported after ``classes add``."""
    import numpy as np

    data = json.loads(shared_file("rus-abdominal/annotations.json").read_text())
    # Its "video_id" is the series name, a text this importer refuses: the import names the video.
    images = [{k: v for k, v in i.items() if k != "video_id"}
              for i in data["images"] if i["video_id"] == "rus-a"]
    ids = {i["id"] for i in images}
    doc = {"images": images, "categories": data["categories"],
           "annotations": [a for a in data["annotations"] if a["image_id"] in ids]}
    path = tmp_path / "rus-a.json"
    path.write_text(json.dumps(doc))
    last = max(i["frame_index"] for i in images)
    blank = [np.full((480, 640), n % 256, np.uint8) for n in range(last + 1)]
    with app.app_context():
        video = make_video(app, "rus-a", ["new"], frames_per_scene=last + 1, width=640, height=480,
                           images=blank)
    result = cli(app, "labels", "import", str(path), "--video", str(video))
    assert result.exit_code == 2 and "unknown class 'liver'" in result.output
    assert "sonolabel classes add 'liver'" in result.output
    assert cli(app, "classes", "add", "liver", "--color", "#a0522d").exit_code == 0
    result = cli(app, "labels", "import", str(path), "--video", str(video))
    assert result.exit_code == 0, result.output
    with app.app_context():
        liver = db.session.scalar(sa.select(LabelClass.id).filter_by(name="liver"))
        counts = dict(db.session.execute(sa.select(Box.class_id, sa.func.count(Box.id))
                                         .group_by(Box.class_id)).all())
    assert counts == {2: 7, liver: 6}
