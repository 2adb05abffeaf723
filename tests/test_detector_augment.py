"""Ultrasound augmentations keep every box on its object; anchors fitted to the boxes; weight
EMA (detector/transforms.py, detector/anchors.py, detector/ema.py)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from detector.anchors import fit_anchors, kmeans_1d
from detector.ema import WeightEMA
from detector.transforms import (AUGMENT_SETS, Augment, augment_pair, augment_set, clip_boxes,
                                 depth_crop_pair, gamma_map, hflip_pair, tgc_curve)

PHOTOMETRIC_ONLY = Augment(hflip=0.0, scale=(1, 1), erase=0.0, tgc=0.4, gamma=(0.6, 1.6))


def scene(seed: int = 0, h: int = 120, w: int = 160):
    """Dark speckle with bright rectangles (objects) and their exact boxes."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 40, (h, w)).astype(np.uint8)
    boxes = np.array([[10, 15, 40, 45], [90, 30, 150, 60], [60, 80, 100, 115]], np.float32)
    for x0, y0, x1, y1 in boxes.astype(int):
        image[y0:y1, x0:x1] = 220
    return image, boxes, np.array([1, 2, 1])


def object_extent(image: np.ndarray, box: np.ndarray, level: int = 120) -> np.ndarray:
    """The bright object's bounding box inside ``box`` grown by 3 px (xyxy, pixel edges)."""
    h, w = image.shape
    x0, y0 = max(0, int(box[0]) - 3), max(0, int(box[1]) - 3)
    x1, y1 = min(w, int(np.ceil(box[2])) + 3), min(h, int(np.ceil(box[3])) + 3)
    bright = image[y0:y1, x0:x1] > level
    # rows and columns mostly bright are the object's; a lone bright speckle is not
    ys, xs = np.nonzero(bright.mean(axis=1) > 0.3)[0], np.nonzero(bright.mean(axis=0) > 0.3)[0]
    assert len(xs) and len(ys), "no object under the box"
    return np.array([x0 + xs.min(), y0 + ys.min(), x0 + xs.max() + 1, y0 + ys.max() + 1])


def test_hflip_moves_each_box_with_its_object():
    image, boxes, _ = scene()
    cur, prev, out = hflip_pair(image, image, boxes)
    for box in out:
        assert object_extent(cur, box) == pytest.approx(box, abs=0.01)
    assert np.array_equal(cur, prev)


@pytest.mark.parametrize("keep", [0.9, 0.6, 0.45, 0.2])
def test_depth_crop_clips_or_drops_boxes_by_the_one_rule(keep):
    image, boxes, labels = scene()
    cur, prev, out, out_labels = depth_crop_pair(image, image.copy(), boxes, labels, keep, 0.4)
    rows = round(120 * keep)
    assert cur.shape == prev.shape == (rows, 160)
    assert np.array_equal(cur, image[:rows])
    expected, expected_labels = clip_boxes(boxes, labels, 160, rows, 0.4)
    assert np.array_equal(out, expected) and np.array_equal(out_labels, expected_labels)
    for box in out:
        assert box[3] <= rows
        assert object_extent(cur, box) == pytest.approx(box, abs=0.01)
    # a box below the cut, or with less than 40 % left above it, is gone with its label
    for box, label in zip(boxes, labels):
        visible = max(0.0, min(box[3], rows) - box[1]) / (box[3] - box[1])
        assert (visible >= 0.4 and min(box[3], rows) - box[1] >= 2) == any(
            np.allclose(b[:3], box[:3]) for b in out)


def test_clip_boxes_keeps_labels_with_their_boxes():
    boxes = np.array([[-10, 0, 10, 10], [0, 0, 5, 5], [95, 95, 120, 120]], np.float32)
    out, labels = clip_boxes(boxes, np.array([1, 2, 3]), 100, 100, 0.4)
    assert out.tolist() == [[0, 0, 10, 10], [0, 0, 5, 5]] and labels.tolist() == [1, 2]


def test_photometric_changes_never_touch_boxes_or_geometry():
    image, boxes, labels = scene()
    for seed in range(10):
        rng = np.random.default_rng(seed)
        cur, prev, out, out_labels = augment_pair(image, image, boxes, labels, rng,
                                                  PHOTOMETRIC_ONLY)
        assert cur.shape == image.shape and np.array_equal(out, boxes)
        assert np.array_equal(out_labels, labels)


def test_tgc_curve_is_a_smooth_bounded_gain_over_depth():
    curve = tgc_curve(200, 0.3, 4, np.random.default_rng(0))
    assert curve.shape == (200, 1)
    assert np.exp(-0.3) - 1e-6 <= curve.min() and curve.max() <= np.exp(0.3) + 1e-6
    assert np.abs(np.diff(np.log(curve[:, 0]))).max() < 0.05  # no step between rows


