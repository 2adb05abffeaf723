"""Score calibration: per-class Platt scaling (temperature and bias) fitted on validation
detections, the F1 threshold on calibrated scores, and both applied where the app sees scores."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.special import expit, logit
from scipy.stats import mannwhitneyu

from detector.calibration import Calibration, calibrate, expected_calibration_error
from detector.checkpoint import read_checkpoint, save_model
from detector.metrics import TP, load_detections, load_gt, match_detections
from detector.model import ModelConfig, build_model
from detector.predict import Predictor, predict_coco
from detector.sensitivity import choose_threshold
from detector.train import TrainConfig, train
from helpers import make_tiny_coco

CATEGORIES = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def overconfident(n_images: int = 400, sharpen: dict | None = None, seed: int = 0,
                  lift: float = 0.0):
    """Ground truth with one box per image and class; per image and class one detection
    that is a hit with probability sigmoid(z), reported with the over-confident score
    sigmoid(k * z + lift) (k = 3 for tumours, 1.5 for vessels unless ``sharpen`` says
    otherwise)."""
    sharpen = sharpen or {1: 3.0, 2: 1.5}
    rng = np.random.default_rng(seed)
    images, anns, dets = [], [], []
    for i in range(1, n_images + 1):
        images.append({"id": i, "width": 200, "height": 200})
        for cat, k in sharpen.items():
            box = [20.0 + 80 * (cat - 1), 20.0, 40.0, 40.0]
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": cat, "bbox": box})
            z = rng.normal(0.0, 1.5)
            hit = rng.random() < expit(z)
            where = box if hit else [150.0, 150.0, 30.0, 30.0]
            dets.append({"image_id": i, "category_id": cat, "bbox": where,
                         "score": float(expit(k * z + lift))})
    gt = {"images": images, "annotations": anns, "categories": CATEGORIES}
    return gt, dets


def labelled(gt, dets):
    matching = match_detections(load_gt(gt), load_detections(dets, load_gt(gt)))
    scores = np.array([d["score"] for d in matching.dets])
    hits = (matching.det_status == TP).astype(float)
    cats = np.array([d["category_id"] for d in matching.dets])
    return scores, hits, cats


def auc(scores, hits) -> float:
    u = mannwhitneyu(scores[hits == 1], scores[hits == 0]).statistic
    return float(u / ((hits == 1).sum() * (hits == 0).sum()))


def test_temperature_undoes_over_confidence_and_keeps_the_ranking():
    gt, dets = overconfident()
    calibration, record = calibrate(gt, dets)
    # the data were sharpened by 3 and 1.5: each class gets its own temperature near that
    assert record["method"] == "platt"
    assert calibration.temperature("tumor") == pytest.approx(3.0, rel=0.25)
    assert calibration.temperature("vessel") == pytest.approx(1.5, rel=0.25)
    assert abs(calibration.bias("tumor")) < 0.3 and abs(calibration.bias("vessel")) < 0.3
    assert record["ece_after"] < 0.5 * record["ece_before"]
    assert record["per_class"]["tumor"]["pooled"] is False

    scores, hits, cats = labelled(gt, dets)
    names = {1: "tumor", 2: "vessel"}
    after = np.array([calibration.score(s, names[c]) for s, c in zip(scores, cats)])
    assert expected_calibration_error(after, hits) == pytest.approx(record["ece_after"], abs=0.02)
    for cat in (1, 2):
        inside = cats == cat
        assert auc(after[inside], hits[inside]) == pytest.approx(auc(scores[inside], hits[inside]),
                                                                 abs=1e-12)


def test_scores_too_high_everywhere_are_lowered_by_the_bias_keeping_the_ranking():
    # hit rate sigmoid(z), score sigmoid(z + 2): right spread, too confident by a constant,
    # which no temperature can undo
    gt, dets = overconfident(sharpen={1: 1.0, 2: 1.0}, lift=2.0)
    calibration, record = calibrate(gt, dets)
    for name in ("tumor", "vessel"):
        assert calibration.bias(name) == pytest.approx(-2.0, abs=0.4)
        assert calibration.temperature(name) == pytest.approx(1.0, rel=0.2)
    assert record["ece_before"] > 0.15 and record["ece_after"] < 0.05
    scores, hits, cats = labelled(gt, dets)
    names = {1: "tumor", 2: "vessel"}
    after = np.array([calibration.score(s, names[c]) for s, c in zip(scores, cats)])
    assert after.mean() == pytest.approx(hits.mean(), abs=0.03)
    for cat in (1, 2):
        inside = cats == cat
        assert auc(after[inside], hits[inside]) == pytest.approx(auc(scores[inside], hits[inside]),
                                                                 abs=1e-12)


def test_threshold_is_the_validation_f1_threshold_of_the_calibrated_scores():
    gt, dets = overconfident()
    calibration, record = calibrate(gt, dets)
    names = {1: "tumor", 2: "vessel"}
    calibrated = [{**d, "score": calibration.score(d["score"], names[d["category_id"]])} for d in dets]
    assert record["threshold"]["method"] == "validation-f1"
    assert record["threshold"]["value"] == choose_threshold(gt, calibrated)
    assert record["threshold"]["n_gt"] == len(gt["annotations"])


def test_record_round_trips_through_json_and_a_class_with_few_boxes_takes_the_pool():
    gt, dets = overconfident()
    rare = {"id": 3, "name": "cyst"}
    gt["categories"].append(rare)
    gt["images"].append({"id": 9999, "width": 200, "height": 200})
    gt["annotations"].append({"id": 9999, "image_id": 9999, "category_id": 3, "bbox": [5, 5, 20, 20]})
    dets.append({"image_id": 9999, "category_id": 3, "bbox": [5, 5, 20, 20], "score": 0.99})
    calibration, record = calibrate(gt, dets)
    assert record["per_class"]["cyst"] == {"n": 1, "hits": 1, "temperature": calibration.default,
                                           "bias": calibration.default_bias, "pooled": True}
    loaded = Calibration.from_dict(json.loads(json.dumps(record)))
    assert loaded == calibration
    assert loaded.score(0.99, "cyst") == pytest.approx(
        float(expit(logit(0.99) / calibration.default + calibration.default_bias)))


def test_nothing_is_fitted_without_both_hits_and_misses():
    gt, dets = overconfident(n_images=30)
    misses = [{**d, "bbox": [150.0, 150.0, 30.0, 30.0]} for d in dets]
    calibration, record = calibrate(gt, misses)
    assert record["method"] == "none" and "true and one false positive" in record["reason"]
    assert calibration.score(0.7, "tumor") == pytest.approx(0.7)
    assert record["threshold"]["value"] is None
    assert Calibration.from_dict(record) == Calibration()


def test_raw_floor_keeps_every_box_that_calibrates_above_the_threshold():
    calibration = Calibration({"tumor": 3.0, "vessel": 0.5}, 1.2, {"vessel": 1.5}, -0.5)
    floor = calibration.raw_floor(0.1)
    for name in ("tumor", "vessel", "other"):
        assert calibration.score(floor, name) <= 0.1 + 1e-9
    assert max(calibration.score(floor, n) for n in ("tumor", "vessel", "other")) == \
        pytest.approx(0.1)


def _saved_model(path: Path, calibration: dict | None) -> Path:
    torch.manual_seed(0)
    model = build_model(ModelConfig(arch="single", num_classes=3, size=64),
                        load_backbone_weights=False)
    save_model(path, model, CATEGORIES)
    if calibration is not None:
        data = read_checkpoint(path)
        data["calibration"] = calibration
        torch.save(data, path)
    return path


def test_predictor_applies_the_runs_calibration(tmp_path: Path):
    raw_pt = _saved_model(tmp_path / "raw.pt", None)
    record = {"method": "platt", "temperatures": {"tumor": 2.0, "vessel": 0.5},
              "default": 1.0, "biases": {"tumor": -1.0, "vessel": 0.5}, "default_bias": 0.0}
    cal_pt = _saved_model(tmp_path / "cal.pt", record)
    image = np.random.default_rng(0).integers(0, 255, (64, 64), dtype=np.uint8)
    raw = Predictor(raw_pt, score_threshold=0.0).step(image)
    assert raw, "the untrained model should propose boxes at threshold 0"
    calibrated = Predictor(cal_pt, score_threshold=0.0).step(image)
    assert [d["box"] for d in calibrated] == [d["box"] for d in raw]
    temps, biases = record["temperatures"], record["biases"]
    for r, c in zip(raw, calibrated):
        want = expit(logit(np.clip(r["score"], 1e-6, 1 - 1e-6)) / temps[r["category"]]
                     + biases[r["category"]])
        assert c["score"] == pytest.approx(want, abs=1e-4)
    # the threshold applies to calibrated scores, not raw ones
    cut = 0.5 * (min(d["score"] for d in calibrated) + max(d["score"] for d in calibrated))
    kept = Predictor(cal_pt, score_threshold=cut).step(image)
    assert [d["score"] for d in kept] == [d["score"] for d in calibrated if d["score"] >= cut]


def test_predict_coco_gives_calibrated_scores_and_raw_ones_on_request(tmp_path: Path):
    # an earlier run's record: temperatures alone, no bias
    record = {"method": "temperature", "temperatures": {"tumor": 2.0}, "default": 0.7}
    model_pt = _saved_model(tmp_path / "cal.pt", record)
    coco = make_tiny_coco(tmp_path / "data", videos=1, frames=2)
    calibrated = predict_coco(model_pt, coco, coco.parent / "img", score_threshold=0.0)
    raw = predict_coco(model_pt, coco, coco.parent / "img", score_threshold=0.0, calibrated=False)
    assert len(raw) == len(calibrated) > 0
    calibration = Calibration.from_dict(record)
    assert calibration == Calibration({"tumor": 2.0}, 0.7)
    names = {1: "tumor", 2: "vessel"}
    temps = {"tumor": 2.0, "vessel": 0.7}
    for r, c in zip(raw, calibrated):
        assert c["bbox"] == r["bbox"]
        want = expit(logit(np.clip(r["score"], 1e-6, 1 - 1e-6)) / temps[names[r["category_id"]]])
        assert c["score"] == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
def test_training_with_a_validation_set_stores_calibration_and_threshold(tmp_path: Path):
    coco = make_tiny_coco(tmp_path / "data")
    out = tmp_path / "run"
    summary = train(TrainConfig(coco=str(coco), images=str(coco.parent / "img"), out=str(out),
                                model="single", val_coco=str(coco), epochs=2, batch=4, size=64,
                                max_iters=4, warmup_iters=1))
    metrics = json.loads((out / "metrics.json").read_text())
    for record in (summary, metrics):
        assert set(record["calibration"]) >= {"method", "ece_before", "ece_after", "n_detections"}
        assert record["threshold"]["method"] == "validation-f1"
    stored = read_checkpoint(out)
    assert stored["threshold"] == metrics["threshold"]
    assert Calibration.from_dict(stored["calibration"]) == Calibration.from_dict(metrics["calibration"])
