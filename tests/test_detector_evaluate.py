"""Detector evaluation: COCO AP against pycocotools, per-scene sensitivity, FP tracks per
minute, paired statistics and the two command lines, on hand-made ground truth."""
from __future__ import annotations

import contextlib
import copy
import io
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats as sps

from detector.evaluate import (choose_threshold, coco_metrics, compare_main, compare_reports,
                               evaluate_detections, fp_tracks_per_minute, main, scene_sensitivity)
from detector.stats import bootstrap_ci, paired_stats
from helpers import shared_file

CATS = [{"id": 1, "name": "tumor"}, {"id": 2, "name": "vessel"}]


def coco(images, boxes, info=True, **extra):
    """images: list of image dicts or ids; boxes: (image_id, category_id, [x, y, w, h])."""
    imgs = [im if isinstance(im, dict) else {"id": im} for im in images]
    for im in imgs:
        im.setdefault("width", 200)
        im.setdefault("height", 200)
        im.setdefault("file_name", f"{im['id']}.png")
    anns = [{"id": k, "image_id": i, "category_id": c, "bbox": list(b), "area": b[2] * b[3],
             "iscrowd": 0} for k, (i, c, b) in enumerate(boxes, start=1)]
    gt = {"images": imgs, "annotations": anns, "categories": copy.deepcopy(CATS), **extra}
    if info:
        gt["info"] = {"description": "hand-made"}
    return gt


def det(image_id, cat, box, score):
    return {"image_id": image_id, "category_id": cat, "bbox": list(box), "score": score}


