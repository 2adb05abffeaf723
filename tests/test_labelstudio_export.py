"""Label Studio tasks that open with their images: signed frame links (valid, expired,
tampered, made for another purpose), the public route that serves them, a local-files folder
whose paths point at real files, pending pre-labels as predictions, and CLI refusals."""
from __future__ import annotations

import json
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest
from helpers import cli, frames_of, make_box, make_video, version_row, world
from itsdangerous import URLSafeSerializer

from annotator.db import db
from annotator.models import BoxSource, Frame
from annotator.services.signed_urls import SignedUrlRefused, frame_id_of, frame_token

REFUSED = "This image link is invalid or has expired"


def _refused(result) -> str:
    """A CLI refusal: exit 2 and one ``error:`` line, no traceback."""
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    return lines[0]


@pytest.fixture
def scene(app):
    """A 3-frame scene with a manual box, a propagated one and pending model pre-labels of two
    model versions; (video id, scene id, frame ids)."""
    with app.app_context():
        vid = make_video(app, "P1", ["in_progress"], frames_per_scene=3)
        f = frames_of(vid)
        make_box(f[0], 1, x=5, y=7, w=11, h=13)
        make_box(f[0], 2, x=1, y=2, w=30, h=20, source=BoxSource.model, score=0.9, model_version="m1")
        make_box(f[1], 1, x=6, y=7, w=11, h=13, source=BoxSource.propagated, score=0.7, track_id=3)
        make_box(f[1], 1, x=33, y=17, w=7, h=5, source=BoxSource.model, score=0.25, model_version="m2")
        db.session.commit()
        return vid, f[0].scene_id, [x.id for x in f]


def test_tokens_name_their_frame_until_they_expire(app):
    with app.app_context():
        token = frame_token(42, days=2)
        assert frame_id_of(token) == 42
        assert frame_id_of(token, now=time.time() + 1.9 * 86400) == 42
        with pytest.raises(SignedUrlRefused, match=REFUSED) as expired:
            frame_id_of(token, now=time.time() + 2.1 * 86400)
        assert expired.value.status == 403
        payload, sig = token.rsplit(".", 1)
        tampered = [payload + "." + sig[::-1], payload[:-2] + "AA." + sig, "x", ""]
        # Same secret and payload, another purpose: refused.
        other = URLSafeSerializer(app.config["SECRET_KEY"], salt="itsdangerous").dumps([42, 2**40])
        wrong_shape = URLSafeSerializer(app.config["SECRET_KEY"], salt="sonolabel.signed-frame-image"
                                        ).dumps(["42", 2**40])
        for bad in [*tampered, other, wrong_shape]:
            with pytest.raises(SignedUrlRefused, match=REFUSED):
                frame_id_of(bad)
        for days in (0, -1, 5000, float("nan")):
            with pytest.raises(SignedUrlRefused, match="number of days"):
                frame_token(1, days)


def test_signed_route_serves_the_png_without_log_in(app, scene, login):
    anonymous = app.test_client()
    with app.app_context():
        frame = db.session.get(Frame, scene[2][0])
        png = (Path(app.config["SONOLABEL_DATA_DIR"]) / frame.relpath).read_bytes()
        good = frame_token(frame.id)
        expired = frame_token(frame.id, days=1, now=time.time() - 2 * 86400)
        missing = frame_token(10**6)
    resp = anonymous.get(f"/signed/frames/{good}.png")
    assert resp.status_code == 200 and resp.data == png and resp.mimetype == "image/png"
    logged_in = login("annotator").get(f"/frames/{scene[2][0]}.png")
    for header in ("Cache-Control", "ETag"):
        assert resp.headers[header] == logged_in.headers[header]
    assert anonymous.get(f"/signed/frames/{good}.png",
                         headers={"If-None-Match": resp.headers["ETag"]}).status_code == 304
    payload, sig = good.rsplit(".", 1)
    # A forged signature: its first character changed (the last one's low bits are base64
    # padding, so changing it may leave the decoded signature as it was).
    forged = f"{payload}.{'B' if sig[0] == 'A' else 'A'}{sig[1:]}"
    bodies = set()
    for bad in (expired, forged, "nope"):
        refused = anonymous.get(f"/signed/frames/{bad}.png")
        assert refused.status_code == 403 and REFUSED in refused.get_data(as_text=True)
        bodies.add(refused.get_data(as_text=True))
    assert len(bodies) == 1  # an expired link and a forged one look the same
    assert anonymous.get(f"/signed/frames/{missing}.png").status_code == 404
    assert anonymous.post(f"/signed/frames/{good}.png").status_code == 405


