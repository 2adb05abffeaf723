"""Services behind the pages and the CLI: media import, ROI/de-identification, frame store, scenes.

Every refusal a user can cause is a :class:`ServiceError` whose message is shown as is (the CLI
prints ``error: <message>`` and exits 2; a page answers ``.status``).
"""
from __future__ import annotations


class ServiceError(Exception):
    """A refusal with a message meant for the user and a suggested HTTP status."""

    status: int = 400

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.message = message
        if status is not None:
            self.status = status

    def __str__(self) -> str:
        return self.message


class ImportRefused(ServiceError):
    """Bad input to an import: 400 (damaged/invalid), 413 (too large), 415 (unsupported type)."""


class SceneRefused(ServiceError):
    """A scene edit that cannot be done (range outside the video, first > last, ...)."""
