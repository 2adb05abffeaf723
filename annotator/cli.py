"""Console entry point ``sonolabel``: the Flask CLI over ``annotator.create_app``."""
from __future__ import annotations

from flask.cli import FlaskGroup

from . import create_app
from .cli_support import RefusalsExit2


class SonoLabelCli(RefusalsExit2, FlaskGroup):
    """FlaskGroup runs a command found on ``app.cli`` itself, past ``app.cli.invoke``: so the
    entry point answers refusals too."""


def main() -> None:
    SonoLabelCli(create_app=create_app, help="SonoLabel command line.")(prog_name="sonolabel")
