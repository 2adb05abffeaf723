"""Label Studio shapes SonoLabel cannot hold (polygons, keypoints, brush masks, ellipses,
classifications, a video track in an image task) are refused with one line each naming the task
and region, on the CLI (exit 2) and the video page (HTTP 400); long Label Studio imports and
video exports count their tasks and clips on a progress bar."""
from __future__ import annotations

import io
import json

import pytest
from helpers import cli, seed_scene, track_video

import annotator.services.labelstudio_video as labelstudio_video
import annotator.services.labelstudio_video_import as labelstudio_video_import

REGIONS = {
    "polygonlabels": {"points": [[10, 10], [40, 12], [20, 30]], "polygonlabels": ["tumor"]},
    "keypointlabels": {"x": 20.0, "y": 30.0, "width": 1.0, "keypointlabels": ["tumor"]},
    "brushlabels": {"format": "rle", "rle": [1, 2, 3], "brushlabels": ["vessel"]},
    "ellipselabels": {"x": 20.0, "y": 30.0, "radiusX": 5.0, "radiusY": 4.0,
                      "ellipselabels": ["tumor"]},
    "choices": {"choices": ["tumour visible"]},
    "videorectangle": {"sequence": [], "labels": ["tumor"]},
}
SAID = {"polygonlabels": "a polygon (polygonlabels) cannot be imported",
        "keypointlabels": "a keypoint (keypointlabels) cannot be imported",
        "brushlabels": "a brush mask (brushlabels) cannot be imported",
        "ellipselabels": "an ellipse (ellipselabels) cannot be imported",
        "choices": "a classification (choices) cannot be imported",
        "videorectangle": "a video track (videorectangle) cannot be imported: SonoLabel takes "
                          "rectanglelabels boxes in image tasks"}


def _task(kind: str) -> list[dict]:
    return [{"id": 4, "data": {"image": "/data/f1.png", "frame_index": 1}, "annotations": [{
        "id": 9, "result": [{"id": "r1", "type": kind, "from_name": "label", "to_name": "image",
                             "value": REGIONS[kind]}]}]}]


@pytest.mark.parametrize("kind", sorted(REGIONS))
def test_each_unsupported_shape_gets_one_line(app, tmp_path, kind):
    seeded = seed_scene(app, frames=2)
    path = tmp_path / "export.json"
    path.write_text(json.dumps(_task(kind)))
    result = cli(app, "labels", "import-labelstudio", str(path), "--video", str(seeded.video_id))
    assert result.exit_code == 2 and "Traceback" not in result.output
    problem, error = result.output.strip().splitlines()
    assert problem.startswith("problem: task 4, annotation #0, region 'r1': ")
    assert SAID[kind] in problem
    assert error == f"error: 1 problem(s) in {path}; nothing was imported"


def test_the_video_page_refuses_them_with_400(app, login):
    seeded = seed_scene(app, frames=2)
    body = json.dumps(_task("polygonlabels")).encode()
    resp = login("data_manager").post(
        f"/videos/{seeded.video_id}/labels",
        {"file": (io.BytesIO(body), "export.json"), "action": "import", "format": "labelstudio"},
        content_type="multipart/form-data")
    assert resp.status_code == 400
    assert "a polygon (polygonlabels) cannot be imported" in resp.get_data(as_text=True)


class Bar:
    """Stands in for the tqdm bar: what it was made for and how far it got."""

    made: list["Bar"] = []

    def __init__(self, total: int, unit: str, progress: bool) -> None:
        self.total, self.unit, self.progress, self.count = total, unit, progress, 0
        Bar.made.append(self)

    def update(self, n: int = 1) -> None:
        self.count += n

    def close(self) -> None:
        pass


def test_long_video_exports_and_imports_show_progress(app, tmp_path, monkeypatch):
    Bar.made = []
    monkeypatch.setattr(labelstudio_video, "progress_bar", Bar)
    monkeypatch.setattr(labelstudio_video_import, "progress_bar", Bar)
    vid, _ = track_video(app)
    out = tmp_path / "tasks.json"
    result = cli(app, "export", "labelstudio", "--video", str(vid), "--video-tasks", "--out",
                 str(out), "--image-url-base", "http://sonolabel.test")
    assert result.exit_code == 0, result.output
    result = cli(app, "labels", "import-labelstudio", str(out), "--video", str(vid))
    assert result.exit_code == 0, result.output
    assert [(b.unit, b.total, b.count, b.progress) for b in Bar.made] == [
        ("clips", 2, 2, True), ("tasks", 2, 2, True)]
