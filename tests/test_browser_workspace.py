"""End-to-end: the labelling workspace in a real Chromium, driven by mouse and keyboard.

The app runs from a thread on a free loopback port (werkzeug, threaded) over SQLite (the
``live`` and ``browser`` fixtures of conftest.py); the assertions read the saved state back through the API, so they check what a reload would show.
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from helpers import (
    BROWSER,
    WORKSPACE_READY,
    canvas_point,
    drag,
    logged_in_page,
    seed_scene,
    settle,
)

pytestmark = BROWSER


def open_as(browser, app, role: str, path: str, ready: str = WORKSPACE_READY):
    return logged_in_page(browser, app, role, path, ready)





def saved(page, app, frame_id) -> dict[int, dict]:
    resp = page.context.request.get(f"{app.base_url}/api/frames/{frame_id}/boxes")
    assert resp.ok
    return {b["id"]: b for b in resp.json()["boxes"]}


def pixel(page, x: float, y: float) -> list[int]:
    return page.evaluate(
        """([x, y]) => { const c = document.getElementById('canvas'); const v = window.sonolabel.view;
            const d = window.devicePixelRatio || 1;
            return Array.from(c.getContext('2d').getImageData(Math.round(d * (v.ox + x * v.scale)),
                   Math.round(d * (v.oy + y * v.scale)), 1, 1).data); }""", [x, y])


def test_annotate_review_and_return_a_scene(live, browser, tmp_path):
    seeded = seed_scene(live, frames=4, width=320, height=240, prelabels=4)
    f0, f1 = seeded.frame_ids[:2]
    page = open_as(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label")

    # Draw a tumour box with the mouse.
    drag(page, (200, 150), (260, 200))
    boxes = [b for b in saved(page, live, f0).values() if b["source"] == "manual"]
    assert len(boxes) == 1
    box = boxes[0]
    assert box["class_id"] == 1 and abs(box["x"] - 200) <= 1 and abs(box["w"] - 60) <= 1 and abs(box["h"] - 50) <= 1

    # Move it by its middle, then resize it by the bottom-right handle.
    drag(page, (230, 175), (240, 180))
    moved = saved(page, live, f0)[box["id"]]
    assert abs(moved["x"] - 210) <= 1 and abs(moved["y"] - 155) <= 1 and abs(moved["w"] - 60) <= 1
    drag(page, (moved["x"] + moved["w"], moved["y"] + moved["h"]), (300, 230))
    resized = saved(page, live, f0)[box["id"]]
    assert abs(resized["x"] + resized["w"] - 300) <= 1 and abs(resized["y"] + resized["h"] - 230) <= 1

    # The selected box changes class by hotkey.
    page.keyboard.press("2")
    settle(page)
    assert saved(page, live, f0)[box["id"]]["class_id"] == 2

    # Pre-labels: 0.9 and 0.8 are shown at the default threshold 0.5, 0.3 and 0.2 are hidden.
    assert page.evaluate("window.sonolabel.boxes[%d].filter(b => b.source !== 'manual' && b.score >= window.sonolabel.threshold).length" % f0) == 2
    pre = {b["score"]: b for b in saved(page, live, f0).values() if b["source"] == "model"}
    p09, p08 = pre[0.9], pre[0.8]
    page.mouse.click(*canvas_point(page, p09["x"] + 12, p09["y"] + 10))
    page.keyboard.press("y")
    settle(page)
    page.mouse.click(*canvas_point(page, p08["x"] + 12, p08["y"] + 10))
    page.keyboard.press("n")
    settle(page)
    now = saved(page, live, f0)
    assert now[p09["id"]]["source"] == "manual" and p08["id"] not in now
    feedback = page.context.request.get(f"{live.base_url}/api/model-feedback").json()["versions"][0]
    assert (feedback["accepted"], feedback["rejected"]) == (1, 1)

    # Undo brings the rejected pre-label back, as a pre-label.
    page.keyboard.press("Control+z")
    settle(page)
    page.wait_for_function("() => window.sonolabel.boxes[%d].some(b => b.id === %d)" % (f0, p08["id"]))
    assert saved(page, live, f0)[p08["id"]]["source"] == "model"

    # Next frame by key, with the previous frame's boxes as a ghost.
    # Along the left edge of the vessel box (the ghost is dashed, so several points).
    edge = [(resized["x"], resized["y"] + resized["h"] * k / 12) for k in range(2, 11)]
    redness = lambda: max(r - b for r, _, b, _ in (pixel(page, *p) for p in edge))  # noqa: E731
    page.keyboard.press("ArrowRight")
    page.wait_for_function("() => window.sonolabel.cur === 1")
    page.wait_for_function("() => { const s = window.sonolabel; const e = s.images.get(s.frames[1].id); return e && e.ok; }")
    plain = redness()
    page.keyboard.press("g")
    assert page.evaluate("window.sonolabel.ghost") is True
    assert redness() > plain + 40, plain
    page.keyboard.press("d")
    page.wait_for_function("() => window.sonolabel.cur === 2")
    page.keyboard.press("a")
    page.keyboard.press("ArrowLeft")
    page.wait_for_function("() => window.sonolabel.cur === 0")

    # A reload shows everything that was saved.
    page.reload()
    page.wait_for_selector("#ws[data-ready='1']")
    after_reload = {b["id"]: b for b in page.evaluate("window.sonolabel.boxes[%d]" % f0)}
    assert after_reload[box["id"]]["class_id"] == 2 and after_reload[p09["id"]]["source"] == "manual"
    assert after_reload[p08["id"]]["source"] == "model"
    assert abs(after_reload[box["id"]]["x"] + after_reload[box["id"]]["w"] - 300) <= 1

    shot = tmp_path / "workspace.png"
    page.screenshot(path=str(shot))
    pixels = np.asarray(Image.open(shot).convert("RGB")).astype(int)
    assert pixels.std() > 20 and len(np.unique(pixels.reshape(-1, 3), axis=0)) > 500
    tumour_blue = (np.abs(pixels - [0x5e, 0xc8, 0xf2]).sum(axis=2) < 40).sum()
    vessel_red = (np.abs(pixels - [0xe5, 0x39, 0x35]).sum(axis=2) < 40).sum()
    assert tumour_blue > 100 and vessel_red > 100, (tumour_blue, vessel_red)

    # Mark an empty frame, then submit.
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("e")
    settle(page)
    marked = lambda: page.context.request.get(  # noqa: E731
        f"{live.base_url}/api/frames/{seeded.frame_ids[2]}/boxes").json()["reviewed_empty"]
    assert marked() and page.is_visible("#empty-badge")
    # Undo and redo take the mark back and set it again.
    page.keyboard.press("Control+z")
    settle(page)
    page.wait_for_selector("#empty-badge", state="hidden")
    assert not marked()
    page.keyboard.press("Control+Shift+z")
    settle(page)
    page.wait_for_selector("#empty-badge", state="visible")
    assert marked()

    # The review gate: frames 1 and 3 are untouched and frame 0 keeps three pre-labels (two
    # below the threshold). The refusal names them, and the workspace goes to frame 0 and
    # lowers the threshold so every undecided box shows.
    page.click("#submit-scene")
    page.wait_for_selector("#gate-msg")
    gate = page.inner_text("#gate-msg")
    assert "Frames 1, 3 have no box" in gate and "frame 0 has 3 pre-labels undecided" in gate, gate
    page.wait_for_function("() => window.sonolabel.cur === 0 && window.sonolabel.threshold === 0")
    assert "cov-undecided" in page.get_attribute("#timeline span:nth-child(1)", "class")
    assert "cov-missing" in page.get_attribute("#timeline span:nth-child(2)", "class")
    page.keyboard.press("Shift+Y")
    settle(page)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("e")  # frame 1
    settle(page)
    page.keyboard.press("ArrowRight")
    page.keyboard.press("ArrowRight")
    page.keyboard.press("e")  # frame 3 (frame 2 is marked already)
    settle(page)
    assert "0 not done" in page.inner_text("#coverage") and "0 with undecided" in page.inner_text("#coverage")
    page.click("#submit-scene")
    page.wait_for_function("() => window.sonolabel.scene.status === 'submitted'")
    drag(page, (20, 200), (60, 230))  # locked: nothing is drawn
    assert len(saved(page, live, seeded.frame_ids[2])) == 0
    assert page.errors == []

    # The reviewer sees who made the boxes and returns the scene with a comment.
    review = open_as(browser, live, "reviewer", f"/scenes/{seeded.scene_id}/label")
    review.keyboard.press("ArrowLeft")
    review.keyboard.press("ArrowLeft")
    review.wait_for_function("() => window.sonolabel.cur === 0")
    listed = review.inner_text("#box-list")
    assert "drawn by annotator" in listed and "accepted from two-frame-v3" in listed
    review.fill("#review-comment", "The vessel box is too wide.")
    review.click("#return-scene")
    review.wait_for_function("() => window.sonolabel.scene.status === 'returned'")
    assert review.errors == []

    page.reload()
    page.wait_for_selector("#ws[data-ready='1']")
    assert page.is_visible("#comment-box")
    assert "The vessel box is too wide." in page.inner_text("#comment-text")
    assert page.is_visible("#submit-scene")


def test_conflict_from_a_second_browser_reloads_the_frame(live, browser):
    seeded = seed_scene(live, frames=2, width=320, height=240)
    f0 = seeded.frame_ids[0]
    first = open_as(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label")
    drag(first, (40, 40), (120, 100))
    box_id = next(iter(saved(first, live, f0)))

    # A second browser (another user) loads the scene and moves the box.
    second = open_as(browser, live, "admin", f"/scenes/{seeded.scene_id}/label")
    drag(second, (80, 70), (180, 150))
    theirs = saved(second, live, f0)[box_id]
    assert theirs["row_version"] == 2 and abs(theirs["x"] - 140) <= 1

    # The first browser still holds version 1: its move is refused with 409 and it is told.
    with first.expect_response(lambda r: r.request.method == "PATCH") as answer:
        drag(first, (80, 70), (90, 75))
    assert answer.value.status == 409
    first.wait_for_selector(".toast.conflict")
    assert "changed by" in first.inner_text(".toast.conflict")
    first.wait_for_function(f"() => window.sonolabel.boxes[{f0}][0].row_version === 2")
    shown = first.evaluate(f"window.sonolabel.boxes[{f0}][0]")
    assert abs(shown["x"] - 140) <= 1
    assert saved(first, live, f0)[box_id] == theirs  # the saved box was not touched
    # Having reloaded, the first browser can edit again.
    drag(first, (180, 150), (170, 140))
    assert saved(first, live, f0)[box_id]["row_version"] == 3
    assert first.errors == [] and second.errors == []


def test_data_manager_assigns_ticked_scenes(live, browser):
    scenes = [seed_scene(live, patient=f"P00{i}").scene_id for i in range(3)]
    page = open_as(browser, live, "data_manager", "/scenes", ready="#assign-form")
    page.check("#tick-all")
    page.uncheck(f"tr[data-scene='{scenes[1]}'] input[name=scene_id]")
    page.select_option("#assign-form select[name=to]", "annotator")
    page.click("#assign-form button[type=submit]")
    page.wait_for_selector("text=2 scenes assigned to annotator.")
    cells = {i: page.inner_text(f"tr[data-scene='{i}'] td.assignee") for i in scenes}
    assert cells == {scenes[0]: "annotator", scenes[1]: "—", scenes[2]: "annotator"}
    assert page.errors == []


def test_y_after_p_accepts_the_carried_box_and_an_admin_overrides_the_gate(live, browser):
    seeded = seed_scene(live, frames=3, width=320, height=240)
    f1 = seeded.frame_ids[1]
    page = open_as(browser, live, "admin", f"/scenes/{seeded.scene_id}/label")
    assert page.is_disabled("#prelabel") and "No model is active" in page.inner_text("#prelabel-why")
    page.keyboard.press("?")
    assert page.is_visible("#keys-help") and "the model's original boxes" in page.inner_text("#keys-help")
    page.keyboard.press("Escape")
    assert not page.is_visible("#keys-help")

    drag(page, (100, 90), (160, 150))
    page.keyboard.press("p")
    page.wait_for_function("() => window.sonolabel.cur === 1 && window.sonolabel.sel !== null")
    settle(page)
    carried = page.evaluate("window.sonolabel.sel")
    assert carried["source"] == "propagated" and carried["frame_id"] == f1
    assert "Frame 1 (2 of 3 in this scene)" in page.inner_text("#frame-info")
    page.keyboard.press("y")
    settle(page)
    assert saved(page, live, f1)[carried["id"]]["source"] == "manual"
    page.keyboard.press("y")  # nothing left to accept: said, not silently ignored
    page.wait_for_selector(".toast >> text=already accepted")

    # Frame 2 is untouched: the gate refuses, goes there, and the admin submits anyway.
    page.keyboard.press("ArrowLeft")
    page.click("#submit-scene")
    page.wait_for_selector("#gate-msg")
    page.wait_for_function("() => window.sonolabel.cur === 2")
    page.fill("#override-reason", "Frame 2 is out of plane.")
    page.click("#override-submit")
    page.wait_for_function("() => window.sonolabel.scene.status === 'submitted'")
    events = page.context.request.get(f"{live.base_url}/api/scenes/{seeded.scene_id}/events").json()["events"]
    override = next(e for e in events if e["action"] == "override_gate")
    assert override["before"]["unfinished_frames"] == [2]
    assert override["after"]["reason"] == "Frame 2 is out of plane."
    assert page.errors == []
