"""Property tests of the box API with generated payloads (Hypothesis): wrong types, integers
of any size, NaN and infinity, negative and huge sizes, missing fields, bools, bodies that are
not JSON objects. Whatever is sent, the answer is never a 5xx; a 400 names the bad field;
a refusal leaves every row and event as it was; a success stores exactly the box it answers,
inside the frame.

Examples are derandomized (the same ones on every run), so CI never flakes on a new one."""
from __future__ import annotations

import json
import math
import re

from helpers import seed_scene
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from annotator.db import db
from annotator.models import Box, BoxSource, Frame, LabelEvent, Scene
import pytest

# Generated inputs by the hundred: part of `make test`, not of the fast loop.
pytestmark = pytest.mark.slow

SETTINGS = settings(max_examples=60, deadline=None, database=None, derandomize=True,
                    suppress_health_check=list(HealthCheck))
BOX_FIELDS = ("class_id", "x", "y", "w", "h")
# A 400 says which field was wrong, quoted as sent ('x', 'row_version', ...).
NAMES_A_FIELD = re.compile(r"'(class_id|x|y|w|h|row_version|empty|threshold)'")

# Anything a client could put in a field.
wild = st.one_of(
    st.none(), st.booleans(), st.integers(), st.sampled_from([2**31, 2**63, -(2**63) - 1, 10**400]),
    st.floats(),  # NaN and infinities go out as the JSON literals Python writes
    st.sampled_from(["NaN", "inf", "-Infinity", "1e999", "12", "", "tumor"]),
    st.text(max_size=8), st.lists(st.integers(), max_size=3), st.just({"x": 1}))
# Mostly plausible numbers, so that successes are explored as well as refusals.
coordinate = st.one_of(st.integers(-5, 200), st.floats(-5, 200), st.floats(0, 1e-6),
                       st.floats(1e300, 1e308), wild)
size = st.one_of(st.integers(-5, 200), st.floats(-1, 200), st.floats(0, 2), wild)
class_id = st.one_of(st.sampled_from([1, 2]), st.integers(-3, 5), wild)
# A box in a 160x120 frame, or one with a field made wild, or anything at all.
plausible = st.fixed_dictionaries({
    "class_id": st.sampled_from([1, 2]), "x": st.floats(0, 150), "y": st.floats(0, 110),
    "w": st.floats(0.5, 60), "h": st.floats(0.5, 60), "row_version": st.integers(0, 3)})
box_payload = st.one_of(
    plausible,
    st.tuples(plausible, st.sampled_from(BOX_FIELDS), wild).map(lambda t: {**t[0], t[1]: t[2]}),
    st.fixed_dictionaries({}, optional={
        "class_id": class_id, "x": coordinate, "y": coordinate, "w": size, "h": size,
        "row_version": st.one_of(st.integers(0, 3), wild)}))
not_an_object = st.one_of(
    st.integers(0, 1000).map(lambda depth: "[" * depth + "]" * depth),
    st.just('{"x": ' * 100_000 + "1" + "}" * 100_000),  # past the parser's recursion limit
    st.sampled_from(['{"x": NaN}', '{"w": Infinity}', "[]", "5", '"box"', "null", "{", "", "\ufeff{}"]),
    st.text(max_size=20).filter(lambda t: not t.strip().startswith("{")),
).map(lambda text: text.encode("utf-8", "surrogatepass")) | st.just(b'{"x": "\xff"}')


def state(app, frame_id: int) -> tuple:
    """Everything a refused request must leave alone: rows, events, the scene, the frame."""
    with app.app_context():
        frame = db.session.get(Frame, frame_id)
        boxes = sorted(tuple(b.as_dict().items()) for b in db.session.scalars(db.select(Box)))
        return (boxes, db.session.scalar(db.select(db.func.count(LabelEvent.id))),
                db.session.get(Scene, frame.scene_id).status, frame.reviewed_empty)


def stored(app, box_id: int) -> dict | None:
    with app.app_context():
        box = db.session.get(Box, box_id)
        return box.as_dict() if box else None


def check_answer(app, resp, frame_id: int, before: tuple) -> dict:
    """The rules every answer keeps; returns the JSON body."""
    assert resp.status_code < 500, resp.get_data(as_text=True)
    body = resp.get_json()
    assert isinstance(body, dict), resp.get_data(as_text=True)
    if resp.status_code >= 400:
        assert body["error"], body
        if resp.status_code == 400:
            assert NAMES_A_FIELD.search(body["error"]) or "JSON" in body["error"], body["error"]
        assert state(app, frame_id) == before, "a refused request changed something"
    return body


def check_saved(app, box: dict, width: int, height: int) -> None:
    """A saved box: as the answer says, inside the frame, with a positive size."""
    saved = stored(app, box["id"])
    assert saved == {k: v for k, v in box.items() if k != "author"}
    assert all(math.isfinite(saved[k]) for k in ("x", "y", "w", "h"))
    assert saved["w"] > 0 and saved["h"] > 0
    assert saved["x"] >= 0 and saved["y"] >= 0
    # x + w is computed in floats: allow the rounding of one addition.
    assert saved["x"] + saved["w"] <= width * (1 + 1e-12)
    assert saved["y"] + saved["h"] <= height * (1 + 1e-12)


