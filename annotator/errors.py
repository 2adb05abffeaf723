"""How a request that went wrong is answered: JSON for API/JSON requests, a page otherwise.

Views do not catch service refusals. A :class:`~annotator.services.ServiceError` leaves the view
and is answered here, once:

- A request that wants JSON (:func:`wants_json`) gets ``{"error": message, **detail}`` with the
  error's status.
- A page gets what its view declared before calling the service:

  - :func:`redirect_on_refusal` (form posts that go back to a page): the message is flashed and
    the browser goes back to the form's own ``next`` field (a local path) or the view's default;
  - :func:`render_on_refusal` (forms that must show the user's input again): the view's function
    renders the page for the error, answered with the error's status; :func:`show_form_on_refusal`
    is the common case (flash the message, render the form template with the view's context);
  - nothing: the error page with the error's status and message.

HTTP errors (``abort``) and a failed CSRF check answer JSON or the error page the same way.
"""
from __future__ import annotations

from typing import Any, Callable

from flask import Flask, flash, g, jsonify, redirect, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .safe_redirect import local_target
from .services import ServiceError

RefusalPage = Callable[[ServiceError], Any]


def wants_json() -> bool:
    """The one rule for "answer in JSON": the API, a JSON body, or a client that prefers JSON."""
    return (request.path.startswith("/api/") or request.is_json
            or request.accept_mimetypes.best == "application/json")


def redirect_on_refusal(default: str) -> str:
    """Declare where a refused form post goes back to; returns that place, for success too.

    The form's ``next`` field wins when it is a local path (never another site)."""
    target = local_target(request.form.get("next"), default)
    g.refusal_back = target
    return target


def render_on_refusal(page: RefusalPage) -> None:
    """Declare that a refusal is answered with ``page(err)`` (a rendered template, flashing
    what it needs) and the error's status, e.g. to show a form again with the user's input."""
    g.refusal_page = page


def show_form_on_refusal(template: str, context: Callable[[], dict[str, Any]]) -> None:
    """The common :func:`render_on_refusal`: flash the message, render the form ``template``
    again with ``context()`` (built only when refused)."""

    def page(err: ServiceError) -> str:
        flash(err.message, "error")
        return render_template(template, **context())

    render_on_refusal(page)


def register(app: Flask) -> None:
    @app.errorhandler(ServiceError)
    def _refused(err: ServiceError) -> Any:
        if wants_json():
            return jsonify(error=err.message, **err.detail), err.status
        page = g.get("refusal_page")
        if page is not None:
            return page(err), err.status
        back = g.get("refusal_back")
        if back is not None:
            flash(err.message, "error")
            return redirect(back)
        return _page(err.status, err.message)

    @app.errorhandler(CSRFError)
    def _csrf(err: CSRFError) -> Any:
        return _answer(400, f"CSRF check failed: {err.description}")

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        return _answer(err.code or 500, err.description or err.name)


def _answer(code: int, message: str) -> Any:
    if wants_json():
        return jsonify(error=message), code
    return _page(code, message)


def _page(code: int, message: str) -> Any:
    return render_template("error.html", code=code, message=message), code
