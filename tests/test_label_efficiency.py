"""The label-efficiency bench chooses its N training images by whole groups (a near-duplicate
chain is trained on whole or not at all) and spreads N phantom frames over every sweep; no
training here."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from detector.cv import assign_folds, image_groups

SPEC = importlib.util.spec_from_file_location(
    "label_efficiency", Path(__file__).resolve().parents[1] / "bench" / "label_efficiency.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)


def _groups() -> list[list[int]]:
    rng = np.random.default_rng(0)
    sizes = rng.integers(1, 6, size=120)
    out, next_id = [], 1
    for s in sizes:
        out.append(list(range(next_id, next_id + int(s))))
        next_id += int(s)
    return out


def test_pick_groups_takes_whole_groups_exactly_n_and_is_seeded():
    groups = _groups()
    for n in (25, 50, 100, 200):
        picked = bench.pick_groups(groups, n, seed=3)
        assert len(picked) == n == len(set(picked))
        chosen = set(picked)
        assert all(set(g) <= chosen or not set(g) & chosen for g in groups)
        assert picked == bench.pick_groups(groups, n, seed=3)
    assert bench.pick_groups(groups, 100, seed=3) != bench.pick_groups(groups, 100, seed=4)
    total = sum(len(g) for g in groups)
    assert sorted(bench.pick_groups(groups, 10 * total, seed=0)) == list(range(1, total + 1))


def test_no_near_duplicate_of_a_test_image_is_trained_on():
    # images 1-2 share a patient; 3 is a near-duplicate of 1 (hash 1 bit apart) under another id
    images = [{"id": 1, "patient_id": "a"}, {"id": 2, "patient_id": "a"},
              {"id": 3, "patient_id": "b"}]
    images += [{"id": i, "patient_id": f"p{i}"} for i in range(4, 13)]
    hashes = [0b1, 0b0 | (1 << 40), 0b0] + [(1 << 20) * i * 0x1F1F for i in range(4, 13)]
    groups, _ = image_groups(images, "patient", hashes, max_distance=3)
    fold_of = assign_folds([len(g) for g in groups], 3, seed=0)
    ids = [[images[i]["id"] for i in g] for g in groups]
    for fold in range(3):
        test = {i for g, f in zip(ids, fold_of) if f == fold for i in g}
        pool = [g for g, f in zip(ids, fold_of) if f != fold]
        picked = set(bench.pick_groups(pool, 5, seed=0))
        assert not picked & test
        assert ({1, 2, 3} <= test) or not ({1, 2, 3} & test)


def test_spread_frames_covers_every_sweep_evenly():
    videos = {v: [v * 100 + f for f in range(1, 21)] for v in range(1, 21)}
    picked = bench.spread_frames(videos, 25, seed=0)
    assert len(picked) == 25 == len(set(picked))
    per_video = [sum(1 for p in picked if p // 100 == v) for v in videos]
    assert min(per_video) >= 1 and max(per_video) <= 2
    assert sorted(bench.spread_frames(videos, 400, seed=0)) == sorted(sum(videos.values(), []))
    two = [p for p in bench.spread_frames(videos, 40, seed=0) if p // 100 == 7]
    assert two == [701, 720]  # the ends of the sweep, not two neighbours
