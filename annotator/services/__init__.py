"""Services behind the pages and the CLI: the work is done here, views and commands stay thin.

Every refusal a user can cause is a :class:`ServiceError` (or a subclass) whose message is shown
as is: a page or API call answers ``.status`` (``annotator/errors.py``), the CLI prints
``error: <message>`` and exits 2 (``annotator/cli_support.py``). Neither catches them one by one.
"""
from __future__ import annotations

from typing import Any


class ServiceError(Exception):
    """A refusal: ``message`` for the user, ``status`` the HTTP code (400 unless the class or the
    caller says otherwise), ``detail`` extra JSON keys for API clients (e.g. the saved box of a
    409 conflict)."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None, **detail: Any):
        super().__init__(message)
        self.message = message
        self.detail = detail
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ImportRefused(ServiceError):
    """Bad input to an import: 400 (damaged/invalid), 413 (too large), 415 (unsupported type)."""


class SceneRefused(ServiceError):
    """A scene edit that cannot be done (range outside the video, first > last, ...)."""
