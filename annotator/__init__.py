"""SonoLabel: a web app for labelling liver ultrasound video."""
from __future__ import annotations

import os
from typing import Any

from flask import Flask


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    """Application factory: config, extensions, blueprints, CLI groups."""
    app = Flask(__name__, instance_path=os.environ.get("SONOLABEL_INSTANCE_DIR") or None,
                instance_relative_config=True)
    from .request_args import IdConverter, StrictJSONProvider, refuse_nul_in_query

    # Before any route exists: every <int:id> is read by IdConverter.
    app.url_map.converters["int"] = IdConverter
    app.json = StrictJSONProvider(app)
    app.before_request(refuse_nul_in_query)
    # Browsers ask for /favicon.ico on every site, logged in or not: a static file.
    app.add_url_rule("/favicon.ico", endpoint="static", defaults={"filename": "favicon.ico"})
    os.makedirs(app.instance_path, exist_ok=True)
    from .config import load_config

    app.config.from_mapping(load_config(app.instance_path))
    if test_config:
        app.config.from_mapping(test_config)
    os.makedirs(app.config["SONOLABEL_DATA_DIR"], exist_ok=True)

    from . import models  # noqa: F401  (registers the tables with the metadata)
    from .auth import csrf, login_manager
    from .db import db, migrate

    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(os.path.dirname(__file__), "..", "migrations"))
    login_manager.init_app(app)
    csrf.init_app(app)
    from .security import init_security

    init_security(app)

    from . import api, auth, errors, videos, workspace

    app.register_blueprint(auth.bp)
    app.register_blueprint(videos.bp)
    app.register_blueprint(workspace.bp)
    app.register_blueprint(api.bp)
    from . import datasets

    app.register_blueprint(datasets.bp)
    from . import job_pages, model_pages

    app.register_blueprint(job_pages.bp)
    app.register_blueprint(model_pages.bp)
    from . import class_pages

    app.register_blueprint(class_pages.bp)
    errors.register(app)

    from .commands import register_commands

    register_commands(app)
    return app
