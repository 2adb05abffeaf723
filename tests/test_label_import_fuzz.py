"""Both label importers (COCO, Label Studio JSON) under generated input (hypothesis).

A valid file is mutated in one to three of its fields by values of every kind a careless user
or another tool may write (wrong types, lists, 400-digit integers, NaN and infinities, tiny,
negative and zero sizes, missing keys, unicode, 100,000-character texts). Whatever comes in,
the import either succeeds with boxes that are sane (finite, inside the frame, at least
MIN_INPUT_SIZE on a side, scores and track ids that the database holds) or is refused with
``LabelImportRefused`` naming each problem, and then nothing at all changed. Valid files of
generated boxes import exactly.
"""
from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import sqlalchemy as sa
from helpers import boxes, make_video
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, LabelEvent, Scene, SceneStatus
from annotator.services.boxes import MIN_INPUT_SIZE
from annotator.services.coco_import import import_coco, parse_coco
from annotator.services.input_checks import DB_INT_MAX
from annotator.services.label_import import LabelImportRefused
from annotator.services.labelstudio_import import import_labelstudio, parse_labelstudio

# Generated inputs by the hundred: part of `make test`, not of the fast loop.
pytestmark = pytest.mark.slow

W, H = 64, 48  # make_video's frame size
FUZZ = settings(max_examples=120, deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
DELETE = object()  # a mutation that removes the key (or list item)

# Values that broke or could break an importer, tried in every field; generated ones besides.
SPECIALS = [DELETE, None, True, False, 0, -1, 2**31, 2**63, 10**400, -10**400, math.nan, math.inf,
            -math.inf, 1e-300, 5e-324, -0.0, 0.4999, 0.5, 1e308, "", "5", "x" * 100_000, "\x00",
            "\U0001f9b4", "tumor", [], [1], [1, 2, 3, 4], {}, {"id": 1}]
VALUES = st.one_of(
    st.sampled_from(SPECIALS),
    st.integers(-2**40, 2**40),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.one_of(st.integers(-3, 70), st.floats()), max_size=5),
    st.dictionaries(st.text(max_size=3), st.integers(-3, 3), max_size=2),
)


@pytest.fixture
def video(app):
    """A 6-frame, 64x48 video of two new scenes; its id."""
    with app.app_context():
        return make_video(app, "P1", ["new", "new"], frames_per_scene=3)


def coco_doc(video_id: int) -> dict[str, Any]:
    """A valid COCO file in this tool's shape and another's: two images, a manual and a model
    box."""
    return {
        "images": [{"id": 1, "file_name": f"v{video_id:06d}_f000001.png", "frame_index": 1,
                    "width": W, "height": H, "video_id": video_id},
                   {"id": 2, "file_name": f"images/v{video_id:06d}_f000004.png", "frame_index": 4,
                    "width": W, "height": H, "reviewed_empty": False}],
        "categories": [{"id": 7, "name": "Tumor"}, {"id": 9, "name": "vessel"}],
        "annotations": [
            {"id": 1, "image_id": 1, "category_id": 7, "bbox": [3, 4, 20, 10], "area": 200,
             "iscrowd": 0},
            {"id": 2, "image_id": 2, "category_id": 9, "bbox": [10.5, 2, 5, 5], "score": 0.75,
             "model_version": "other-v2", "track_id": 3},
        ],
    }


def region(rid: str, x: int, y: int, w: int, h: int, label: str, **extra: Any) -> dict[str, Any]:
    return {"id": rid, "type": "rectanglelabels", "from_name": "label", "to_name": "image",
            "original_width": W, "original_height": H, "image_rotation": 0, **extra,
            "value": {"x": 100 * x / W, "y": 100 * y / H, "width": 100 * w / W,
                      "height": 100 * h / H, "rotation": 0, "rectanglelabels": [label]}}


def labelstudio_doc(video_id: int) -> list[dict[str, Any]]:
    """A valid Label Studio export: an annotated task with a prediction, a reviewed-empty task."""
    return [
        {"id": 11, "data": {"image": f"/data/upload/3/1a2b3c4d-v{video_id:06d}_f000001.png",
                            "frame_index": 1, "video_id": video_id,
                            "sonolabel_regions": {"r1": {"source": "propagated", "track_id": 3}}},
         "annotations": [{"id": 5, "was_cancelled": False,
                          "result": [region("r1", 10, 12, 20, 16, "tumor")]}],
         "predictions": [{"model_version": "m1", "score": 0.5,
                          "result": [region("p1", 30, 6, 8, 8, "vessel", score=0.8)]}]},
        {"id": 12, "data": {"image": f"/data/local-files/?d=v{video_id:06d}_f000004.png",
                            "frame_index": 4},
         "annotations": [{"id": 6, "result": []}]},
    ]


