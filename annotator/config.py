"""Configuration read from the environment (``SONOLABEL_*``), with embedded defaults."""
from __future__ import annotations

import os
import secrets
import time
from pathlib import Path
from typing import Any


def load_config(instance_path: str) -> dict[str, Any]:
    """Settings for ``create_app``; every one can be overridden by a ``SONOLABEL_`` variable."""
    instance = Path(instance_path)
    data_dir = Path(os.environ.get("SONOLABEL_DATA_DIR", instance / "data"))
    database_url = os.environ.get(
        "SONOLABEL_DATABASE_URL", f"sqlite:///{instance / 'sonolabel.sqlite'}"
    )
    return {
        "SECRET_KEY": os.environ.get("SONOLABEL_SECRET_KEY") or _instance_secret(instance),
        "SQLALCHEMY_DATABASE_URI": database_url,
        # Enough pooled connections for a threaded server: past pool_size SQLAlchemy opens and
        # closes a connection per request, which costs PostgreSQL ~10 ms each time.
        "SQLALCHEMY_ENGINE_OPTIONS": {"pool_size": int(os.environ.get("SONOLABEL_DB_POOL_SIZE", "16")),
                                      "max_overflow": 16},
        "SONOLABEL_DATA_DIR": str(data_dir),
        "SONOLABEL_REDIS_URL": os.environ.get("SONOLABEL_REDIS_URL", ""),
        # Werkzeug answers 413 past this; the upload view also streams to disk.
        "MAX_CONTENT_LENGTH": int(os.environ.get("SONOLABEL_MAX_UPLOAD_MB", "2048")) * 1024 * 1024,
        "SONOLABEL_MAX_FRAME_PIXELS": int(os.environ.get("SONOLABEL_MAX_FRAME_PIXELS", str(4096 * 4096))),
        "SONOLABEL_SCENE_LENGTH": int(os.environ.get("SONOLABEL_SCENE_LENGTH", "20")),
        "WTF_CSRF_TIME_LIMIT": None,
        # CSRF is checked by auth.roles_required (every route has one), after log-in and role.
        "WTF_CSRF_CHECK_DEFAULT": False,
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        # Failed log-ins allowed per user name, and per client address, in a moving window.
        "SONOLABEL_LOGIN_LIMIT": os.environ.get("SONOLABEL_LOGIN_LIMIT", "10 per 15 minutes"),
        "SONOLABEL_LOGIN_ADDRESS_LIMIT": os.environ.get("SONOLABEL_LOGIN_ADDRESS_LIMIT", "50 per 15 minutes"),
        # Served over HTTPS: cookies are sent only over HTTPS.
        "SONOLABEL_HTTPS": _flag("SONOLABEL_HTTPS"),
        # Behind one reverse proxy: trust its X-Forwarded-For/-Proto/-Host.
        "SONOLABEL_PROXY_FIX": _flag("SONOLABEL_PROXY_FIX"),
    }


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _instance_secret(instance: Path) -> str:
    """A per-instance random key, kept on disk so sessions survive restarts."""
    path = instance / "secret_key"
    instance.mkdir(parents=True, exist_ok=True)
    key = secrets.token_hex(32)
    try:
        # O_EXCL: of several web workers starting at once, one writes the key, all read it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        for _ in range(50):
            text = path.read_text().strip()
            if text:
                return text
            time.sleep(0.01)  # the writer is between creating and writing the file
        raise RuntimeError(f"{path} is empty: delete it or set SONOLABEL_SECRET_KEY")
    with os.fdopen(fd, "w") as fh:
        fh.write(key)
    return key
