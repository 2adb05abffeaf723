"""Log-in, log-out and the role check that guards every route."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_limiter import RateLimitExceeded
from flask_limiter.util import get_remote_address
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from .errors import wants_json
from .models import Role, User
from .safe_redirect import local_target
from .security import (limiter, login_failed, per_address_limit, per_user_limit, throttled_for,
                       user_name_key)
from .services import accounts

bp = Blueprint("auth", __name__)
ALL_ROLES = tuple(Role)
login_manager = LoginManager()
csrf = CSRFProtect()


@login_manager.user_loader
def _load_user(session_id: str) -> User | None:
    return accounts.user_for_session(session_id)


@login_manager.unauthorized_handler
def _unauthorized() -> Any:
    if wants_json():
        return jsonify(error="login required"), 401
    return redirect(url_for("auth.login", next=request.full_path))


SAFE_METHODS = {"GET", "HEAD", "OPTIONS"}


def roles_required(*roles: Role) -> Callable:
    """Log-in, then one of ``roles`` (admins pass every check), then CSRF for state changes."""
    allowed = {Role.admin, *roles}

    def decorator(view: Callable) -> Callable:
        @wraps(view)
        @login_required
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            if current_user.role not in allowed:
                abort(403, description="Your role may not do this.")
            # CSRF after log-in and role, so an anonymous API call learns it needs to log in (401).
            if request.method not in SAFE_METHODS:
                csrf.protect()
            return view(*args, **kwargs)

        wrapped.allowed_roles = allowed  # read by the route x role test
        return wrapped

    return decorator


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(per_user_limit, key_func=user_name_key, methods=["POST"], deduct_when=login_failed)
@limiter.limit(per_address_limit, key_func=get_remote_address, methods=["POST"], deduct_when=login_failed)
def login() -> Any:
    if request.method == "POST":
        csrf.protect()
        user = accounts.authenticate(request.form.get("username", ""), request.form.get("password", ""))
        if user is None:
            return _login_refused("Wrong user name or password.", 401)
        login_user(user)
        return redirect(local_target(request.args.get("next"), url_for("videos.index")))
    return render_template("login.html")


@bp.errorhandler(RateLimitExceeded)
def _throttled(err: RateLimitExceeded) -> Any:
    wait = throttled_for()
    minutes = max(1, round(wait / 60))
    message = ("Too many failed log-ins for this user name or from this address: try again in "
               f"{minutes} minute{'s' if minutes > 1 else ''}.")
    return _login_refused(message, 429, {"Retry-After": str(wait)})


def _login_refused(message: str, status: int, headers: dict[str, str] | None = None) -> Any:
    if wants_json():
        return jsonify(error=message), status, headers or {}
    flash(message, "error")
    return render_template("login.html"), status, headers or {}


@bp.post("/logout")
@roles_required(*ALL_ROLES)
def logout() -> Any:
    """Ends this user's sessions everywhere, so a copy of the cookie is worthless from now on."""
    accounts.end_sessions(current_user)
    logout_user()
    return redirect(url_for("auth.login"))