COCO_FIELDS: list[tuple] = [
    (), ("images",), ("annotations",), ("categories",), ("images", 0), ("annotations", 0),
    ("categories", 0),
    *[("images", i, k) for i in (0, 1) for k in
      ("id", "file_name", "frame_index", "width", "height", "video_id", "reviewed_empty")],
    *[("annotations", i, k) for i in (0, 1) for k in
      ("id", "image_id", "category_id", "bbox", "score", "track_id", "model_version", "iscrowd")],
    *[("annotations", 0, "bbox", k) for k in range(4)],
    *[("categories", 0, k) for k in ("id", "name")],
]
LABELSTUDIO_FIELDS: list[tuple] = [
    (), (0,), (1,), (0, "id"), (0, "data"), (0, "annotations"), (0, "predictions"),
    (1, "annotations"), (1, "annotations", 0, "result"),
    *[(0, "data", k) for k in ("frame_index", "image", "video_id", "sonolabel_regions")],
    (0, "data", "sonolabel_regions", "r1"),
    *[(0, "data", "sonolabel_regions", "r1", k) for k in ("source", "track_id")],
    (0, "annotations", 0), (0, "annotations", 0, "result"), (0, "annotations", 0, "was_cancelled"),
    (0, "annotations", 0, "result", 0),
    *[(0, "annotations", 0, "result", 0, k) for k in
      ("id", "type", "original_width", "original_height", "image_rotation", "value")],
    *[(0, "annotations", 0, "result", 0, "value", k) for k in
      ("x", "y", "width", "height", "rotation", "rectanglelabels")],
    (0, "annotations", 0, "result", 0, "value", "rectanglelabels", 0),
    *[(0, "predictions", 0, k) for k in ("model_version", "score", "result")],
    *[(0, "predictions", 0, "result", 0, k) for k in ("id", "score", "value")],
]


def mutate(doc: Any, path: tuple, value: Any) -> Any:
    """``doc`` with the field at ``path`` set to ``value`` (or removed); a path that an earlier
    mutation broke is left alone."""
    if not path:
        return doc if value is DELETE else value
    parent = doc
    for key in path[:-1]:
        try:
            parent = parent[key]
        except (KeyError, IndexError, TypeError):
            return doc
    key = path[-1]
    if isinstance(parent, dict) or (isinstance(parent, list) and isinstance(key, int)
                                    and key < len(parent)):
        if value is DELETE:
            del parent[key]
        else:
            parent[key] = value
    return doc


def state(video_id: int) -> tuple:
    """Everything an import may change."""
    return (db.session.scalar(sa.select(sa.func.count(Box.id))),
            db.session.scalar(sa.select(sa.func.count(LabelEvent.id))),
            sorted(db.session.scalars(sa.select(Frame.id).where(Frame.reviewed_empty))),
            sorted((s.id, s.status.value) for s in db.session.scalars(
                sa.select(Scene).where(Scene.video_id == video_id))))


def reset() -> None:
    """Undo a successful import, so the next example starts from the same video."""
    db.session.execute(sa.delete(LabelEvent))
    db.session.execute(sa.delete(Box))
    db.session.execute(sa.update(Frame).values(reviewed_empty=False))
    db.session.execute(sa.update(Scene).values(status=SceneStatus.new))
    db.session.commit()


def import_is_all_or_nothing(run: Any, doc: Any, video_id: int, match: str) -> None:
    before = state(video_id)
    try:
        report = run(doc, video_id, match=match)
    except LabelImportRefused as err:
        assert err.problems and all(isinstance(p, str) and p and len(p) < 600 for p in err.problems)
        db.session.rollback()
        assert state(video_id) == before
        return
    stored = db.session.scalars(sa.select(Box)).all()
    assert len(stored) == report.boxes_added
    for b in stored:
        assert_sane(b.x, b.y, b.w, b.h, b.score, b.track_id, b.model_version)
    reset()


def assert_sane(x: float, y: float, w: float, h: float, score: float | None, track_id: int | None,
                model_version: str | None) -> None:
    assert all(math.isfinite(v) for v in (x, y, w, h)), (x, y, w, h)
    assert w >= MIN_INPUT_SIZE and h >= MIN_INPUT_SIZE, (w, h)
    assert 0 <= x and x + w <= W and 0 <= y and y + h <= H, (x, y, w, h)
    assert score is None or 0 <= score <= 1
    assert track_id is None or 0 <= track_id <= DB_INT_MAX
    assert model_version is None or (len(model_version) <= 64 and "\x00" not in model_version)  # PostgreSQL refuses NUL


