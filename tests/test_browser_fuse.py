"""End-to-end in Chromium: a track propagated over a frame where the detector found the object
shows the fused-box offer; U accepts it (the detector's edges, the track's identity), Ctrl+Z
brings the offer back."""
from __future__ import annotations

import pytest
from helpers import (
    BROWSER,
    WORKSPACE_READY,
    draw_box,
    go_to_frame,
    lesion_box,
    logged_in_page,
    seed_scene,
    settle,
)

from annotator.db import db
from annotator.models import Box, BoxSource

pytestmark = BROWSER





def test_the_fused_box_offer_is_shown_and_accepted_with_u_and_undone(live, browser):
    seeded = seed_scene(live, frames=10, width=320, height=240)
    lesion = lesion_box(5, 320, 240)
    edges = {**lesion, "x": lesion["x"] + 3, "w": lesion["w"] + 2}  # the detector's, a little off the flow's
    with live.app_context():
        pre = Box(frame_id=seeded.frame_ids[5], class_id=1, source=BoxSource.model, score=0.85,
                  model_version="m1", **edges)
        db.session.add(pre)
        db.session.commit()
        pre_id = pre.id
    page = logged_in_page(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label", WORKSPACE_READY)
    draw_box(page, lesion_box(0, 320, 240))
    go_to_frame(page, 9)
    draw_box(page, lesion_box(9, 320, 240))
    page.keyboard.press("t")
    settle(page)

    # the track list and the track's lane say where the detector's box is offered
    assert "1 fuse offer" in page.inner_text("#track-list")
    assert page.locator(".lane span.fuse").count() == 1
    go_to_frame(page, 5)
    offer = page.locator("#fuse-list li")
    assert page.is_visible("#fuse-offers") and offer.count() == 1
    assert "Fuse into track 1" in offer.inner_text() and f"#{pre_id}" in offer.inner_text()
    carried = page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id].find(b => b.source === 'propagated')")
    assert carried["track_id"] == 1

    page.keyboard.press("u")
    settle(page)
    boxes = page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id]")
    assert [(b["id"], b["source"], b["track_id"]) for b in boxes] == [(pre_id, "manual", 1)]
    assert {k: boxes[0][k] for k in ("x", "y", "w", "h")} == pytest.approx(edges)
    assert not page.is_visible("#fuse-offers")
    assert page.locator(".lane span.key").count() == 3  # the fused box is a keyframe now

    page.keyboard.press("Control+z")
    settle(page)
    page.wait_for_selector("#fuse-offers", state="visible")
    sources = sorted(b["source"] for b in page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id]"))
    assert sources == ["model", "propagated"]
    page.click("#fuse-list button")  # the button does what U does
    settle(page)
    assert page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id].map(b => b.id)") == [pre_id]
    assert page.errors == []


def test_with_steer_ticked_t_moves_the_propagated_box_halfway_to_the_prelabel(live, browser):
    seeded = seed_scene(live, frames=10, width=320, height=240)
    lesion = lesion_box(5, 320, 240)
    edges = {**lesion, "x": lesion["x"] + 4, "w": lesion["w"] + 2}
    with live.app_context():
        db.session.add(Box(frame_id=seeded.frame_ids[5], class_id=1, source=BoxSource.model,
                           score=0.85, model_version="m1", **edges))
        db.session.commit()
    page = logged_in_page(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label",
                          WORKSPACE_READY)
    draw_box(page, lesion_box(0, 320, 240))
    go_to_frame(page, 9)
    draw_box(page, lesion_box(9, 320, 240))
    page.keyboard.press("t")
    settle(page)
    carried = ("window.sonolabel.boxes[window.sonolabel.frames[5].id]"
               ".find(b => b.source === 'propagated')")
    flow = page.evaluate(carried)
    assert not page.is_checked("#steer")  # off unless asked: T gives the flow's box

    page.check("#steer")
    page.click("#track-propagate")
    settle(page)
    steered = page.evaluate(carried)
    assert steered["track_id"] == flow["track_id"] == 1
    for k in ("x", "w"):
        assert steered[k] == pytest.approx((flow[k] + edges[k]) / 2, abs=0.051)
    page.fill("#threshold", "0.9")  # the pre-label hidden: it steers nothing
    page.dispatch_event("#threshold", "input")
    page.click("#track-propagate")
    settle(page)
    assert page.evaluate(carried)["x"] == pytest.approx(flow["x"], abs=0.051)
    page.reload()  # the choice is kept for the next scene the annotator opens
    page.wait_for_selector(WORKSPACE_READY)
    assert page.is_checked("#steer")
    assert page.errors == []
