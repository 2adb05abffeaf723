"""What every ``sonolabel`` command shares: a refusal prints one ``error:`` line and exits 2.

Commands do not catch service refusals: a :class:`~annotator.services.ServiceError` raised
anywhere below the ``sonolabel`` group (or ``app.cli``, which the test runner invokes) is turned
into a :class:`CliRefusal` by :class:`RefusalsExit2`. A refusal found by the command itself (a
missing file, a bad option value) calls :func:`fail`. Ids and counts are read with
:class:`WholeNumber` (:data:`ID`), so 2**63 is one ``error:`` line, never a database overflow.
"""
from __future__ import annotations

from typing import IO, Any, NoReturn

import click
from flask.cli import AppGroup

from .services import ServiceError
from .services.input_checks import DB_INT_MAX, whole_number


class CliRefusal(click.ClickException):
    """``error: <message>`` on stderr, exit code 2 (click prints it and exits)."""

    exit_code = 2

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def fail(message: str) -> NoReturn:
    """Refuse with exit code 2 and one line on stderr."""
    raise CliRefusal(message)


class WholeNumber(click.ParamType):
    """An option or argument that is a whole number from ``minimum`` to ``maximum`` (by default
    what an Integer column holds); anything else is refused naming the option."""

    name = "integer"

    def __init__(self, minimum: int, maximum: int = DB_INT_MAX):
        self.minimum, self.maximum = minimum, maximum

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        return self.parse(value, param.opts[0] if isinstance(param, click.Option)
                          else param.human_readable_name if param is not None else "value")

    def parse(self, value: Any, field: str) -> int:
        try:
            number = value if isinstance(value, int) else int(str(value))
        except ValueError:  # not a whole number, or past int()'s 4300 digits: refused below
            number = value
        return whole_number(number, field, minimum=self.minimum, maximum=self.maximum)


ID = WholeNumber(1)  # a row id


class RefusalsExit2:
    """Mixed into a click group: a ServiceError from any of its commands becomes a CliRefusal."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)  # type: ignore[misc]
        except ServiceError as err:
            raise CliRefusal(err.message) from err


class CommandGroup(RefusalsExit2, AppGroup):
    """``app.cli``: the group ``app.test_cli_runner().invoke`` runs."""
