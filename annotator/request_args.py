"""What comes in with a request, read at the edge once: ids in URLs, JSON bodies, query integers.

- :class:`IdConverter` is the app's ``<int:...>``: an id beyond the Integer columns' range is
  a 404 (no such row can exist), so the database never sees it.
- :class:`StrictJSONProvider` reads JSON as RFC 8259 says (no ``NaN``/``Infinity``), refuses NUL
  characters in strings and takes a body nested too deeply as invalid JSON rather than a crash;
  :func:`refuse_nul_in_query` does the same for query strings and plain forms.
- :func:`json_object` is the one reader of a JSON body that must be an object.
- :func:`int_arg` reads an integer query parameter, :func:`form_ints` the ids ticked in a form:
  a non-integer is a 400 naming the field, never silently ignored.

Every refusal is a :class:`~annotator.services.ServiceError` naming the field, answered by
``errors.py`` like any other.
"""
from __future__ import annotations

import re
from typing import Any

from flask import request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import BadRequest, NotFound
from werkzeug.routing import IntegerConverter

from .services import ServiceError
from .services.input_checks import DB_INT_MAX, DB_INT_MIN, json_document, shown

# API bodies are small (10,000 scene ids is about 60 kB); uploads have their own limit.
JSON_BODY_MAX = 1024 * 1024
_INTEGER = re.compile(r"-?[0-9]{1,19}")


class IdConverter(IntegerConverter):
    """``<int:...>`` in every route: a non-negative integer an Integer column can hold.

    A larger one is a 404 raised here: werkzeug's way (refusing the match) would answer 405
    where the same path has a rule for another method."""

    regex = r"[0-9]+"  # ASCII digits: "\d" would take other scripts' digits too

    def to_python(self, value: str) -> int:
        number = int(value) if len(value) <= len(str(DB_INT_MAX)) else DB_INT_MAX + 1
        if number > DB_INT_MAX:
            raise NotFound(f"No such object: ids go up to {DB_INT_MAX}.")
        return number


class StrictJSONProvider(DefaultJSONProvider):
    """Flask's JSON read by :func:`~annotator.services.input_checks.json_document`: no
    ``NaN``/``Infinity``, no NUL in strings, too-deep nesting invalid rather than a crash."""

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        try:
            return json_document(s, "The body")
        except ServiceError as err:
            raise ValueError(err.message) from None


def refuse_nul_in_query() -> None:
    """Before every request: no NUL character in the query string or a plain form (PostgreSQL
    cannot compare or store one). Multipart forms are left to the views that stream them."""
    fields = list(request.args.items(multi=True))
    if request.mimetype == "application/x-www-form-urlencoded":
        fields += list(request.form.items(multi=True))
    for name, value in fields:
        if "\x00" in name or "\x00" in value:
            raise ServiceError(f"{shown(name)} holds a NUL character; nothing was done.")


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object; else a 400 (413 when too large)."""
    if not request.is_json:
        raise ServiceError("Send a JSON object (Content-Type: application/json).")
    if (request.content_length or 0) > JSON_BODY_MAX:
        raise ServiceError(f"The body is larger than {JSON_BODY_MAX // 1024} kB.", 413)
    request.max_content_length = JSON_BODY_MAX  # also for a body sent without a length
    try:
        data = request.get_json()
    except BadRequest:
        raise ServiceError("The body is not valid JSON; nothing was changed.") from None
    if not isinstance(data, dict):
        raise ServiceError("Send a JSON object ({...}), not "
                           f"{'an array' if isinstance(data, list) else shown(data)}.")
    return data


def int_arg(name: str, minimum: int = 1) -> int | None:
    """The integer query parameter ``name`` (an id unless ``minimum`` says otherwise); None
    when absent or empty. Anything else is a 400 naming the parameter."""
    raw = request.args.get(name, "").strip()
    return parse_int(raw, f"Query parameter '{name}'", minimum) if raw else None


def form_ints(name: str, minimum: int = 1) -> list[int]:
    """Every value of the form field ``name`` (ticked ids) as an int; else a 400 naming it."""
    return [parse_int(v.strip(), f"'{name}'", minimum) for v in request.form.getlist(name)]


def parse_int(raw: str, label: str, minimum: int = DB_INT_MIN) -> int:
    """``raw`` (decimal digits, maybe a minus) as an int in ``[minimum, DB_INT_MAX]``."""
    value = int(raw) if _INTEGER.fullmatch(raw) else None
    if value is None or not minimum <= value <= DB_INT_MAX:
        raise ServiceError(f"{label} must be a whole number from {minimum} to {DB_INT_MAX}, "
                           f"not {shown(raw)}.")
    return value
