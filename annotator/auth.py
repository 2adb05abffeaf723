"""Log-in, log-out and the role check that guards every route."""
from __future__ import annotations

from functools import wraps
from typing import Any, Callable

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask_login import LoginManager, current_user, login_required, login_user, logout_user
from flask_wtf.csrf import CSRFProtect

from .db import db
from .errors import wants_json
from .models import Role, User
from .safe_redirect import local_target

bp = Blueprint("auth", __name__)
ALL_ROLES = tuple(Role)
login_manager = LoginManager()
csrf = CSRFProtect()


@login_manager.user_loader
def _load_user(user_id: str) -> User | None:
    return db.session.get(User, int(user_id))


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
def login() -> Any:
    if request.method == "POST":
        csrf.protect()
        user = db.session.scalar(db.select(User).filter_by(username=request.form.get("username", "")))
        if user is None or not user.active or not user.check_password(request.form.get("password", "")):
            flash("Wrong user name or password.", "error")
            return render_template("login.html"), 401
        login_user(user)
        return redirect(local_target(request.args.get("next"), url_for("videos.index")))
    return render_template("login.html")


@bp.post("/logout")
@roles_required(*ALL_ROLES)
def logout() -> Any:
    logout_user()
    return redirect(url_for("auth.login"))
