"""Labelling effort: a simulated annotator replays held-out ground truth and counts actions.

    python bench/labeling_effort.py [--run RUN_DIR] [--videos 3] [--frames 40] [--size 256]
                                    [--scene-length 20]

Strategies, on held-out phantom sweeps (exact boxes on every frame) cut into scenes of
``--scene-length`` frames, as the app cuts a sweep without cuts by default (key P, the
interpolation and tracks stay within a scene; 0 or more than ``--frames``: one scene a sweep):

* manual: every box drawn on every frame;
* interpolation every k frames: key frames drawn (a box seen before costs one adjust), the
  frames between get boxes interpolated linearly per track between the key frames;
* flow propagation: the first frame drawn, then each frame starts from the previous frame's
  finished boxes carried by optical flow (``annotator.services.propagate``, as key P does);
* pre-labels + propagation: the first frame starts from the model's boxes; each later frame
  from the previous frame's finished boxes carried by flow plus the model's boxes where no
  carried box of their class overlaps them (the app's rule: a carried box takes the place of
  a pre-label it overlaps; pre-labels elsewhere catch objects entering the plane); the
  pre-labels the slider hides that no finished box took over are still undecided for the
  review gate: one Shift+N for the scene rejects them;
* track: per object of the scene (:func:`annotator_tracks`: the region a person sees go on
  from frame to frame), keyframes on the object's first and last frame, then the track
  engine (``annotator.services.track_propagation.propagate_track``, key T) carries it through
  the scene. Then, as in the workspace, a checking pass in frame order: the first frame whose
  propagated box is off (IoU < 0.7 with the truth, or no box where the object goes on: where
  propagation stopped, "needs a look") becomes a keyframe (adjust when the propagated box had
  IoU >= 0.3, else draw), only the spans it bounds are re-propagated, and the pass goes on
  from there until every frame of the object has a keyframe or a box at IoU >= 0.7. A
  propagated box where the object is not (before its first frame, past its last, in a gap)
  is deleted (one action each), except that when the first propagation leaves more of those
  than the object has frames left to draw, the annotator undoes it (Ctrl+Z, counted as one
  delete) and draws the object's boxes by hand. Then one accept (Shift+T) per run of
  consecutive frames the track keeps. An object on one frame is one draw;
* track, first keyframe only / track, clearest keyframe: the same with one keyframe before
  the first propagation, on the object's first frame, or where it shows largest (a person
  draws an object where it is clearest); further keyframes only where the track needs one;
* track + pre-labels: track, clearest keyframe, with the model's pre-labels in the scene.
  An object with a shown pre-label matching it at IoU >= 0.7 on some frame starts its track
  from that pre-label (T on it, no action: it is accepted with the track; of several, the
  one where the object shows largest); otherwise a pre-label at IoU 0.3-0.7 on the clearest
  frame is adjusted (an edited pre-label is accepted), or the keyframe is drawn. Where the
  checking pass corrects a frame and a pre-label matching the object at IoU >= 0.7 overlaps
  the propagated box at IoU >= 0.5, the app's fused box is taken (U, one accept) instead of
  an adjust. The workspace's "Pre-labels steer tracks" is on: every propagation of a track is
  steered by the shown pre-labels of its class that no track has taken
  (``track_fuse.steer``: a propagated box overlapping one at IoU >= 0.5 is stored as
  the mean of the two). Accepting a track retires the pending pre-labels of its class that
  overlap its boxes (IoU >= 0.5), as key P does for a carried box; every other pre-label,
  shown or hidden by the slider, is a false positive, and the review gate refuses a scene with
  an undecided one: one Shift+N for the scene rejects them all (a delete).

The simulated annotator, per frame of the frame-by-frame strategies, matches the proposed
boxes to the truth (same class, greedy by IoU): IoU >= 0.7 is accepted as is (one "accept
all" action per frame, Shift+Y), 0.3-0.7 is adjusted (one action; an edited pre-label counts
as accepted), a proposal left unmatched is deleted (one action) and a truth box left
unmatched is drawn (one action). Boxes under ``--min-box`` pixels on either side are ignored
(an annotator would not draw them either); a proposed or propagated box on such an object
(IoU >= 0.5, same class) is correct, so it is kept and accepted with the others, not deleted
(the object is there: only its size keeps it out of the truth an annotator draws).
Proposals with a confidence under ``--threshold`` are hidden, as by the workspace's threshold
slider (default: for each pre-label strategy, the score with the fewest actions on
``--tune-videos`` validation sweeps, among 0.3-0.99 and the run's validation-F1 threshold;
:func:`tune_scores`).

Time: a keystroke-level estimate (Card, Moran & Newell, "The keystroke-level model for user
performance time with interactive systems", CACM 23(7), 1980: K = 0.2 s a keystroke for an
average skilled typist, a shift counting as its own K; P = 1.1 s to point with the mouse;
a button press and release 0.2 s; M = 1.35 s to mentally prepare) with the published time
for drawing a box:

* draw 7.0 s: extreme clicking, the fastest measured way to draw a box (Papadopoulos,
  Uijlings, Keller & Ferrari, "Extreme clicking for efficient object annotation", ICCV 2017:
  7 s a box; the traditional way took about 35 s for one ILSVRC box, Su et al. 2012). The
  lowest figure makes drawing, and so the manual baseline, as cheap as published;
* adjust 7.0 s: at most a redraw, since an annotator can always redraw instead (KLM: M + two
  point-and-drag handle moves, 2 x (P + 0.2 + P + 0.2), is 6.15 s), again the figure least
  favourable to the assisted strategies;
* delete 2.85 s: M + P + click (0.2) + K (the Delete key);
* accept 1.75 s: M + 2K (Shift+Y for a frame, Shift+T for a track);
* per frame looked at 1.55 s: M + K (check the frame's boxes, then the next-frame key, or P).
  Frame-by-frame strategies look at each frame once. The track strategies play the scene
  once to find its objects (Space: M + K, then the frames at the sweep's 15 frames/s), look
  at each frame once in the checking pass, and again at each frame behind the pass whose box
  a re-propagation moved visibly (IoU < 0.9 with the box seen: the lane marks it "look
  again", ``track_propagation.look_again``);
* K = 0.2 s for each T (propagate a track) pressed.

The model: ``--run DIR`` reuses the model in DIR (``model.pt``) or, when DIR holds none,
trains one into DIR so later runs reuse it; without ``--run`` the model is trained in a
temporary folder. Training: a two-frame model on ``--train-videos`` phantom sweeps of
``--train-frames`` frames (seed ``--seed + 100``; validation sweeps seed ``--seed + 200``,
for the score calibration and threshold; the held-out sweeps are seed ``--seed``) for
``--train-iters`` iterations at ``--size`` px with ``--threads`` torch threads, with a
stride-4 level in its feature pyramid (``--min-stride 4``: the vessels are 6-16 px); the
defaults train in under 10 minutes on 2 CPU cores (the README gives the time measured), and
the wall and CPU time are printed and kept in ``DIR/train_time.json``.
``../shared/data/rus-abdominal`` labels isolated frames (no consecutive labelled frames), so it
cannot be replayed as a sequence; the bench says so and uses the phantom only.

The table gives actions and estimated time per strategy, then what the fastest strategy is
and how the time of the one with the fewest actions compares. The last two lines are
``vs manual: N.Nx`` (manual actions / the best strategy's actions) and ``vs interpolation:
N.Nx`` (the best interpolation's actions / the best strategy's).
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Callable

import cv2

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from annotator.services.boxes import clip_box, greedy_match, iou, same_object  # noqa: E402
from annotator.services.propagate import (FlowPair, flow_pair, propagate_boxes,  # noqa: E402
                                          reversed_pair)
from annotator.services.track_fuse import steer  # noqa: E402
from annotator.services.track_propagation import (TrackBoxes, look_again,  # noqa: E402
                                                  propagate_track)
from detector.recipe import MIN_STRIDES  # noqa: E402

GOOD_IOU, ADJUST_IOU, SHOW_SCORE = 0.7, 0.3, 0.5
SCENE_LENGTH = 20  # the app's default SONOLABEL_SCENE_LENGTH: how a sweep without cuts is cut
ACTIONS = ("draw", "adjust", "delete", "accept")
LINK_IOU, MAX_GAP = 0.5, 2
PLAY_FPS = 15.0  # the phantom's frame rate, at which the workspace plays a scene (Space)
SECONDS = {"draw": 7.0, "adjust": 7.0, "delete": 2.85, "accept": 1.75, "look": 1.55, "key": 0.2,
           "play": 1.55, "played": 1 / PLAY_FPS}
SOURCES = {
    "draw": "extreme clicking, Papadopoulos et al. ICCV 2017 (the traditional way: ~35 s)",
    "adjust": "at most a redraw (KLM M + two handle drags: 6.15 s)",
    "delete": "KLM M + P + click + K (select, Delete; also Ctrl+Z, and Shift+N for a scene)",
    "accept": "KLM M + 2K (Shift+Y, Shift+T; fuse U)",
    "look": "KLM M + K, per frame looked at (check it, next frame)",
    "key": "KLM K, per T pressed (propagate a track)",
    "play": "KLM M + K, per scene played to find its objects (Space)",
    "played": f"per frame played, at {PLAY_FPS:g} frames/s",
}


def taken_over(p: dict, boxes: list[dict]) -> bool:
    """Pre-label ``p`` is one object with a box of its class in ``boxes`` (the app's rule:
    such a box supersedes it on key P, or retires it when its track is accepted)."""
    return any(b["class_id"] == p["class_id"] and same_object(b, p) for b in boxes)


def on_small_object(box: dict, small: list[dict] | None) -> bool:
    """``box`` is one object (:func:`same_object`, same class) with a real object too small to
    draw (under ``--min-box``): a correct box, kept and accepted like the others, not deleted."""
    return any(s["class_id"] == box["class_id"] and same_object(box, s) for s in small or ())


def review(proposals: list[dict], truth: list[dict], show_score: float = SHOW_SCORE,
           small: list[dict] | None = None) -> dict[str, int]:
    """Actions to turn ``proposals`` into ``truth`` on one frame (``small``: the frame's
    objects under ``--min-box``)."""
    shown = [p for p in proposals if p.get("score", 1.0) >= show_score]
    matched = greedy_match(shown, truth, ADJUST_IOU)
    taken = {j for _, j, _ in matched}
    kept = sum(1 for j, p in enumerate(shown) if j not in taken and on_small_object(p, small))
    return {"draw": len(truth) - len(matched),
            "adjust": sum(1 for overlap, _, _ in matched if overlap < GOOD_IOU),
            "delete": len(shown) - len(matched) - kept,
            "accept": int(kept > 0 or any(overlap >= GOOD_IOU for overlap, _, _ in matched))}


def load_sequences(coco_path: Path, min_box: float) -> list[dict]:
    coco = json.loads(coco_path.read_text())
    by_image, small = defaultdict(list), defaultdict(list)
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        box = {"x": x, "y": y, "w": w, "h": h, "class_id": a["category_id"], "track": a.get("track_id")}
        (by_image if w >= min_box and h >= min_box else small)[a["image_id"]].append(box)
    videos = defaultdict(list)
    for img in coco["images"]:
        videos[img["video_id"]].append(img)
    out = []
    for vid, imgs in sorted(videos.items()):
        imgs.sort(key=lambda im: im["frame_index"])
        out.append({"video": vid, "files": [coco_path.parent / "images" / im["file_name"] for im in imgs],
                    "truth": [by_image[im["id"]] for im in imgs], "small": [small[im["id"]] for im in imgs]})
    return out


def interpolated(truth: list[list[dict]], k: int) -> tuple[list[list[dict]], dict[str, int]]:
    """Proposals for every frame from key frames every k (and the last frame), and the cost of
    the key frames themselves. Objects are the ones a person tracks (:func:`annotator_tracks`),
    as for the track strategies."""
    n = len(truth)
    track = {id(box): t for t, boxes in enumerate(annotator_tracks(truth)) for box in boxes.values()}
    keys = sorted(set(range(0, n, k)) | {n - 1})
    cost = {"draw": 0, "adjust": 0, "delete": 0, "accept": 0}
    seen: set = set()
    proposals: list[list[dict]] = [[] for _ in range(n)]
    for key in keys:
        for box in truth[key]:
            cost["adjust" if track[id(box)] in seen else "draw"] += 1
            seen.add(track[id(box)])
    for a, b in zip(keys, keys[1:]):
        at_b = {track[id(box)]: box for box in truth[b]}
        for box in truth[a]:
            other = at_b.get(track[id(box)])
            for t in range(a + 1, b):
                if other is None:
                    continue  # the track ends: an interpolating tool stops it at the key frame
                f = (t - a) / (b - a)
                proposals[t].append({**{c: box[c] + f * (other[c] - box[c]) for c in "xywh"},
                                     "class_id": box["class_id"]})
    for key in keys:
        proposals[key] = None  # drawn, not reviewed
    return proposals, cost


def add(total: dict[str, int], counts: dict[str, int]) -> None:
    for key, value in counts.items():
        total[key] = total.get(key, 0) + value


def new_counts() -> dict[str, int]:
    return {k: 0 for k in (*ACTIONS, "look", "key", "play", "played")}


def actions(counts: dict[str, int]) -> int:
    return sum(counts[k] for k in ACTIONS)


def seconds(counts: dict[str, int]) -> float:
    return sum(counts.get(k, 0) * s for k, s in SECONDS.items())


# --- the track strategies ----------------------------------------------------------------------

FlowAt = Callable[[int, int], FlowPair]


def scene_flows(images: list) -> FlowAt:
    """``flow_at`` over ``images`` (as the app's flow cache: each pair and its reverse once)."""
    pairs: dict[tuple[int, int], FlowPair] = {}

    def flow_at(i: int, j: int) -> FlowPair:
        if (i, j) not in pairs:
            a = min(i, j)
            if (a, a + 1) not in pairs:
                pairs[(a, a + 1)] = flow_pair(images[a], images[a + 1])
            pairs[(a + 1, a)] = reversed_pair(pairs[(a, a + 1)])
        return pairs[(i, j)]
    return flow_at


def annotator_tracks(truth: list[list[dict]]) -> list[dict[int, dict]]:
    """The objects of a scene as a person tracks them, each as position -> truth box. A box
    continues a track when it is the same phantom object seen up to ``MAX_GAP`` frames before
    (overlapping its last box), or the next frame's box of the class overlapping the track's
    last box at IoU >= ``LINK_IOU``: the phantom names a vessel region after the branch that
    covers most of it, so the name can change while the region on screen goes on. Greedy, the
    same object first, then by overlap; a box continuing nothing starts a track (so the pieces
    of one object on a frame make tracks of their own: one box per track and frame)."""
    tracks: list[dict[int, dict]] = []
    for i, boxes in enumerate(truth):
        pairs = []
        for t, track in enumerate(tracks):
            end = max(track)
            if end < i - 1 - MAX_GAP:
                continue
            last = track[end]
            for j, box in enumerate(boxes):
                if box["class_id"] != last["class_id"]:
                    continue
                same = box.get("track") is not None and box.get("track") == last.get("track")
                overlap = iou(last, box)
                if (same and overlap > 0) or (end == i - 1 and overlap >= LINK_IOU):
                    pairs.append((same, overlap, t, j))
        taken_tracks, taken_boxes = set(), set()
        for _, _, t, j in sorted(pairs, reverse=True):
            if t not in taken_tracks and j not in taken_boxes:
                tracks[t][i] = boxes[j]
                taken_tracks.add(t)
                taken_boxes.add(j)
        tracks += [{i: box} for j, box in enumerate(boxes) if j not in taken_boxes]
    return tracks


def _stored(box: dict | None, size: tuple[int, int] | None) -> dict | None:
    """A propagated box as the app stores it (clipped to the frame, 0.1 px)."""
    if box is None or size is None:
        return box
    return clip_box(box["x"], box["y"], box["w"], box["h"], size[0], size[1], decimals=1)


def _runs(positions: list[int]) -> list[list[int]]:
    runs: list[list[int]] = []
    for i in sorted(positions):
        if runs and i == runs[-1][-1] + 1:
            runs[-1].append(i)
        else:
            runs.append([i])
    return runs


KEYFRAMES = {"ends": "keyframes on the object's first and last frame",
             "first": "a keyframe on the object's first frame",
             "clearest": "a keyframe where the object shows largest"}


def first_keyframe(truth: dict[int, dict], policy: str) -> int:
    """Where a track's first keyframe goes under ``policy`` (see :data:`KEYFRAMES`); for
    "clearest", ties go to the frame nearest the middle of the object's frames."""
    if policy == "clearest":
        middle = (min(truth) + max(truth)) / 2
        return min(truth, key=lambda i: (-truth[i]["w"] * truth[i]["h"], abs(i - middle)))
    return min(truth)


def label_track(n: int, truth: dict[int, dict], flow_at: FlowAt, *, first: str = "draw",
                start: dict | None = None, at: int | None = None,
                offers: dict[int, dict] | None = None,
                steering: dict[int, list[dict]] | None = None, policy: str = "ends",
                size: tuple[int, int] | None = None, small: list[list[dict]] | None = None
                ) -> tuple[dict[str, int], dict[int, dict], set[int]]:
    """The actions to label one object (``truth``: position -> box) of a scene of ``n`` frames
    with the track engine; the boxes the track ends with (position -> box); the positions of
    the ``offers`` taken.

    ``policy``: where the keyframes go before the first propagation (:data:`KEYFRAMES`); after
    it, only where the track needs one. ``first``: what the first keyframe costs: draw, adjust
    of a pre-label, or "seed" (T pressed on a pending pre-label at IoU >= 0.7: the track starts
    from it and it is accepted with the track); ``start`` its box when not the truth's, ``at``
    its position when not the policy's. ``offers``: pre-labels matching the object at
    IoU >= 0.7 by position; where a frame needs a correction and its offer overlaps the
    propagated box at IoU >= 0.5 (the app's fused box, key U), the offer is taken (one accept,
    a keyframe) instead of an adjust. ``small``: the scene's objects under ``--min-box`` per
    position; a propagated box on one of them (:func:`on_small_object`) is kept, not deleted."""
    counts = new_counts()
    class_id = next(iter(truth.values()))["class_id"]

    def stray(i: int) -> bool:  # a propagated box at position i where the object is not
        box = {**boxes[i], "class_id": class_id}
        return i not in truth and not (small and on_small_object(box, small[i]))
    at = first_keyframe(truth, policy) if at is None else at
    hi = max(truth)
    keys = {at: start or truth[at]}
    seeded = first == "seed"
    counts["key" if seeded else first] += 1
    if len(truth) == 1:  # one frame: the box is all there is, nothing to propagate
        counts["accept"] += int(seeded)  # Y on the pre-label
        return counts, {at: {**keys[at], "class_id": truth[at]["class_id"]}}, set()

    boxes: dict[int, dict] = {}
    cursor = -1  # where the checking pass is: the frames behind it were looked at

    def propagate(around: int | None = None) -> None:
        part = propagate_track(n, keys, flow_at, around)
        if steering:
            part.boxes = steer(part.boxes, steering)
        new = {j: _stored(b, size) for j, b in part.boxes.items() if not b.get("keyframe")}
        new = {j: b for j, b in new.items() if b is not None}
        before = TrackBoxes(boxes={j: b for j, b in boxes.items() if j in part.covered},
                            covered=part.covered)
        if boxes:  # a re-propagation: frames the pass has checked that the lane marks "look again"
            changed = look_again(before, TrackBoxes(boxes=new, covered=part.covered))
            counts["look"] += sum(1 for j in changed if j not in keys and j < cursor)
        counts["key"] += 1
        for j in part.covered:
            boxes.pop(j, None)
        boxes.update(new)

    if policy == "ends" and hi != at:
        keys[hi] = truth[hi]
        counts["draw"] += 1
    propagate()
    by_hand = [i for i in truth if i not in keys]
    if sum(1 for i in boxes if stray(i)) > len(by_hand):
        # More boxes to delete where the object is not than frames to draw: undo the
        # propagation (Ctrl+Z; counted as one delete) and draw the object's other boxes.
        counts["delete"] += 1
        counts["undone"] = 1
        counts["draw"] += len(by_hand)
        counts["accept"] += int(seeded)  # Y on the pre-label the track started from
        return counts, {i: {**keys.get(i, truth[i]), "class_id": truth[i]["class_id"]} for i in truth}, set()
    fused: set[int] = set()
    while True:  # the checking pass, in frame order: the first frame that needs a correction
        fit = {i: iou(boxes[i], want) if i in boxes else 0.0 for i, want in truth.items() if i not in keys}
        bad = [i for i in sorted(fit) if fit[i] < GOOD_IOU]
        if not bad:
            break
        # The run of off frames the pass has come to, watched to its end: corrected where the
        # box is worst (ties: the middle of the run, as a person would).
        run = next(r for r in _runs(bad) if r[0] == bad[0])
        middle = (run[0] + run[-1]) / 2
        i = min(run, key=lambda j: (fit[j], abs(j - middle)))
        cursor = max(cursor, run[-1])
        overlap = fit[i]
        offer = (offers or {}).get(i)
        if offer is not None and i in boxes and same_object(boxes[i], offer):
            counts["accept"] += 1  # U: the detector's edges, the track's identity
            keys[i] = offer
            fused.add(i)
        else:
            counts["adjust" if overlap >= ADJUST_IOU else "draw"] += 1
            kind = "stopped" if i not in boxes else "drifted"
            counts[kind] = counts.get(kind, 0) + 1
            keys[i] = truth[i]
        propagate(around=i)
    strays = [i for i in boxes if stray(i)]
    counts["delete"] += len(strays)
    counts["strays"] = len(strays)
    counts["small"] = sum(1 for i in boxes if i not in truth and not stray(i))
    for i in strays:
        del boxes[i]
    counts["accept"] += sum(1 for run in _runs([*boxes, *keys])
                            if any(i in boxes or (seeded and i == at) for i in run))
    final = {i: {**(keys[i] if i in keys else boxes[i]), "class_id": class_id} for i in [*boxes, *keys]}
    return counts, final, fused


def simulate_tracks(truth: list[list[dict]], flow_at: FlowAt, prelabels: list[list[dict]] | None = None,
                    show_score: float = SHOW_SCORE, size: tuple[int, int] | None = None,
                    policy: str = "ends", small: list[list[dict]] | None = None) -> dict[str, int]:
    """The track strategy on one scene (``truth`` per position; ``small``: its objects under
    ``--min-box``); with ``prelabels`` (the model's boxes per position) the track + pre-labels
    strategy. Also counts, under ``retired``, the pending pre-labels a track's accept retired
    (IoU >= 0.5 with its box)."""
    n = len(truth)
    counts = new_counts()
    # The scene played once to find its objects, then every frame checked once.
    counts.update(play=1, played=n, look=n)
    tracks = annotator_tracks(truth)
    shown = [[p for p in frame if p["score"] >= show_score] for frame in prelabels] if prelabels else None
    # each shown pre-label matched to at most one object's truth box on its frame (same class)
    matched: dict[tuple[int, int], tuple[int, float]] = {}
    if shown is not None:
        owner = {(i, id(box)): t for t, track in enumerate(tracks) for i, box in track.items()}
        for i in range(n):
            for overlap, j, k in greedy_match(shown[i], truth[i], ADJUST_IOU):
                matched[(i, j)] = (owner[(i, id(truth[i][k]))], overlap)
    used: set[tuple[int, int]] = set()
    finals: dict[int, list[dict]] = defaultdict(list)
    for t, track in enumerate(tracks):
        mine = {key: overlap for key, (owner_t, overlap) in matched.items() if owner_t == t}
        good = [key for key, overlap in mine.items() if overlap >= GOOD_IOU]
        first, start, at = "draw", None, first_keyframe(track, policy)
        counts["objects"] = counts.get("objects", 0) + 1
        counts["seeded"] = counts.get("seeded", 0) + bool(good)
        if good:  # T on the good pre-label where the object shows largest
            seed = max(good, key=lambda key: (track[key[0]]["w"] * track[key[0]]["h"], mine[key]))
            first, start, at = "seed", shown[seed[0]][seed[1]], seed[0]
            used.add(seed)
        else:
            adjustable = next((key for key in mine if key[0] == at), None)
            if adjustable is not None:  # an edited pre-label is an accepted one: a keyframe
                first = "adjust"
                used.add(adjustable)
        offers = {i: shown[i][j] for (i, j), overlap in mine.items() if overlap >= GOOD_IOU and i != at}
        steering = None if shown is None else _steering(shown, used, track)
        track_counts, final, fused = label_track(n, track, flow_at, first=first, start=start, at=at,
                                                 offers=offers, steering=steering, policy=policy,
                                                 size=size, small=small)
        used |= {(i, j) for (i, j) in mine if i in fused and offers.get(i) is shown[i][j]}
        add(counts, track_counts)
        for i, box in final.items():
            finals[i].append(box)
    if shown is not None:
        left = [(i, p) for i, frame in enumerate(shown) for j, p in enumerate(frame) if (i, j) not in used]
        retired = sum(taken_over(p, finals[i]) for i, p in left)
        counts["retired"] = retired
        # The false positives left, shown or hidden by the slider (the review gate counts both
        # as undecided), go with one Shift+N for the scene.
        hidden = [(i, p) for i, frame in enumerate(prelabels) for p in frame if p["score"] < show_score]
        rest = len(left) - retired + sum(not taken_over(p, finals[i]) for i, p in hidden)
        counts["rejected"] = rest
        counts["delete"] += int(rest > 0)
    return counts


def _steering(shown: list[list[dict]], used: set[tuple[int, int]], track: dict[int, dict]
              ) -> dict[int, list[dict]]:
    """The pre-labels that steer a track's boxes, by position: as in the app, the pending ones
    of its class shown at the slider, less those taken (a track started from one, or edited)."""
    class_id = next(iter(track.values()))["class_id"]
    return {i: [p for j, p in enumerate(frame) if p["class_id"] == class_id and (i, j) not in used]
            for i, frame in enumerate(shown)}


TRACK_STRATEGIES = [("track", "ends", False), ("track, first keyframe only", "first", False),
                    ("track, clearest keyframe", "clearest", False),
                    ("track + pre-labels", "clearest", True)]


PRELABEL_STRATEGIES = ("pre-labels + propagation", "track + pre-labels")


def simulate_scene(truth: list[list[dict]], images: list, flow_at: FlowAt,
                   predictions: list[list[dict]] | None, ks: list[int],
                   scores: dict[str, float] | None = None,
                   only: set[str] | None = None, small: list[list[dict]] | None = None) -> dict[str, dict]:
    """Every strategy's counts on one scene (``truth``, ``images``, the model's ``predictions``
    per position; ``flow_at`` between positions); ``scores``: the score under which each
    pre-label strategy hides the model's boxes (default ``SHOW_SCORE``); ``only``: just these
    strategies; ``small``: the objects under ``--min-box`` per position (boxes on them are kept
    as correct, :func:`on_small_object`)."""
    small = small or [[] for _ in truth]
    n = len(truth)
    size = (images[0].shape[1], images[0].shape[0])
    wanted = (lambda name: only is None or name in only)
    score = (lambda name: (scores or {}).get(name, SHOW_SCORE))
    results: dict[str, dict] = {}
    if wanted("manual"):
        results["manual"] = {**new_counts(), "draw": sum(len(t) for t in truth), "look": n}
    for k in ks:
        if not wanted(f"interpolation k={k}"):
            continue
        proposals, cost = interpolated(truth, k)
        total = {**new_counts(), **cost, "look": n}
        for t in range(n):
            if proposals[t] is not None:
                add(total, review(proposals[t], truth[t], small=small[t]))
        results[f"interpolation k={k}"] = total
    if wanted("flow propagation"):
        total = {**new_counts(), "draw": len(truth[0]), "look": n}
        for t in range(1, n):
            carried = [{**b, "score": b["confidence"]}
                       for b in propagate_boxes(images[t - 1], images[t], truth[t - 1], flow_at(t - 1, t))]
            add(total, review(carried, truth[t], small=small[t]))
        results["flow propagation"] = total
    name = "pre-labels + propagation"
    if predictions is not None and wanted(name):
        show = score(name)
        total = {**new_counts(), "look": n}
        for t in range(n):
            carried = [] if t == 0 else [
                {**b, "score": b["confidence"]}
                for b in propagate_boxes(images[t - 1], images[t], truth[t - 1], flow_at(t - 1, t))
                if b["confidence"] >= show]
            # The app's rule: a carried box takes the place of a pre-label it overlaps.
            model = [p for p in predictions[t] if p["score"] >= show and not taken_over(p, carried)]
            add(total, review(carried + model, truth[t], show, small[t]))
        # The review gate counts the pre-labels the slider hides too: those left (not taken
        # over by a carried box) go with one Shift+N for the scene.
        total["delete"] += int(any(p["score"] < show and not taken_over(p, truth[t])
                                   for t in range(n) for p in predictions[t]))
        results[name] = total
    for name, policy, with_model in TRACK_STRATEGIES:
        if (with_model and predictions is None) or not wanted(name):
            continue
        results[name] = simulate_tracks(truth, flow_at, predictions if with_model else None,
                                        score(name), size, policy, small)
    return results


def simulate(seq: dict, predictions: list[list[dict]] | None, ks: list[int],
             scores: dict[str, float] | None = None, scene_length: int = SCENE_LENGTH,
             only: set[str] | None = None) -> dict[str, dict]:
    """Every strategy's counts on one sweep, scene by scene (scenes of ``scene_length``
    frames, as the app cuts a sweep without cuts: key P, interpolation and tracks stay within
    a scene)."""
    images = [cv2.imread(str(f), cv2.IMREAD_GRAYSCALE) for f in seq["files"]]
    flows = scene_flows(images)
    totals: dict[str, dict] = {}
    for s in range(0, len(images), scene_length):
        scene = range(s, min(len(images), s + scene_length))
        counts = simulate_scene([seq["truth"][t] for t in scene], [images[t] for t in scene],
                                lambda i, j, s=s: flows(s + i, s + j),
                                None if predictions is None else [predictions[t] for t in scene],
                                ks, scores, only, [seq["small"][t] for t in scene])
        for name, c in counts.items():
            add(totals.setdefault(name, new_counts()), c)
    return totals


TUNE_SCORES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.98, 0.99)


