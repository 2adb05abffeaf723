"""User accounts: the password rule, the log-in check, and ending a user's sessions.

A session holds ``User.get_id()``, the user's id and session version; log-out, a new password and
deactivation bump the version, so every session issued before stops working (a replayed cookie
included), on every device of that user.
"""
from __future__ import annotations

import functools
import secrets

from werkzeug.security import check_password_hash, generate_password_hash

from ..db import db
from ..models import Role, User
from . import ServiceError

MIN_PASSWORD_LENGTH = 12
# Long enough to pass the length rule, yet first in every guessing list (breach corpora, xkcd).
COMMON_PASSWORDS = frozenset({
    "000000000000", "111111111111", "123123123123", "123456789012", "1234567890123",
    "12345678910", "1q2w3e4r5t6y", "1qaz2wsx3edc", "abc123456789", "abcdefghijkl",
    "administrator", "changeme1234", "correcthorsebatterystaple", "iloveyou1234",
    "letmein12345", "password1234", "password12345", "passwordpassword", "qazwsxedcrfv",
    "qwerty123456", "qwertyuiop12", "qwertyuiop123", "qwertyuiopasdf", "sonolabel123",
    "trustno1trustno1", "ultrasound123", "welcome12345", "zaq12wsxcde3",
})


class AccountRefused(ServiceError):
    """A user name, password or account change that is refused (400; CLI exit 2)."""


def password_problem(password: str, username: str) -> str | None:
    """Why ``password`` may not be ``username``'s password, or None when it may."""
    folded = "".join(password.lower().split())
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"passwords have at least {MIN_PASSWORD_LENGTH} characters"
    if folded in COMMON_PASSWORDS or len(set(folded)) < 4:
        return "that password is too common or too simple: choose another"
    if len(username) >= 3 and username.lower() in password.lower():
        return "the password must not contain the user name"
    return None


def generate_password(username: str = "") -> str:
    """A random password (22 URL-safe characters) that passes :func:`password_problem`."""
    while True:
        password = secrets.token_urlsafe(16)
        if password_problem(password, username) is None:
            return password


def create_user(name: str, role: Role, password: str | None) -> tuple[User, str | None]:
    """Create ``name``; with no ``password`` one is generated. Returns the user and the
    generated password (None when one was given)."""
    if not 1 <= len(name) <= 64 or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
        raise AccountRefused("user names are 1-64 letters, digits, '.', '-' or '_'")
    if db.session.scalar(db.select(User).filter_by(username=name)):
        raise AccountRefused(f"user {name!r} exists")
    user = User(username=name, role=role)
    generated = _set_password(user, password)
    db.session.add(user)
    db.session.commit()
    return user, generated


def set_password(name: str, password: str | None) -> str | None:
    """Give ``name`` a new password (generated when None, and returned) and end its sessions."""
    user = _find_user(name)
    generated = _set_password(user, password)
    user.session_version += 1
    db.session.commit()
    return generated


def set_active(name: str, active: bool) -> None:
    """Let ``name`` log in again, or not (which ends every session of that user)."""
    user = _find_user(name)
    user.active = active
    if not active:
        user.session_version += 1
    db.session.commit()


def end_sessions(user: User) -> None:
    """Log-out: every session of ``user`` issued so far stops working."""
    user.session_version += 1
    db.session.commit()


def authenticate(username: str, password: str) -> User | None:
    """The active user with this name and password, or None.

    An unknown or inactive name costs a hash check too (against a hash made the same way), so
    the time of the answer does not tell whether the name exists."""
    user = db.session.scalar(db.select(User).filter_by(username=username)) if len(username) <= 64 else None
    usable = user is not None and user.active
    matches = check_password_hash(user.password_hash if usable else _dummy_hash(), password)
    return user if usable and matches else None


def user_for_session(session_id: str) -> User | None:
    """The user that a session's ``id:version`` names, unless that session has been ended."""
    user_id, _, version = session_id.partition(":")
    if not (user_id.isdecimal() and version.isdecimal() and len(user_id) < 19):
        return None  # e.g. a session from before versions: log in again
    user = db.session.get(User, int(user_id))
    if user is None or not user.active or user.session_version != int(version):
        return None
    return user


def _find_user(name: str) -> User:
    user = db.session.scalar(db.select(User).filter_by(username=name))
    if user is None:
        raise AccountRefused(f"no user {name!r}", status=404)
    return user


def _set_password(user: User, password: str | None) -> str | None:
    chosen = password or generate_password(user.username)
    problem = password_problem(chosen, user.username)
    if problem:
        raise AccountRefused(problem)
    user.password_hash = generate_password_hash(chosen)
    return None if password else chosen


@functools.cache
def _dummy_hash() -> str:
    return generate_password_hash(secrets.token_hex(16))
