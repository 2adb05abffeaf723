"""The Classes page (admins): every label class with its colour, hotkey and boxes; add, rename,
recolour, re-key and delete (refused while in use). The class id travels in the form body."""
from __future__ import annotations

from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from flask_login import current_user

from .auth import roles_required
from .errors import redirect_on_refusal
from .services import classes

bp = Blueprint("classes", __name__)


@bp.get("/classes")
@roles_required()
def index() -> Any:
    return render_template("classes/index.html", classes=classes.list_classes())


@bp.post("/classes")
@roles_required()
def add() -> Any:
    back = redirect_on_refusal(url_for("classes.index"))
    added = classes.add_class(request.form.get("name"), request.form.get("color"),
                              request.form.get("hotkey"), user=current_user)
    flash(f"Added {added.name!r} (hotkey {added.hotkey}).", "info")
    return redirect(back)


def _class_ref() -> int:
    raw = request.form.get("class_id", "")
    if not (raw.isascii() and raw.isdigit() and len(raw) <= 10):
        raise classes.ClassRefused("Say which class ('class_id').")
    return int(raw)


@bp.post("/classes/update")
@roles_required()
def update() -> Any:
    back = redirect_on_refusal(url_for("classes.index"))
    changed = classes.update_class(_class_ref(), name=request.form.get("name"),
                                   color=request.form.get("color"),
                                   hotkey=request.form.get("hotkey"), user=current_user)
    flash(f"Saved {changed.name!r}.", "info")
    return redirect(back)


@bp.post("/classes/delete")
@roles_required()
def delete() -> Any:
    back = redirect_on_refusal(url_for("classes.index"))
    name = classes.delete_class(_class_ref(), user=current_user)
    flash(f"Deleted {name!r}.", "info")
    return redirect(back)
