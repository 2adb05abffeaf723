"""End-to-end: an admin starts a retrain from the Jobs page and watches its progress bar reach
100 while a Huey consumer (threads, in this process, on the SQLite queue) runs it."""
from __future__ import annotations

import pytest
from helpers import BROWSER, PASSWORD, make_live_app, served, tiny_version

pytestmark = [*BROWSER, pytest.mark.slow]  # it trains a model


@pytest.fixture
def consumer_app(tmp_path):
    from huey.consumer import Consumer

    from annotator.services.job_runner import job_huey

    app = make_live_app(tmp_path)
    tiny_version(app)
    consumer = Consumer(job_huey(app), workers=1, worker_type="thread", periodic=False)
    consumer._set_signal_handlers = lambda: None  # signal handlers belong to the main thread
    consumer.start()
    with served(app):
        yield app
    consumer.stop(graceful=True)


def test_admin_starts_a_retrain_and_watches_it_finish(consumer_app, browser):
    app = consumer_app
    page = browser.new_context(viewport={"width": 1400, "height": 900}).new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{app.base_url}/login?next=/jobs")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    form = page.locator("#retrain-form")
    form.locator("select[name=model]").select_option("single")
    form.locator("input[name=epochs]").fill("2")
    form.locator("input[name=size]").fill("64")
    form.locator("button[type=submit]").click()

    row = page.locator("#jobs tr[data-job-id]").first
    assert row.locator("td").nth(1).inner_text() == "retrain"
    # The page polls the job; the bar moves to 100 without a reload.
    page.wait_for_function(
        "() => { const r = document.querySelector('#jobs tr[data-job-id]');"
        " return r && r.dataset.status === 'succeeded' && r.querySelector('progress').value === 100; }",
        timeout=120_000)
    assert row.locator(".pct").inner_text() == "100%"
    assert '"model_version"' in row.locator(".job-result").inner_text()
    assert not errors

    page.click("text=Models")
    assert page.locator("#versions").inner_text().count("single-v") == 1
