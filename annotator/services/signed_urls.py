"""Signed, expiring, read-only frame image URLs, for browsers without a SonoLabel log-in
(Label Studio's annotators load a task's ``data.image`` themselves).

A token holds the frame id and its expiry time, signed with the instance secret and a salt used
for nothing else, so a token signed for another purpose with the same secret is refused. Every
refusal (bad signature, wrong salt, expired, malformed) gets the same answer, so a token
guessed or edited by hand learns nothing about which frames exist.
"""
from __future__ import annotations

import time

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from . import ServiceError

SALT = "sonolabel.signed-frame-image"
DEFAULT_DAYS = 30
MAX_DAYS = 3650


class SignedUrlRefused(ServiceError):
    """A signed image URL that is invalid or expired."""

    status = 403


def _serializer(salt: str = SALT) -> URLSafeSerializer:
    return URLSafeSerializer(current_app.config["SECRET_KEY"], salt=salt)


def check_days(days: float | str) -> float:
    """The validity in days (a number, or its text from a form), refused unless it is more
    than 0 and at most :data:`MAX_DAYS`."""
    try:
        value = float(days)
    except (TypeError, ValueError):
        value = float("nan")
    if not (0 < value <= MAX_DAYS):
        raise SignedUrlRefused(f"The link validity must be a number of days more than 0 and at "
                               f"most {MAX_DAYS}, not {days!r}.", status=400)
    return value


def frame_token(frame_id: int, days: float = DEFAULT_DAYS, now: float | None = None) -> str:
    """A token that lets anyone holding it read frame ``frame_id``'s image for ``days``."""
    expires = int((time.time() if now is None else now) + check_days(days) * 86400)
    return str(_serializer().dumps([int(frame_id), expires]))


def frame_id_of(token: str, now: float | None = None) -> int:
    """The frame id a valid, unexpired token was made for."""
    refused = SignedUrlRefused("This image link is invalid or has expired; ask for a new export.")
    try:
        payload = _serializer().loads(token)
    except BadData:
        raise refused from None
    if (not isinstance(payload, list) or len(payload) != 2
            or not all(type(v) is int for v in payload)):
        raise refused
    frame_id, expires = payload
    if expires < (time.time() if now is None else now):
        raise refused
    return frame_id