def test_gamma_keeps_black_and_white_and_order():
    ramp = np.arange(256, dtype=np.uint8)[None, :]
    for gamma in (0.6, 1.0, 1.6):
        out = gamma_map(ramp, gamma)[0]
        assert out[0] == 0 and out[-1] == 255 and np.all(np.diff(out.astype(int)) >= 0)


@pytest.mark.parametrize("name", ["default", "ultrasound"])
def test_every_augmented_box_still_bounds_its_object(name):
    image, boxes, labels = scene()
    aug = augment_set(name)
    for seed in range(40):
        rng = np.random.default_rng(seed)
        cur, prev, out, out_labels = augment_pair(image, image, boxes, labels, rng, aug)
        assert len(out) == len(out_labels) and cur.shape == prev.shape
        for box in out:
            # interpolation in a zoom smears an edge by up to about a pixel
            assert object_extent(cur, box, level=100) == pytest.approx(box, abs=2.0), seed


def test_the_default_set_is_the_recipe_as_it_was():
    assert AUGMENT_SETS["default"] == Augment()
    assert Augment().tgc == 0 and Augment().depth_crop == 0 and Augment().gamma == (1.0, 1.0)
    assert augment_set("none") is None
    with pytest.raises(ValueError, match="unknown augment set"):
        augment_set("strong")


def test_anchors_follow_the_training_boxes():
    rng = np.random.default_rng(0)
    small = [(w, w) for w in rng.uniform(12, 20, 200)]
    wide = [(w, w / 2) for w in rng.uniform(80, 120, 200)]
    sizes, ratios = fit_anchors(small + wide)
    flat = [s for level in sizes for s in level]
    assert len(sizes) == 4 and all(len(level) == 2 for level in sizes)
    assert flat == sorted(flat) and len(set(flat)) == 8
    assert 10 <= flat[0] <= 20 and 55 <= flat[-1] <= 90  # sqrt(w h) of the wide boxes
    assert len(ratios) == 3 and min(ratios) == pytest.approx(0.5, abs=0.05)
    assert max(ratios) == pytest.approx(1.0, abs=0.05)
    assert fit_anchors(small + wide) == (sizes, ratios)  # deterministic
    with pytest.raises(ValueError, match="no training boxes"):
        fit_anchors([])
    assert kmeans_1d(np.array([1.0, 1.1, 5.0, 5.2]), 2) == pytest.approx([1.05, 5.1])


def test_weight_ema_averages_and_swaps_back():
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    ema = WeightEMA(model, 0.5)
    start = model.weight.detach().clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    ema.update(model)  # step 1: decay min(0.5, 2 / 11)
    d = 2 / 11
    assert torch.allclose(ema.shadow["weight"], start * d + (start + 1) * (1 - d))
    raw = model.weight.detach().clone()
    with ema.swapped_in(model):
        assert torch.allclose(model.weight, ema.shadow["weight"])
    assert torch.equal(model.weight, raw)
    other = WeightEMA(model, 0.9)
    other.load_state_dict(ema.state_dict())
    assert other.steps == 1 and torch.equal(other.shadow["weight"], ema.shadow["weight"])
    with pytest.raises(ValueError):
        WeightEMA(model, 1.0)


@pytest.mark.slow
def test_training_with_fitted_anchors_ema_and_the_ultrasound_set(tmp_path):
    from detector.checkpoint import read_checkpoint
    from detector.model import ModelConfig
    from detector.predict import predict_coco
    from detector.train import TrainConfig, train
    from helpers import make_tiny_coco

    tiny = make_tiny_coco(tmp_path / "data")
    run = tmp_path / "run"
    summary = train(TrainConfig(coco=str(tiny), images=str(tiny.parent / "img"), out=str(run),
                                model="single", val_coco=str(tiny), epochs=1, batch=4, size=64,
                                augment_set="ultrasound", fit_anchors=True, ema=0.9))
    assert summary["train_config"]["augment_set"] == "ultrasound"
    config = read_checkpoint(run)["config"]
    # the tiny set's boxes are 22 px on 96 px frames: about 15 px at 64 px input
    assert config["anchor_sizes"] != ModelConfig().anchor_sizes
    assert all(10 <= s <= 30 for level in config["anchor_sizes"] for s in level)
    last = torch.load(run / "last.pt", map_location="cpu", weights_only=False)
    assert last["ema"]["steps"] == 2 and last["ema"]["decay"] == 0.9
    saved = read_checkpoint(run)["state_dict"]
    key = next(k for k in saved if saved[k].is_floating_point() and "roi_heads" in k)
    assert torch.equal(saved[key], last["ema"]["shadow"][key])  # model.pt holds the average
    assert not torch.equal(saved[key], last["model"][key])
    assert isinstance(predict_coco(run, tiny, tiny.parent / "img"), list)
