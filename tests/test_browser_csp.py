"""The Content-Security-Policy in a real Chromium: every kind of page loads its scripts, styles
and frame images without a violation (and one made on purpose is caught)."""
from __future__ import annotations

from helpers import BROWSER, PASSWORD, seed_scene

pytestmark = BROWSER


def test_no_page_breaks_the_content_security_policy(live, browser):
    seeded = seed_scene(live, frames=3, width=160, height=120, prelabels=2)
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda msg: problems.append(msg.text) if "Content Security Policy" in msg.text else None)

    page.goto(f"{live.base_url}/login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/videos")
    for path in (f"/videos/{seeded.video_id}", f"/scenes/{seeded.scene_id}", "/scenes", "/review",
                 f"/scenes/{seeded.scene_id}/audit", "/jobs", "/models", "/datasets", "/datasets/new",
                 "/videos/upload"):
        page.goto(f"{live.base_url}{path}")
        page.wait_for_load_state("load")
    page.goto(f"{live.base_url}/scenes/{seeded.scene_id}/label")
    page.wait_for_selector("#ws[data-ready='1']")
    # The workspace drew the frame from its PNG and the boxes from the API.
    assert page.evaluate("window.sonolabel.pending") == 0
    assert page.locator("#box-list li").count() >= 1
    assert problems == []

    page.evaluate("document.body.insertAdjacentHTML('beforeend', '<p style=\"color: red\">x</p>')")
    page.wait_for_timeout(200)
    assert any("Content Security Policy" in p for p in problems), "the policy check would miss a violation"
