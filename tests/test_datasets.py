"""Dataset versions: selection, leak-free deterministic splits, immutability, CLI and pages.

``make_video`` / ``make_box`` (helpers.py) build rows directly and write tiny PNGs into the data
directory.
"""
from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli, frames_of, label_all, make_box, make_video, noise, version_row, world

from annotator.db import db
from annotator.models import (
    Box,
    DatasetVersion,
    Frame,
    LabelEvent,
    Scene,
    SceneStatus,
    Video,
)
from annotator.services.coco_export import FrameRow, body_hash, split_hash
from annotator.services.dataset_split import (
    DatasetRefused,
    SceneRow,
    SplitSpec,
    assign_splits,
    check_leakage,
)
from annotator.services.dataset_versions import delete_version, version_dir


# --- CLI and the frozen files ------------------------------------------------------------------

def test_create_prints_splits_and_freezes_files(app):
    codes = world(app, patients=4)
    result = cli(app, "datasets", "create", "v1", "--split-by", "patient", "--ratios",
                 "0.5,0.25,0.25", "--seed", "0", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert out["version"] == "v1" and len(out["hash"]) == 64
    assert set(out["splits"]) == {"train", "val", "test"}
    # Only the reviewed scenes (2 of 3, 3 frames each) of every patient; every patient once.
    assert sum(s["images"] for s in out["splits"].values()) == 4 * 2 * 3
    seen = [p for s in out["splits"].values() for p in s["patients"]]
    assert sorted(seen) == sorted(codes) and len(seen) == len(set(seen))
    assert all(s["images"] > 0 for s in out["splits"].values())
    with app.app_context():
        version = version_row(app, "v1")
        expected_boxes = db.session.scalar(
            sa.select(sa.func.count(Box.id)).join(Frame).join(Scene)
            .where(Scene.status == SceneStatus.reviewed))
        assert sum(s["boxes"] for s in out["splits"].values()) == expected_boxes == version.box_count
        folder = version_dir(version.id)
        hashes = {}
        for part in ("train", "val", "test"):
            ann = folder / part / "annotations.json"
            doc = json.loads(ann.read_text())
            assert len(doc["images"]) == out["splits"][part]["images"]
            assert all((ann.parent / img["file_name"]).is_file() for img in doc["images"])
            assert not os.access(ann, os.W_OK) or os.geteuid() == 0  # frozen read-only
            hashes[part] = body_hash(ann.read_bytes())
        assert split_hash(hashes) == out["hash"] == version.content_hash
        # The version records its scenes, their parts and the split it froze.
        assert len(version.scenes) == 4 * 2
        assert {s.split for s in version.scenes} == {"train", "val", "test"}
        assert version.split_by == "patient" and version.ratios == [0.5, 0.25, 0.25]


def test_same_inputs_and_seed_give_the_same_split_and_hash(app):
    world(app, patients=6)
    a = json.loads(cli(app, "datasets", "create", "a", "--seed", "3", "--json").output)
    b = json.loads(cli(app, "datasets", "create", "b", "--seed", "3", "--json").output)
    assert a["splits"] == b["splits"] and a["hash"] == b["hash"]
    with app.app_context():
        assert version_row(app, "a").id != version_row(app, "b").id


def test_seed_changes_the_split_but_never_mixes_groups():
    scenes = [SceneRow(i, 100 + i // 2, i // 2, f"P{i // 2:02d}", "reviewed") for i in range(40)]
    weights = {s.id: 5 for s in scenes}
    spec = SplitSpec("patient", (0.6, 0.2, 0.2), 0)
    first = assign_splits(scenes, weights, spec)
    assert first == assign_splits(list(reversed(scenes)), weights, spec)  # order does not matter
    others = [assign_splits(scenes, weights, SplitSpec("patient", (0.6, 0.2, 0.2), s)) for s in (1, 2)]
    assert any(o != first for o in others)
    for assignment in [first, *others]:
        part_of_patient = {}
        for s in scenes:
            assert part_of_patient.setdefault(s.patient_code, assignment[s.id]) == assignment[s.id]
        counts = {p: sum(1 for v in assignment.values() if v == p) for p in ("train", "val", "test")}
        assert counts == {"train": 24, "val": 8, "test": 8}  # 20 equal patients: 12 / 4 / 4


def test_video_split_keeps_videos_apart_but_may_share_a_patient(app):
    with app.app_context():
        for p in ("A", "B"):
            for _ in range(2):
                label_all(make_video(app, p, ["reviewed"]))
    out = json.loads(cli(app, "datasets", "create", "byvideo", "--split-by", "video",
                         "--ratios", "0.5,0.25,0.25", "--json").output)
    videos = [v for s in out["splits"].values() for v in s["videos"]]
    assert len(videos) == 4 == len(set(videos))


def test_leakage_guard_names_what_leaks():
    scenes = [SceneRow(1, 10, 1, "P1", "reviewed"), SceneRow(2, 11, 1, "P1", "reviewed"),
              SceneRow(3, 12, 2, "P2", "reviewed")]
    frame = lambda fid, vid, sha: FrameRow(fid, vid, fid, 0, sha, 64, 48, False)  # noqa: E731
    frames = {"train": [frame(1, 10, "a" * 64)], "val": [frame(2, 11, "b" * 64), frame(3, 12, "c" * 64)]}
    with pytest.raises(DatasetRefused, match="patient P1 is in train and val"):
        check_leakage(scenes, {1: "train", 2: "val", 3: "val"}, frames, "patient", (0.5, 0.5, 0))
    # By video the same assignment is fine ...
    check_leakage(scenes, {1: "train", 2: "val", 3: "val"}, frames, "video", (0.5, 0.5, 0))
    # ... unless the same picture is in two parts.
    frames["val"][1] = frame(3, 12, "a" * 64)
    with pytest.raises(DatasetRefused, match=r"frame content a{12} is in train \(video 10 frame 0\) "
                                              r"and val \(video 12 frame 0\)"):
        check_leakage(scenes, {1: "train", 2: "val", 3: "val"}, frames, "video", (0.5, 0.5, 0))


def test_near_duplicate_frames_across_parts_are_refused_and_nothing_is_written(app):
    with app.app_context():
        same = noise()
        for code in ("P1", "P2"):
            images = [noise(), same, noise()]
            label_all(make_video(app, code, ["reviewed"], images=images))
    result = cli(app, "datasets", "create", "dup", "--ratios", "0.5,0.5,0")
    assert result.exit_code == 2
    assert "Near-duplicate frames" in result.output and "frame 1" in result.output
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(DatasetVersion.id))) == 0
    folder = Path(app.config["SONOLABEL_DATA_DIR"]) / "datasets"
    assert not folder.exists() or list(folder.iterdir()) == []


def test_a_split_that_leaves_a_part_empty_is_refused(app):
    world(app, patients=2)
    result = cli(app, "datasets", "create", "tiny", "--ratios", "0.7,0.15,0.15")
    assert result.exit_code == 2
    assert "needs at least 3 patients" in result.output and "P01, P02" in result.output
    ok = cli(app, "datasets", "create", "tiny", "--ratios", "0.5,0.5,0", "--json")
    assert ok.exit_code == 0, ok.output
    assert set(json.loads(ok.output)["splits"]) == {"train", "val"}


@pytest.mark.parametrize("args, message", [
    (["../evil"], "version name"), ([".hidden"], "version name"), (["a b"], "version name"),
    (["x" * 65], "version name"), (["ok", "--ratios", "0.5,0.6,0"], "sum to 1"),
    (["ok", "--ratios", "1,2"], "three shares"), (["ok", "--status", "done"], "Unknown scene status"),
    (["ok", "--patient", "NOPE"], "No patient NOPE"), (["ok", "--class", "cyst"], "Unknown class cyst"),
    (["ok", "--status", "returned"], "No scene matches"),
])
def test_bad_requests_exit_2_with_one_error_line(app, args, message):
    world(app, patients=3)
    result = cli(app, "datasets", "create", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and result.output.startswith("error: ")


def test_versions_are_immutable_and_ignore_later_labels(app, tmp_path):
    world(app, patients=3)
    assert cli(app, "datasets", "create", "v1").exit_code == 0
    again = cli(app, "datasets", "create", "v1")
    assert again.exit_code == 2 and "exists" in again.output
    with app.app_context():
        version = version_row(app, "v1")
        frozen_hash, boxes = version.content_hash, version.box_count
        version.seed = 5
        with pytest.raises(RuntimeError, match="immutable"):
            db.session.commit()
        db.session.rollback()
        # Labels added after freezing are not in the version.
        for f in frames_of(db.session.scalar(sa.select(Video.id))):
            make_box(f, 2, x=1, y=1, w=3, h=3)
        db.session.commit()
    out = tmp_path / "export"
    assert cli(app, "export", "coco", "v1", "--out", str(out)).exit_code == 0
    exported = sum(len(json.loads((out / p / "annotations.json").read_text())["annotations"])
                   for p in ("train", "val", "test"))
    assert exported == boxes
    assert "files match the hash" in cli(app, "datasets", "verify", "v1").output
    with app.app_context():
        assert version_row(app, "v1").content_hash == frozen_hash
        ann = version_dir(version_row(app, "v1").id) / "train" / "annotations.json"
    ann.chmod(0o644)
    ann.write_text(ann.read_text().replace('"iscrowd":0', '"iscrowd":1', 1))
    tampered = cli(app, "datasets", "verify", "v1")
    assert tampered.exit_code == 2 and "no longer match its hash" in tampered.output


def test_version_records_label_events_per_scene(app):
    world(app, patients=3)
    with app.app_context():
        scene = db.session.scalar(sa.select(Scene).where(Scene.status == SceneStatus.reviewed))
        events = [LabelEvent(action="create", source="manual", scene_id=scene.id) for _ in range(3)]
        db.session.add_all(events)
        db.session.commit()
        scene_id, last = scene.id, events[-1].id
    assert cli(app, "datasets", "create", "ev").exit_code == 0
    with app.app_context():
        version = version_row(app, "ev")
        frozen = {s.scene_id: s for s in version.scenes}
        assert frozen[scene_id].last_event_id == last and version.last_event_id == last
        assert all(s.last_event_id is None for sid, s in frozen.items() if sid != scene_id)


def test_selection_by_status_video_patient_and_class(app):
    with app.app_context():
        v1 = make_video(app, "P1", ["reviewed", "new"])
        label_all(v1)
        v2 = make_video(app, "P2", ["reviewed"])
        for f in frames_of(v2):
            make_box(f, 2)  # vessels only
        v3 = make_video(app, "P3", ["submitted"])
        label_all(v3)
        db.session.commit()
    tumour = json.loads(cli(app, "datasets", "create", "t", "--class", "tumor", "--status", "any",
                            "--ratios", "0.5,0.5,0", "--json").output)
    assert sorted(p for s in tumour["splits"].values() for p in s["patients"]) == ["P1", "P3"]
    with app.app_context():
        folder = version_dir(version_row(app, "t").id)
        docs = [json.loads((folder / p / "annotations.json").read_text()) for p in ("train", "val")]
    assert all(d["categories"] == [{"id": 1, "name": "tumor", "supercategory": "liver"}] for d in docs)
    assert {a["category_id"] for d in docs for a in d["annotations"]} == {1}
    assert sum(len(d["images"]) for d in docs) == 3 * 3  # P1: 2 scenes, P3: 1 scene
    picked = json.loads(cli(app, "datasets", "create", "p", "--patient", "P1,P2", "--video",
                            str(v1), "--ratios", "1,0,0", "--json").output)
    assert picked["splits"]["train"]["patients"] == ["P1"] and picked["splits"]["train"]["images"] == 3


# --- pages ---------------------------------------------------------------------------------

def test_data_manager_creates_views_and_downloads_a_version(app, login):
    world(app, patients=3)
    dm = login("data_manager")
    page = dm.get("/datasets/new")
    assert page.status_code == 200 and 'name="csrf_token"' in page.get_data(as_text=True)
    resp = dm.post("/datasets", data={"name": "web-1", "status": "reviewed", "split_by": "patient",
                                      "train": "0.34", "val": "0.33", "test": "0.33", "seed": "1"})
    assert resp.status_code == 302, resp.get_data(as_text=True)[:500]
    detail = dm.get(resp.headers["Location"])
    html = detail.get_data(as_text=True)
    with app.app_context():
        version = version_row(app, "web-1")
        assert version.created_by.username == "data_manager"
        vid, digest = version.id, version.content_hash
    assert detail.status_code == 200 and digest in html and "web-1" in html
    assert "web-1" in dm.get("/datasets").get_data(as_text=True)
    zipped = dm.get(f"/datasets/{vid}/download")
    assert zipped.status_code == 200 and zipped.mimetype == "application/zip"
    names = zipfile.ZipFile(io.BytesIO(zipped.data)).namelist()
    assert "web-1/train/annotations.json" in names and "web-1/version.json" in names
    assert sum(n.endswith(".png") for n in names) >= 3 * 2 * 3
    tasks = dm.get(f"/datasets/{vid}/labelstudio.json")
    assert tasks.status_code == 200 and len(tasks.json) == 3 * 2 * 3
    assert "<RectangleLabels" in dm.get("/datasets/labelstudio-config.xml").get_data(as_text=True)
    refused = dm.post("/datasets", data={"name": "web-1", "train": "0.34", "val": "0.33", "test": "0.33"})
    assert refused.status_code == 400 and "exists" in refused.get_data(as_text=True)


def test_only_data_managers_and_admins_reach_datasets(app, login):
    world(app, patients=3)
    assert cli(app, "datasets", "create", "v").exit_code == 0
    with app.app_context():
        vid = version_row(app, "v").id
    urls = ["/datasets", "/datasets/new", f"/datasets/{vid}", f"/datasets/{vid}/download",
            f"/datasets/{vid}/labelstudio.json", "/datasets/labelstudio-config.xml"]
    for role in ("annotator", "reviewer"):
        s = login(role)
        assert all(s.get(u).status_code == 403 for u in urls), role
        assert s.post("/datasets", data={"name": "x"}).status_code == 403
    admin = login("admin")
    assert all(admin.get(u).status_code == 200 for u in urls)
    no_token = admin.client.post("/datasets", data={"name": "x"})
    assert no_token.status_code == 400 and "CSRF" in no_token.get_data(as_text=True)
    with app.app_context():
        assert db.session.scalar(sa.select(sa.func.count(DatasetVersion.id))) == 1


# --- deletion ------------------------------------------------------------------------------------

def test_deleting_a_version_removes_rows_files_and_zip_unless_it_is_in_use(app, login):
    from annotator.models import DatasetScene, Job, JobStatus, ModelVersion

    world(app, patients=3)
    for name in ("keep", "drop"):
        assert cli(app, "datasets", "create", name).exit_code == 0
    dm = login("data_manager")
    with app.app_context():
        keep, drop = version_row(app, "keep").id, version_row(app, "drop").id
        db.session.add(ModelVersion(name="m1", kind="single", dataset_version_id=keep, config={},
                                    metrics={}, file_sha256="0" * 64))
        db.session.add(Job(kind="evaluate", params={"dataset": "drop"}, status=JobStatus.queued))
        db.session.commit()
        keep_dir = version_dir(keep)
    assert dm.get(f"/datasets/{drop}/download").status_code == 200  # builds the zip
    drop_dir, drop_zip = keep_dir.parent / str(drop), keep_dir.parent / f"{drop}.zip"
    assert drop_dir.is_dir() and drop_zip.is_file()

    # Without the typed name nothing happens; in use by a model or a waiting job: kept.
    resp = dm.post(f"/datasets/{drop}/delete", data={"confirm": "dro"}, follow_redirects=True)
    assert "Type the version" in resp.get_data(as_text=True)
    resp = dm.post(f"/datasets/{keep}/delete", data={"confirm": "keep"}, follow_redirects=True)
    assert "is used by model version m1" in resp.get_data(as_text=True)
    result = cli(app, "datasets", "delete", "drop")
    assert result.exit_code == 2 and "is used by job" in result.output
    with app.app_context():
        db.session.execute(sa.update(Job).values(status=JobStatus.succeeded))
        db.session.commit()

    resp = dm.post(f"/datasets/{drop}/delete", data={"confirm": "drop"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/datasets")
    assert "Dataset version drop deleted." in dm.get("/datasets").get_data(as_text=True)
    assert not drop_dir.exists() and not drop_zip.exists() and keep_dir.is_dir()
    assert not list(keep_dir.parent.glob(".deleting-*"))
    with app.app_context():
        assert [v.name for v in db.session.scalars(sa.select(DatasetVersion))] == ["keep"]
        assert not db.session.scalars(sa.select(DatasetScene).filter_by(version_id=drop)).all()
    assert dm.get(f"/datasets/{drop}").status_code == 404
    # The name is free again; annotators cannot delete.
    assert cli(app, "datasets", "create", "drop").exit_code == 0
    assert login("annotator").post(f"/datasets/{keep}/delete", data={"confirm": "keep"}).status_code == 403


def test_a_failed_delete_puts_the_files_back(app, monkeypatch):
    world(app, patients=3)
    assert cli(app, "datasets", "create", "v").exit_code == 0
    with app.app_context():
        version = version_row(app, "v")
        folder = version_dir(version.id)
        before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

        def broken_commit():
            raise RuntimeError("database went away")

        monkeypatch.setattr(db.session, "commit", broken_commit)
        with pytest.raises(RuntimeError):
            delete_version(version)
        monkeypatch.undo()
        assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
        assert version_row(app, "v") is not None
    assert cli(app, "datasets", "verify", "v").exit_code == 0
