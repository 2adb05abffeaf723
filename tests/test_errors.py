"""The one error path: a ServiceError raised in a view or a command, caught by nobody but
``annotator/errors.py`` (JSON or a page) and ``annotator/cli_support.py`` (one line, exit 2)."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from flask import Blueprint, render_template_string

from annotator.cli import SonoLabelCli
from annotator.cli_support import fail
from annotator.errors import redirect_on_refusal, render_on_refusal
from annotator.services import ServiceError


class Stale(ServiceError):
    status = 409


@pytest.fixture
def refusing(app):
    """The app with routes and a command that refuse; no request has been served yet."""
    bp = Blueprint("refusing", __name__)

    @bp.route("/api/refuse")
    @bp.route("/refuse")
    def plain():
        raise Stale("Someone saved this box first.", box={"id": 7})

    @bp.route("/refuse/back", methods=["GET", "POST"])
    def back():
        redirect_on_refusal("/videos")
        raise ServiceError("Not now.")

    @bp.post("/refuse/form")
    def form():
        render_on_refusal(lambda err: render_template_string("form again: {{ m }}", m=err.message))
        raise ServiceError("Too large.", 413)

    app.register_blueprint(bp)

    @app.cli.command("refuse")
    def refuse():
        raise Stale("version v1 is in use")

    @app.cli.command("fail")
    def fails():
        fail("no such file")

    return app


def test_api_and_json_requests_get_the_message_detail_and_status(refusing):
    client = refusing.test_client()
    for resp in (client.get("/api/refuse"),
                 client.get("/refuse", headers={"Accept": "application/json"}),
                 client.post("/refuse/form", json={})):
        assert resp.status_code in (409, 413)
        assert resp.is_json and resp.get_json()["error"] in ("Someone saved this box first.",
                                                           "Too large.")
    assert client.get("/api/refuse").get_json() == {"error": "Someone saved this box first.",
                                                    "box": {"id": 7}}


def test_a_page_gets_the_error_page_with_the_status(refusing):
    resp = refusing.test_client().get("/refuse")
    assert resp.status_code == 409 and resp.mimetype == "text/html"
    assert "Someone saved this box first." in resp.get_data(as_text=True)


def test_a_form_that_declared_where_to_go_back_flashes_and_redirects(refusing):
    client = refusing.test_client()
    resp = client.get("/refuse/back")
    assert resp.status_code == 302 and resp.headers["Location"] == "/videos"
    with client.session_transaction() as session:
        assert session["_flashes"] == [("error", "Not now.")]
    assert client.post("/refuse/back", data={"next": "/jobs"}).headers["Location"] == "/jobs"
    # Never to another site.
    assert client.post("/refuse/back", data={"next": "//evil.example/"}).headers["Location"] == "/videos"


def test_a_form_that_renders_itself_again_answers_with_the_status(refusing):
    resp = refusing.test_client().post("/refuse/form", data={})
    assert resp.status_code == 413 and resp.get_data(as_text=True) == "form again: Too large."


@pytest.mark.parametrize("command, message", [("refuse", "version v1 is in use"),
                                               ("fail", "no such file")])
def test_a_refused_command_prints_one_error_line_and_exits_2(refusing, command, message):
    via_app_cli = refusing.test_cli_runner().invoke(args=[command])
    via_entry_point = CliRunner().invoke(SonoLabelCli(create_app=lambda: refusing), [command])
    for result in (via_app_cli, via_entry_point):
        assert result.exit_code == 2, result.output
        assert result.stderr == f"error: {message}\n" and result.stdout == ""


def test_usage_errors_stay_click_s_own(refusing):
    result = refusing.test_cli_runner().invoke(args=["users", "create", "x", "--role", "nobody"])
    assert result.exit_code == 2 and "Invalid value for '--role'" in result.output
