"""Every kind of background job, listed here and nowhere else, and their parameters parsed.

A new kind is a runner declared with :func:`.job_spec.kind` in the module of its work, and one
entry in ``RUNNERS``.
"""
from __future__ import annotations

from typing import Any

from .evaluation_reports import run_evaluate
from .job_spec import JobRefused, Kind, kind_of
from .models_registry import run_retrain
from .prelabel import run_prelabel
from .propagate import run_propagate

RUNNERS = (run_retrain, run_evaluate, run_prelabel, run_propagate)
KINDS: dict[str, Kind] = {kind_of(run).name: kind_of(run) for run in RUNNERS}


def parse_params(kind_name: str, raw: dict[str, Any]) -> dict[str, Any]:
    """Typed parameters of a job of ``kind_name`` with defaults filled in; empty values count
    as not given (a blank form field)."""
    spec = KINDS.get(kind_name)
    if spec is None:
        raise JobRefused(f"Unknown job kind {kind_name!r}; one of {', '.join(sorted(KINDS))}.")
    if not isinstance(raw, dict):
        raise JobRefused("Job parameters must be an object of name: value.")
    unknown = sorted(set(raw) - set(spec.params))
    if unknown:
        raise JobRefused(f"Unknown parameter {', '.join(unknown)} for {kind_name}; it takes "
                         f"{', '.join(spec.params)}.")
    out: dict[str, Any] = {}
    for name, param in spec.params.items():
        value = raw.get(name)
        if value is None or (isinstance(value, str) and not value.strip()):
            if param.required:
                raise JobRefused(f"{kind_name} needs the parameter {name!r} ({param.help}).")
            if param.default is not None:
                out[name] = param.default
            continue
        try:
            out[name] = param.parse(value)
        except ValueError as err:
            raise JobRefused(f"Parameter {name!r} must be {err}, not {value!r}.") from None
    if spec.check is not None:
        spec.check(out)
    return out
