"""COCO export of a version: structure, pycocotools AP 1.0 on its own ground truth, context
frames for the two-frame model, ``export coco`` and a few training iterations on the result."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa
from helpers import cli, frames_of, make_box, make_video, version_row, world

from annotator.db import db
from annotator.models import BoxSource, User

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def exported(app, tmp_path):
    """Three patients; patient P1's first scene is new (not selected), its second reviewed."""
    with app.app_context():
        vid = make_video(app, "P1", ["new", "reviewed"], frames_per_scene=3)
        annotator = db.session.scalar(sa.select(User).filter_by(username="annotator"))
        frames = frames_of(vid)
        make_box(frames[3], 1, x=5, y=6, w=10, h=12, author=annotator, track_id=7)
        make_box(frames[3], 2, x=40, y=10, w=8, h=9, source=BoxSource.model, score=0.8,
                 model_version="m1")
        make_box(frames[4], 1, x=6, y=6, w=10, h=12, source=BoxSource.propagated, track_id=7)
        frames[5].reviewed_empty = True
        db.session.commit()
        p1_frames = {f.frame_index: f.sha256 for f in frames}
    world(app, patients=2)  # P01, P02 with reviewed, reviewed, new scenes
    result = cli(app, "datasets", "create", "v1", "--ratios", "0.34,0.33,0.33", "--seed", "0", "--json")
    assert result.exit_code == 0, result.output
    out = tmp_path / "coco"
    export = cli(app, "export", "coco", "v1", "--out", str(out))
    assert export.exit_code == 0, export.output
    return {"dir": out, "summary": json.loads(result.output), "p1_video": vid, "p1_frames": p1_frames}


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def test_each_part_is_a_complete_coco_file(app, exported):
    out = exported["dir"]
    for part, summary in exported["summary"]["splits"].items():
        doc = load(out / part / "annotations.json")
        assert {"info", "images", "annotations", "categories", "context_images"} <= set(doc)
        assert doc["info"]["version"] == "v1" and doc["info"]["split"] == part
        assert [c["id"] for c in doc["categories"]] == [1, 2]
        assert [c["name"] for c in doc["categories"]] == ["tumor", "vessel"]
        assert [i["id"] for i in doc["images"]] == list(range(1, len(doc["images"]) + 1))
        assert [a["id"] for a in doc["annotations"]] == list(range(1, len(doc["annotations"]) + 1))
        assert len(doc["images"]) == summary["images"] and len(doc["annotations"]) == summary["boxes"]
        for img in doc["images"] + doc["context_images"]:
            assert (out / part / img["file_name"]).is_file()
            assert {"video_id", "frame_index", "prev_image_id", "scene_id", "patient_code"} <= set(img)
        for ann in doc["annotations"]:
            x, y, w, h = ann["bbox"]
            assert ann["area"] == w * h and ann["iscrowd"] == 0 and "source" in ann


def _part_with(out: Path, video_id: int) -> dict:
    for ann in out.glob("*/annotations.json"):
        doc = load(ann)
        if any(i["video_id"] == video_id for i in doc["images"]):
            return doc
    raise AssertionError(f"video {video_id} is in no part")


