"""COCO detection data as (previous frame, current frame, boxes) pairs.

A frame's predecessor is found, in this order, from keys of its COCO ``images`` entry:

1. ``prev_image_id``: the id of another entry in ``images`` or in ``context_images`` (frames
   exported only as context, without annotations);
2. ``prev_file_name``: a file under the images directory;
3. ``video_id`` + ``frame_index``: the entry (in ``images`` or ``context_images``) of the
   same video with ``frame_index - 1``. Only the immediate predecessor counts: a gap means
   the frames are not consecutive, and the frame is treated as a video's first;
4. otherwise (a video's first frame, a still image) the frame itself.

Images are read as grey (ultrasound is grey; colour overlays are dropped) and given to the
model as three equal channels. Labels are positions in the category list (1-based), which by
default is every category of the file in id order; with the project's ids
(tumour = 1, vessel = 2) label and category id coincide.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from detector.flow import compute_flow, flow_tensor
from detector.transforms import Augment, augment_pair, resize_pair, shrunk_size

DEFAULT_CATEGORIES = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def load_coco(path: str | Path) -> dict[str, Any]:
    with open(path, encoding="utf-8") as f:
        coco = json.load(f)
    if not isinstance(coco, dict) or not isinstance(coco.get("images"), list):
        raise ValueError(f"{path} is not a COCO detection file (no 'images' list)")
    return coco


def select_categories(coco: dict[str, Any], names: list[str] | None = None
                      ) -> list[dict[str, Any]]:
    """The categories the model learns, in label order (label = index + 1)."""
    cats = sorted(coco.get("categories") or DEFAULT_CATEGORIES, key=lambda c: c["id"])
    if names:
        by_name = {c["name"]: c for c in cats}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise ValueError(f"categories {', '.join(missing)} not in the COCO file "
                             f"(it has {', '.join(by_name)})")
        cats = [by_name[n] for n in names]
    return [{"id": int(c["id"]), "name": str(c["name"])} for c in cats]


def predecessors(coco: dict[str, Any]) -> dict[int, str | None]:
    """image id -> file name of its previous frame, or None when it is its own."""
    known = {img["id"]: img for img in coco.get("context_images", [])}
    known.update({img["id"]: img for img in coco["images"]})
    by_frame = {(img["video_id"], img["frame_index"]): img for img in known.values()
                if img.get("video_id") is not None and img.get("frame_index") is not None}
    out: dict[int, str | None] = {}
    for img in coco["images"]:
        prev = None
        if img.get("prev_image_id") is not None:
            if img["prev_image_id"] not in known:
                raise ValueError(f"image {img['id']}: prev_image_id {img['prev_image_id']} is "
                                 "in neither 'images' nor 'context_images'")
            prev = known[img["prev_image_id"]]["file_name"]
        elif img.get("prev_file_name"):
            prev = img["prev_file_name"]
        elif img.get("video_id") is not None and img.get("frame_index") is not None:
            before = by_frame.get((img["video_id"], img["frame_index"] - 1))
            prev = before["file_name"] if before else None
        out[img["id"]] = None if prev == img["file_name"] else prev
    return out


def read_grey(path: str | Path) -> np.ndarray:
    image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if image is None:
        raise ValueError(f"cannot read image {path}")
    return image


def grey_to_tensor(grey: np.ndarray) -> torch.Tensor:
    """HxW uint8 -> 3xHxW float in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(grey)).float().div_(255).expand(3, -1, -1)