@pytest.mark.parametrize("match", ["frame_index", "file_name"])
def test_the_unmutated_files_import_exactly(app, video, match):
    with app.app_context():
        import_coco(coco_doc(video), video, match=match)
        assert boxes(video) == [
            (1, 1, 3.0, 4.0, 20.0, 10.0, BoxSource.manual, None, None, None, None),
            (4, 2, 10.5, 2.0, 5.0, 5.0, BoxSource.model, 0.75, "other-v2", 3, None)]
        reset()
        report = import_labelstudio(labelstudio_doc(video), video, match=match)
        assert report.frames_marked_empty == 1
        assert boxes(video) == [
            (1, 1, 10.0, 12.0, 20.0, 16.0, BoxSource.propagated, None, None, 3, None),
            (1, 2, 30.0, 6.0, 8.0, 8.0, BoxSource.model, 0.8, "m1", None, None)]


@pytest.mark.parametrize("parse, make, fields", [
    (parse_coco, coco_doc, COCO_FIELDS), (parse_labelstudio, labelstudio_doc, LABELSTUDIO_FIELDS)],
    ids=["coco", "labelstudio"])
def test_every_field_with_every_bad_value_is_a_problem_or_a_sane_box(app, video, parse, make,
                                                                     fields):
    """Every special value in every field, parsed only (writing is what the generated tests
    above check): no exception, and what would be imported is sane."""
    with app.app_context():
        for path in fields:
            for value in SPECIALS:
                plan = parse(mutate(make(video), path, copy.deepcopy(value)), video)
                assert all(isinstance(p, str) and p and len(p) < 600 for p in plan.problems)
                for b in plan.boxes:
                    assert_sane(b.x, b.y, b.w, b.h, b.score, b.track_id, b.model_version)


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(COCO_FIELDS), VALUES), min_size=1, max_size=3),
       match=st.sampled_from(["frame_index", "file_name"]))
def test_any_mutated_coco_file_imports_sanely_or_is_refused_whole(app, video, mutations, match):
    doc = coco_doc(video)
    for path, value in mutations:
        doc = mutate(doc, path, copy.deepcopy(value))
    with app.app_context():
        import_is_all_or_nothing(import_coco, doc, video, match)


@FUZZ
@given(mutations=st.lists(st.tuples(st.sampled_from(LABELSTUDIO_FIELDS), VALUES), min_size=1,
                          max_size=3),
       match=st.sampled_from(["frame_index", "file_name"]))
def test_any_mutated_labelstudio_file_imports_sanely_or_is_refused_whole(app, video, mutations,
                                                                        match):
    doc = labelstudio_doc(video)
    for path, value in mutations:
        doc = mutate(doc, path, copy.deepcopy(value))
    with app.app_context():
        import_is_all_or_nothing(import_labelstudio, doc, video, match)


@st.composite
def frame_boxes(draw: Any, step: float) -> dict[int, tuple[float, float, float, float]]:
    """At most one box per frame (two on a frame within half a pixel would be one box), on a
    grid of ``step`` px, at least MIN_INPUT_SIZE on a side, inside the 64x48 frame."""
    out = {}
    for index in draw(st.sets(st.integers(0, 5), min_size=1, max_size=6)):
        least = math.ceil(MIN_INPUT_SIZE / step)
        x = draw(st.integers(0, int(W / step) - least)) * step
        y = draw(st.integers(0, int(H / step) - least)) * step
        w = draw(st.integers(least, int((W - x) / step))) * step
        h = draw(st.integers(least, int((H - y) / step))) * step
        out[index] = (x, y, w, h)
    return out


@FUZZ
@given(placed=frame_boxes(step=0.25), scores=st.lists(st.floats(0, 1), min_size=6, max_size=6))
def test_valid_coco_boxes_import_exactly(app, video, placed, scores):
    doc = {"images": [{"id": i, "frame_index": i, "width": W, "height": H} for i in placed],
           "categories": [{"id": 1, "name": "tumor"}],
           "annotations": [{"id": i, "image_id": i, "category_id": 1, "bbox": list(b),
                            "score": scores[i]} for i, b in placed.items()]}
    with app.app_context():
        assert import_coco(doc, video).boxes_added == len(placed)
        assert boxes(video) == [(i, 1, *placed[i], BoxSource.model, scores[i], None, None, None)
                                for i in sorted(placed)]
        reset()


@FUZZ
@given(placed=frame_boxes(step=1.0))
def test_valid_labelstudio_boxes_import_exactly(app, video, placed):
    tasks = [{"id": i, "data": {"frame_index": i},
              "annotations": [{"result": [region(f"r{i}", *map(int, b), "vessel")]}]}
             for i, b in placed.items()]
    with app.app_context():
        assert import_labelstudio(tasks, video).boxes_added == len(placed)
        assert boxes(video) == [(i, 2, *placed[i], BoxSource.manual, None, None, None, None)
                                for i in sorted(placed)]
        reset()
