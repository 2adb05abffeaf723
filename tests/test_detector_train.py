"""Training, checkpoints and prediction on a tiny synthetic video set (128 px input)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from detector import predict as predict_module
from detector import train as train_module
from detector.checkpoint import load_matching, load_model, save_model
from detector.data import PairDataset
from detector.model import ModelConfig, build_model
from detector.predict import Predictor, predict_coco
from detector.train import Cancelled, TrainConfig, train
from helpers import make_tiny_coco

ROOT = Path(__file__).resolve().parents[1]
SIZE = "128"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return make_tiny_coco(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def run_dir(tiny: Path, tmp_path_factory) -> Path:
    """A two_frame run trained through the real command line."""
    out = tmp_path_factory.mktemp("runs") / "two"
    proc = subprocess.run(
        [sys.executable, "-m", "detector", "train", "--coco", str(tiny),
         "--images", str(tiny.parent / "img"), "--model", "two_frame", "--out", str(out),
         "--val-coco", str(tiny), "--epochs", "2", "--batch", "4", "--size", SIZE,
         "--lr", "5e-4", "--threads", "2"],
        cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return out


@pytest.mark.slow
def test_train_cli_writes_model_metrics_and_log(run_dir: Path):
    assert {"model.pt", "metrics.json", "train.log", "last.pt"} <= {
        p.name for p in run_dir.iterdir()}
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [e["epoch"] for e in metrics["epochs"]] == [1, 2]
    assert all({"loss", "AP", "AP50", "AP75"} <= set(e) for e in metrics["epochs"])
    assert metrics["best_epoch"] in (1, 2)
    assert "epoch 2" in (run_dir / "train.log").read_text()
    model, meta = load_model(run_dir)
    assert meta["config"]["arch"] == "two_frame" and meta["config"]["size"] == int(SIZE)
    assert meta["class_names"] == ["__background__", "tumor", "vessel"]
    assert not model.training


def _batch(tiny: Path, indices=(1, 5)):
    ds = PairDataset(tiny, tiny.parent / "img", size=int(SIZE))
    items = [ds[i] for i in indices]
    return ([i["image"] for i in items], [i["target"] for i in items],
            [i["prev_image"] for i in items], [i["flow"] for i in items])


def _train_steps(model, images, targets, prevs, flows, steps: int) -> list[float]:
    """The loss of each of ``steps`` AdamW steps on one fixed batch."""
    model.train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-4)
    losses = []
    for _ in range(steps):
        loss = sum(model(images, targets, prev_images=prevs, flows=flows).values())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.slow
def test_a_few_iterations_reduce_the_loss(tiny: Path):
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="two_frame", size=int(SIZE)))
    losses = _train_steps(model, *_batch(tiny), steps=12)
    assert np.mean(losses[-3:]) < 0.6 * losses[0], losses


def test_checkpoint_round_trip_gives_identical_outputs(tiny: Path, tmp_path: Path):
    torch.manual_seed(1)
    model = build_model(ModelConfig(arch="concat", size=int(SIZE))).eval()
    cats = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]
    save_model(tmp_path / "model.pt", model, cats)
    loaded, meta = load_model(tmp_path)
    assert meta["categories"] == cats and meta["config"] == model.config.to_dict()
    images, _, prevs, flows = _batch(tiny)
    with torch.no_grad():
        a = model(images, prev_images=prevs, flows=flows)
        b = loaded(images, prev_images=prevs, flows=flows)
    assert len(a[0]["boxes"]) > 0
    for x, y in zip(a, b):
        for key in ("boxes", "scores", "labels"):
            assert torch.equal(x[key], y[key])


def test_two_frame_starts_from_every_matching_single_weight(tmp_path: Path):
    single = build_model(ModelConfig(arch="single", size=int(SIZE)))
    save_model(tmp_path / "single.pt", single, [{"id": 1, "name": "tumor"},
                                                 {"id": 2, "name": "vessel"}])
    two = build_model(ModelConfig(arch="two_frame", size=int(SIZE)))
    copied, total = load_matching(two, tmp_path / "single.pt")
    own_aggregator = len([k for k in two.state_dict() if k.startswith("aggregator.")])
    assert copied == total - own_aggregator and own_aggregator > 0
    for key, value in single.state_dict().items():
        assert torch.equal(two.state_dict()[key], value)


@pytest.mark.slow
def test_streaming_predictor_matches_batch_prediction(run_dir: Path, tiny: Path):
    coco = json.loads(tiny.read_text())
    batch = predict_coco(run_dir, tiny, tiny.parent / "img", score_threshold=0.05)
    predictor = Predictor(run_dir, score_threshold=0.05)
    compared = 0
    for video in ("v0", "v1"):
        predictor.reset()
        frames = sorted((i for i in coco["images"] if i["video_id"] == video),
                        key=lambda i: i["frame_index"])
        for image in frames:
            grey = cv2.imread(str(tiny.parent / "img" / image["file_name"]),
                              cv2.IMREAD_GRAYSCALE)
            stream = sorted(predictor.step(grey), key=lambda d: -d["score"])
            expected = sorted((r for r in batch if r["image_id"] == image["id"]),
                              key=lambda r: -r["score"])
            assert len(stream) == len(expected)
            for s, e in zip(stream, expected):
                assert s["label"] == e["category_id"]
                assert s["score"] == pytest.approx(e["score"], abs=1e-3)
                assert s["box"] == pytest.approx(e["bbox"], abs=0.05)
                compared += 1
    assert compared > 0


@pytest.mark.slow
def test_predictor_takes_rgb_and_first_frame_is_its_own_previous(run_dir: Path, tiny: Path):
    grey = cv2.imread(str(tiny.parent / "img" / "v0_002.png"), cv2.IMREAD_GRAYSCALE)
    predictor = Predictor(run_dir, score_threshold=0.0)
    first = predictor.step(np.stack([grey] * 3, axis=-1))
    predictor.reset()
    again = predictor.step(grey)
    assert first == again and first
    d = first[0]
    assert set(d) == {"box", "label", "category", "score"} and d["category"] in ("tumor",
                                                                               "vessel")


@pytest.mark.slow
def test_predict_cli_prints_one_json_line_per_frame(run_dir: Path, tiny: Path, capsys):
    frames = [str(tiny.parent / "img" / f"v1_{f:03d}.png") for f in range(3)]
    assert predict_module.main(["--run", str(run_dir), *frames]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == frames
    assert all(isinstance(json.loads(line)["detections"], list) for line in lines)


@pytest.mark.slow
def test_predict_cli_reads_a_video(run_dir: Path, tiny: Path, tmp_path: Path, capsys):
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10, (96, 80))
    for f in range(3):
        writer.write(cv2.imread(str(tiny.parent / "img" / f"v0_{f:03d}.png")))
    writer.release()
    assert predict_module.main(["--run", str(run_dir), str(video)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2]


@pytest.mark.slow
def test_resume_goes_on_from_the_last_epoch(run_dir: Path, tiny: Path, tmp_path: Path):
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    before = json.loads((copy / "metrics.json").read_text())
    assert train_module.main(["--coco", str(tiny), "--images", str(tiny.parent / "img"),
                              "--out", str(copy), "--epochs", "3", "--resume"]) == 0
    after = json.loads((copy / "metrics.json").read_text())
    assert [e["epoch"] for e in after["epochs"]] == [1, 2, 3]
    assert after["epochs"][:2] == before["epochs"]
    assert after["iterations"] == before["iterations"] + 2
    assert after["train_config"]["size"] == int(SIZE)  # the run's own settings


@pytest.mark.slow
def test_progress_reports_and_cancels(tiny: Path, tmp_path: Path):
    seen: list[float] = []
    config = TrainConfig(coco=str(tiny), images=str(tiny.parent / "img"),
                         out=str(tmp_path / "a"), model="single", size=int(SIZE), batch=4,
                         epochs=1, backbone="mobilenet_v3")
    summary = train(config, progress=seen.append)
    assert seen == sorted(seen) and seen[-1] == 100.0 and len(seen) >= 2
    assert summary["status"] == "epochs" and (tmp_path / "a" / "model.pt").is_file()

    def cancel(percent: float) -> None:
        raise Cancelled()

    config.out = str(tmp_path / "b")
    with pytest.raises(Cancelled):
        train(config, progress=cancel)
    assert not (tmp_path / "b" / "model.pt").exists()


@pytest.mark.parametrize("extra, message", [
    (["--model", "three_frame"], "invalid choice"),
    (["--size", "100"], "multiple of 32"),
    (["--epochs", "0"], "at least 1"),
    (["--init", "missing.pt"], "missing.pt"),
    (["--resume"], "nothing to resume"),
    (["--val-coco", "nope.json"], "nope.json"),
])
def test_train_bad_arguments_exit_2_with_one_line(extra, message, tiny: Path, tmp_path: Path,
                                                   capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exc:
        train_module.main(["--coco", str(tiny), "--images", str(tiny.parent / "img"),
                           "--out", str(out), *extra])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]
    assert not out.exists()


@pytest.mark.slow
def test_train_refuses_to_overwrite_a_run(run_dir: Path, tiny: Path, capsys):
    with pytest.raises(SystemExit) as exc:
        train_module.main(["--coco", str(tiny), "--images", str(tiny.parent / "img"),
                           "--out", str(run_dir)])
    assert exc.value.code == 2 and "already holds" in capsys.readouterr().err


def test_train_reports_missing_images_before_writing(tiny: Path, tmp_path: Path, capsys):
    coco = json.loads(tiny.read_text())
    coco["images"][0]["file_name"] = "absent.png"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(coco))
    with pytest.raises(SystemExit) as exc:
        train_module.main(["--coco", str(bad), "--images", str(tiny.parent / "img"),
                           "--out", str(tmp_path / "out")])
    assert exc.value.code == 2 and "absent.png" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_predict_bad_arguments_exit_2(run_dir: Path, tmp_path: Path, capsys):
    for argv in (["--run", str(tmp_path), str(run_dir / "train.log")],
                 ["--run", str(run_dir), str(tmp_path / "none.png")]):
        with pytest.raises(SystemExit) as exc:
            predict_module.main(argv)
        assert exc.value.code == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:")


def test_first_frame_of_a_video_is_detected_as_by_the_single_frame_model(tiny: Path,
                                                                         tmp_path: Path):
    torch.manual_seed(2)
    two = build_model(ModelConfig(arch="two_frame", size=int(SIZE))).eval()
    save_model(tmp_path / "two.pt", two, [{"id": 1, "name": "tumor"},
                                          {"id": 2, "name": "vessel"}])
    single = build_model(ModelConfig(arch="single", size=int(SIZE))).eval()
    load_matching(single, tmp_path / "two.pt")
    images, _, _, _ = _batch(tiny, (0,))
    with torch.no_grad():
        a = two(images, prev_images=images, flows=[torch.zeros(2, 1, 1)])[0]
        b = single(images)[0]
    assert len(a["boxes"]) > 0
    assert torch.allclose(a["boxes"], b["boxes"], atol=1e-3)
    assert torch.allclose(a["scores"], b["scores"], atol=1e-5)


@pytest.mark.slow
def test_two_frame_learns_on_a_tiny_phantom_sweep(tmp_path: Path):
    from detector.phantom import generate

    coco = generate(tmp_path / "sweep", videos=1, frames=6, size=96, seed=3, min_box_mm=6.0)
    doc = json.loads(coco.read_text())
    assert doc["annotations"], "the sweep should show at least one tumour or vessel"
    ds = PairDataset(coco, coco.parent / "images", size=96)
    # Consecutive frames of the sweep are a real previous/current pair.
    assert all(i["prev_image_id"] == i["id"] - 1 for i in doc["images"][1:])
    items = [ds[i] for i in range(1, len(ds))]
    images, targets = [i["image"] for i in items], [i["target"] for i in items]
    prevs, flows = [i["prev_image"] for i in items], [i["flow"] for i in items]
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="two_frame", size=96))
    losses = _train_steps(model, images, targets, prevs, flows, steps=10)
    assert np.mean(losses[-3:]) < 0.7 * losses[0], losses


@pytest.mark.parametrize("changes", [
    {},
    {"model": "single", "val_coco": "v.json", "val_images": "v", "epochs": 3, "lr": 1.5e-4,
     "batch": 2, "size": 256, "seed": 7, "init": "runs/x", "max_iters": 9, "patience": 2,
     "classes": ["tumor", "vessel"], "augment": False, "resume": True, "workers": 1,
     "device": "cpu", "precision": "fp32", "backbone_weights": "w.pth",
     "augment_set": "ultrasound", "fit_anchors": True, "ema": 0.999, "min_stride": 4},
])
def test_train_argv_gives_back_the_same_config(changes):
    """What a launcher (torchrun, the retrain job) runs trains with the config it was given."""
    config = TrainConfig(coco="t.json", images="img", out="run", **changes)
    args = train_module.train_parser().parse_args(train_module.train_argv(config))
    back = train_module.config_from_args(args, coco=args.coco, images=args.images, out=args.out,
                                         val_coco=args.val_coco, val_images=args.val_images,
                                         resume=args.resume)
    assert back == config
    with pytest.raises(ValueError, match="warmup_iters"):
        train_module.train_argv(TrainConfig(coco="t", images="i", out="o", warmup_iters=7))
