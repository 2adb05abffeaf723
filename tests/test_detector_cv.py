"""Cross-validation grouped by patient, near-duplicates in one fold (detector/cv.py,
detector/near_duplicates.py)."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector import cv
from detector.near_duplicates import DEFAULT_MAX_DISTANCE, duplicate_groups, hamming, phash
from helpers import make_tiny_coco


def scan(seed: int, h: int = 120, w: int = 160) -> np.ndarray:
    """A grey image with ultrasound-like texture: blurred speckle, a dark lesion, a bright
    line, all placed by ``seed``."""
    rng = np.random.default_rng(seed)
    image = cv2.GaussianBlur(rng.integers(0, 160, (h, w)).astype(np.uint8), (0, 0), 2.0)
    image = cv2.addWeighted(image, 0.6, cv2.GaussianBlur(image, (0, 0), 12), 0.8, 0)
    cx, cy = int(rng.uniform(30, w - 30)), int(rng.uniform(30, h - 30))
    cv2.ellipse(image, (cx, cy), (int(rng.uniform(10, 25)), int(rng.uniform(8, 20))), 0, 0, 360,
                15, -1)
    y = int(rng.uniform(10, h - 10))
    cv2.line(image, (0, y), (w, y + int(rng.uniform(-30, 30))), 220, 3)
    return image


def copies(image: np.ndarray) -> dict[str, np.ndarray]:
    """What a public set's second copy of a scan looks like."""
    rng = np.random.default_rng(1)
    noisy = (image + rng.normal(0, 4, image.shape)).clip(0, 255).astype(np.uint8)
    _, jpeg = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 60])
    h, w = image.shape
    return {"noise": noisy,
            "smaller": cv2.resize(image, (int(w * 0.7), int(h * 0.7)), interpolation=cv2.INTER_AREA),
            "larger": cv2.resize(image, (int(w * 1.3), int(h * 1.3)), interpolation=cv2.INTER_LINEAR),
            "jpeg": cv2.imdecode(jpeg, cv2.IMREAD_GRAYSCALE),
            "gain": (image.astype(np.float32) * 1.2).clip(0, 255).astype(np.uint8)}


def test_a_copy_hashes_close_and_another_scan_far():
    original = scan(0)
    h0 = phash(original)
    for name, copy in copies(original).items():
        assert hamming(h0, phash(copy)) <= 6, name
    others = [hamming(h0, phash(scan(seed))) for seed in range(1, 21)]
    assert min(others) > DEFAULT_MAX_DISTANCE + 4
    assert 20 < float(np.mean(others)) < 44  # unrelated images: about half the 64 bits


def test_duplicate_groups_join_chains():
    a, b = phash(scan(0)), phash(scan(1))
    near_a = phash(copies(scan(0))["noise"])
    near_b = phash(copies(scan(1))["jpeg"])
    assert duplicate_groups([a, b, near_a, near_b]) == [[0, 2], [1, 3]]
    assert duplicate_groups([a, b, near_a], max_distance=-1) == [[0], [1], [2]]


def test_group_key_finds_the_patient_then_the_video_then_the_image():
    assert cv.group_key({"id": 1, "patient_id": "p1", "video_id": 3}) == "patient:p1"
    assert cv.group_key({"id": 1, "patient_code": "P007"}) == "patient:P007"
    assert cv.group_key({"id": 1, "patient": 4}) == "patient:4"
    assert cv.group_key({"id": 1, "video_id": 3}) == "video:3"
    assert cv.group_key({"id": 1}) == "image:1"
    assert cv.group_key({"id": 1, "patient_id": "p1", "video_id": 3}, "video") == "video:3"
    assert cv.group_key({"id": 1, "patient_id": "p1"}, "image") == "image:1"
    with pytest.raises(ValueError):
        cv.group_key({"id": 1}, "scanner")


@pytest.fixture()
def still_set(tmp_path: Path) -> tuple[dict, Path]:
    """30 stills: 28 of 14 patients (1-3 images each); image 30 is a copy of image 1 under
    another patient, image 29 a copy of image 5 (another patient again)."""
    rng = np.random.default_rng(0)
    images, seed = [], 100
    patients = [f"p{i}" for i in range(14) for _ in range(int(rng.integers(2, 4)))][:28]
    # scans far apart (> 20 bits), so the only near-duplicates are the two copies below
    scans: list[np.ndarray] = []
    while len(scans) < len(patients):
        seed += 1
        candidate = scan(seed)
        if all(hamming(phash(candidate), phash(other)) > 20 for other in scans):
            scans.append(candidate)
    for i, (patient, image) in enumerate(zip(patients, scans), start=1):
        cv2.imwrite(str(tmp_path / f"{i}.png"), image)
        images.append({"id": i, "file_name": f"{i}.png", "patient_id": patient})
    cv2.imwrite(str(tmp_path / "29.png"), copies(scans[4])["jpeg"])
    images.append({"id": 29, "file_name": "29.png", "patient_id": "other-a"})
    cv2.imwrite(str(tmp_path / "30.png"), copies(scans[0])["smaller"])
    images.append({"id": 30, "file_name": "30.png", "patient_id": "other-b"})
    return {"images": images, "annotations": [], "categories": []}, tmp_path