class PairDataset(Dataset):
    """Items: dict(image, prev_image (3xHxW float), flow (2xhxw, current -> previous, zero
    when the frame is its own predecessor), target (boxes xyxy, labels), image_id,
    orig_size (h, w) of the file; image and boxes are in the shrunk frame's pixels).

    Frames are shrunk to the model size here (cheaper augmentation and flow); ``augment``
    (an :class:`Augment`, or None for evaluation) draws from ``seed`` and the item index
    and epoch, so runs repeat."""

    def __init__(self, coco: dict[str, Any] | str | Path, images_dir: str | Path,
                 categories: list[dict[str, Any]] | None = None, size: int = 512,
                 flow_side: int | None = None, augment: Augment | None = None,
                 seed: int = 0, temporal: bool = True):
        self.coco = load_coco(coco) if not isinstance(coco, dict) else coco
        self.images_dir = Path(images_dir)
        self.categories = categories or select_categories(self.coco)
        self.label_of = {c["id"]: i + 1 for i, c in enumerate(self.categories)}
        self.size, self.flow_side = size, flow_side or size // 2
        self.augment, self.seed, self.temporal, self.epoch = augment, seed, temporal, 0
        self.images = list(self.coco["images"])
        self.prev = predecessors(self.coco)
        self.boxes: dict[int, list[tuple[list[float], int]]] = {img["id"]: []
                                                                for img in self.images}
        for ann in self.coco.get("annotations", []):
            x, y, w, h = ann["bbox"]
            if ann.get("iscrowd") or w < 1 or h < 1 or ann["category_id"] not in self.label_of:
                continue
            if ann["image_id"] in self.boxes:
                self.boxes[ann["image_id"]].append(([x, y, x + w, y + h],
                                                    self.label_of[ann["category_id"]]))
        names = [img["file_name"] for img in self.images]
        names += [p for p in self.prev.values() if p] if temporal else []
        missing = [n for n in names if not (self.images_dir / n).is_file()]
        if missing:
            raise FileNotFoundError(f"{len(missing)} image file(s) missing under "
                                    f"{self.images_dir}, e.g. {missing[0]}")

    def __len__(self) -> int:
        return len(self.images)

    def box_sizes(self) -> list[tuple[float, float]]:
        """(w, h) of every box as the model sees it: shrunk with its frame to ``size``
        (the frame's size from its COCO ``width``/``height``, else from the file)."""
        out = []
        for img in self.images:
            if not self.boxes[img["id"]]:
                continue
            h, w = img.get("height"), img.get("width")
            if not h or not w:
                h, w = read_grey(self.images_dir / img["file_name"]).shape[:2]
            scale = shrunk_size(h, w, self.size)[1] / w
            out += [((b[2] - b[0]) * scale, (b[3] - b[1]) * scale) for b, _ in self.boxes[img["id"]]]
        return out

    def pair_files(self, index: int) -> tuple[Path, Path]:
        img = self.images[index]
        prev = self.prev[img["id"]] if self.temporal else None
        return self.images_dir / img["file_name"], self.images_dir / (prev or img["file_name"])

    def __getitem__(self, index: int) -> dict[str, Any]:
        img = self.images[index]
        cur_path, prev_path = self.pair_files(index)
        cur = read_grey(cur_path)
        prev = read_grey(prev_path) if prev_path != cur_path else cur
        if prev.shape != cur.shape:
            prev = cv2.resize(prev, cur.shape[::-1], interpolation=cv2.INTER_AREA)
        items = self.boxes[img["id"]]
        boxes = np.array([b for b, _ in items], np.float32).reshape(-1, 4)
        labels = np.array([lab for _, lab in items], np.int64)
        same = prev is cur
        orig_size = cur.shape[:2]
        cur, prev, boxes = resize_pair(cur, prev, boxes, self.size)
        if self.augment is not None:
            rng = np.random.default_rng((self.seed, self.epoch, index))
            cur, prev, boxes, labels = augment_pair(cur, prev, boxes, labels, rng, self.augment)
            same = same and np.array_equal(cur, prev)
        if same or not self.temporal:
            flow = np.zeros((1, 1, 2), np.float32)
        else:
            flow = compute_flow(cur, prev, self.flow_side)
        return {
            "image": grey_to_tensor(cur),
            "prev_image": grey_to_tensor(prev),
            "flow": flow_tensor(flow),
            "target": {"boxes": torch.from_numpy(boxes.astype(np.float32)).reshape(-1, 4),
                       "labels": torch.from_numpy(labels.astype(np.int64))},
            "image_id": img["id"],
            "orig_size": orig_size,
        }


def collate(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return items
