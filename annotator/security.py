"""HTTP hardening: the log-in throttle, security headers on every response, cookies and proxies.

- Failed log-ins are counted per user name and per client address (Flask-Limiter); only failures
  count, so a user who logs in normally is never throttled. Counts live in Redis when
  ``SONOLABEL_REDIS_URL`` is set (shared by every web process), else in each process's memory.
- Every response, static files and errors included, carries a Content-Security-Policy that allows
  only this site's own scripts, styles and images (no inline script or style), and refuses
  framing, MIME sniffing and cross-site referrers (Flask-Talisman).
- ``SONOLABEL_HTTPS`` marks the session cookie ``Secure``; ``SONOLABEL_PROXY_FIX`` trusts one
  proxy's ``X-Forwarded-For/-Proto/-Host`` (client address for the throttle, scheme, host).
"""
from __future__ import annotations

import math
import time
from typing import Any

from flask import Flask, current_app, request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_talisman import Talisman
from limits import parse_many
from werkzeug.middleware.proxy_fix import ProxyFix

# Only 'self': the pages load their own JS, CSS and PNGs (the plots are inline SVG elements,
# which the policy does not restrict); no inline script or style, no eval.
CONTENT_SECURITY_POLICY = {
    "default-src": "'self'",
    "object-src": "'none'",
    "base-uri": "'self'",
    "form-action": "'self'",
    "frame-ancestors": "'none'",
}

# One per process (the app factory's usual pattern): these settings are fixed here because the
# first init_app's config would win for every later app; the storage comes from each app's config.
limiter = Limiter(key_func=get_remote_address, default_limits=[], key_prefix="sonolabel",
                  strategy="moving-window",  # no burst of twice the limit across a window's edge
                  # Redis down: count in memory for a while rather than answer log-ins with a 500.
                  in_memory_fallback_enabled=True)


def init_security(app: Flask) -> None:
    """Cookies, proxy, throttle and headers, from the app's final config."""
    config = app.config
    for setting in ("SONOLABEL_LOGIN_LIMIT", "SONOLABEL_LOGIN_ADDRESS_LIMIT"):
        try:
            parse_many(config[setting])
        except ValueError as err:
            raise ValueError(f"{setting}={config[setting]!r} is not a limit like '10 per 15 minutes'") from err
    https = bool(config["SONOLABEL_HTTPS"])
    config["SESSION_COOKIE_SECURE"] = config["REMEMBER_COOKIE_SECURE"] = https
    if config["SONOLABEL_PROXY_FIX"]:
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=1, x_proto=1, x_host=1)  # type: ignore[method-assign]
    config.setdefault("RATELIMIT_STORAGE_URI", config.get("SONOLABEL_REDIS_URL") or "memory://")
    limiter.init_app(app)
    Talisman(app, force_https=False, session_cookie_secure=https, frame_options="DENY",
             referrer_policy="same-origin", content_security_policy=CONTENT_SECURITY_POLICY)


def login_failed(response: Any) -> bool:
    """What the throttle counts: a refused log-in (not a success, nor a form without its token)."""
    return response.status_code == 401


def user_name_key() -> str:
    return "user:" + request.form.get("username", "")[:64]


def per_user_limit() -> str:
    return current_app.config["SONOLABEL_LOGIN_LIMIT"]


def per_address_limit() -> str:
    return current_app.config["SONOLABEL_LOGIN_ADDRESS_LIMIT"]


def throttled_for() -> int:
    """Seconds until the breached log-in limit lets this request through again."""
    limit = limiter.current_limit
    reset_at = limit.reset_at if limit is not None else time.time() + 60
    return max(1, math.ceil(reset_at - time.time()))
