"""The label-import form on a video's page: check (dry run), import, refusals."""
from __future__ import annotations

import io
import json
import re
from pathlib import Path

from helpers import seed_scene

from annotator.db import db
from annotator.models import Box, LabelEvent


def _coco(frame_indexes, category="tumor", **box):
    images = [{"id": i + 1, "frame_index": fi, "width": 160, "height": 120,
               "file_name": f"f{fi}.png"} for i, fi in enumerate(frame_indexes)]
    geometry = {"bbox": [20, 30, 40, 25], **box}
    annotations = [{"id": i + 1, "image_id": i + 1, "category_id": 1, **geometry}
                   for i in range(len(images))]
    return {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": category}]}


def _post(s, video_id, doc, action, **fields):
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return s.post(f"/videos/{video_id}/labels",
                  {"file": (io.BytesIO(body), "labels.json"), "action": action, **fields},
                  content_type="multipart/form-data")


def _boxes(app) -> int:
    with app.app_context():
        return db.session.scalar(db.select(db.func.count(Box.id)))


def test_check_then_import_a_coco_file_from_the_video_page(app, login):
    seeded = seed_scene(app, frames=3)
    s = login("data_manager")
    page = s.get(f"/videos/{seeded.video_id}").get_data(as_text=True)
    assert 'id="label-import"' in page and "Label Studio JSON" in page

    checked = _post(s, seeded.video_id, _coco([0, 2]), "check", status="submitted")
    text = checked.get_data(as_text=True)
    assert checked.status_code == 200 and "Check passed: nothing was written yet" in text
    assert "would add 2 boxes (2 manual)" in text and _boxes(app) == 0

    # "Import these boxes" imports the checked file without a second upload, once.
    token = re.search(r'name="token" value="([0-9a-f]{32})"', text).group(1)
    import_checked = {"token": token, "action": "import", "format": "coco",
                      "match": "frame_index", "status": "submitted"}
    done = s.post(f"/videos/{seeded.video_id}/labels", import_checked)
    text = done.get_data(as_text=True)
    assert done.status_code == 200 and "added 2 boxes (2 manual)" in text
    assert f"scenes set to submitted: {seeded.scene_id}" in text
    with app.app_context():
        events = db.session.scalars(db.select(LabelEvent).filter_by(action="import")).all()
        assert len(events) == 2 and {e.user.username for e in events} == {"data_manager"}
    gone = s.post(f"/videos/{seeded.video_id}/labels", import_checked)
    assert gone.status_code == 400 and "The checked file is gone" in gone.get_data(as_text=True)
    assert not list((Path(app.config["SONOLABEL_DATA_DIR"]) / "tmp").glob("labels-*"))
    # Uploading the same file again adds nothing.
    again = _post(s, seeded.video_id, _coco([0, 2]), "import").get_data(as_text=True)
    assert "added 0 boxes" in again and "2 already present" in again and _boxes(app) == 2


def test_label_studio_export_imports_too(app, login):
    seeded = seed_scene(app, frames=2)
    tasks = [{"id": 7, "data": {"image": "/data/f1.png", "frame_index": 1},
              "annotations": [{"result": [{
                  "type": "rectanglelabels", "from_name": "label", "to_name": "image",
                  "original_width": 160, "original_height": 120,
                  "value": {"x": 25.0, "y": 25.0, "width": 25.0, "height": 20.0,
                            "rectanglelabels": ["vessel"]}}]}]}]
    resp = _post(login("data_manager"), seeded.video_id, tasks, "import", format="labelstudio")
    assert resp.status_code == 200, resp.get_data(as_text=True)
    with app.app_context():
        box = db.session.scalars(db.select(Box)).one()
        assert (box.class_id, box.x, box.y, box.w, box.h) == (2, 40, 30, 40, 24)


def test_bad_files_are_refused_with_every_problem_and_nothing_written(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("data_manager")
    resp = _post(s, seeded.video_id, _coco([0, 5], category="cyst"), "import")
    text = resp.get_data(as_text=True)
    assert resp.status_code == 400 and "Nothing was imported" in text
    assert "2 problems in the labels; nothing was imported." in text
    assert "video 1 has no stored frame 5</li>" in text and "unknown class &#39;cyst&#39;" in text
    resp = _post(s, seeded.video_id, b"{not json", "import")
    assert resp.status_code == 400 and "not valid JSON" in resp.get_data(as_text=True)
    resp = _post(s, seeded.video_id, _coco([0]), "import", format="yaml")
    assert resp.status_code == 400
    resp = s.post(f"/videos/{seeded.video_id}/labels", {"action": "import"},
                  content_type="multipart/form-data")
    assert resp.status_code == 400 and "Choose a JSON file" in resp.get_data(as_text=True)
    forged = s.post(f"/videos/{seeded.video_id}/labels",
                    {"token": "../../etc/passwd", "action": "import"})
    assert forged.status_code == 400 and "Choose a JSON file" in forged.get_data(as_text=True)
    assert _boxes(app) == 0
    # Annotators and reviewers neither see the form nor may post it.
    annotator = login("annotator")
    assert 'id="label-import"' not in annotator.get(f"/videos/{seeded.video_id}").get_data(as_text=True)
    assert _post(annotator, seeded.video_id, _coco([0]), "import").status_code == 403
