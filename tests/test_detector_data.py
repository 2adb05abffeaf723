"""Frame pairing by the COCO keys, identical geometry on both frames, box-safe erasing."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.data import PairDataset, predecessors, select_categories
from detector.transforms import Augment, augment_pair, erase_region

GEOMETRY_ONLY = Augment(gain=(1, 1), contrast=(1, 1), speckle=(0, 0), erase=0.0)


def _coco(images, annotations=(), **extra):
    return {"info": {}, "images": list(images), "annotations": list(annotations),
            "categories": [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}], **extra}


def test_predecessor_rules():
    coco = _coco(
        [{"id": 1, "file_name": "a0.png", "video_id": "a", "frame_index": 0},
         {"id": 2, "file_name": "a1.png", "video_id": "a", "frame_index": 1},
         {"id": 3, "file_name": "a3.png", "video_id": "a", "frame_index": 3},  # a2 missing
         {"id": 4, "file_name": "b7.png", "video_id": "b", "frame_index": 7},  # b6 as context
         {"id": 5, "file_name": "c5.png", "prev_image_id": 50},
         {"id": 6, "file_name": "d5.png", "prev_file_name": "d4.png"},
         {"id": 7, "file_name": "still.png"},
         {"id": 8, "file_name": "e1.png", "prev_image_id": 2}],
        context_images=[{"id": 40, "file_name": "b6.png", "video_id": "b", "frame_index": 6},
                        {"id": 50, "file_name": "c4.png"}])
    assert predecessors(coco) == {1: None, 2: "a0.png", 3: None, 4: "b6.png", 5: "c4.png",
                                  6: "d4.png", 7: None, 8: "a1.png"}


def test_unknown_prev_image_id_is_an_error():
    with pytest.raises(ValueError, match="prev_image_id 99"):
        predecessors(_coco([{"id": 1, "file_name": "x.png", "prev_image_id": 99}]))


def test_categories_follow_the_file_or_the_names_given():
    coco = _coco([])
    assert [c["name"] for c in select_categories(coco)] == ["tumor", "vessel"]
    assert select_categories(coco, ["vessel"]) == [{"id": 2, "name": "vessel"}]
    with pytest.raises(ValueError, match="liver"):
        select_categories(coco, ["liver"])


def _write(path: Path, image: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), image)


def test_dataset_pairs_each_frame_with_its_predecessor(tmp_path: Path):
    levels = {"v0.png": 10, "v1.png": 60, "v2.png": 110, "ctx.png": 160, "solo.png": 210}
    for name, level in levels.items():
        _write(tmp_path / name, np.full((40, 50), level, np.uint8))
    coco = _coco([
        {"id": 1, "file_name": "v0.png", "video_id": 1, "frame_index": 0},
        {"id": 2, "file_name": "v1.png", "video_id": 1, "frame_index": 1},
        {"id": 3, "file_name": "v2.png", "video_id": 1, "frame_index": 2},
        {"id": 4, "file_name": "solo.png", "prev_image_id": 9},
        {"id": 5, "file_name": "ctx.png"},
    ], context_images=[{"id": 9, "file_name": "ctx.png"}])
    ds = PairDataset(coco, tmp_path, size=64)
    pairs = {}
    for i in range(len(ds)):
        item = ds[i]
        pairs[item["image_id"]] = (round(float(item["image"].mean()) * 255),
                                   round(float(item["prev_image"].mean()) * 255))
        assert item["image"].shape == item["prev_image"].shape == (3, 40, 50)
    assert pairs == {1: (10, 10), 2: (60, 10), 3: (110, 60), 4: (210, 160), 5: (160, 160)}


def test_missing_previous_file_is_reported(tmp_path: Path):
    _write(tmp_path / "a.png", np.zeros((20, 20), np.uint8))
    coco = _coco([{"id": 1, "file_name": "a.png", "prev_file_name": "gone.png"}])
    with pytest.raises(FileNotFoundError, match="gone.png"):
        PairDataset(coco, tmp_path)


def _scene(h: int = 120, w: int = 160) -> tuple[np.ndarray, np.ndarray]:
    """A textured frame with two bright boxes."""
    rng = np.random.default_rng(1)
    image = cv2.GaussianBlur(rng.integers(20, 120, (h, w)).astype(np.uint8), (0, 0), 1.5)
    boxes = np.array([[20, 30, 50, 60], [100, 70, 140, 110]], np.float32)
    for x0, y0, x1, y1 in boxes.astype(int):
        image[y0:y1, x0:x1] = 250
    return image, boxes


def test_same_geometry_on_both_frames_and_boxes_follow(tmp_path: Path):
    image, boxes = _scene()
    # two files with the same content: any difference after augmentation is a geometry mismatch
    _write(tmp_path / "prev.png", image)
    _write(tmp_path / "cur.png", image)
    anns = [{"id": i + 1, "image_id": 1, "category_id": 1, "iscrowd": 0,
             "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])],
             "area": float((b[2] - b[0]) * (b[3] - b[1]))} for i, b in enumerate(boxes)]
    coco = _coco([{"id": 1, "file_name": "cur.png", "prev_file_name": "prev.png"}], anns)
    ds = PairDataset(coco, tmp_path, size=160, augment=GEOMETRY_ONLY, seed=3)
    changed = 0
    for epoch in range(12):
        ds.epoch = epoch
        item = ds[0]
        cur = (item["image"][0].numpy() * 255).round()
        prev = (item["prev_image"][0].numpy() * 255).round()
        assert np.array_equal(cur, prev)
        assert float(item["flow"].abs().max()) < 0.1
        changed += not np.array_equal(cur, image.astype(np.float32))
        for x0, y0, x1, y1 in item["target"]["boxes"].numpy():
            inside = cur[int(np.ceil(y0)) + 1:int(y1) - 1, int(np.ceil(x0)) + 1:int(x1) - 1]
            assert inside.size and inside.min() > 200, "a box no longer covers its object"
    assert changed >= 6


def test_erasing_never_covers_a_box():
    rng = np.random.default_rng(0)
    boxes = np.array([[10.5, 10.2, 40.7, 30.1], [60, 50, 90, 95], [5, 70, 20, 99]], np.float32)
    found = 0
    for _ in range(300):
        region = erase_region((100, 100), boxes, rng, (0.05, 0.4))
        if region is None:
            continue
        found += 1
        x0, y0, x1, y1 = region
        mask = np.zeros((100, 100), bool)
        mask[y0:y1, x0:x1] = True
        for bx0, by0, bx1, by1 in boxes:
            assert not mask[int(by0):int(np.ceil(by1)), int(bx0):int(np.ceil(bx1))].any()
    assert found > 200


def test_augmented_pair_keeps_every_box_unerased():
    image, boxes = _scene()
    image[:] = np.maximum(image, 120)  # nothing dark but the erasing itself
    image[30:60, 20:50] = 250
    image[70:110, 100:140] = 250
    aug = Augment(hflip=0.5, scale=(1, 1), gain=(1, 1), contrast=(1, 1), speckle=(0, 0),
                  erase=1.0)
    erased = 0
    for seed in range(30):
        rng = np.random.default_rng(seed)
        cur, prev, out_boxes, labels = augment_pair(image, image, boxes, np.array([1, 2]), rng,
                                                    aug)
        assert len(out_boxes) == 2 and list(labels) == [1, 2]
        erased += bool((cur < 40).any())
        assert np.array_equal(cur < 40, prev < 40)
        for x0, y0, x1, y1 in out_boxes.astype(int):
            assert cur[y0:y1, x0:x1].min() >= 120
    assert erased >= 25


def test_coco_file_on_disk_round_trip(tmp_path: Path):
    _write(tmp_path / "img" / "a.png", np.zeros((30, 40), np.uint8))
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(_coco([{"id": 1, "file_name": "a.png"}])))
    ds = PairDataset(path, tmp_path / "img")
    assert len(ds) == 1 and ds[0]["target"]["boxes"].shape == (0, 4)


@pytest.mark.slow
def test_real_frames_pair_with_their_unlabelled_predecessor():
    from helpers import shared_file

    ann = shared_file("rus-abdominal/annotations.json")
    ds = PairDataset(ann, ann.parent, size=256)
    item = ds[0]
    image = ds.images[0]
    assert ds.prev[image["id"]] == image["prev_file_name"] != image["file_name"]
    assert not np.array_equal(item["image"].numpy(), item["prev_image"].numpy())
    assert item["image"].shape[1:] == (192, 256)
    assert [c["name"] for c in ds.categories] == ["tumor", "vessel", "liver"]
    assert len(item["target"]["boxes"]) == len(
        [a for a in ds.coco["annotations"] if a["image_id"] == image["id"]])