def tune_scores(run: Path, args: argparse.Namespace, work: Path, default: float) -> dict[str, float]:
    """The score each pre-label strategy shows pre-labels from, chosen on validation sweeps
    (seed ``--seed + 200``, as the model's own validation; never the held-out ones): the
    candidate (``TUNE_SCORES`` and the run's own threshold) with the fewest actions, as a team
    would set the workspace's slider for the way it works."""
    from detector.phantom import generate

    coco = generate(work / "tune", videos=args.tune_videos, frames=args.frames, size=args.size,
                    seed=args.seed + 200)
    seqs = load_sequences(coco, args.min_box)
    predictions = predict(run, seqs)
    scene_length = args.scene_length if 0 < args.scene_length < args.frames else args.frames
    chosen = {}
    for name in PRELABEL_STRATEGIES:
        cost = {}
        for value in sorted({*TUNE_SCORES, round(default, 2)}):
            totals: dict[str, int] = {}
            for seq, preds in zip(seqs, predictions):
                for counts in simulate(seq, preds, [], {name: value}, scene_length, {name}).values():
                    add(totals, counts)
            cost[value] = actions(totals)
        chosen[name] = min(cost, key=lambda v: (cost[v], v))
        print(f"{name}: shown from score {chosen[name]:.2f} (actions on {len(seqs)} validation sweeps: "
              + ", ".join(f"{v:.2f}: {c}" for v, c in sorted(cost.items())) + ")", flush=True)
    return chosen


