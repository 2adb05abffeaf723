"""End-to-end: a class added with ``sonolabel classes add`` shows in the workspace with its colour
and hotkey, and pressing the hotkey, then drawing, makes a box of that class."""
from __future__ import annotations

from helpers import BROWSER, cli, logged_in_page, seed_scene

pytestmark = BROWSER


def test_a_class_added_by_the_cli_is_drawn_with_its_hotkey(live, browser):
    seeded = seed_scene(live, frames=2, width=320, height=240)
    result = cli(live, "classes", "add", "liver", "--color", "#a0522d", "--hotkey", "5")
    assert result.exit_code == 0, result.output
    liver_id = int(result.output.split("id ")[1].split(",")[0])

    page = logged_in_page(browser, live, "annotator", f"/scenes/{seeded.scene_id}/label",
                          "#ws[data-ready='1']")

    button = page.locator(f".class-btn[data-class-id='{liver_id}']")
    assert button.locator(".name").text_content() == "liver"
    assert button.locator("kbd").inner_text() == "5"
    assert button.locator(".swatch").evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(160, 82, 45)"

    page.keyboard.press("5")
    assert page.evaluate("() => window.sonolabel.classId") == liver_id
    assert "active" in button.get_attribute("class")

    def at(x: float, y: float) -> tuple[float, float]:
        return tuple(page.evaluate(
            """([x, y]) => { const r = document.getElementById('canvas').getBoundingClientRect();
                const v = window.sonolabel.view; return [r.left + v.ox + x * v.scale, r.top + v.oy + y * v.scale]; }""",
            [x, y]))

    page.mouse.move(*at(100, 80))
    page.mouse.down()
    for x, y in ((130, 100), (160, 120), (180, 140)):
        page.mouse.move(*at(x, y))
    page.mouse.up()
    page.wait_for_function("() => window.sonolabel.pending === 0")
    saved = page.context.request.get(f"{live.base_url}/api/frames/{seeded.frame_ids[0]}/boxes").json()["boxes"]
    assert [(b["class_id"], b["source"]) for b in saved] == [(liver_id, "manual")]
    assert abs(saved[0]["x"] - 100) <= 1 and abs(saved[0]["w"] - 80) <= 1
    # The box list names the new class.
    assert "liver" in page.locator("#box-list").text_content()
    assert page.errors == []


def test_the_classes_page_keeps_the_content_security_policy(live, browser):
    assert cli(live, "classes", "add", "liver", "--color", "#a0522d").exit_code == 0
    page = logged_in_page(browser, live, "admin", "/classes", "#classes")
    assert page.locator("#classes rect[fill='#a0522d']").count() == 1
    page.fill("#add-class input[name=name]", "kidney")
    page.click("#add-class button[type=submit]")
    page.wait_for_selector("text=Added 'kidney' (hotkey 4).")
    assert page.locator("#classes tbody tr").count() == 4
    assert page.errors == []