def test_frames_boxes_and_predecessors_of_a_video(app, exported):
    doc = _part_with(exported["dir"], exported["p1_video"])
    images = {i["id"]: i for i in doc["images"] + doc["context_images"]}
    mine = sorted((i for i in doc["images"] if i["video_id"] == exported["p1_video"]),
                  key=lambda i: i["frame_index"])
    # Every frame of the reviewed scene, the reviewed-empty one included; none of the new scene.
    assert [i["frame_index"] for i in mine] == [3, 4, 5]
    assert mine[2]["reviewed_empty"] is True and mine[0]["patient_code"] == "P1"
    # Frame 3's predecessor (frame 2) is in no part: exported as a context image only.
    context = images[mine[0]["prev_image_id"]]
    assert context in doc["context_images"] and context["frame_index"] == 2
    assert context["sha256"] == exported["p1_frames"][2]
    assert mine[1]["prev_image_id"] == mine[0]["id"] and mine[2]["prev_image_id"] == mine[1]["id"]
    assert not any(a["image_id"] == context["id"] for a in doc["annotations"])
    anns = sorted((a for a in doc["annotations"] if a["image_id"] in {i["id"] for i in mine}),
                  key=lambda a: a["id"])
    # Ground truth is the manual boxes: the pending pre-label and propagated box are left out.
    assert [(a["image_id"], a["category_id"], a["bbox"], a["source"]) for a in anns] == [
        (mine[0]["id"], 1, [5.0, 6.0, 10.0, 12.0], "manual")]
    assert anns[0]["author"] == "annotator" and anns[0]["track_id"] == 7 and "score" not in anns[0]
    assert not any(a["image_id"] == mine[2]["id"] for a in doc["annotations"])
    # A video's first stored frame has no predecessor.
    others = [i for i in doc["images"] if i["video_id"] != exported["p1_video"] and i["frame_index"] == 0]
    assert all(i["prev_image_id"] is None for i in others)


def _ap(gt, dets) -> float:
    from pycocotools.cocoeval import COCOeval

    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    return ev.stats[0]


def test_ground_truth_scores_ap_1_with_pycocotools(exported):
    from pycocotools.coco import COCO

    for ann_file in sorted(exported["dir"].glob("*/annotations.json")):
        gt = COCO(str(ann_file))
        dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
                 "score": 1.0} for a in gt.dataset["annotations"]]
        assert dets, f"{ann_file} has no boxes"
        assert _ap(gt, dets) == pytest.approx(1.0), ann_file
        empty = [i["id"] for i in gt.dataset["images"] if not gt.getAnnIds(imgIds=[i["id"]])]
        if empty:
            # Box-free frames are images of the file: a false positive there, ranked above the
            # true boxes, costs AP.
            fp = {"image_id": empty[0], "category_id": 1, "bbox": [1, 1, 9, 9], "score": 2.0}
            assert _ap(gt, dets + [fp]) < 1.0


def test_export_refuses_a_used_folder_and_an_unknown_version(app, exported, tmp_path):
    again = cli(app, "export", "coco", "v1", "--out", str(exported["dir"]))
    assert again.exit_code == 2 and "not an empty folder" in again.output
    missing = cli(app, "export", "coco", "nope", "--out", str(tmp_path / "x"))
    assert missing.exit_code == 2 and "No dataset version named 'nope'" in missing.output
    assert not (tmp_path / "x").exists()


def test_zip_matches_the_exported_files(app, exported, login):
    import io
    import zipfile

    with app.app_context():
        vid = version_row(app, "v1").id
    data = login("data_manager").get(f"/datasets/{vid}/download").data
    zf = zipfile.ZipFile(io.BytesIO(data))
    for part in exported["summary"]["splits"]:
        assert zf.read(f"v1/{part}/annotations.json") == (exported["dir"] / part / "annotations.json").read_bytes()


@pytest.mark.slow
def test_detector_trains_on_the_export(app, exported, tmp_path):
    pytest.importorskip("detector.train", reason="detector.train not available")
    if not app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite"):
        pytest.skip("the export is the same on every database; training runs once, on SQLite")
    out = exported["dir"]
    cmd = [sys.executable, "-m", "detector", "train", "--coco", str(out / "train" / "annotations.json"),
           "--images", str(out / "train"), "--val-coco", str(out / "val" / "annotations.json"),
           "--val-images", str(out / "val"), "--model", "two_frame", "--out", str(tmp_path / "run"),
           "--size", "64", "--max-iters", "2", "--batch", "2", "--threads", "1", "--epochs", "1"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["iterations"] == 2 and Path(summary["model_path"]).is_file()
