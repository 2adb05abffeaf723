"""Sessions and log-in: log-out (and a new password, and deactivation) ends a session even when
its cookie is replayed; failed log-ins are throttled per user name and per address (in memory,
and in Redis when ``TEST_REDIS_URL`` is set) while successes never count; an unknown user name
costs a password hash like a known one; security headers on every kind of answer; ``Secure``
cookies under ``SONOLABEL_HTTPS``."""
from __future__ import annotations

import os
import re
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest
from helpers import PASSWORD, password_hash, populate

import annotator
from annotator import create_app
from annotator.db import db
from annotator.models import Role, User
from annotator.services import accounts


def _token(client) -> str:
    page = client.get("/login").get_data(as_text=True)
    return re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)


def _log_in(client, username: str, password: str = PASSWORD, **kw):
    return client.post("/login", data={"username": username, "password": password,
                                       "csrf_token": _token(client)}, **kw)


def _replay(app, cookie: str):
    """A fresh client that presents a copied session cookie."""
    client = app.test_client()
    client.set_cookie("session", cookie)
    return client


@contextmanager
def _own_app(database_url: str, tmp_path, **config) -> Iterator:
    """An app with settings of its own (read when it is created), a user of every role."""
    app = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": database_url, "SECRET_KEY": "t",
                      "SONOLABEL_DATA_DIR": str(tmp_path / "data"), **config})
    populate(app)
    try:
        yield app
    finally:
        with app.app_context():
            db.session.remove()
            db.engine.dispose()


# --- sessions end -----------------------------------------------------------------------------

def test_a_session_cookie_replayed_after_log_out_is_refused(app, login):
    annotator = login("annotator")
    cookie = annotator.client.get_cookie("session").value
    assert _replay(app, cookie).get("/videos").status_code == 200  # a copy works while logged in

    assert annotator.post("/logout").status_code == 302
    replayed = _replay(app, cookie)
    page = replayed.get("/videos")
    assert page.status_code == 302 and "/login" in page.headers["Location"]
    assert replayed.get("/api/scenes").status_code == 401
    assert login("annotator").get("/videos").status_code == 200  # logging in again works


def test_a_new_password_or_deactivation_ends_sessions(app, login):
    annotator = login("annotator")
    result = app.test_cli_runner().invoke(args=["users", "set-password", "annotator"],
                                          input="a much better passphrase\n")
    assert result.exit_code == 0, result.output
    assert annotator.get("/api/scenes").status_code == 401

    reviewer = login("reviewer")
    assert app.test_cli_runner().invoke(args=["users", "deactivate", "reviewer"]).exit_code == 0
    assert reviewer.get("/api/scenes").status_code == 401
    assert _log_in(app.test_client(), "reviewer").status_code == 401
    assert app.test_cli_runner().invoke(args=["users", "activate", "reviewer"]).exit_code == 0
    assert login("reviewer").get("/api/scenes").status_code == 200


def test_a_session_from_before_session_versions_must_log_in_again(app):
    with app.test_request_context():
        assert accounts.user_for_session("1") is None
        assert accounts.user_for_session("1:x") is None
        assert accounts.user_for_session("9" * 40 + ":0") is None
        admin = db.session.scalar(db.select(User).filter_by(username="admin"))
        assert accounts.user_for_session(admin.get_id()) == admin


# --- throttling -------------------------------------------------------------------------------

def _storages() -> list[str]:
    return ["memory", "redis"] if os.environ.get("TEST_REDIS_URL") else ["memory"]


@dataclass
class Throttled:
    """An app that allows 3 failed log-ins per user name and 6 per address, two users of its
    own and a client address of its own: Redis keeps counts for 15 minutes, so runs must not
    meet each other's names or addresses."""
    app: object
    alice: str
    bob: str
    address: str

    def client(self, address: str | None = None):
        client = self.app.test_client()
        client.environ_base["REMOTE_ADDR"] = address or self.address
        return client


@pytest.fixture(params=_storages())
def throttled(request, database_url, tmp_path):
    redis = os.environ["TEST_REDIS_URL"] if request.param == "redis" else ""
    with _own_app(database_url, tmp_path, SONOLABEL_REDIS_URL=redis, SONOLABEL_LOGIN_LIMIT="3 per 15 minutes",
                  SONOLABEL_LOGIN_ADDRESS_LIMIT="6 per 15 minutes") as app:
        assert app.config["RATELIMIT_STORAGE_URI"] == (redis or "memory://")
        run = uuid.uuid4()
        names = [f"alice-{run.hex[:8]}", f"bob-{run.hex[:8]}"]
        with app.app_context():
            db.session.add_all(User(username=name, role=Role.annotator, password_hash=password_hash())
                               for name in names)
            db.session.commit()
        yield Throttled(app, *names, address=f"10.{run.bytes[0]}.{run.bytes[1]}.{run.bytes[2]}")


def test_failed_log_ins_are_throttled_per_user_name(throttled):
    client, alice = throttled.client(), throttled.alice
    for _ in range(3):
        assert _log_in(client, alice, "wrong password").status_code == 401
    refused = _log_in(client, alice)  # even the right password, for now
    assert refused.status_code == 429
    text = refused.get_data(as_text=True)
    assert "Too many failed log-ins" in text and "try again in 15 minutes" in text
    assert 800 < int(refused.headers["Retry-After"]) <= 901
    as_json = client.post("/login", data={"username": alice, "password": "x", "csrf_token": _token(client)},
                          headers={"Accept": "application/json"})
    assert as_json.status_code == 429 and "Too many failed log-ins" in as_json.get_json()["error"]

    assert _log_in(client, throttled.bob).status_code == 302  # another user is not affected