def test_every_split_of_a_version_gets_links_that_answer(app, tmp_path):
    world(app, patients=4)
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    out = tmp_path / "tasks.json"
    result = cli(app, "export", "labelstudio", "v1", "--out", str(out),
                 "--image-url-base", "https://sonolabel.example.org", "--expires-days", "3")
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    with app.app_context():
        assert {t["data"]["split"] for t in tasks} == set(version_row(app, "v1").summary) == {
            "train", "val", "test"}
    anonymous = app.test_client()
    for task in tasks:
        url = urlparse(task["data"]["image"])
        assert (url.scheme, url.netloc) == ("https", "sonolabel.example.org")
        assert anonymous.get(url.path).status_code == 200, task["data"]
    folder = tmp_path / "ls-root" / "v1"
    assert cli(app, "export", "labelstudio", "v1", "--local-files", str(folder)).exit_code == 0
    local = json.loads((folder / "tasks.json").read_text())
    assert {t["data"]["split"] for t in local} == {"train", "val", "test"}
    assert all((folder.parent / parse_qs(urlparse(t["data"]["image"]).query)["d"][0]).is_file()
               for t in local) and len(local) == len(tasks)
    with app.app_context():
        token = Path(urlparse(tasks[0]["data"]["image"]).path).stem
        frame_id_of(token, now=time.time() + 2.9 * 86400)
        with pytest.raises(SignedUrlRefused):
            frame_id_of(token, now=time.time() + 3.1 * 86400)


def test_dataset_page_downloads_signed_tasks(app, login):
    world(app, patients=3)
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    with app.app_context():
        vid = version_row(app, "v1").id
    dm = login("data_manager")
    page = dm.get(f"/datasets/{vid}").get_data(as_text=True)
    assert 'id="labelstudio-tasks"' in page and 'value="http://localhost/"' in page
    assert "/datasets/labelstudio-config.xml" in page
    tasks = dm.get(f"/datasets/{vid}/labelstudio.json").json
    assert all(t["data"]["image"].startswith("http://localhost/signed/frames/") for t in tasks)
    assert app.test_client().get(tasks[0]["data"]["image"]).status_code == 200
    moved = dm.get(f"/datasets/{vid}/labelstudio.json?base=https://x.example.org/sono&days=2").json
    assert moved[0]["data"]["image"].startswith("https://x.example.org/sono/signed/frames/")
    for query, message in (("days=abc", "number of days"), ("base=ftp://x", "not an address")):
        refused = dm.get(f"/datasets/{vid}/labelstudio.json?{query}", headers={"Accept": "application/json"})
        assert refused.status_code == 400 and message in refused.json["error"]


def test_local_files_folder_holds_every_image_its_tasks_name(app, scene, tmp_path):
    root = tmp_path / "ls-files"
    result = cli(app, "export", "labelstudio", "--scene", str(scene[1]),
                 "--local-files", str(root / "sonolabel-scene"))
    assert result.exit_code == 0, result.output
    folder = root / "sonolabel-scene"
    assert sorted(p.name for p in folder.iterdir()) == ["images", "labeling-config.xml", "tasks.json"]
    tasks = json.loads((folder / "tasks.json").read_text())
    assert "<RectangleLabels" in (folder / "labeling-config.xml").read_text()
    assert sorted(p.name for p in (folder / "images").iterdir()) == [
        f"v{scene[0]:06d}_f{i:06d}.png" for i in range(3)]
    with app.app_context():
        stored = {f.frame_index: (Path(app.config["SONOLABEL_DATA_DIR"]) / f.relpath).read_bytes()
                  for f in frames_of(scene[0])}
    for task in tasks:
        url = urlparse(task["data"]["image"])
        assert url.path == "/data/local-files/"
        [d] = parse_qs(url.query)["d"]
        assert d.startswith("sonolabel-scene/images/")
        assert (root / d).read_bytes() == stored[task["data"]["frame_index"]]
    # A deeper folder under an explicit document root.
    deep = root / "projects" / "p1"
    result = cli(app, "export", "labelstudio", "--video", str(scene[0]), "--local-files", str(deep),
                 "--document-root", str(root))
    assert result.exit_code == 0, result.output
    [d] = parse_qs(urlparse(json.loads((deep / "tasks.json").read_text())[0]["data"]["image"]).query)["d"]
    assert d.startswith("projects/p1/images/") and (root / d).is_file()


