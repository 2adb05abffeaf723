"""Errors answer JSON under /api/ and a page elsewhere, always with a message."""
from __future__ import annotations

from typing import Any

from flask import Flask, jsonify, render_template
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from .auth import wants_json


def register(app: Flask) -> None:
    @app.errorhandler(CSRFError)
    def _csrf(err: CSRFError) -> Any:
        return _answer(400, f"CSRF check failed: {err.description}")

    @app.errorhandler(HTTPException)
    def _http(err: HTTPException) -> Any:
        return _answer(err.code or 500, err.description or err.name)


def _answer(code: int, message: str) -> Any:
    if wants_json():
        return jsonify(error=message), code
    return render_template("error.html", code=code, message=message), code
