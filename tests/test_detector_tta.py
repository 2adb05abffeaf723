"""Test-time horizontal flip: mirroring, merging the two passes, the streaming predictor's two
streams and the command-line flag (untrained 64 px models, nothing is trained here)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import predict as predict_module
from detector.checkpoint import save_model
from detector.evaluate import main as evaluate_main
from detector.flow import compute_flow, flow_tensor
from detector.model import ModelConfig, build_model
from detector.predict import Predictor, predict_coco
from detector.predict import main as predict_main
from detector.tta import merge_detections, mirror_boxes, mirror_flow
from helpers import make_tiny_coco

CATEGORIES = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def det(boxes, labels, scores) -> dict[str, torch.Tensor]:
    return {"boxes": torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4),
            "labels": torch.tensor(labels, dtype=torch.int64),
            "scores": torch.tensor(scores, dtype=torch.float32)}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """64 px models gain nothing from a second thread, and with another process busy on the
    machine the threads' waiting on each other makes each step many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_frame_pt(tmp_path_factory) -> Path:
    """An untrained two_frame model whose class scores are spread out (its box classifier's
    weights scaled up), so that boxes differ in score and a threshold keeps a few."""
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="two_frame", size=64), load_backbone_weights=False)
    with torch.no_grad():
        model.roi_heads.box_predictor.cls_score.weight.mul_(40)
    path = tmp_path_factory.mktemp("tta") / "model.pt"
    save_model(path, model, CATEGORIES)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_coco(tmp_path_factory.mktemp("tiny"), videos=1, frames=3)


def frames(tiny: Path) -> list[np.ndarray]:
    return [cv2.imread(str(tiny.parent / "img" / f"v0_{f:03d}.png"), cv2.IMREAD_GRAYSCALE)
            for f in range(3)]


def mirrored_back(dets: list[dict], width: int) -> list[dict]:
    return [{**d, "box": [width - d["box"][0] - d["box"][2], *d["box"][1:]]} for d in dets]


def _order(d: dict) -> tuple:
    return d["label"], round(d["box"][0]), round(d["box"][1]), d["score"]


def assert_same_detections(a: list[dict], b: list[dict]) -> None:
    a, b = sorted(a, key=_order), sorted(b, key=_order)
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        assert x["label"] == y["label"]
        assert x["score"] == pytest.approx(y["score"], abs=1e-4)
        assert x["box"] == pytest.approx(y["box"], abs=0.03)


def test_a_box_mirrored_lands_on_the_mirrored_pixels_and_mirrors_back_exactly():
    image = np.zeros((6, 10), np.uint8)
    image[1:4, 2:5] = 255  # pixels x 2..4, y 1..3: box [2, 1, 5, 4] in pixel edges
    flipped = image[:, ::-1]
    ys, xs = np.nonzero(flipped)
    box = torch.tensor([[2.0, 1.0, 5.0, 4.0], [0.25, 0.5, 9.75, 6.0]])
    mirrored = mirror_boxes(box, 10)
    assert mirrored[0].tolist() == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]
    assert torch.equal(mirror_boxes(mirrored, 10), box)


def test_mirrored_flow_is_the_flow_of_the_mirrored_frames():
    rng = np.random.default_rng(0)
    texture = cv2.GaussianBlur(rng.integers(0, 255, (96, 140)).astype(np.uint8), (0, 0), 2)
    previous, current = texture[:, 10:138], texture[:, 4:132]  # content moves 6 px right
    flow = flow_tensor(compute_flow(current, previous, None))
    of_mirrored = flow_tensor(compute_flow(current[:, ::-1], previous[:, ::-1], None))
    assert float(flow[0].median()) == pytest.approx(-6, abs=0.5)
    inner = (slice(None), slice(16, -16), slice(16, -16))
    assert torch.allclose(mirror_flow(flow)[inner].median(), of_mirrored[inner].median(),
                          atol=0.5)
    assert torch.equal(mirror_flow(mirror_flow(flow)), flow)


def test_a_box_found_by_both_passes_becomes_one_score_weighted_box():
    a = det([[10, 10, 30, 30]], [1], [0.9])
    b = det([[12, 10, 32, 30]], [1], [0.3])
    merged = merge_detections(a, b)
    assert merged["labels"].tolist() == [1]
    assert merged["boxes"][0].tolist() == pytest.approx([10.5, 10, 30.5, 30])
    assert merged["scores"].tolist() == pytest.approx([0.6])


def test_a_box_found_by_one_pass_or_in_another_class_survives_with_its_score():
    a = det([[10, 10, 30, 30], [50, 50, 60, 60]], [1, 1], [0.9, 0.4])
    b = det([[10, 10, 30, 30], [70, 10, 90, 20]], [2, 1], [0.8, 0.7])
    merged = merge_detections(a, b)
    # sorted by score: the same box in two classes stays two boxes, lone boxes keep theirs
    assert merged["labels"].tolist() == [1, 2, 1, 1]
    assert merged["scores"].tolist() == pytest.approx([0.9, 0.8, 0.7, 0.4])
    assert merged["boxes"].tolist() == [[10, 10, 30, 30], [10, 10, 30, 30], [70, 10, 90, 20],
                                        [50, 50, 60, 60]]
    # boxes overlapping below the IoU threshold stay two; the limit keeps the best
    far = merge_detections(det([[0, 0, 10, 10]], [1], [0.5]), det([[5, 0, 15, 10]], [1], [0.6]))
    assert len(far["boxes"]) == 2
    assert merge_detections(a, b, limit=2)["scores"].tolist() == pytest.approx([0.9, 0.8])