def test_local_files_refusals_leave_nothing(app, scene, tmp_path):
    tmp_path = tmp_path / "out"  # the app's data lies beside it
    taken = tmp_path / "taken"
    taken.mkdir(parents=True)
    (taken / "keep.txt").write_text("x")
    line = _refused(cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--local-files", str(taken)))
    assert "not an empty folder" in line
    line = _refused(cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--local-files",
                        str(tmp_path / "a" / "b"), "--document-root", str(tmp_path / "elsewhere")))
    assert "not inside the document root" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_pending_prelabels_are_predictions_with_scores_and_versions(app, scene, tmp_path):
    out = tmp_path / "t.json"
    result = cli(app, "export", "labelstudio", "--video", str(scene[0]), "--out", str(out), "--predictions")
    assert result.exit_code == 0, result.output
    tasks = json.loads(out.read_text())
    got = {(t["data"]["frame_index"], p["model_version"], r["score"], p["score"])
           for t in tasks for p in t.get("predictions", []) for r in p["result"]}
    assert got == {(0, "m1", 0.9, 0.9), (1, "m2", 0.25, 0.25)}
    # The manual and the propagated box stay the task's annotation, never a prediction.
    assert [len(t.get("annotations", [{"result": []}])[0]["result"]) for t in tasks] == [1, 1, 0]
    # Once accepted, a pre-label is ground truth, no longer pending.
    with app.app_context():
        for b in frames_of(scene[0])[0].boxes:
            b.source = BoxSource.manual
        db.session.commit()
    assert cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--out", str(out)).exit_code == 0
    tasks = json.loads(out.read_text())
    assert "predictions" not in tasks[0] and tasks[1]["predictions"][0]["model_version"] == "m2"
    assert cli(app, "export", "labelstudio", "--scene", str(scene[1]), "--out", str(out),
               "--no-predictions").exit_code == 0
    assert not any("predictions" in t for t in json.loads(out.read_text()))


def test_bad_options_exit_2_with_one_line(app, scene, tmp_path):
    world(app, patients=3)
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    out, s = str(tmp_path / "t.json"), str(scene[1])
    cases = {
        ("--scene", s): "--out FILE or --local-files",
        ("--scene", s, "--out", out, "--local-files", str(tmp_path / "d")): "--out FILE or --local-files",
        ("v1", "--scene", s, "--out", out): "name one VERSION",
        ("--scene", s, "--video", str(scene[0]), "--out", out): "name one VERSION",
        ("--scene", s, "--out", out, "--image-url-base", "ftp://x"): "not an address",
        ("--scene", s, "--out", out, "--image-url-base", "https://x", "--image-prefix", "/d/"): "pick one",
        ("--scene", s, "--out", out, "--image-url-base", "https://x", "--expires-days", "0"): "number of days",
        ("--scene", s, "--out", out, "--expires-days", "3"): "goes with --image-url-base",
        ("--scene", s, "--out", out, "--document-root", str(tmp_path)): "goes with --local-files",
        ("v1", "--out", out, "--predictions"): "ground truth only",
        ("--video", "999", "--out", out): "No video 999",
    }
    for args, message in cases.items():
        assert message in _refused(cli(app, "export", "labelstudio", *args)), args
    assert not Path(out).exists() and not (tmp_path / "d").exists()
