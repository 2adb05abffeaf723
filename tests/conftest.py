"""Shared fixtures: an app on a fresh database (SQLite, and PostgreSQL when TEST_DATABASE_URL
is set), users of every role, and a logged-in client. Helper functions that tests import are
in helpers.py; nothing imports from this file."""
from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path
from typing import Iterator

import pytest
import sqlalchemy as sa
from helpers import CHROMIUM, PASSWORD, make_live_app, populate, served

from annotator import create_app
from annotator.db import db


def _database_urls() -> list[str]:
    urls = ["sqlite"]
    if os.environ.get("TEST_DATABASE_URL"):
        urls.append("postgresql")
    return urls


@pytest.fixture(params=_database_urls())
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A URL of an empty database; for PostgreSQL a schema of its own, dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.sqlite'}"
        return
    base = os.environ["TEST_DATABASE_URL"]
    schema = f"t_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(base)
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    sep = "&" if "?" in base else "?"
    yield f"{base}{sep}options=-csearch_path%3D{schema}"
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
    engine.dispose()


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding the schema, the classes and the users, made once per run: each test
    starts from a copy, which costs a file copy instead of creating every table again."""
    folder = tmp_path_factory.mktemp("template")
    template = create_app({"TESTING": True, "SQLALCHEMY_DATABASE_URI": f"sqlite:///{folder / 'test.sqlite'}",
                           "SONOLABEL_DATA_DIR": str(folder / "data"), "SECRET_KEY": "test"})
    populate(template)
    with template.app_context():
        db.engine.dispose()  # the last connection closing folds the WAL into the file
    return folder / "test.sqlite"


@pytest.fixture
def app(database_url: str, tmp_path: Path, request: pytest.FixtureRequest):
    if database_url.startswith("sqlite"):
        shutil.copyfile(request.getfixturevalue("sqlite_template"), database_url.removeprefix("sqlite:///"))
    app = create_app({
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_url,
        "SONOLABEL_DATA_DIR": str(tmp_path / "data"),
        "SECRET_KEY": "test",
    })
    os.makedirs(app.config["SONOLABEL_DATA_DIR"], exist_ok=True)
    if not database_url.startswith("sqlite"):
        populate(app)
    yield app
    with app.app_context():
        db.session.remove()
        db.engine.dispose()


@pytest.fixture
def client(app):
    return app.test_client()


class Session:
    """A test client logged in as one role, with the CSRF token at hand."""

    def __init__(self, app, role: str):
        self.client = app.test_client()
        self.role = role
        page = self.client.get("/login")
        self.csrf = _csrf_from(page.get_data(as_text=True))
        resp = self.client.post("/login", data={"username": role, "password": PASSWORD,
                                                "csrf_token": self.csrf})
        assert resp.status_code == 302, resp.get_data(as_text=True)[:300]

    def get(self, url: str, **kw):
        return self.client.get(url, **kw)

    def post(self, url: str, data=None, **kw):
        data = dict(data or {})
        data.setdefault("csrf_token", self.csrf)
        return self.client.post(url, data=data, **kw)

    def json(self, method: str, url: str, payload=None):
        return self.client.open(url, method=method, json=payload,
                                headers={"X-CSRFToken": self.csrf, "Accept": "application/json"})


def _csrf_from(html: str) -> str:
    import re

    match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html) or re.search(
        r'name="csrf-token" content="([^"]+)"', html)
    assert match, "no CSRF token on the page"
    return match.group(1)


@pytest.fixture
def login(app):
    """``login("annotator")`` gives a Session for that role."""
    return lambda role: Session(app, role)


# --- a served app and a browser, for the end-to-end tests ------------------------------------

@pytest.fixture
def live(tmp_path):
    with served(make_live_app(tmp_path)) as app:
        yield app


@pytest.fixture
def browser():
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()
