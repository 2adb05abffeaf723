"""What the ``python -m detector`` subcommands share on the command line: a bad argument is
reported as one ``error: ...`` line on stderr with exit code 2.

:class:`CliParser` raises ``SystemExit(2)`` after that line, as argparse does;
:func:`parse_or_code` returns the code instead, for a ``main`` that returns its exit status.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, NoReturn, Sequence, TypeVar

Number = TypeVar("Number", int, float)


def fail(message: str) -> int:
    """Print ``error: message`` on stderr; returns the exit code 2."""
    print(f"error: {message}", file=sys.stderr)
    return 2


class CliParser(argparse.ArgumentParser):
    """argparse that reports a bad argument as one ``error: ...`` line and exit code 2."""

    def error(self, message: str) -> NoReturn:
        raise SystemExit(fail(message))


def parse_or_code(parser: argparse.ArgumentParser, argv: Sequence[str]
                  ) -> argparse.Namespace | int:
    """The parsed arguments, or the exit code when parsing ended the command (2 after the
    error line of a :class:`CliParser`, 0 after ``--help``)."""
    try:
        return parser.parse_args(list(argv))
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else 2


def positive(kind: Callable[[str], Number] = int) -> Callable[[str], Number]:
    """An argparse ``type`` for a number above zero (for ``int``: at least 1)."""
    def parse(text: str) -> Number:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(
                f"must be at least 1, got {text}" if kind is int else f"must be positive, got {text}")
        return value
    return parse
