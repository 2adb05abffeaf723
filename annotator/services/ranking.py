"""What to label next: scenes ranked by how unsure the model is about them.

Design choices:
- A scene's score is its temporal disagreement plus half its score uncertainty. At each frame
  t the model's boxes (score >= ``MIN_SCORE``) are compared with the model's boxes of frame
  t-1 carried to t by optical flow (:mod:`propagate`). Where the model is right and stable the
  two agree; a lesion found in one frame and missed in the next, or a box that jumps, makes
  them disagree. Boxes are matched one-to-one by class, greedily by IoU (>= 0.1); a match costs
  ``1 - IoU``, an unmatched box 1, and the frame's disagreement is the cost over the number of
  distinct boxes. The uncertainty is the mean ``1 - score`` of the kept boxes: many boxes
  near the threshold mean many decisions for the annotator, and the most to learn from.
- Scores are computed when a scene is pre-labelled (the frames and boxes are at hand then)
  and stored per scene and model version; :func:`rank_stored` recomputes from stored boxes.
- "Next scene" offers the highest-ranked scene the user may edit: new, in progress or
  returned, not assigned to someone else; unranked scenes follow in id order.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import sqlalchemy as sa

from ..db import db
from ..models import Box, BoxSource, Frame, Scene, SceneRanking, SceneStatus, User, utcnow
from .boxes import greedy_match, plain
from .frames import read_frame
from .propagate import propagate_boxes

MIN_SCORE = 0.3
MATCH_IOU = 0.1
UNCERTAINTY_WEIGHT = 0.5
OPEN = (SceneStatus.new, SceneStatus.in_progress, SceneStatus.returned)


def frame_disagreement(model: list[dict[str, Any]], carried: list[dict[str, Any]]) -> float:
    """0 when the model's boxes at t and the boxes carried from t-1 coincide, 1 when no box
    of one has a counterpart in the other."""
    if not model and not carried:
        return 0.0
    matched = greedy_match(model, carried, MATCH_IOU)
    cost = sum(1.0 - overlap for overlap, _, _ in matched)
    unmatched = len(model) + len(carried) - 2 * len(matched)
    return (cost + unmatched) / (len(model) + len(carried) - len(matched))


def scene_disagreement(images: list[np.ndarray], boxes: list[list[dict[str, Any]]],
                       min_score: float = MIN_SCORE) -> dict[str, Any]:
    """The score and its parts for a scene's frames (in order) and each frame's model boxes
    (``class_id``, ``x, y, w, h``, ``score``)."""
    kept = [[b for b in frame_boxes if (b.get("score") or 0.0) >= min_score] for frame_boxes in boxes]
    per_frame: list[float] = []
    for t in range(1, len(images)):
        carried = propagate_boxes(images[t - 1], images[t], kept[t - 1]) if kept[t - 1] else []
        per_frame.append(frame_disagreement(kept[t], carried))
    scores = [b["score"] for frame_boxes in kept for b in frame_boxes]
    disagreement = float(np.mean(per_frame)) if per_frame else 0.0
    uncertainty = float(np.mean([1.0 - s for s in scores])) if scores else 0.0
    worst = sorted(range(len(per_frame)), key=lambda t: -per_frame[t])[:5]
    return {"score": round(disagreement + UNCERTAINTY_WEIGHT * uncertainty, 5),
            "disagreement": round(disagreement, 5), "uncertainty": round(uncertainty, 5),
            "boxes": len(scores), "frames": len(images),
            "worst_frames": [{"frame": t + 1, "disagreement": round(per_frame[t], 4)} for t in worst]}


def store_ranking(scene_id: int, model_version: str, details: dict[str, Any]) -> SceneRanking:
    """Insert or replace the scene's ranking for ``model_version`` (caller commits)."""
    row = db.session.scalar(sa.select(SceneRanking).where(SceneRanking.scene_id == scene_id,
                                                          SceneRanking.model_version == model_version))
    if row is None:
        row = SceneRanking(scene_id=scene_id, model_version=model_version)
        db.session.add(row)
    row.score, row.details, row.computed_at = float(details["score"]), details, utcnow()
    return row


def rank_stored(scene: Scene, model_version: str) -> SceneRanking:
    """Recompute a scene's ranking from its stored pre-labels of ``model_version``."""
    frames = list(scene.frames)
    rows = db.session.scalars(sa.select(Box).join(Frame, Frame.id == Box.frame_id).where(
        Frame.scene_id == scene.id, Box.source == BoxSource.model,
        Box.model_version == model_version)).all()
    by_frame: dict[int, list[dict[str, Any]]] = {f.id: [] for f in frames}
    for b in rows:
        by_frame[b.frame_id].append(plain(b))
    details = scene_disagreement([read_frame(f) for f in frames], [by_frame[f.id] for f in frames])
    row = store_ranking(scene.id, model_version, details)
    db.session.commit()
    return row


def ranked_scenes(user: User | None = None, limit: int = 100) -> list[tuple[Scene, SceneRanking | None]]:
    """Open scenes ``user`` may take, best first: (scene, its newest ranking or None)."""
    query = sa.select(Scene).where(Scene.status.in_(OPEN))
    if user is not None:
        query = query.where(sa.or_(Scene.assignee_id.is_(None), Scene.assignee_id == user.id))
    scenes = list(db.session.scalars(query.order_by(Scene.id)))
    latest: dict[int, SceneRanking] = {}
    ids = [s.id for s in scenes]
    for start in range(0, len(ids), 500):
        for row in db.session.scalars(sa.select(SceneRanking)
                                      .where(SceneRanking.scene_id.in_(ids[start:start + 500]))
                                      .order_by(SceneRanking.computed_at, SceneRanking.id)):
            latest[row.scene_id] = row
    # Returned scenes first (a reviewer is waiting), then by rank, then unranked by id.
    scenes.sort(key=lambda s: (s.status != SceneStatus.returned,
                               -(latest[s.id].score if s.id in latest else -1.0), s.id))
    return [(s, latest.get(s.id)) for s in scenes[:limit]]


def next_scene(user: User | None, after: int | None = None) -> Scene | None:
    """The scene to label next, other than ``after`` (the one just left)."""
    for scene, _ in ranked_scenes(user, limit=1_000_000):
        if scene.id != after:
            return scene
    return None
