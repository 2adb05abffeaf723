"""What every ``sonolabel`` command shares: a refusal prints one ``error:`` line and exits 2.

Commands do not catch service refusals: a :class:`~annotator.services.ServiceError` raised
anywhere below the ``sonolabel`` group (or ``app.cli``, which the test runner invokes) is turned
into a :class:`CliRefusal` by :class:`RefusalsExit2`. A refusal found by the command itself (a
missing file, a bad option value) calls :func:`fail`.
"""
from __future__ import annotations

from typing import IO, Any, NoReturn

import click
from flask.cli import AppGroup

from .services import ServiceError


class CliRefusal(click.ClickException):
    """``error: <message>`` on stderr, exit code 2 (click prints it and exits)."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    """Refuse with exit code 2 and one line on stderr."""
    raise CliRefusal(message)


class RefusalsExit2:
    """Mixed into a click group: a ServiceError from any of its commands becomes a CliRefusal."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except ServiceError as err:
            raise CliRefusal(err.message) from err


class CommandGroup(RefusalsExit2, AppGroup):
    """``app.cli``: the group ``app.test_cli_runner().invoke`` runs."""
