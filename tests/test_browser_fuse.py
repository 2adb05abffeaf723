"""End-to-end in Chromium: a track propagated over a frame where the detector found the object
shows the fused-box offer; U accepts it (the detector's edges, the track's identity), Ctrl+Z
brings the offer back."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import lesion_box, logged_in_page, seed_scene

from annotator.db import db
from annotator.models import Box, BoxSource

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
READY = "#ws[data-ready='1']"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
]


def _settle(page) -> None:
    page.wait_for_function("() => window.sonolabel.pending === 0")


def _draw(page, b) -> None:
    def at(x, y):
        return page.evaluate("""([x, y]) => { const r = document.getElementById('canvas').getBoundingClientRect();
            const v = window.sonolabel.view; return [r.left + v.ox + x * v.scale, r.top + v.oy + y * v.scale]; }""", [x, y])
    page.mouse.move(*at(b["x"], b["y"]))
    page.mouse.down()
    for t in (0.3, 0.6, 1.0):
        page.mouse.move(*at(b["x"] + t * b["w"], b["y"] + t * b["h"]))
    page.mouse.up()
    _settle(page)


def _go(page, i: int) -> None:
    page.click(f"#timeline span:nth-child({i + 1})")
    page.wait_for_function("(i) => window.sonolabel.cur === i", arg=i)


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
    page = logged_in_page(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label", READY)
    _draw(page, lesion_box(0, 320, 240))
    _go(page, 9)
    _draw(page, lesion_box(9, 320, 240))
    page.keyboard.press("t")
    _settle(page)

    # the track list and the track's lane say where the detector's box is offered
    assert "1 fuse offer" in page.inner_text("#track-list")
    assert page.locator(".lane span.fuse").count() == 1
    _go(page, 5)
    offer = page.locator("#fuse-list li")
    assert page.is_visible("#fuse-offers") and offer.count() == 1
    assert "Fuse into track 1" in offer.inner_text() and f"#{pre_id}" in offer.inner_text()
    carried = page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id].find(b => b.source === 'propagated')")
    assert carried["track_id"] == 1

    page.keyboard.press("u")
    _settle(page)
    boxes = page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id]")
    assert [(b["id"], b["source"], b["track_id"]) for b in boxes] == [(pre_id, "manual", 1)]
    assert {k: boxes[0][k] for k in ("x", "y", "w", "h")} == pytest.approx(edges)
    assert not page.is_visible("#fuse-offers")
    assert page.locator(".lane span.key").count() == 3  # the fused box is a keyframe now

    page.keyboard.press("Control+z")
    _settle(page)
    page.wait_for_selector("#fuse-offers", state="visible")
    sources = sorted(b["source"] for b in page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id]"))
    assert sources == ["model", "propagated"]
    page.click("#fuse-list button")  # the button does what U does
    _settle(page)
    assert page.evaluate("window.sonolabel.boxes[window.sonolabel.frames[5].id].map(b => b.id)") == [pre_id]
    assert page.errors == []