def send(app, s, method: str, url: str, payload, seeded, frame_id: int) -> int:
    """Send ``payload`` and check the answer by the rules above (a saved box too); its status."""
    before = state(app, frame_id)
    resp = s.json(method, url, payload)
    body = check_answer(app, resp, frame_id, before)
    if resp.status_code < 300 and body.get("box"):
        check_saved(app, body["box"], seeded.width, seeded.height)
        if resp.status_code == 201:
            assert len(state(app, frame_id)[0]) == len(before[0]) + 1
    return resp.status_code


def test_drawing_a_box_with_any_payload(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    frame_id = seeded.frame_ids[0]
    answered = set()

    @SETTINGS
    @given(payload=box_payload)
    @example(payload={"class_id": 1, "x": 10, "y": 10, "w": 20, "h": 20})  # the outcomes asserted
    @example(payload={"class_id": 1, "x": 10, "y": 10, "w": 20, "h": 10**400})  # below, at least
    def draw(payload):
        answered.add(send(app, s, "POST", f"/api/frames/{frame_id}/boxes", payload, seeded, frame_id))

    draw()
    assert {201, 400} <= answered


def test_editing_a_box_with_any_payload(app, login):
    seeded = seed_scene(app, frames=2)
    s = login("annotator")
    frame_id = seeded.frame_ids[0]
    box_id = s.json("POST", f"/api/frames/{frame_id}/boxes",
                    {"class_id": 1, "x": 10, "y": 10, "w": 20, "h": 20}).get_json()["box"]["id"]
    answered = set()

    @SETTINGS
    @given(payload=box_payload, fresh=st.booleans())
    @example(payload={"x": 12, "row_version": 0}, fresh=True)
    @example(payload={"x": 12, "row_version": 0}, fresh=False)
    @example(payload={"x": "12", "row_version": 0}, fresh=True)
    def edit(payload, fresh):
        if fresh and isinstance(payload.get("row_version"), int):  # mostly the version on file
            payload["row_version"] = stored(app, box_id)["row_version"]
        answered.add(send(app, s, "PATCH", f"/api/boxes/{box_id}", payload, seeded, frame_id))

    edit()
    assert {200, 400, 409} <= answered


def test_removing_accepting_and_marking_with_any_payload(app, login):
    """delete, accept and reject take a row_version; no-findings takes 'empty'."""
    seeded = seed_scene(app, frames=2, prelabels=6)
    s = login("annotator")
    frame_id = seeded.frame_ids[1]
    answered = set()

    def a_prelabel() -> int:
        with app.app_context():
            box = Box(frame_id=frame_id, class_id=1, x=5, y=5, w=10, h=10, source=BoxSource.model,
                      score=0.5)
            db.session.add(box)
            db.session.commit()
            return box.id

    @SETTINGS
    @given(action=st.sampled_from(["delete", "accept", "reject", "no-findings"]),
           version=st.one_of(st.just(1), wild), empty=st.one_of(st.booleans(), wild))
    @example(action="delete", version=1, empty=True)
    @example(action="accept", version=1, empty=True)
    @example(action="delete", version="1", empty=True)
    @example(action="no-findings", version=1, empty="yes")
    def act(action, version, empty):
        box_id = a_prelabel()
        method, url, payload = {
            "delete": ("DELETE", f"/api/boxes/{box_id}", {"row_version": version}),
            "accept": ("POST", f"/api/boxes/{box_id}/accept", {"row_version": version}),
            "reject": ("POST", f"/api/boxes/{box_id}/reject", {"row_version": version}),
            "no-findings": ("POST", f"/api/frames/{frame_id}/no-findings", {"empty": empty}),
        }[action]
        status = send(app, s, method, url, payload, seeded, frame_id)
        answered.add((action, status))
        if action == "no-findings" and status == 200 and empty is True:
            s.json("POST", f"/api/frames/{frame_id}/no-findings", {"empty": False})

    act()
    assert {("delete", 200), ("accept", 200), ("delete", 400), ("no-findings", 400)} <= answered


def test_a_body_that_is_not_a_json_object_is_a_400(app, login):
    seeded = seed_scene(app, frames=1, prelabels=1)
    s = login("annotator")
    frame_id = seeded.frame_ids[0]
    urls = [("POST", f"/api/frames/{frame_id}/boxes"), ("PATCH", f"/api/boxes/{seeded.prelabel_ids[0]}"),
            ("POST", "/api/events/revert"), ("POST", f"/api/scenes/{seeded.scene_id}/status")]

    @SETTINGS
    @given(target=st.sampled_from(urls), raw=not_an_object)
    def send(target, raw):
        before = state(app, frame_id)
        resp = s.client.open(target[1], method=target[0], data=raw,
                             headers={"X-CSRFToken": s.csrf, "Content-Type": "application/json"})
        assert resp.status_code == 400, (raw[:40], resp.status_code, resp.get_data()[:200])
        assert "JSON" in resp.get_json()["error"]
        assert state(app, frame_id) == before

    send()


def test_ids_beyond_the_database_range_are_404_not_500(app, login):
    seeded = seed_scene(app, frames=1)
    s = login("admin")
    for big in (2**31, 2**63, 10**30):
        for method, url in [("GET", f"/api/scenes/{big}"), ("PATCH", f"/api/boxes/{big}"),
                            ("DELETE", f"/api/boxes/{big}"), ("GET", f"/frames/{big}.png"),
                            ("GET", f"/videos/{big}"), ("POST", f"/api/frames/{big}/boxes")]:
            resp = s.json(method, url, {"row_version": 1})
            assert resp.status_code == 404, (method, url, resp.status_code)
    # In bodies and query strings they are bad input, named.
    cases = [("POST", "/api/events/revert", {"event_ids": [2**63]}, "'event_ids'"),
             ("POST", "/api/events/revert", {"event_ids": 5}, "'event_ids'"),
             ("POST", "/api/scenes/assign", {"scene_ids": [2**63], "assignee": None}, "'scene_ids'"),
             ("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
              {"class_id": 2**63, "x": 1, "y": 1, "w": 5, "h": 5}, "'class_id'"),
             ("POST", f"/api/frames/{seeded.frame_ids[0]}/boxes",
              {"class_id": 1, "x": 10**400, "y": 1, "w": 5, "h": 5}, "'x'"),
             ("POST", "/jobs/cancel", {"job_id": 2**63}, "'job_id'"),
             ("GET", f"/api/scenes?video_id={2**63}", None, "'video_id'"),
             ("GET", "/api/scenes?video_id=abc", None, "'video_id'"),
             ("GET", f"/api/scenes/{seeded.scene_id}/events?frame_id=1.5", None, "'frame_id'"),
             ("GET", "/api/model-feedback?scene_id=x", None, "'scene_id'")]
    for method, url, payload, field in cases:
        resp = s.json(method, url, payload)
        assert resp.status_code == 400 and field in resp.get_json()["error"], (url, resp.get_json())


def test_a_non_integer_query_parameter_is_refused_on_pages_too(app, login):
    seed_scene(app, frames=1)
    s = login("admin")
    resp = s.get("/scenes?video_id=first")
    assert resp.status_code == 400 and "video_id" in resp.get_data(as_text=True)
    resp = s.get("/models/report?a=x")
    assert resp.status_code == 400 and "&#39;a&#39;" in resp.get_data(as_text=True)
    assert s.get("/scenes?video_id=").status_code == 200  # empty: no filter, as the form sends it


def test_the_favicon_is_served_without_logging_in(client):
    resp = client.get("/favicon.ico")
    assert resp.status_code == 200 and resp.mimetype in ("image/vnd.microsoft.icon", "image/x-icon")
    assert resp.data[:4] == b"\x00\x00\x01\x00"  # the ICO header


def test_json_bodies_are_strict_rfc_8259(app, login):
    """Python's json reads NaN and Infinity; a box must not be stored from them."""
    seeded = seed_scene(app, frames=1)
    s = login("annotator")
    raw = json.dumps({"class_id": 1, "x": float("nan"), "y": 1, "w": 5, "h": 5})
    resp = s.client.post(f"/api/frames/{seeded.frame_ids[0]}/boxes", data=raw,
                         headers={"X-CSRFToken": s.csrf, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.get_json()["error"]


def test_nul_characters_are_refused_before_they_reach_the_database(app, login, tmp_path):
    """PostgreSQL cannot store or compare a NUL: each way text comes in refuses it with a 400."""
    seeded = seed_scene(app, frames=1)
    s = login("annotator")
    resp = s.get("/api/scenes?patient=P%00X")
    assert resp.status_code == 400 and "NUL" in resp.get_json()["error"]
    raw = '{"status": "submitted", "comment": "a\\u0000b"}'
    resp = s.client.post(f"/api/scenes/{seeded.scene_id}/status", data=raw,
                         headers={"X-CSRFToken": s.csrf, "Content-Type": "application/json"})
    assert resp.status_code == 400 and "not valid JSON" in resp.get_json()["error"]
    # An escaped backslash before "u0000" is ordinary text, not a NUL.
    raw = '{"status": "in_progress", "comment": "a\\\\u0000b"}'
    resp = s.client.post(f"/api/scenes/{seeded.scene_id}/status", data=raw,
                         headers={"X-CSRFToken": s.csrf, "Content-Type": "application/json"})
    assert resp.status_code == 200, resp.get_json()
    resp = app.test_client().post("/login", data={"username": "a\x00", "password": "x"})
    assert resp.status_code == 400
    label_file = tmp_path / "labels.json"
    label_file.write_text('{"images": [], "annotations": [], "categories": [{"id": 1, "name": "tu\\u0000"}]}')
    result = app.test_cli_runner().invoke(args=["labels", "import", str(label_file), "--video",
                                                str(seeded.video_id)])
    assert result.exit_code == 2 and "NUL" in result.output
