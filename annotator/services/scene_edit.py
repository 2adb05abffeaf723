"""A scene made by hand from a range of frames: :func:`cut_scene` (commits) makes a scene of
exactly ``first..last``, trimming or splitting the scenes it overlaps (pieces keep their status
and assignee; a piece left empty is deleted), and points each frame at its scene.
"""
from __future__ import annotations

from sqlalchemy import update

from ..db import db
from ..models import Frame, Scene, Video
from . import SceneRefused


def cut_scene(video: Video, first: int, last: int) -> Scene:
    """A new scene of frames ``first..last`` of ``video``; overlapped scenes are trimmed or split.

    Commits; on failure rolls back. Raises :class:`SceneRefused` for a range that is not in
    the video.
    """
    try:
        scene = _cut(video, first, last)
        db.session.commit()
    except BaseException:
        db.session.rollback()
        raise
    return scene


def _cut(video: Video, first: int, last: int) -> Scene:
    if first > last:
        raise SceneRefused(f"first frame {first} is after last frame {last}")
    if first < 0 or last >= video.frame_count:
        raise SceneRefused(
            f"frames {first}..{last} are outside the video (frames 0..{video.frame_count - 1})")
    overlapping = db.session.scalars(
        db.select(Scene).where(Scene.video_id == video.id, Scene.first_frame <= last,
                               Scene.last_frame >= first).order_by(Scene.first_frame)).all()
    pieces: list[Scene] = []
    kept: list[Scene] = []
    for scene in overlapping:
        before = (scene.first_frame, first - 1) if scene.first_frame < first else None
        after = (last + 1, scene.last_frame) if scene.last_frame > last else None
        if before and after:
            # Split: this row keeps the part before, a copy with its status takes the part after.
            tail = Scene(video_id=video.id, first_frame=after[0], last_frame=after[1],
                         status=scene.status, assignee_id=scene.assignee_id,
                         review_comment=scene.review_comment)
            db.session.add(tail)
            pieces.append(tail)
            scene.last_frame = before[1]
            kept.append(scene)
        elif before:
            scene.last_frame = before[1]
            kept.append(scene)
        elif after:
            scene.first_frame = after[0]
            kept.append(scene)
        else:
            db.session.delete(scene)  # fully covered: nothing of it is left
    new = Scene(video_id=video.id, first_frame=first, last_frame=last)
    db.session.add(new)
    db.session.flush()
    for scene in pieces:  # only split-off tails hold frames that still point elsewhere
        _point_frames(video.id, scene.first_frame, scene.last_frame, scene.id)
    _point_frames(video.id, first, last, new.id)
    # The UPDATEs bypass the identity map: reload what the session holds of this video.
    for obj in [video, new, *kept, *pieces]:
        db.session.expire(obj)
    for obj in list(db.session.identity_map.values()):
        if isinstance(obj, Frame):
            db.session.expire(obj)
    return new


def _point_frames(video_id: int, first: int, last: int, scene_id: int) -> None:
    db.session.execute(
        update(Frame)
        .where(Frame.video_id == video_id, Frame.frame_index >= first, Frame.frame_index <= last)
        .values(scene_id=scene_id)
        .execution_options(synchronize_session=False))