@pytest.mark.parametrize("folds,seed", [(2, 0), (3, 1), (5, 7)])
def test_folds_never_split_a_patient_or_a_near_duplicate(still_set, folds, seed):
    coco, root = still_set
    plan = cv.plan_folds(coco, root, folds, "patient", seed, DEFAULT_MAX_DISTANCE, 0.2)
    fold_of = {int(i): f for i, f in plan["fold_of"].items()}
    assert set(fold_of) == {img["id"] for img in coco["images"]}
    by_patient: dict[str, set[int]] = {}
    for img in coco["images"]:
        by_patient.setdefault(img["patient_id"], set()).add(fold_of[img["id"]])
    assert all(len(f) == 1 for f in by_patient.values())
    assert fold_of[30] == fold_of[1] and fold_of[29] == fold_of[5]
    pairs = {(a, b) for a, b, _ in plan["grouping"]["dup_pair_list"]}
    assert pairs == {(1, 30), (5, 29)}
    assert plan["grouping"]["dup_merged_groups"] == 2
    # balanced by images: no fold is further from another than the largest group
    counts = plan["fold_images"]
    assert sum(counts) == 30 and max(counts) - min(counts) <= plan["grouping"]["largest_group"]
    # a fold's validation images are whole groups of its training folds
    for k, val in enumerate(plan["val"]):
        assert val and all(fold_of[i] != k for i in val)
        val_patients = {img["patient_id"] for img in coco["images"] if img["id"] in val}
        train_patients = {img["patient_id"] for img in coco["images"]
                          if img["id"] not in val and fold_of[img["id"]] != k}
        assert not val_patients & train_patients
    # the same seed gives the same folds
    again = cv.plan_folds(coco, root, folds, "patient", seed, DEFAULT_MAX_DISTANCE, 0.2)
    assert again["fold_of"] == plan["fold_of"] and again["val"] == plan["val"]


def test_without_hashing_copies_may_land_apart(still_set):
    coco, root = still_set
    plan = cv.plan_folds(coco, root, 5, "patient", 0, -1, 0.0)
    assert plan["grouping"]["dup_pairs"] == 0 and plan["val"] == [[]] * 5


def test_assign_folds_balances_image_counts_and_refuses_too_few_groups():
    sizes = [5, 4, 3, 3, 2, 2, 1, 1, 1]
    folds = cv.assign_folds(sizes, 3, seed=0)
    load = [sum(s for s, f in zip(sizes, folds) if f == k) for k in range(3)]
    assert sorted(load) == [7, 7, 8]
    with pytest.raises(ValueError, match="cannot fill"):
        cv.assign_folds([3, 2], 3)


def test_a_subset_brings_the_previous_frames_it_needs():
    coco = {"images": [{"id": 1, "file_name": "a"}, {"id": 2, "file_name": "b", "prev_image_id": 1}],
            "annotations": [{"id": 1, "image_id": 1}, {"id": 2, "image_id": 2}]}
    part = cv.subset(coco, {2}, "test")
    assert [i["id"] for i in part["images"]] == [2]
    assert [a["id"] for a in part["annotations"]] == [2]
    assert [i["id"] for i in part["context_images"]] == [1]


def test_mean_sd_skips_missing_values():
    assert cv.mean_sd([0.5, None, 0.7]) == pytest.approx({"mean": 0.6, "sd": 0.1414213, "n": 2})
    assert cv.mean_sd([None]) == {"mean": None, "sd": None, "n": 0}


def test_cv_refuses_bad_arguments_with_one_line(tmp_path: Path, capsys):
    tiny = make_tiny_coco(tmp_path / "data", videos=2, frames=2)
    args = ["--coco", str(tiny), "--images", str(tiny.parent / "img"), "--out",
            str(tmp_path / "cv")]
    assert cv.main(args + ["--folds", "1"]) == 2
    assert "--folds must be at least 2" in capsys.readouterr().err
    assert cv.main(args + ["--folds", "3"]) == 2  # two videos cannot fill three folds
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error")]
    assert len(errors) == 1 and "cannot fill 3 folds" in errors[0]


@pytest.mark.slow
def test_a_two_fold_cv_run_trains_evaluates_and_summarises(tmp_path: Path, capsys):
    tiny = make_tiny_coco(tmp_path / "data", videos=4, frames=2, w=64, h=64)
    out = tmp_path / "cv"
    args = ["--coco", str(tiny), "--images", str(tiny.parent / "img"), "--out", str(out),
            "--folds", "2", "--group-by", "patient", "--model", "single", "--size", "64",
            "--max-iters", "1", "--epochs", "1", "--batch", "2", "--val-fraction", "0.3",
            "--dup-distance", "-1",  # the tiny videos are one blob on noise: alike to a hash
            "--threads", "1"]
    assert cv.main(args) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "mean ± sd" in printed and "AP50" in printed
    summary = json.loads((out / "cv.json").read_text())
    assert summary["format"] == "sonolabel-detector-cv" and len(summary["folds"]) == 2
    assert summary["grouping"]["groups"] == 4  # the four videos
    for k, row in enumerate(summary["folds"], start=1):
        assert row["fold"] == k and row["test_images"] == 4 and row["val_images"] == 2
        assert row["train_images"] == 2
        assert (out / f"fold_{k}" / "run" / "model.pt").is_file()
        test_ids = {i["id"] for i in json.loads((out / f"fold_{k}" / "test.json").read_text())["images"]}
        train_ids = {i["id"] for i in json.loads((out / f"fold_{k}" / "train.json").read_text())["images"]}
        assert not test_ids & train_ids
    assert summary["mean_sd"]["AP50"]["n"] == 2
    assert set(summary["mean_sd"]["sensitivity"]) == {"tumor", "vessel"}
    # a second call with the same options reuses the folds; other options are refused
    assert cv.main(args) == 0
    assert json.loads((out / "cv.json").read_text())["folds"] == summary["folds"]
    capsys.readouterr()
    assert cv.main(args + ["--lr", "1e-3"]) == 2
    assert "other settings" in capsys.readouterr().err
