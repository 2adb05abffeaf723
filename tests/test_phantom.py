"""The synthetic liver phantom: speckle statistics, exact boxes, sweeps, files and CLI."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest

from detector.phantom import (TUMOR, VESSEL, Anatomy, Branch, Geometry, PhantomVideo, Pose,
                              Renderer, Tumour, boxes_from_labels, decoded_frame_count, generate,
                              main, speckle_field, video_codec)

STRAIGHT_DOWN = dict(lateral=np.array([1.0, 0.0, 0.0]), depth=np.array([0.0, 0.0, 1.0]))


def pose_at(y: float = 0.0, x: float = 0.0) -> Pose:
    """A probe on the skin at (x, y) looking straight down; the plane's normal is +y."""
    return Pose(origin=np.array([x, y, 0.0]), **STRAIGHT_DOWN)


def render(anatomy: Anatomy, geom: Geometry, pose: Pose, seed: int = 0):
    renderer = Renderer(geom, anatomy, speckle_field(seed), np.random.default_rng(seed))
    image, labels = renderer.render(pose)
    boxes = boxes_from_labels(labels, anatomy.objects(), min_px=3)
    return image, boxes, renderer


@pytest.fixture(scope="module")
def small_set(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "set"
    generate(out, videos=2, frames=6, size=96, seed=5, scene_len=4)
    return out


# -- speckle ---------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["convex", "linear"])
def test_speckle_in_homogeneous_parenchyma_is_rayleigh(kind):
    geom = Geometry(kind, 128, depth_mm=120.0)
    renderer = Renderer(geom, Anatomy(texture=0.0), speckle_field(3), np.random.default_rng(0))
    env = renderer.grid(pose_at(4.0))["envelope"]
    below_wall = env[int(0.3 * geom.n_samples):]
    ratio = below_wall.mean() / below_wall.std()
    assert ratio == pytest.approx(1.91, abs=0.15)


def test_shadow_below_calcification_and_enhancement_below_fluid():
    geom = Geometry("linear", 128, depth_mm=70.0, width_mm=60.0)
    anatomy = Anatomy(branches=[Branch(np.array([[10.0, -30, 35], [10.0, 30, 35]]), 4.0,
                                       taper=1.0, kind="hepatic", wall_mm=0.0)],
                      calcifications=[(np.array([-12.0, 0.0, 30.0]), 1.5)], texture=0.0)
    renderer = Renderer(geom, anatomy, speckle_field(0), np.random.default_rng(0))
    db = renderer.grid(pose_at())["db"]
    cols = lambda x: slice(*(int(round((v + 30) / 60 * geom.n_beams)) for v in (x - 1.5, x + 1.5)))
    deep = slice(int(45 / 70 * geom.n_samples), int(65 / 70 * geom.n_samples))
    beside = db[deep, cols(-1.0)].mean()
    assert db[deep, cols(-12.0)].mean() < beside - 10        # acoustic shadow
    assert db[deep, cols(10.0)].mean() > beside + 1.0         # posterior enhancement


# -- ground truth ------------------------------------------------------------------------------
def test_box_matches_the_analytic_cross_section_as_the_plane_moves():
    geom = Geometry("linear", 128, depth_mm=70.0, width_mm=60.0)
    radius = 10.0
    anatomy = Anatomy(tumours=[Tumour(center=np.array([0.0, 0.0, 40.0]),
                                      semi_axes=np.full(3, radius))], texture=0.0)
    widths = []
    for h in (0.0, 5.0, 8.0, 9.5, 11.0):
        _, boxes, _ = render(anatomy, geom, pose_at(y=h))
        tumour = [b for b in boxes if b["category_id"] == TUMOR]
        if h > radius:
            assert tumour == []                       # the plane has left the tumour
            continue
        (box,) = tumour
        expected = 2 * np.sqrt(radius ** 2 - h ** 2) / geom.mm_per_px
        assert box["bbox"][2] == pytest.approx(expected, abs=2.0)
        assert box["bbox"][3] == pytest.approx(expected, abs=2.0)
        widths.append(box["bbox"][2])
    assert widths == sorted(widths, reverse=True)     # shrinks as the plane moves away


def test_boxes_are_clipped_to_the_visible_sector():
    geom = Geometry("convex", 128, depth_mm=120.0)
    half = np.deg2rad(geom.fov_deg) / 2
    # A tumour centred on the sector's right edge: only its inner half is visible.
    r = geom.radius_mm + 60.0
    centre = np.array([r * np.sin(half), 0.0, r * np.cos(half) - geom.radius_mm])
    anatomy = Anatomy(tumours=[Tumour(center=centre, semi_axes=np.full(3, 9.0))], texture=0.0)
    image, boxes, _ = render(anatomy, geom, pose_at())
    (box,) = boxes
    x, y, w, h = box["bbox"]
    # The sector's edge slopes outwards with depth: the box ends where the edge is at its
    # lowest row, and the half outside the sector is not boxed.
    edge = int(np.nonzero(geom.sector[y + h - 1])[0].max()) + 1
    assert abs((x + w) - edge) <= 2
    diameter = 18.0 / geom.mm_per_px
    assert w < 0.8 * diameter and h > 0.8 * diameter


def test_boxes_cover_what_the_frame_shows():
    geom = Geometry("convex", 192, depth_mm=120.0)
    anatomy = Anatomy(
        tumours=[Tumour(center=np.array([-20.0, 0.0, 55.0]), semi_axes=np.array([9.0, 8, 8]),
                        echo=0.3, kind="hypo")],
        branches=[Branch(np.array([[25.0, -30, 70], [25.0, 30, 72]]), 4.5, kind="portal",
                         wall_mm=1.0, wall_echo=2.5)], texture=0.0)
    image, boxes, _ = render(anatomy, geom, pose_at())
    by_cat = {b["category_id"]: b for b in boxes}
    assert set(by_cat) == {TUMOR, VESSEL}
    img = image.astype(np.float32)
    for cat, factor in ((TUMOR, 0.75), (VESSEL, 0.4)):
        x, y, w, h = by_cat[cat]["bbox"]
        inner = img[y + h // 4:y + 3 * h // 4, x + w // 4:x + 3 * w // 4].mean()
        ring = img[y - h // 2:y + h + h // 2, x - w // 2:x + w + w // 2].copy()
        ring[h // 2:h // 2 + h, w // 2:w // 2 + w] = np.nan
        assert inner < factor * np.nanmean(ring), cat


def test_sweep_frames_are_correlated_like_a_real_sweep():
    video = PhantomVideo.random(seed=0, index=1, n_frames=12, size=96)
    frames = [video.frame(k)[0].astype(np.float32) for k in range(12)]
    mask = video.geom.sector

    def ncc(a, b):
        a, b = a[mask] - a[mask].mean(), b[mask] - b[mask].mean()
        return float((a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum()))

    near = ncc(frames[0], frames[1])
    assert near > 0.7
    assert ncc(frames[0], frames[11]) < near - 0.15
    assert not np.array_equal(frames[0], frames[1])


def test_tracks_persist_between_consecutive_frames(small_set):
    coco = json.loads((small_set / "annotations.json").read_text())
    by_image: dict[int, dict[int, list]] = {}
    categories: dict[int, set] = {}
    for ann in coco["annotations"]:
        by_image.setdefault(ann["image_id"], {}).setdefault(ann["track_id"], []).append(ann["bbox"])
        categories.setdefault(ann["track_id"], set()).add(ann["category_id"])
    assert all(len(c) == 1 for c in categories.values())
    ious = []
    for img in coco["images"]:
        prev = img["prev_image_id"]
        if prev is None:
            continue
        for track, cur_boxes in by_image.get(img["id"], {}).items():
            if track in by_image.get(prev, {}):
                ious.append(max(_iou(a, b) for a in cur_boxes for b in by_image[prev][track]))
    assert len(ious) >= 5
    assert np.median(ious) > 0.6


def _iou(a, b):
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    iw = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    return inter / (aw * ah + bw * bh - inter)


# -- files -------------------------------------------------------------------------------------
def test_same_seed_same_set_whatever_the_workers(small_set, tmp_path):
    again = tmp_path / "again"
    generate(again, videos=2, frames=6, size=96, seed=5, scene_len=4, workers=2)
    assert (again / "annotations.json").read_text() == (small_set / "annotations.json").read_text()
    for png in sorted((small_set / "images").rglob("*.png")):
        twin = again / "images" / png.relative_to(small_set / "images")
        assert np.array_equal(cv2.imread(str(png), 0), cv2.imread(str(twin), 0)), png
    other = tmp_path / "other"
    generate(other, videos=1, frames=1, size=96, seed=6)
    assert not np.array_equal(cv2.imread(str(other / "images/video_0001/000000.png"), 0),
                              cv2.imread(str(small_set / "images/video_0001/000000.png"), 0))


def test_coco_is_complete_and_scores_ap_1_against_itself(small_set):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    gt = COCO(str(small_set / "annotations.json"))
    images = gt.dataset["images"]
    assert len(images) == 12 and min(i["id"] for i in images) == 1
    assert min(a["id"] for a in gt.dataset["annotations"]) == 1
    assert {c["id"]: c["name"] for c in gt.dataset["categories"]} == {1: "tumor", 2: "vessel"}
    for img in images:
        png = cv2.imread(str(small_set / "images" / img["file_name"]), cv2.IMREAD_UNCHANGED)
        assert png.shape == (96, 96) and png.dtype == np.uint8
        expected_prev = None if img["frame_index"] == 0 else img["id"] - 1
        assert img["prev_image_id"] == expected_prev
        assert img["patient_id"] == f"phantom-5-{img['video_id']:04d}"
    scenes = [(i["video_id"], i["scene_id"]) for i in images]
    assert [s for _, s in scenes] == [1, 1, 1, 1, 2, 2, 3, 3, 3, 3, 4, 4]
    dets = [{"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"],
             "score": 1.0} for a in gt.dataset["annotations"]]
    ev = COCOeval(gt, gt.loadRes(dets), "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ev.stats[0] == pytest.approx(1.0)


def test_mp4_holds_every_frame(small_set):
    coco = json.loads((small_set / "annotations.json").read_text())
    for video in coco["videos"]:
        path = small_set / video["file_name"]
        assert decoded_frame_count(path) == video["n_frames"] == 6
    assert coco["info"]["codec"] == video_codec(96)


def test_same_seed_same_video_file(small_set, tmp_path):
    again = tmp_path / "again"
    generate(again, videos=2, frames=6, size=96, seed=5, scene_len=4, workers=2)
    for name in ("videos/video_0001.mp4", "videos/video_0002.mp4", "annotations.json"):
        assert (again / name).read_bytes() == (small_set / name).read_bytes(), name


# -- CLI ---------------------------------------------------------------------------------------
def test_cli_writes_a_set(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["--out", str(out), "--videos", "1", "--frames", "3", "--size", "64",
                 "--seed", "2", "--quiet"]) == 0
    coco = json.loads((out / "annotations.json").read_text())
    assert len(coco["images"]) == 3 and (out / "videos/video_0001.mp4").is_file()
    assert "3 frames" in capsys.readouterr().out
    # An existing set is kept unless --overwrite is given.
    assert main(["--out", str(out), "--frames", "2", "--size", "64", "--quiet"]) == 2
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 3
    assert main(["--out", str(out), "--frames", "2", "--size", "64", "--quiet",
                 "--overwrite"]) == 0
    assert len(json.loads((out / "annotations.json").read_text())["images"]) == 2


@pytest.mark.parametrize("args", [["--videos", "0"], ["--frames", "x"], ["--size", "8"],
                                  ["--probe", "phased"], []])
def test_cli_bad_arguments_exit_2_with_one_line(tmp_path, capsys, args):
    out = tmp_path / "bad"
    argv = ([] if args == [] else ["--out", str(out)]) + args
    try:
        code = main(argv)
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
    assert not out.exists()
    assert not list(tmp_path.iterdir())
