"""The training-time bench validates on whole patient and near-duplicate groups: a near-duplicate
of a validation image is never trained on, or the validation AP it prints would flatter."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np

SPEC = importlib.util.spec_from_file_location(
    "train_speed", Path(__file__).resolve().parents[1] / "bench" / "train_speed.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def test_split_keeps_patients_and_near_duplicates_on_one_side(tmp_path):
    rng = np.random.default_rng(0)
    images, annotations = [], []
    for i in range(1, 41):
        picture = rng.integers(0, 255, (64, 64), dtype=np.uint8)
        cv2.imwrite(str(tmp_path / f"{i}.png"), picture)
        images.append({"id": i, "file_name": f"{i}.png", "width": 64, "height": 64,
                       "patient_id": f"p{(i - 1) // 2}"})  # two images a patient
        annotations.append({"id": i, "image_id": i, "category_id": 1, "bbox": [4, 4, 20, 20],
                            "area": 400, "iscrowd": 0})
    # image 40 is a slightly brighter copy of image 1 (another patient)
    copy = cv2.imread(str(tmp_path / "1.png"), cv2.IMREAD_GRAYSCALE)
    cv2.imwrite(str(tmp_path / "40.png"), cv2.add(copy, 3))
    coco = {"images": images, "annotations": annotations,
            "categories": [{"id": 1, "name": "tumor"}]}
    train, val = bench.split(coco, tmp_path, 10)
    train_ids = {img["id"] for img in train["images"]}
    val_ids = {img["id"] for img in val["images"]}
    assert not train_ids & val_ids and train_ids | val_ids == set(range(1, 41))
    assert 8 <= len(val_ids) <= 14
    for i in range(1, 40, 2):  # patients whole
        assert ({i, i + 1} <= val_ids) or not ({i, i + 1} & val_ids)
    chain = {1, 2, 40}  # patient p0 and the near-duplicate of its image
    assert chain <= val_ids or not chain & val_ids
    assert {a["image_id"] for a in val["annotations"]} == val_ids