def test_successful_log_ins_never_count(throttled):
    client, bob = throttled.client(), throttled.bob
    for _ in range(4):  # more than the limit
        assert _log_in(client, bob).status_code == 302
    assert _log_in(client, bob, "wrong password").status_code == 401
    assert _log_in(client, bob).status_code == 302
    # A form without its CSRF token is refused before any password is checked: not counted.
    for _ in range(4):
        assert client.post("/login", data={"username": bob, "password": "x"}).status_code == 400
    assert _log_in(client, bob).status_code == 302


def test_failed_log_ins_are_throttled_per_address(throttled):
    client = throttled.client()
    for n in range(6):  # different (unknown) names, from one address
        assert _log_in(client, f"guess{n}-{throttled.alice}", "wrong password").status_code == 401
    assert _log_in(client, throttled.alice).status_code == 429
    assert _log_in(throttled.client("192.0.2.9"), throttled.alice).status_code == 302


def test_behind_a_proxy_the_forwarded_address_is_counted(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SONOLABEL_PROXY_FIX", "1")
    with _own_app(database_url, tmp_path, SONOLABEL_LOGIN_ADDRESS_LIMIT="2 per 15 minutes") as app:
        client = app.test_client()
        one, two = {"X-Forwarded-For": "203.0.113.1"}, {"X-Forwarded-For": "203.0.113.2"}
        for n in range(2):
            assert _log_in(client, f"guess{n}", "wrong", headers=one).status_code == 401
        assert _log_in(client, "admin", headers=one).status_code == 429
        assert _log_in(client, "admin", headers=two).status_code == 302


def test_a_bad_limit_setting_stops_the_app_at_start(tmp_path):
    with pytest.raises(ValueError, match="SONOLABEL_LOGIN_LIMIT"):
        create_app({"SONOLABEL_DATA_DIR": str(tmp_path / "d"), "SONOLABEL_LOGIN_LIMIT": "ten a day"})


# --- user names cannot be told apart by time -----------------------------------------------

def test_unknown_and_inactive_user_names_cost_a_hash_check(app, client, monkeypatch):
    checked: list[str] = []
    real = accounts.check_password_hash

    def spy(pwhash: str, password: str) -> bool:
        checked.append(pwhash)
        return real(pwhash, password)

    monkeypatch.setattr(accounts, "check_password_hash", spy)
    with app.app_context():
        admin = db.session.scalar(db.select(User).filter_by(username="admin"))
        admin.password_hash = accounts.generate_password_hash(PASSWORD)  # as the app makes them
        method = admin.password_hash.split("$")[0]
        admin.active = False
        db.session.commit()
    for name in ("nobody", "admin", "x" * 500):
        assert _log_in(client, name).status_code == 401
    assert len(checked) == 3
    # The same method and cost as real users' hashes, so it takes the same time.
    assert {h.split("$")[0] for h in checked} == {method}


# --- headers and cookies ----------------------------------------------------------------------

def test_every_answer_carries_the_security_headers(app, login):
    admin = login("admin")
    answers = {"page": admin.get("/videos"), "JSON": admin.get("/api/scenes"),
               "static": admin.get("/static/app.css"), "log-in page": app.test_client().get("/login"),
               "API refusal": app.test_client().get("/api/scenes"), "error page": admin.get("/videos/999999")}
    assert answers["error page"].status_code == 404
    for kind, resp in answers.items():
        csp = resp.headers.get("Content-Security-Policy", "")
        assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp, kind
        assert "object-src 'none'" in csp and "unsafe" not in csp, kind
        assert resp.headers.get("X-Frame-Options") == "DENY", kind
        assert resp.headers.get("X-Content-Type-Options") == "nosniff", kind
        assert resp.headers.get("Referrer-Policy") == "same-origin", kind


def _session_cookie(app) -> str:
    client = app.test_client()
    resp = _log_in(client, "admin")
    assert resp.status_code == 302
    return next(c for c in resp.headers.getlist("Set-Cookie") if c.startswith("session="))


def test_cookies_are_secure_under_sonolabel_https(database_url, tmp_path, monkeypatch):
    monkeypatch.setenv("SONOLABEL_HTTPS", "1")
    with _own_app(database_url, tmp_path) as app:
        cookie = _session_cookie(app)
        assert app.config["REMEMBER_COOKIE_SECURE"] is True
    assert "Secure" in cookie and "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_cookies_are_not_secure_by_default(app):
    assert "Secure" not in _session_cookie(app)


def test_templates_need_no_inline_script_or_style():
    """The policy refuses inline script and style: a template that uses them breaks in the browser."""
    inline = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>|<style\b|\sstyle=|\son[a-z]+=", re.I)
    found = [f"{path.name}: {m.group(0)}" for path in Path(annotator.__file__).parent.glob("templates/**/*.html")
             for m in inline.finditer(path.read_text())]
    assert found == []
    assert inline.search('<p style="color: red">') and inline.search("<script>x()</script>")