def pycocotools_eval(gt, dets):
    """Reference numbers straight from pycocotools' COCOeval."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        g = COCO()
        g.dataset = copy.deepcopy(gt)
        g.createIndex()
        d = g.loadRes(copy.deepcopy(dets))
        ev = COCOeval(g, d, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return ev


def random_case(seed: int, n_images: int = 40):
    rng = np.random.default_rng(seed)
    boxes, dets = [], []
    for i in range(1, n_images + 1):
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(5, 50, 2)
            c = int(rng.integers(1, 3))
            boxes.append((i, c, [x, y, w, h]))
            if rng.random() < 0.8:
                dets.append(det(i, c if rng.random() < 0.9 else 3 - c,
                                [x + rng.normal(0, 3), y + rng.normal(0, 3), w * rng.uniform(.8, 1.2), h],
                                float(rng.random())))
        for _ in range(int(rng.integers(0, 3))):
            x, y = rng.uniform(0, 150, 2)
            w, h = rng.uniform(5, 50, 2)
            dets.append(det(i, int(rng.integers(1, 3)), [x, y, w, h], float(rng.random())))
    return coco(range(1, n_images + 1), boxes), dets


# --------------------------------------------------------------------------- COCO AP

def test_perfect_detections_score_one():
    gt = coco([1, 2], [(1, 1, [10, 10, 30, 30]), (2, 2, [50, 60, 40, 20])])
    dets = [det(1, 1, [10, 10, 30, 30], 0.9), det(2, 2, [50, 60, 40, 20], 0.8)]
    m = coco_metrics(gt, dets)
    assert m["overall"] == {"AP": 1.0, "AP50": 1.0, "AP75": 1.0}
    assert m["per_class"]["tumor"]["AP"] == 1.0 and m["per_class"]["vessel"]["AP"] == 1.0
    assert m["n_images"] == 2 and m["n_gt"] == 2
    assert len(m["pr_curves"]["tumor"]["recall"]) == 101
    assert m["pr_curves"]["tumor"]["precision"] == [1.0] * 101


def test_a_missed_box_halves_recall():
    gt = coco([1], [(1, 1, [10, 10, 30, 30]), (1, 1, [100, 100, 30, 30])])
    m = coco_metrics(gt, [det(1, 1, [10, 10, 30, 30], 0.9)])
    # 101-point interpolation: precision 1 up to recall 0.5 (51 points), 0 after
    assert m["overall"]["AP50"] == pytest.approx(51 / 101)
    assert m["pr_curves"]["tumor"]["precision"] == [1.0] * 51 + [0.0] * 50


def test_false_positive_above_true_positive_halves_precision():
    gt = coco([1], [(1, 1, [10, 10, 30, 30])])
    dets = [det(1, 1, [120, 120, 30, 30], 0.9), det(1, 1, [10, 10, 30, 30], 0.8)]
    assert coco_metrics(gt, dets)["overall"]["AP50"] == pytest.approx(0.5)
    # ranked below the true positive, the same false positive costs nothing
    dets[0]["score"] = 0.5
    assert coco_metrics(gt, dets)["overall"]["AP50"] == pytest.approx(1.0)


def test_false_positives_on_negative_frames_reduce_ap():
    gt = coco([1, 2], [(1, 1, [10, 10, 30, 30])])  # image 2 has no boxes
    tp = det(1, 1, [10, 10, 30, 30], 0.8)
    assert coco_metrics(gt, [tp])["overall"]["AP"] == pytest.approx(1.0)
    with_fp = coco_metrics(gt, [tp, det(2, 1, [10, 10, 30, 30], 0.9)])
    assert with_fp["overall"]["AP"] == pytest.approx(0.5)
    assert with_fp["per_class"]["vessel"]["AP"] is None  # no vessel boxes at all


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("backend", ["faster_coco_eval", "pycocotools"])
def test_matches_pycocotools_cocoeval(seed, backend):
    gt, dets = random_case(seed)
    ev = pycocotools_eval(gt, dets)
    m = coco_metrics(gt, dets, backend=backend)
    assert [m["overall"][k] for k in ("AP", "AP50", "AP75")] == pytest.approx(list(ev.stats[:3]), abs=1e-12)
    precision = ev.eval["precision"]  # [T, R, K, A, M]
    for k, cat in enumerate(CATS):
        p = precision[:, :, k, 0, -1]
        assert m["per_class"][cat["name"]]["AP"] == pytest.approx(p[p > -1].mean(), abs=1e-12)
        assert m["per_class"][cat["name"]]["AP50"] == pytest.approx(p[0][p[0] > -1].mean(), abs=1e-12)
        assert m["per_class"][cat["name"]]["AP75"] == pytest.approx(p[5][p[5] > -1].mean(), abs=1e-12)
        assert m["pr_curves"][cat["name"]]["precision"] == pytest.approx(list(p[0]), abs=1e-12)


def test_empty_detections_give_zero_not_a_crash():
    gt = coco([1, 2], [(1, 1, [10, 10, 30, 30])])
    m = coco_metrics(gt, [])
    assert m["overall"] == {"AP": 0.0, "AP50": 0.0, "AP75": 0.0}
    assert m["per_class"]["tumor"]["AP"] == 0.0 and m["per_class"]["vessel"]["AP"] is None
    # faster-coco-eval runs on an empty list and agrees
    from faster_coco_eval import COCO, COCOeval_faster

    g = COCO()
    g.dataset = copy.deepcopy(gt)
    g.createIndex()
    ev = COCOeval_faster(g, g.loadRes([]), "bbox")
    ev.evaluate(), ev.accumulate(), ev.summarize()
    assert list(ev.stats[:3]) == [0.0, 0.0, 0.0]


def test_annotation_id_zero_is_renumbered_on_a_copy():
    gt = coco([1], [(1, 1, [10, 10, 30, 30]), (1, 2, [60, 60, 30, 30])])
    gt["annotations"][0]["id"] = 0
    gt["annotations"][1]["id"] = 1
    dets = [det(1, 1, [10, 10, 30, 30], 0.9), det(1, 2, [60, 60, 30, 30], 0.9)]
    # the pitfall guarded against: pycocotools itself scores the perfect box 0
    assert pycocotools_eval(gt, dets).eval["precision"][0, :, 0, 0, -1].max() == 0.0
    before = copy.deepcopy(gt)
    m = coco_metrics(gt, dets)
    assert m["overall"]["AP"] == 1.0 and m["per_class"]["tumor"]["AP"] == 1.0
    assert gt == before


def test_missing_info_key_and_missing_area_are_filled():
    gt = coco([1], [(1, 1, [10, 10, 30, 30])], info=False)
    del gt["annotations"][0]["area"], gt["annotations"][0]["iscrowd"]
    for backend in ("pycocotools", "faster_coco_eval"):
        assert coco_metrics(gt, [det(1, 1, [10, 10, 30, 30], 0.9)], backend=backend)["overall"]["AP"] == pytest.approx(1.0)


def test_detection_on_unknown_image_is_a_clear_error():
    gt = coco([1], [(1, 1, [10, 10, 30, 30])])
    with pytest.raises(ValueError, match="image_id 99 is not in the ground truth"):
        coco_metrics(gt, [det(99, 1, [10, 10, 30, 30], 0.9)])
    with pytest.raises(ValueError, match="category_id 7"):
        coco_metrics(gt, [det(1, 7, [10, 10, 30, 30], 0.9)])
    with pytest.raises(ValueError, match="bbox"):
        coco_metrics(gt, [det(1, 1, [10, 10, 30], 0.9)])


# --------------------------------------------------------------------------- sensitivity

def test_one_detection_over_two_boxes_hits_only_one():
    gt = coco([1], [(1, 1, [0, 0, 10, 10]), (1, 1, [2, 0, 10, 10])])
    one = [det(1, 1, [1, 0, 10, 10], 0.9)]  # IoU 0.82 with both
    s = scene_sensitivity(gt, one, threshold=0.5)
    assert s["scenes"]["image:1"]["per_class"]["tumor"] == {"hits": 1, "boxes": 2, "sensitivity": 0.5}
    two = one + [det(1, 1, [1, 0, 10, 10], 0.8)]
    assert scene_sensitivity(gt, two, threshold=0.5)["scenes"]["image:1"]["per_class"]["tumor"]["hits"] == 2


def test_greedy_matching_gives_the_best_box_to_the_highest_score():
    gt = coco([1], [(1, 1, [0, 0, 10, 10]), (1, 1, [4, 0, 10, 10])])
    # the high-scoring detection fits box 2 best; the low one overlaps only box 1 enough
    dets = [det(1, 1, [3, 0, 10, 10], 0.9), det(1, 1, [0, 0, 10, 10], 0.6)]
    cell = scene_sensitivity(gt, dets, threshold=0.5)["scenes"]["image:1"]["per_class"]["tumor"]
    assert cell["hits"] == 2
    # above the low score only the first detection counts
    cell = scene_sensitivity(gt, dets, threshold=0.7)["scenes"]["image:1"]["per_class"]["tumor"]
    assert cell["hits"] == 1


def test_score_threshold_iou_and_class_decide_a_hit():
    gt = coco([1, 2, 3], [(1, 1, [10, 10, 20, 20]), (2, 1, [10, 10, 20, 20]), (3, 1, [10, 10, 20, 20])])
    dets = [det(1, 1, [10, 10, 20, 20], 0.4),      # below 0.5
            det(2, 2, [10, 10, 20, 20], 0.9),      # wrong class
            det(3, 1, [20, 10, 20, 20], 0.9)]      # IoU 1/3
    s = scene_sensitivity(gt, dets, threshold=0.5)
    assert [s["scenes"][f"image:{i}"]["per_class"]["tumor"]["hits"] for i in (1, 2, 3)] == [0, 0, 0]
    s = scene_sensitivity(gt, dets, threshold=0.3)
    assert [s["scenes"][f"image:{i}"]["per_class"]["tumor"]["hits"] for i in (1, 2, 3)] == [1, 0, 0]
    assert s["scenes"]["image:1"]["per_class"]["vessel"]["sensitivity"] is None


def test_scenes_from_scene_id_video_chunks_and_single_images():
    images = ([{"id": i, "video_id": "v", "frame_index": 100 - i} for i in range(1, 8)]  # reversed
              + [{"id": 20, "scene_id": "s1"}, {"id": 21, "scene_id": "s1"}, {"id": 30}])
    boxes = [(i, 1, [10, 10, 20, 20]) for i in (1, 2, 3, 7, 20, 21)]
    gt = coco(images, boxes)
    dets = [det(i, 1, [10, 10, 20, 20], 0.9) for i in (1, 20)]
    s = scene_sensitivity(gt, dets, threshold=0.5, scene_frames=5)
    assert set(s["scenes"]) == {"video:v#000", "video:v#001", "scene:s1", "image:30"}
    # frame order, not image order: frames 93..97 are images 7..3
    assert s["scenes"]["video:v#000"]["image_ids"] == [7, 6, 5, 4, 3]
    assert s["scenes"]["video:v#000"]["per_class"]["tumor"] == {"hits": 0, "boxes": 2, "sensitivity": 0.0}
    assert s["scenes"]["video:v#001"]["per_class"]["tumor"] == {"hits": 1, "boxes": 2, "sensitivity": 0.5}
    assert s["scenes"]["scene:s1"]["per_class"]["tumor"]["sensitivity"] == 0.5
    assert s["scenes"]["image:30"]["per_class"]["tumor"]["sensitivity"] is None
    summary = s["summary"]["tumor"]
    assert summary["n_scenes"] == 3
    assert summary["mean"] == pytest.approx(np.mean([0.0, 0.5, 0.5]))
    assert summary["sd"] == pytest.approx(np.std([0.0, 0.5, 0.5], ddof=1))
    assert (summary["hits"], summary["boxes"]) == (2, 6)


def _threshold_case():
    gt = coco([1, 2, 3, 4], [(1, 1, [10, 10, 20, 20]), (2, 1, [10, 10, 20, 20]), (3, 1, [10, 10, 20, 20])])
    dets = [det(1, 1, [10, 10, 20, 20], 0.9), det(4, 1, [10, 10, 20, 20], 0.8),
            det(2, 1, [10, 10, 20, 20], 0.7), det(4, 1, [50, 50, 20, 20], 0.6),
            det(4, 1, [90, 90, 20, 20], 0.5), det(4, 1, [130, 130, 20, 20], 0.4),
            det(3, 1, [10, 10, 20, 20], 0.3)]
    return gt, dets


def test_choose_threshold_by_f1_and_by_recall():
    gt, dets = _threshold_case()
    # F1 = 2TP / (TP + FP + n_gt): 0.9 -> .5, 0.7 -> .667, 0.3 -> .6: the best is 0.7
    assert choose_threshold(gt, dets) == 0.7
    assert choose_threshold(gt, dets, method="recall", target_recall=0.6) == 0.7
    assert choose_threshold(gt, dets, method="recall", target_recall=0.9) == 0.3
    with pytest.raises(ValueError, match="no detection matches"):
        choose_threshold(gt, [det(4, 1, [10, 10, 20, 20], 0.9)])


def _video(n_frames, video_id="v", start_id=1):
    return [{"id": start_id + k, "video_id": video_id, "frame_index": k} for k in range(n_frames)]


def test_one_persistent_false_positive_is_one_track():
    images = _video(10)
    gt = coco(images, [(i, 1, [10, 10, 20, 20]) for i in range(1, 11)])
    dets = [det(i, 1, [10, 10, 20, 20], 0.9) for i in range(1, 11)]
    dets += [det(i, 1, [100 + 2 * i, 100, 30, 30], 0.95) for i in range(1, 6)]  # drifts slowly
    dets += [det(8, 1, [150, 150, 20, 20], 0.1)]  # below the recall-0.9 threshold
    r = fp_tracks_per_minute(gt, dets, fps=30)
    o = r["overall"]
    assert o["threshold"] == 0.9 and o["recall"] == 1.0
    assert (o["fp_detections"], o["fp_tracks"]) == (5, 1)
    minutes = 10 / 30 / 60
    assert r["minutes"] == pytest.approx(minutes)
    assert o["fp_tracks_per_minute"] == pytest.approx(1 / minutes)
    assert o["fp_detections_per_minute"] == pytest.approx(5 / minutes)
    assert r["per_class"]["tumor"]["fp_tracks"] == 1
    assert r["per_class"]["vessel"]["fp_tracks"] is None  # no vessel boxes: no operating point


def test_scattered_false_positives_are_separate_tracks():
    gt = coco(_video(6), [(1, 1, [10, 10, 20, 20])])
    dets = [det(1, 1, [10, 10, 20, 20], 0.9)]
    dets += [det(i, 1, [30 * i, 120, 20, 20], 0.95) for i in range(1, 6)]  # jumps each frame
    assert fp_tracks_per_minute(gt, dets, fps=30)["overall"]["fp_tracks"] == 5
    # the same place but alternating classes, or in frames of no video: nothing links
    alternating = [dets[0]] + [det(i, 1 + i % 2, [100, 100, 20, 20], 0.95) for i in range(1, 6)]
    r = fp_tracks_per_minute(gt, alternating, fps=30)
    assert r["overall"]["fp_tracks"] == 5
    loose = coco(range(1, 7), [(1, 1, [10, 10, 20, 20])])
    same_place = [dets[0]] + [det(i, 1, [100, 100, 20, 20], 0.95) for i in range(1, 6)]
    assert fp_tracks_per_minute(loose, same_place, fps=30)["overall"]["fp_tracks"] == 5
    assert fp_tracks_per_minute(gt, same_place, fps=30)["overall"]["fp_tracks"] == 1


def test_two_videos_do_not_link_and_fps_comes_from_the_file():
    images = _video(3, "a", 1) + _video(3, "b", 4)
    gt = coco(images, [(1, 1, [10, 10, 20, 20])], info=False)
    gt["info"] = {"fps": 10}
    # the last frame of video a and the first of b hold the same false positive
    dets = [det(1, 1, [10, 10, 20, 20], 0.9), det(3, 1, [100, 100, 20, 20], 0.95),
            det(4, 1, [100, 100, 20, 20], 0.95)]
    r = fp_tracks_per_minute(gt, dets)
    assert r["overall"]["fp_tracks"] == 2
    assert r["minutes"] == pytest.approx(6 / 10 / 60)
    gt["images"][0]["fps"] = 20  # a per-image rate wins over info
    assert fp_tracks_per_minute(gt, dets)["minutes"] == pytest.approx((1 / 20 + 5 / 10) / 60)
    del gt["info"]["fps"]
    del gt["images"][0]["fps"]
    assert fp_tracks_per_minute(gt, dets)["fps"] == 30.0


def test_unreached_recall_uses_the_best_recall():
    gt = coco(_video(2), [(1, 1, [10, 10, 20, 20]), (2, 1, [10, 10, 20, 20])])
    dets = [det(1, 1, [10, 10, 20, 20], 0.6), det(2, 1, [100, 100, 20, 20], 0.9),
            det(2, 1, [150, 150, 20, 20], 0.2)]
    o = fp_tracks_per_minute(gt, dets, fps=30)["overall"]
    assert (o["threshold"], o["recall"], o["fp_detections"]) == (0.6, 0.5, 1)


# --------------------------------------------------------------------------- paired statistics

def test_paired_stats_match_scipy():
    a = [0.2, 0.5, 0.0, 1.0, 0.4, 0.6, 0.3, 0.8]
    b = [0.4, 0.5, 0.5, 1.0, 0.8, 0.7, 0.6, 0.9]
    s = paired_stats(a, b, n_resamples=2000, seed=3)
    t = sps.ttest_rel(b, a)
    w = sps.wilcoxon(b, a)
    assert s["n"] == 8
    assert s["a"]["mean"] == pytest.approx(np.mean(a)) and s["a"]["sd"] == pytest.approx(np.std(a, ddof=1))
    assert s["mean_diff"] == pytest.approx(np.mean(b) - np.mean(a))
    assert s["t_test"]["t"] == pytest.approx(t.statistic) and s["t_test"]["p"] == pytest.approx(t.pvalue)
    assert s["wilcoxon"]["statistic"] == pytest.approx(w.statistic)
    assert s["wilcoxon"]["p"] == pytest.approx(w.pvalue)


def test_bootstrap_ci_is_seeded_and_contains_the_mean_difference():
    rng = np.random.default_rng(1)
    diffs = rng.normal(0.15, 0.3, size=30)
    lo, hi = bootstrap_ci(diffs, 10000, seed=0)
    assert lo < diffs.mean() < hi
    assert (lo, hi) == bootstrap_ci(diffs, 10000, seed=0)
    assert (lo, hi) != bootstrap_ci(diffs, 10000, seed=1)
    # about 2 standard errors either side
    se = diffs.std(ddof=1) / np.sqrt(diffs.size)
    assert hi - lo == pytest.approx(2 * 1.96 * se, rel=0.15)


def test_identical_models_give_p_one_without_errors():
    s = paired_stats([0.5, 0.2, 1.0], [0.5, 0.2, 1.0])
    assert s["wilcoxon"] == {"statistic": 0.0, "p": 1.0}
    assert s["t_test"]["p"] == 1.0 and s["mean_diff"] == 0.0 and s["ci95"] == [0.0, 0.0]
    json.dumps(s, allow_nan=False)
    one = paired_stats([0.5], [1.0])
    assert one["t_test"]["p"] is None and one["a"]["sd"] is None


def _two_model_reports():
    images = _video(20)
    boxes = [(i, 1, [10, 10, 20, 20]) for i in range(1, 21)] + [(i, 2, [60, 60, 30, 30]) for i in range(1, 21)]
    gt = coco(images, boxes)
    found_a = {1, 2, 6, 11, 12, 13, 16}
    found_b = {1, 2, 3, 6, 7, 8, 11, 12, 13, 14, 16, 17}
    vessels = [det(i, 2, [60, 60, 30, 30], 0.9) for i in range(1, 21)]
    da = [det(i, 1, [10, 10, 20, 20], 0.9) for i in found_a] + vessels
    db = [det(i, 1, [10, 10, 20, 20], 0.9) for i in found_b] + vessels
    return gt, (evaluate_detections(gt, da, threshold=0.5, model={"name": "single"}),
                evaluate_detections(gt, db, threshold=0.5, model={"name": "two_frame"}))


def test_compare_reports_pairs_scenes():
    _, (ra, rb) = _two_model_reports()
    c = compare_reports(ra, rb, n_resamples=1000)
    tumor = c["classes"]["tumor"]
    # four scenes of five frames: A finds 2,1,3,1 of 5; B 3,3,4,2
    a, b = [0.4, 0.2, 0.6, 0.2], [0.6, 0.6, 0.8, 0.4]
    assert tumor["n"] == 4 and c["n_common_scenes"] == 4
    assert tumor["a"]["mean"] == pytest.approx(np.mean(a)) and tumor["b"]["mean"] == pytest.approx(np.mean(b))
    assert tumor["t_test"]["p"] == pytest.approx(sps.ttest_rel(b, a).pvalue)
    assert c["classes"]["vessel"]["wilcoxon"]["p"] == 1.0
    assert "tumor" in c["table"] and "single" in c["table"] and "two_frame" in c["table"]


def test_compare_reports_rejects_different_ground_truth():
    gt, (ra, rb) = _two_model_reports()
    other = copy.deepcopy(gt)
    for im in other["images"]:
        im["video_id"] = "w"
    rc = evaluate_detections(other, [], threshold=0.5)
    with pytest.raises(ValueError, match="share no scene"):
        compare_reports(ra, rc)
    fewer = copy.deepcopy(gt)
    fewer["annotations"] = fewer["annotations"][1:]
    rd = evaluate_detections(fewer, [], threshold=0.5)
    with pytest.raises(ValueError, match="not on the same ground truth"):
        compare_reports(ra, rd)
    with pytest.raises(ValueError, match="no per-scene sensitivity"):
        compare_reports(ra, {"coco": {}})


def test_report_records_threshold_choice_and_is_strict_json():
    gt, dets = _threshold_case()
    r = evaluate_detections(gt, dets, val={"gt": gt, "detections": dets}, model={"name": "m"})
    assert r["threshold"]["value"] == 0.7 and r["threshold"]["method"] == "validation-f1"
    assert r["sensitivity"]["threshold"] == 0.7
    assert r["model"] == {"name": "m"}
    json.dumps(r, allow_nan=False)
    assert evaluate_detections(gt, dets)["threshold"]["method"].startswith("default")
    with pytest.raises(ValueError, match="not both"):
        evaluate_detections(gt, dets, threshold=0.5, val=(gt, dets))


# --------------------------------------------------------------------------- command lines

def _write(path: Path, payload) -> Path:
    path.write_text(json.dumps(payload))
    return path


def test_evaluate_cli_writes_a_report(tmp_path, capsys):
    gt, dets = _threshold_case()
    ann, dj = _write(tmp_path / "ann.json", gt), _write(tmp_path / "dets.json", dets)
    out = tmp_path / "reports" / "r.json"
    rc = main(["--detections", str(dj), "--coco", str(ann), "--out", str(out),
               "--val-coco", str(ann), "--val-detections", str(dj), "--threshold-method", "recall",
               "--target-recall", "0.9", "--fps", "25"])
    assert rc == 0, capsys.readouterr().err
    report = json.loads(out.read_text())
    assert report["threshold"] == {"value": 0.3, "method": "validation-recall", "target_recall": 0.9,
                                   "validation": {"n_images": 4, "n_gt": 3}}
    assert report["coco"]["overall"]["AP"] == pytest.approx(coco_metrics(gt, dets)["overall"]["AP"])
    assert report["fp_per_minute"]["fps"] == 25.0
    assert report["model"]["name"] == "dets"
    assert "AP50" in capsys.readouterr().out


def test_evaluate_cli_with_a_run_predicts_test_and_validation(tmp_path, monkeypatch, capsys):
    import sys
    import types

    gt, dets = _threshold_case()
    ann = _write(tmp_path / "ann.json", gt)
    val_ann = _write(tmp_path / "val.json", gt)
    run = tmp_path / "run"
    run.mkdir()
    (tmp_path / "img").mkdir()
    calls = []

    # the model itself is tested elsewhere: stand in for it, to check what the command asks of it
    def predict_coco(run_dir, coco_path, images_dir, score_threshold=0.001, **kwargs):
        calls.append((Path(run_dir), Path(coco_path), Path(images_dir), kwargs.get("device")))
        return copy.deepcopy(dets)

    def read_checkpoint(path):
        assert Path(path) == run
        return {"config": {"arch": "two_frame"}, "categories": CATS, "train": {"epoch": 3},
                "state_dict": object()}

    monkeypatch.setitem(sys.modules, "detector.predict", types.SimpleNamespace(predict_coco=predict_coco))
    monkeypatch.setitem(sys.modules, "detector.checkpoint",
                        types.SimpleNamespace(read_checkpoint=read_checkpoint))
    out = tmp_path / "r.json"
    assert main(["--run", str(run), "--coco", str(ann), "--images", str(tmp_path / "img"),
                 "--val-coco", str(val_ann), "--val-images", str(tmp_path / "img"),
                 "--out", str(out), "--device", "cuda"]) == 0, capsys.readouterr().err
    assert [(c[1].name, c[3]) for c in calls] == [("ann.json", "cuda"), ("val.json", "cuda")]
    report = json.loads(out.read_text())
    assert report["model"]["name"] == "run" and report["model"]["config"] == {"arch": "two_frame"}
    assert report["model"]["train"] == {"epoch": 3} and "state_dict" not in report["model"]
    assert report["threshold"]["value"] == 0.7
    assert report["coco"] == coco_metrics(gt, dets)
    # a run without a model file: one error line, no report
    monkeypatch.delitem(sys.modules, "detector.checkpoint")
    monkeypatch.delitem(sys.modules, "detector.predict")
    assert main(["--run", str(run), "--coco", str(ann), "--images", str(tmp_path / "img"),
                 "--out", str(tmp_path / "r2.json")]) == 2
    assert "model" in _error_line(capsys) and not (tmp_path / "r2.json").exists()


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ")
    return err[0]


def test_evaluate_cli_bad_input_exits_2_and_writes_nothing(tmp_path, capsys):
    gt, dets = _threshold_case()
    ann = _write(tmp_path / "ann.json", gt)
    out = tmp_path / "r.json"
    assert main(["--detections", str(tmp_path / "none.json"), "--coco", str(ann), "--out", str(out)]) == 2
    assert "does not exist" in _error_line(capsys)
    (tmp_path / "bad.json").write_text("{not json")
    assert main(["--detections", str(tmp_path / "bad.json"), "--coco", str(ann), "--out", str(out)]) == 2
    assert "not valid JSON" in _error_line(capsys)
    foreign = _write(tmp_path / "foreign.json", [det(99, 1, [0, 0, 5, 5], 0.9)])
    assert main(["--detections", str(foreign), "--coco", str(ann), "--out", str(out)]) == 2
    assert "image_id 99" in _error_line(capsys)
    assert main(["--coco", str(ann), "--out", str(out)]) == 2
    _error_line(capsys)
    assert main(["--detections", str(ann), "--coco", str(ann), "--out", str(out), "--bogus"]) == 2
    _error_line(capsys)
    assert main(["--detections", str(ann), "--coco", str(ann), "--out", str(out), "--threshold", "x"]) == 2
    _error_line(capsys)
    assert not out.exists() and not list(tmp_path.glob(".r.json*"))


def test_compare_cli_prints_table_and_json(tmp_path, capsys):
    _, (ra, rb) = _two_model_reports()
    a, b = _write(tmp_path / "a.json", ra), _write(tmp_path / "b.json", rb)
    assert compare_main([str(a), str(b), "--resamples", "500"]) == 0
    table = capsys.readouterr().out
    assert "t-test p" in table and "Wilcoxon p" in table
    tumor_row = next(line for line in table.splitlines() if line.startswith("tumor"))
    assert "0.350 ± 0.191" in tumor_row and "0.600 ± 0.163" in tumor_row and "+0.250" in tumor_row
    assert compare_main([str(a), str(b), "--json", "--resamples", "500"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["classes"]["tumor"]["n"] == 4


def test_compare_cli_bad_input_exits_2(tmp_path, capsys):
    gt, (ra, _) = _two_model_reports()
    a = _write(tmp_path / "a.json", ra)
    assert compare_main([str(a), str(tmp_path / "missing.json")]) == 2
    assert "does not exist" in _error_line(capsys)
    (tmp_path / "bad.json").write_text("[1, 2")
    assert compare_main([str(a), str(tmp_path / "bad.json")]) == 2
    assert "not valid JSON" in _error_line(capsys)
    other = copy.deepcopy(gt)
    for im in other["images"]:
        im["video_id"] = "elsewhere"
    c = _write(tmp_path / "c.json", evaluate_detections(other, [], threshold=0.5))
    assert compare_main([str(a), str(c)]) == 2
    assert "share no scene" in _error_line(capsys)
    junk = _write(tmp_path / "junk.json", {"sensitivity": {"scenes": {"x": 1}}})
    assert compare_main([str(a), str(junk)]) == 2
    _error_line(capsys)
    assert compare_main([str(a)]) == 2
    _error_line(capsys)


def test_dispatch_through_python_m_detector(tmp_path, capsys):
    from detector.__main__ import main as dispatch

    gt, dets = _threshold_case()
    ann, dj = _write(tmp_path / "ann.json", gt), _write(tmp_path / "d.json", dets)
    assert dispatch(["evaluate", "--detections", str(dj), "--coco", str(ann),
                     "--out", str(tmp_path / "r.json"), "--threshold", "0.5"]) == 0
    assert json.loads((tmp_path / "r.json").read_text())["threshold"]["method"] == "fixed"


@pytest.mark.slow
def test_real_video_frames_evaluate_by_video_scenes():
    ann = shared_file("rus-abdominal/annotations.json")
    gt = json.loads(ann.read_text())
    rng = np.random.default_rng(0)
    dets = [det(a["image_id"], a["category_id"],
                [v + float(rng.normal(0, 2)) for v in a["bbox"][:2]] + a["bbox"][2:], 0.5 + rng.random() / 2)
            for a in gt["annotations"] if rng.random() < 0.7]
    r = evaluate_detections(ann, dets, threshold=0.5)
    assert r["coco"]["overall"]["AP50"] > 0.5
    videos = {im["video_id"] for im in gt["images"]}
    assert {key.split("#")[0] for key in r["sensitivity"]["scenes"]} == {f"video:{v}" for v in videos}
    assert r["sensitivity"]["summary"]["tumor"]["n_scenes"] == 0
    json.dumps(r, allow_nan=False)