def test_two_frame_predictor_with_flip_keeps_a_mirrored_stream(two_frame_pt: Path, tiny: Path,
                                                               monkeypatch):
    f0, f1, _ = frames(tiny)
    width = f0.shape[1]
    # DIS is not mirror-symmetric; zero flow is, and the previous frame's maps still count
    monkeypatch.setattr(predict_module, "compute_flow",
                        lambda cur, prev, side: np.zeros((*cur.shape, 2), np.float32))
    predictor = Predictor(two_frame_pt, score_threshold=0.2, tta="flip")
    first, second = predictor.step(f0), predictor.step(f1)
    predictor.reset()
    m_first, m_second = predictor.step(f0[:, ::-1]), predictor.step(f1[:, ::-1])
    # flip TTA of a mirrored video is the mirror of flip TTA of the video, frame by frame,
    # only if each pass is aggregated with its own (plain or mirrored) previous frame
    assert_same_detections(mirrored_back(m_first, width), first)
    assert_same_detections(mirrored_back(m_second, width), second)
    # the previous frame counts, and reset() forgets both streams
    predictor.reset()
    alone = predictor.step(f1)
    assert alone != second
    plain = Predictor(two_frame_pt, score_threshold=0.2)
    assert plain.step(f0) != first


def test_batch_prediction_with_flip_matches_the_streaming_predictor(two_frame_pt: Path,
                                                                    tiny: Path):
    coco = json.loads(tiny.read_text())
    batch = predict_coco(two_frame_pt, tiny, tiny.parent / "img", score_threshold=0.2,
                         tta="flip")
    assert batch != predict_coco(two_frame_pt, tiny, tiny.parent / "img", score_threshold=0.2)
    predictor = Predictor(two_frame_pt, score_threshold=0.2, tta="flip")
    for image, grey in zip(sorted(coco["images"], key=lambda i: i["frame_index"]),
                           frames(tiny)):
        expected = [{"box": r["bbox"], "label": r["category_id"], "score": r["score"]}
                    for r in batch if r["image_id"] == image["id"]]
        assert_same_detections(predictor.step(grey), expected)


def test_evaluate_and_predict_commands_take_tta_flip(two_frame_pt: Path, tiny: Path,
                                                     tmp_path: Path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    (run / "model.pt").write_bytes(two_frame_pt.read_bytes())
    images = tiny.parent / "img"
    out = tmp_path / "flip.json"
    assert evaluate_main(["--run", str(run), "--coco", str(tiny), "--images", str(images),
                          "--out", str(out), "--device", "cpu", "--tta", "flip"]) == 0
    report = json.loads(out.read_text())
    assert report["model"]["tta"] == "flip"
    flipped = predict_coco(run, tiny, images, tta="flip")
    assert report["n_detections"] == len(flipped)
    assert evaluate_main(["--run", str(run), "--coco", str(tiny), "--images", str(images),
                          "--out", str(tmp_path / "none.json"), "--device", "cpu"]) == 0
    plain = json.loads((tmp_path / "none.json").read_text())
    assert plain["model"]["tta"] == "none"
    assert plain["n_detections"] == len(predict_coco(run, tiny, images)) != len(flipped)
    # precomputed detections cannot be flipped
    assert evaluate_main(["--detections", str(out), "--coco", str(tiny), "--out",
                          str(tmp_path / "x.json"), "--tta", "flip"]) == 2
    assert "--tta needs --run" in capsys.readouterr().err
    frame = str(images / "v0_000.png")
    capsys.readouterr()
    assert predict_main(["--run", str(run), "--device", "cpu", "--score-threshold", "0.2",
                         "--tta", "flip", frame]) == 0
    line = json.loads(capsys.readouterr().out.strip())
    expected = Predictor(run, score_threshold=0.2, tta="flip").step(frames(tiny)[0])
    assert line["detections"] == expected


def test_unknown_tta_is_refused(two_frame_pt: Path):
    with pytest.raises(ValueError, match="flip"):
        Predictor(two_frame_pt, tta="rotate")


@pytest.mark.slow
def test_cv_with_tta_flip_records_it_and_refuses_the_dir_without_it(tmp_path: Path, capsys):
    from detector import cv

    tiny = make_tiny_coco(tmp_path / "data", videos=4, frames=2, w=64, h=64)
    out = tmp_path / "cv"
    args = ["--coco", str(tiny), "--images", str(tiny.parent / "img"), "--out", str(out),
            "--folds", "2", "--model", "single", "--size", "64", "--max-iters", "1",
            "--epochs", "1", "--batch", "2", "--val-fraction", "0.3", "--dup-distance", "-1",
            "--threads", "1"]
    assert cv.main(args + ["--tta", "flip"]) == 0, capsys.readouterr().err
    for k in (1, 2):
        assert json.loads((out / f"fold_{k}" / "report.json").read_text())["model"]["tta"] == "flip"
    capsys.readouterr()
    # the finished folds were predicted with flip: evaluating them without it is refused
    assert cv.main(args) == 2
    assert "other settings" in capsys.readouterr().err
