"""The one open-redirect rule for targets taken from a request (``?next=``, a form's ``next``)."""
from __future__ import annotations

from urllib.parse import urlparse


def local_target(target: str | None, default: str) -> str:
    """``target`` when it is a path on this site, else ``default``: an open redirect would let a
    link send a user elsewhere after log-in or a form post."""
    if not target or not target.startswith("/") or target.startswith("//") or urlparse(target).netloc:
        return default
    return target
