"""Checks of single values that come from outside (JSON bodies, forms, query strings).

Every numeric field of a request goes through these, so that no value reaches the database or
arithmetic that cannot take it: JSON allows integers of any size while the id columns hold 32
bits on PostgreSQL (64 on SQLite), ``math.isfinite`` overflows on a 400-digit integer, and to
Python a bool is an int. Each refusal is a :class:`ServiceError` (400) whose message names the
field; a caller with a message of its own (``'class_id'`` says "Unknown class") passes it.
"""
from __future__ import annotations

import json
import math
import re
from typing import Any

from . import ServiceError

# The range of the Integer columns (ids, versions): 32-bit on PostgreSQL, the narrower engine.
DB_INT_MIN = -(2**31)
DB_INT_MAX = 2**31 - 1


def shown(value: Any, limit: int = 40) -> str:
    """``repr(value)`` cut to ``limit`` characters, for messages that echo what was sent."""
    if isinstance(value, int) and abs(value) >= 10**limit:  # str() refuses above 4300 digits
        return f"an integer of more than {limit} digits"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def is_db_int(value: Any, minimum: int = DB_INT_MIN) -> bool:
    """A JSON integer (not a bool, not 2.0) that an Integer column can hold, at least ``minimum``."""
    return isinstance(value, int) and not isinstance(value, bool) and minimum <= value <= DB_INT_MAX


def whole_number(value: Any, field: str, *, minimum: int = DB_INT_MIN, maximum: int = DB_INT_MAX,
                 message: str | None = None) -> int:
    """``value`` as an int in ``[minimum, maximum]``, or a 400 naming ``field``."""
    if not is_db_int(value, minimum) or value > maximum:
        raise ServiceError(message or f"'{field}' must be a whole number from {minimum} to {maximum}, "
                                      f"not {shown(value)}.")
    return value


def finite_number(value: Any, field: str, message: str | None = None) -> float:
    """``value`` (a JSON number, not a bool) as a finite float, or a 400 naming ``field``."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        try:
            number = float(value)  # an int beyond 1e308 overflows here
        except OverflowError:
            number = math.inf
        if math.isfinite(number):
            return number
    raise ServiceError(message or f"'{field}' must be a number.")


def id_list(value: Any, field: str, *, limit: int, what: str = "ids") -> list[int]:
    """A non-empty JSON list of at most ``limit`` ids (positive ints of the id range)."""
    if (not isinstance(value, list) or not value
            or not all(is_db_int(i, minimum=1) for i in value)):
        raise ServiceError(f"'{field}' must be a non-empty list of {what}.")
    if len(value) > limit:
        raise ServiceError(f"'{field}': at most {limit} {what} at a time.")
    return value


# A NUL character in a JSON string: PostgreSQL cannot store it in a text column, so no text that
# may reach the database carries one. (An escaped backslash before "u0000" is not a NUL.)
_JSON_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000", re.IGNORECASE)


def has_nul(text: str) -> bool:
    """Whether plain text, or a JSON document's strings, hold a NUL character."""
    return "\x00" in text or bool(_JSON_NUL.search(text))


def is_db_text(value: Any, limit: int) -> bool:
    """A text a ``String(limit)`` column takes on every database: PostgreSQL refuses NUL."""
    return isinstance(value, str) and len(value) <= limit and "\x00" not in value


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def json_document(raw: bytes | str, what: str) -> Any:
    """A JSON document from outside (a request body, a label file) read as RFC 8259 says: no
    ``NaN``/``Infinity``, no NUL characters in strings, and a body nested too deeply for the
    parser is invalid rather than a crash. Refusals are a :class:`ServiceError` naming ``what``."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if has_nul(text):
            raise ValueError("a text holds a NUL character (\\u0000)")
        return json.loads(text, parse_constant=_no_constant)
    except RecursionError:
        raise ServiceError(f"{what} is not valid JSON: nested too deeply.") from None
    except (UnicodeDecodeError, ValueError) as err:
        raise ServiceError(f"{what} is not valid JSON: {err}.") from None