def predict(run: Path, seqs: list[dict]) -> list[list[list[dict]]]:
    from detector.predict import Predictor

    predictor = Predictor(run, score_threshold=0.3)
    out = []
    for seq in seqs:
        predictor.reset()
        frames = []
        for f in seq["files"]:
            dets = predictor.step(cv2.imread(str(f), cv2.IMREAD_GRAYSCALE))
            frames.append([{"x": d["box"][0], "y": d["box"][1], "w": d["box"][2], "h": d["box"][3],
                            "class_id": d["label"], "score": d["score"]} for d in dets])
        out.append(frames)
    return out


def run_threshold(run: Path) -> float | None:
    """The run's validation-F1 threshold (on calibrated scores), if it has one."""
    import torch

    meta = torch.load(run / "model.pt", map_location="cpu", weights_only=False)
    value = (meta.get("threshold") or {}).get("value")
    return None if value is None else float(value)


def train_model(run: Path, args: argparse.Namespace) -> Path:
    """A small two-frame model trained into ``run`` on phantom sweeps of other seeds than the
    held-out ones (training ``--seed + 100``, validation ``--seed + 200``), or the model already
    there (``train_time.json`` says what it took). Wall and CPU time are recorded: on a machine
    shared with other work the wall time grows, the CPU time much less."""
    record = run / "train_time.json"
    if (run / "model.pt").is_file():
        note = describe_training(json.loads(record.read_text())) if record.is_file() else "a model"
        print(f"model: reusing {note} from {run}")
        return run
    from detector.phantom import generate
    from detector.train import TrainConfig, train

    data = run.parent / f".{run.name}-data"
    train_coco = generate(data / "train", videos=args.train_videos, frames=args.train_frames,
                          size=args.size, seed=args.seed + 100, overwrite=True)
    val_coco = generate(data / "val", videos=2, frames=args.train_frames, size=args.size,
                        seed=args.seed + 200, overwrite=True)
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    train(TrainConfig(coco=str(train_coco), images=str(train_coco.parent / "images"), out=str(run),
                      val_coco=str(val_coco), val_images=str(val_coco.parent / "images"),
                      model="two_frame", epochs=1000, patience=1000, max_iters=args.train_iters,
                      size=args.size, batch=4, lr=1e-3, warmup_iters=50, seed=args.seed,
                      min_stride=args.min_stride, device="cpu"))
    info = {"train_videos": args.train_videos, "train_frames": args.train_frames,
            "iterations": args.train_iters, "size": args.size, "threads": args.threads,
            "min_stride": args.min_stride,
            "wall_s": round(time.perf_counter() - wall, 1), "cpu_s": round(time.process_time() - cpu, 1),
            "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)}
    record.write_text(json.dumps(info, indent=1))
    shutil.rmtree(data, ignore_errors=True)
    print(f"model: trained {describe_training(info)}")
    return run


def describe_training(info: dict) -> str:
    return (f"a two-frame model on {info['train_videos']} phantom sweeps x {info['train_frames']} "
            f"frames, {info['iterations']} iterations at {info['size']} px (finest map stride "
            f"{info.get('min_stride', 8)}), {info['threads']} "
            f"threads: {info['wall_s'] / 60:.1f} min wall, {info['cpu_s'] / 60:.1f} min CPU "
            f"(load average {info['load_before']:g} before, {info['load_after']:g} after)")


def report(totals: dict[str, dict[str, int]], frames: int) -> list[str]:
    """The table and the closing lines (the last two: ``vs manual``, ``vs interpolation``)."""
    lines = ["time model (keystroke-level model, KLM: Card, Moran & Newell 1980, K 0.2 s, P 1.1 s, "
             "click 0.2 s, M 1.35 s):"]
    lines += [f"  {k:<7}{SECONDS[k]:>5.2f} s  {SOURCES[k]}" for k in SECONDS]
    manual_n, manual_s = actions(totals["manual"]), seconds(totals["manual"])
    lines.append(f"{'strategy':<26}{'draw':>6}{'adjust':>8}{'delete':>8}{'accept':>8}{'actions':>9}"
                 f"{'/frame':>8}{'looks':>7}{'time min':>10}{'vs manual':>11}{'(time)':>8}")
    for name, c in totals.items():
        n, s = actions(c), seconds(c)
        lines.append(f"{name:<26}{c['draw']:>6}{c['adjust']:>8}{c['delete']:>8}{c['accept']:>8}{n:>9}"
                     f"{n / frames:>8.2f}{c['look']:>7}{s / 60:>10.1f}{manual_n / max(1, n):>10.1f}x"
                     f"{manual_s / s:>7.1f}x")
    if "retired" in totals.get("track + pre-labels", {}):
        c = totals["track + pre-labels"]
        lines.append(f"track + pre-labels: accepting its tracks retired {c['retired']} pending pre-labels "
                     f"they overlap (IoU >= 0.5); {c['seeded']} of its {c['objects']} objects were started "
                     f"from a pre-label (T); one Shift+N a scene rejected the {c['rejected']} left (shown "
                     f"or hidden); keyframes where propagation stopped while the object went on: "
                     f"{c.get('stopped', 0)}, where its box drifted off: {c.get('drifted', 0)}; boxes "
                     f"carried where the object is not: {c.get('strays', 0)} (kept on objects under "
                     f"--min-box: {c.get('small', 0)}); propagations undone: {c.get('undone', 0)}")
    assisted = [k for k in totals if k != "manual"]
    interp = [k for k in totals if k.startswith("interpolation")]
    best = min(assisted, key=lambda k: actions(totals[k]))
    best_interp = min(interp, key=lambda k: actions(totals[k]))
    fastest = min(assisted, key=lambda k: seconds(totals[k]))
    best_s = seconds(totals[best])
    lines.append(f"fewest actions: {best} ({actions(totals[best])}); least time: {fastest} "
                 f"({seconds(totals[fastest]) / 60:.1f} min)")
    lines.append(f"time of {best}: {manual_s / best_s:.1f}x less than manual, "
                 f"{seconds(totals[best_interp]) / best_s:.1f}x less than {best_interp}")
    lines.append(f"vs manual: {manual_n / max(1, actions(totals[best])):.1f}x")
    lines.append(f"vs interpolation: {actions(totals[best_interp]) / max(1, actions(totals[best])):.1f}x")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", type=Path, help="run directory: its model.pt is used, or one is trained into it")
    p.add_argument("--videos", type=int, default=3, help="held-out sweeps")
    p.add_argument("--frames", type=int, default=40, help="frames per held-out sweep")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--k", default="5,10", help="interpolation key-frame spacings")
    p.add_argument("--scene-length", type=int, default=SCENE_LENGTH,
                   help="frames per scene (the app's default; 0: one scene a sweep)")
    p.add_argument("--min-box", type=float, default=6.0)
    p.add_argument("--train-videos", type=int, default=10)
    p.add_argument("--train-frames", type=int, default=24)
    p.add_argument("--train-iters", type=int, default=600)
    p.add_argument("--min-stride", type=int, choices=MIN_STRIDES, default=4,
                   help="the model's finest feature map (4: a level for objects of a few pixels)")
    p.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    p.add_argument("--no-model", action="store_true", help="skip the model and the pre-label strategies")
    p.add_argument("--tune-videos", type=int, default=3,
                   help="validation sweeps the pre-label strategies' score is chosen on (0: the run's threshold)")
    p.add_argument("--threshold", type=float,
                   help="score under which pre-labels and carried boxes are hidden "
                        "(default: the run's validation-F1 threshold, else 0.5)")
    args = p.parse_args(argv)
    import torch

    from detector.phantom import generate

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    ks = [int(k) for k in args.k.split(",")]
    scene_length = args.scene_length if 0 < args.scene_length < args.frames else args.frames
    rus = ROOT.parent / "shared" / "data" / "rus-abdominal"
    if rus.exists():
        print("rus-abdominal: labels are on isolated frames (no consecutive labelled frames), so "
              "its sequences cannot be replayed; phantom sweeps only.", file=sys.stderr)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        predictions: list | None = None
        threshold = args.threshold if args.threshold is not None else SHOW_SCORE
        if not args.no_model:
            run = train_model(args.run or work / "run", args)
            if args.threshold is None:
                threshold = run_threshold(run) or SHOW_SCORE
        coco = generate(work / "test", videos=args.videos, frames=args.frames, size=args.size,
                        seed=args.seed)
        seqs = load_sequences(coco, args.min_box)
        if not args.no_model:
            predictions = predict(run, seqs)
        scores = {name: threshold for name in PRELABEL_STRATEGIES}
        if not args.no_model and args.threshold is None and args.tune_videos:
            scores = tune_scores(run, args, work, threshold)
        totals: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for i, seq in enumerate(seqs):
            preds = None if predictions is None else predictions[i]
            for name, counts in simulate(seq, preds, ks, scores, scene_length).items():
                add(totals[name], counts)
    frames = sum(len(s["truth"]) for s in seqs)
    boxes = sum(len(t) for s in seqs for t in s["truth"])
    print(f"{len(seqs)} held-out phantom sweeps (seed {args.seed}), {frames} frames, {boxes} boxes "
          f"(>= {args.min_box:g} px) in scenes of {scene_length} frames; "
          + ("no model" if predictions is None else "pre-labels shown from score "
             + ", ".join(f"{v:.2f} ({k})" for k, v in scores.items())))
    print("\n".join(report(totals, frames)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
