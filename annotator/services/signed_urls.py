"""Signed, expiring, read-only frame image and scene clip URLs, for browsers without a
SonoLabel log-in (Label Studio's annotators load a task's ``data.image`` or ``data.video``
themselves).

A token holds the frame id (or a clip's video, frame range and frame rate) and its expiry time,
signed with the instance secret and a salt used for nothing else, so a token signed for
another purpose with the same secret is refused. Every refusal (bad signature, wrong salt,
expired, malformed) gets the same answer, so a token guessed or edited by hand learns nothing
about which frames exist.
"""
from __future__ import annotations

import time

from flask import current_app
from itsdangerous import BadData, URLSafeSerializer

from . import ServiceError

SALT = "sonolabel.signed-frame-image"
CLIP_SALT = "sonolabel.signed-scene-clip"
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
    [frame_id] = _payload(token, SALT, 1, "This image link is invalid or has expired; ask for a "
                          "new export.", now)
    return frame_id


def clip_token(video_id: int, first: int, last: int, fps: tuple[int, int],
               days: float = DEFAULT_DAYS, now: float | None = None) -> str:
    """A token that lets anyone holding it play the clip of video ``video_id``'s stored frames
    ``first..last`` at ``fps`` (numerator, denominator) for ``days``."""
    expires = int((time.time() if now is None else now) + check_days(days) * 86400)
    values = [int(video_id), int(first), int(last), int(fps[0]), int(fps[1]), expires]
    return str(_serializer(CLIP_SALT).dumps(values))


def clip_of(token: str, now: float | None = None) -> tuple[int, int, int, tuple[int, int]]:
    """(video id, first frame index, last frame index, (fps numerator, denominator)) of a
    valid, unexpired clip token."""
    video_id, first, last, num, den = _payload(
        token, CLIP_SALT, 5, "This video link is invalid or has expired; ask for a new export.", now)
    return video_id, first, last, (num, den)


def _payload(token: str, salt: str, n: int, message: str, now: float | None) -> list[int]:
    """The ``n`` integers a token of ``salt`` carries before its expiry; one refusal for all."""
    refused = SignedUrlRefused(message)
    try:
        payload = _serializer(salt).loads(token)
    except BadData:
        raise refused from None
    if (not isinstance(payload, list) or len(payload) != n + 1
            or not all(type(v) is int for v in payload)):
        raise refused
    if payload[-1] < (time.time() if now is None else now):
        raise refused
    return payload[:-1]
