"""Inline SVG plots of evaluation reports, drawn without scripts or CDNs.

Each plot takes the class colours of the class table (``name -> "#rrggbb"``, see
:func:`class_colors`); a class the table does not know (a report of another dataset) gets a
colour of ``PALETTE`` by its place.
"""
from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from markupsafe import Markup, escape

from .db import db
from .models import LabelClass

PALETTE = ["#5ec8f2", "#e53935", "#ffd166", "#8bc34a", "#ba68c8"]
W, H, PAD = 420, 300, 42


def class_colors() -> dict[str, str]:
    """Each label class's colour, by class name."""
    return dict(db.session.execute(sa.select(LabelClass.name, LabelClass.color)).all())


def _color(colors: dict[str, str], name: str, i: int) -> str:
    return colors.get(name, PALETTE[i % len(PALETTE)])


def _x(v: float) -> float:
    return PAD + v * (W - PAD - 10)


def _y(v: float) -> float:
    return 10 + (1 - v) * (H - PAD - 10)


def _axes(x_label: str, y_label: str, y_ticks: list[float], x_ticks: list[tuple[float, str]]) -> list[str]:
    out = [f'<rect x="{PAD}" y="10" width="{W - PAD - 10}" height="{H - PAD - 10}" fill="none" stroke="#2c333d"/>']
    for v in y_ticks:
        y = _y(v)
        out.append(f'<line x1="{PAD}" x2="{W - 10}" y1="{y:.1f}" y2="{y:.1f}" stroke="#2c333d" stroke-dasharray="2 3"/>')
        out.append(f'<text x="{PAD - 6}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
    for v, label in x_ticks:
        out.append(f'<text x="{_x(v):.1f}" y="{H - PAD + 16}" text-anchor="middle">{escape(label)}</text>')
    out.append(f'<text x="{(W + PAD) / 2:.0f}" y="{H - 6}" text-anchor="middle">{escape(x_label)}</text>')
    out.append(f'<text transform="translate(12 {(H - PAD) / 2:.0f}) rotate(-90)" text-anchor="middle">{escape(y_label)}</text>')
    return out


def _svg(parts: list[str], title: str, legend: list[tuple[str, str]]) -> Markup:
    for i, (name, color) in enumerate(legend):
        parts.append(f'<rect x="{W - 120}" y="{18 + 16 * i}" width="10" height="10" fill="{color}"/>'
                     f'<text x="{W - 105}" y="{27 + 16 * i}">{escape(name)}</text>')
    body = "".join(parts)
    return Markup(f'<svg class="plot" viewBox="0 0 {W} {H}" width="{W}" height="{H}" role="img" '
                  f'aria-label="{escape(title)}" font-size="11" fill="#8d97a5">'
                  f'<title>{escape(title)}</title>{body}</svg>')


def pr_plot(report: dict[str, Any], colors: dict[str, str]) -> Markup:
    """Precision against recall per class at IoU 0.5."""
    curves = (report.get("coco") or {}).get("pr_curves") or {}
    parts = _axes("recall", "precision (IoU 0.5)", [0, 0.25, 0.5, 0.75, 1],
                  [(v, f"{v:g}") for v in (0, 0.25, 0.5, 0.75, 1)])
    legend = []
    for i, (name, curve) in enumerate(sorted(curves.items())):
        if not curve or curve.get("precision") is None:
            continue
        pts = [(r, p) for r, p in zip(curve["recall"], curve["precision"]) if p is not None and p >= 0]
        if not pts:
            continue
        color = _color(colors, name, i)
        path = " ".join(f"{_x(r):.1f},{_y(p):.1f}" for r, p in pts)
        parts.append(f'<polyline class="pr-curve" data-class="{escape(name)}" points="{path}" '
                     f'fill="none" stroke="{color}" stroke-width="2"/>')
        legend.append((name, color))
    return _svg(parts, "Precision-recall curves", legend)


def sensitivity_plot(report: dict[str, Any], colors: dict[str, str]) -> Markup:
    """Per-scene sensitivity per class: one dot a scene, the mean and ± 1 sd as a bar."""
    sens = report.get("sensitivity") or {}
    classes = sens.get("classes") or []
    n = max(1, len(classes))
    parts = _axes("class", f"per-scene sensitivity (score ≥ {sens.get('threshold', 0):.2f})",
                  [0, 0.25, 0.5, 0.75, 1], [((k + 0.5) / n, c) for k, c in enumerate(classes)])
    for k, name in enumerate(classes):
        values = [s["per_class"][name]["sensitivity"] for s in (sens.get("scenes") or {}).values()
                  if (s["per_class"].get(name) or {}).get("sensitivity") is not None]
        color, cx = _color(colors, name, k), (k + 0.5) / n
        for j, v in enumerate(values):
            jitter = ((j * 37) % 21 - 10) / 10 * 0.12 / n
            parts.append(f'<circle class="scene-dot" cx="{_x(cx + jitter):.1f}" cy="{_y(v):.1f}" r="3" '
                         f'fill="{color}" fill-opacity=".6"/>')
        summary = (sens.get("summary") or {}).get(name) or {}
        if summary.get("mean") is not None:
            mean, sd = summary["mean"], summary.get("sd") or 0.0
            x0, x1 = _x(cx - 0.25 / n), _x(cx + 0.25 / n)
            parts.append(f'<line x1="{x0:.1f}" x2="{x1:.1f}" y1="{_y(mean):.1f}" y2="{_y(mean):.1f}" '
                         f'stroke="#fff" stroke-width="2"/>')
            parts.append(f'<line x1="{_x(cx):.1f}" x2="{_x(cx):.1f}" y1="{_y(min(1, mean + sd)):.1f}" '
                         f'y2="{_y(max(0, mean - sd)):.1f}" stroke="#fff"/>')
    return _svg(parts, "Per-scene sensitivity", [])


def paired_plot(a: dict[str, Any], b: dict[str, Any], labels: tuple[str, str],
                colors: dict[str, str]) -> Markup:
    """Each scene's sensitivity under model A and model B joined by a line, per class."""
    sa_, sb_ = a.get("sensitivity") or {}, b.get("sensitivity") or {}
    classes = [c for c in sa_.get("classes") or [] if c in (sb_.get("classes") or [])]
    n = max(1, len(classes))
    ticks = []
    for k, name in enumerate(classes):
        ticks += [((k + 0.3) / n, f"{name} A"), ((k + 0.7) / n, "B")]
    parts = _axes(f"A = {labels[0]}, B = {labels[1]}", "per-scene sensitivity",
                  [0, 0.25, 0.5, 0.75, 1], ticks)
    for k, name in enumerate(classes):
        color = _color(colors, name, k)
        for key, scene in (sa_.get("scenes") or {}).items():
            other = (sb_.get("scenes") or {}).get(key)
            va = (scene["per_class"].get(name) or {}).get("sensitivity")
            vb = ((other or {}).get("per_class", {}).get(name) or {}).get("sensitivity")
            if va is None or vb is None:
                continue
            parts.append(f'<line class="pair" x1="{_x((k + 0.3) / n):.1f}" y1="{_y(va):.1f}" '
                         f'x2="{_x((k + 0.7) / n):.1f}" y2="{_y(vb):.1f}" stroke="{color}" '
                         f'stroke-opacity=".5"/>')
    return _svg(parts, "Paired per-scene sensitivity", [])
