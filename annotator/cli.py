"""Console entry point ``sonolabel``: the Flask CLI over ``annotator.create_app``."""
from __future__ import annotations

from flask.cli import FlaskGroup

from . import create_app


def main() -> None:
    FlaskGroup(create_app=create_app, help="SonoLabel command line.")(prog_name="sonolabel")
