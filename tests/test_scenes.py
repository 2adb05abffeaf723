"""Scene extraction (auto cut detection + chopping, fixed:N, none) and cutting a scene from an
in/out frame range."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from helpers import H, TEXT_ORG, W, sector_mask, write_video

from annotator.db import db
from annotator.models import Frame, Scene, SceneStatus
from annotator.services import ImportRefused, SceneRefused
from annotator.services.cut_detection import CutDetector, SceneMode, parse_scene_mode, scene_ranges
from annotator.services.scene_edit import cut_scene
from annotator.services.video_import import import_video


def test_parse_scene_mode():
    assert parse_scene_mode("auto") == SceneMode("auto")
    assert parse_scene_mode("none") == SceneMode("none")
    assert parse_scene_mode("fixed:12") == SceneMode("fixed", 12)
    for bad in ("fixed:0", "fixed", "cut", "fixed:1.5", ""):
        with pytest.raises(ImportRefused):
            parse_scene_mode(bad)


def test_scene_ranges_chop_runs_between_cuts():
    assert scene_ranges(50, [25], 20) == [(0, 19), (20, 24), (25, 44), (45, 49)]
    assert scene_ranges(45, [], 20) == [(0, 19), (20, 39), (40, 44)]
    assert scene_ranges(7, [], None) == [(0, 6)]
    assert scene_ranges(10, [0, 10, 99], 4) == [(0, 3), (4, 7), (8, 9)]  # cuts at the ends ignored
    assert scene_ranges(0, [], 20) == []


def _changes_around_the_threshold() -> list[np.ndarray]:
    """Grey 96x80 frames: shots of 20 frames with a little noise, joined by changes whose mean
    absolute difference is about ContentDetector's threshold (27) give or take the noise, a new
    picture, a one-frame flash and a slow fade."""
    rng = np.random.default_rng(5)
    base = rng.integers(0, 50, (80, 96), dtype=np.uint8)
    frames: list[np.ndarray] = []

    def shot(n: int = 20) -> None:
        frames.extend(cv2.add(base, rng.integers(0, 2, base.shape, dtype=np.uint8)) for _ in range(n))

    shot()
    order, start = rng.permutation(base.size), 0
    for fraction in (0.128, 0.1325, 0.1335, 0.14):  # another part of the pixels 200 brighter
        stop = start + round(fraction * base.size)
        base = base.copy()
        base.flat[order[start:stop]] += 200
        start = stop
        shot()
    base = rng.integers(0, 150, base.shape, dtype=np.uint8)
    shot()
    frames.append(cv2.add(base, 120))  # a flash
    shot()
    for _ in range(15):  # a fade
        base = cv2.add(base, 8)
        frames.append(base.copy())
    shot()
    return frames


def test_grey_cut_detection_finds_the_cuts_pyscenedetect_finds_in_colour():
    from scenedetect import ContentDetector, FrameTimecode

    fps = 25.0
    frames = _changes_around_the_threshold()
    stock, expected = ContentDetector(luma_only=True), []
    for i, frame in enumerate(frames):
        for cut in stock.process_frame(FrameTimecode(i, fps),
                                       cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)):
            if 0 < cut.frame_num and (not expected or cut.frame_num > expected[-1]):
                expected.append(cut.frame_num)
    ours = CutDetector(fps)
    for frame in frames:
        ours.feed(frame)
    assert len(expected) >= 3  # the sequence straddles the threshold: some changes cut, some not
    assert ours.cuts == expected


def _two_shot_video(path: Path, fps: float = 15.0) -> Path:
    """25 frames of a smooth texture drifting 1 px per frame, then a different, brighter shot."""
    rng = np.random.default_rng(3)
    textures = [cv2.GaussianBlur(rng.integers(0, 255, (H, W + 60), dtype=np.uint8), (0, 0), 4)
                for _ in range(2)]
    textures = [cv2.normalize(t, None, 30, 110, cv2.NORM_MINMAX) for t in textures]
    textures[1] = cv2.add(textures[1], 120)
    mask = sector_mask() > 0
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (W, H))
    for i in range(50):
        shot = textures[i // 25][:, (i % 25):(i % 25) + W]
        img = np.full((H, W, 3), 40, np.uint8)
        img[mask] = shot[mask, None]
        cv2.putText(img, "DOE^JANE", TEXT_ORG, cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)
        writer.write(img)
    writer.release()
    return path


def _ranges(video_id: int) -> list[tuple[int, int]]:
    scenes = db.session.scalars(db.select(Scene).where(Scene.video_id == video_id)
                                .order_by(Scene.first_frame)).all()
    return [(s.first_frame, s.last_frame) for s in scenes]


@pytest.mark.parametrize("detect_width", [None, 1000])  # 1000: frames go to the detector unscaled
def test_auto_scenes_cut_at_the_shot_change_then_chop(app, tmp_path, monkeypatch, detect_width):
    if detect_width is not None:
        monkeypatch.setattr("annotator.services.cut_detection.DETECT_WIDTH", detect_width)
    path = _two_shot_video(tmp_path / "shots.avi")
    with app.app_context():
        result = import_video(path, "P-1", scenes="auto")
        assert _ranges(result.video.id) == [(0, 19), (20, 24), (25, 44), (45, 49)]
        assert result.scenes == 4


def test_auto_uses_configured_length_and_none_makes_one_scene(app, tmp_path):
    app.config["SONOLABEL_SCENE_LENGTH"] = 30
    with app.app_context():
        a = import_video(_two_shot_video(tmp_path / "a.avi"), "P-1", scenes="auto")
        assert _ranges(a.video.id) == [(0, 24), (25, 49)]
        b = import_video(write_video(tmp_path / "b.avi", n=33), "P-1", scenes="none")
        assert _ranges(b.video.id) == [(0, 32)]


def _scene_of_frames(video_id: int) -> dict[int, tuple[int, int]]:
    """frame index -> (first, last) of the scene the frame points at."""
    rows = db.session.execute(
        db.select(Frame.frame_index, Scene.first_frame, Scene.last_frame)
        .join(Scene, Frame.scene_id == Scene.id).where(Frame.video_id == video_id)).all()
    return {i: (a, b) for i, a, b in rows}


def _consistent(video_id: int, frames: int) -> None:
    ranges = _ranges(video_id)
    covered = [i for a, b in ranges for i in range(a, b + 1)]
    assert covered == list(range(frames)), "scenes tile the video without overlap"
    of = _scene_of_frames(video_id)
    assert len(of) == frames and all(a <= i <= b for i, (a, b) in of.items())


def test_cut_scene_trims_and_splits_neighbours(app, tmp_path):
    with app.app_context():
        result = import_video(write_video(tmp_path / "v.avi", n=30), "P-1", scenes="fixed:10")
        video = result.video
        scenes = db.session.scalars(db.select(Scene).where(Scene.video_id == video.id)
                                    .order_by(Scene.first_frame)).all()
        scenes[0].status = SceneStatus.submitted
        scenes[2].status = SceneStatus.reviewed
        db.session.commit()

        new = cut_scene(video, 5, 14)
        assert (new.first_frame, new.last_frame, new.status) == (5, 14, SceneStatus.new)
        assert _ranges(video.id) == [(0, 4), (5, 14), (15, 19), (20, 29)]
        assert db.session.get(Scene, scenes[0].id).status == SceneStatus.submitted
        _consistent(video.id, 30)

        # Inside one scene: it is split in three, both remaining pieces keep its status.
        middle = cut_scene(video, 22, 24)
        assert _ranges(video.id) == [(0, 4), (5, 14), (15, 19), (20, 21), (22, 24), (25, 29)]
        statuses = {(s.first_frame): s.status for s in db.session.scalars(
            db.select(Scene).where(Scene.video_id == video.id))}
        assert statuses[20] == statuses[25] == SceneStatus.reviewed
        assert statuses[22] == SceneStatus.new and middle.frame_count == 3
        _consistent(video.id, 30)

        # Covering everything deletes every old scene.
        whole = cut_scene(video, 0, 29)
        assert _ranges(video.id) == [(0, 29)]
        assert all(f.scene_id == whole.id for f in db.session.scalars(
            db.select(Frame).where(Frame.video_id == video.id)))


@pytest.mark.parametrize("first,last", [(5, 4), (-1, 3), (0, 30), (40, 50)])
def test_cut_scene_refuses_bad_ranges(app, tmp_path, first, last):
    with app.app_context():
        video = import_video(write_video(tmp_path / "v.avi", n=30), "P-1", scenes="fixed:10").video
        with pytest.raises(SceneRefused) as info:
            cut_scene(video, first, last)
        assert str(info.value) and info.value.status == 400
        assert _ranges(video.id) == [(0, 9), (10, 19), (20, 29)]
