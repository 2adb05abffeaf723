"""Paired comparison of two evaluation reports on the same scenes (the paper's Table 2).

Design choices:

* Scenes pair by key (see :mod:`detector.sensitivity`); per class only scenes where both
  reports have boxes of that class count. A scene whose box count differs between the two
  reports means different ground truth, which is an error, not something to average over.
* Differences are B - A. Statistics: mean ± sample sd per model, ``scipy.stats.ttest_rel``,
  ``scipy.stats.wilcoxon`` (default zero handling) and a percentile bootstrap 95% CI of the
  mean difference resampling scenes (seeded, 10000 resamples by default).
* Undefined statistics are None in the JSON (never NaN). When every difference is zero the
  Wilcoxon test is given as statistic 0, p = 1 and the t-test as t None, p = 1 (no evidence
  of a difference; older SciPy raises there and ``ttest_rel`` returns NaN).
"""
from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
from scipy import stats as sps


def _clean(x: Any) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def bootstrap_ci(diffs: np.ndarray, n_resamples: int = 10000, seed: int = 0,
                 level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap CI of the mean of ``diffs`` (resampling its entries)."""
    diffs = np.asarray(diffs, dtype=float)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, diffs.size, size=(n_resamples, diffs.size))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [alpha, 1.0 - alpha])
    return float(lo), float(hi)


def paired_stats(a: list[float], b: list[float], n_resamples: int = 10000,
                 seed: int = 0) -> dict[str, Any]:
    """Mean ± sd of each, B - A mean difference, paired t-test, Wilcoxon, bootstrap CI."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    n = int(x.size)
    out: dict[str, Any] = {"n": n}
    for label, v in (("a", x), ("b", y)):
        out[label] = {"mean": _clean(v.mean()) if n else None,
                      "sd": _clean(v.std(ddof=1)) if n > 1 else None}
    diffs = y - x
    out["mean_diff"] = _clean(diffs.mean()) if n else None
    out["ci95"] = list(bootstrap_ci(diffs, n_resamples, seed)) if n else None
    if n < 2:
        out["t_test"] = {"t": None, "p": None}
        out["wilcoxon"] = {"statistic": None, "p": None}
        return out
    if not diffs.any():
        out["t_test"] = {"t": None, "p": 1.0}
        out["wilcoxon"] = {"statistic": 0.0, "p": 1.0}
        return out
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        t = sps.ttest_rel(y, x)
        w = sps.wilcoxon(y, x)
    out["t_test"] = {"t": _clean(t.statistic), "p": _clean(t.pvalue)}
    out["wilcoxon"] = {"statistic": _clean(w.statistic), "p": _clean(w.pvalue)}
    return out


def _sensitivity(report: dict[str, Any], which: str) -> dict[str, Any]:
    sens = report.get("sensitivity") if isinstance(report, dict) else None
    if not isinstance(sens, dict) or not isinstance(sens.get("scenes"), dict):
        raise ValueError(f"report {which} has no per-scene sensitivity "
                         "(is it a report written by 'python -m detector evaluate'?)")
    return sens


def _label(report: dict[str, Any], default: str) -> str:
    model = report.get("model") or {}
    return str(model.get("name") or default) if isinstance(model, dict) else default


def compare_reports(a: dict[str, Any], b: dict[str, Any], n_resamples: int = 10000, seed: int = 0,
                    labels: tuple[str, str] | None = None) -> dict[str, Any]:
    """Pair the per-scene sensitivities of two reports and test the difference per class.

    Returns ``{"a", "b" (labels), "thresholds": {"a", "b"}, "iou", "n_common_scenes",
    "classes": {name: paired_stats(...)}, "coco": {"a", "b"} (when both have it), "table"}``.
    Raises ValueError when the reports share no scene or disagree on a scene's boxes.
    """
    sa, sb = _sensitivity(a, "A"), _sensitivity(b, "B")
    la, lb = labels or (_label(a, "A"), _label(b, "B"))
    common = [key for key in sa["scenes"] if key in sb["scenes"]]
    if not common:
        raise ValueError("the two reports share no scene: were they made on the same COCO file?")
    class_names = [c for c in sa.get("classes", []) if c in set(sb.get("classes", []))]
    classes: dict[str, Any] = {}
    for name in class_names:
        xs, ys = [], []
        for key in common:
            ca = sa["scenes"][key]["per_class"].get(name) or {}
            cb = sb["scenes"][key]["per_class"].get(name) or {}
            if ca.get("boxes") != cb.get("boxes"):
                raise ValueError(f"scene {key}: {ca.get('boxes')} {name} boxes in A but "
                                 f"{cb.get('boxes')} in B; the reports are not on the same ground truth")
            if ca.get("sensitivity") is not None and cb.get("sensitivity") is not None:
                xs.append(float(ca["sensitivity"]))
                ys.append(float(cb["sensitivity"]))
        classes[name] = paired_stats(xs, ys, n_resamples, seed)
    result: dict[str, Any] = {
        "a": la, "b": lb,
        "thresholds": {"a": sa.get("threshold"), "b": sb.get("threshold")},
        "iou": sa.get("iou"), "n_common_scenes": len(common),
        "n_scenes": {"a": len(sa["scenes"]), "b": len(sb["scenes"])},
        "n_resamples": n_resamples, "seed": seed, "classes": classes}
    if isinstance(a.get("coco"), dict) and isinstance(b.get("coco"), dict):
        result["coco"] = {"a": a["coco"].get("overall"), "b": b["coco"].get("overall")}
    result["table"] = format_table(result)
    return result


def _fmt(x: float | None, spec: str = ".3f") -> str:
    return "-" if x is None else format(x, spec)


def _fmt_p(p: float | None) -> str:
    if p is None:
        return "-"
    return "<0.001" if p < 0.001 else f"{p:.3f}"


def format_table(result: dict[str, Any]) -> str:
    """Plain-text table of :func:`compare_reports` output, laid out like the paper's Table 2."""
    th = result["thresholds"]
    lines = [f"Per-scene sensitivity at IoU >= {_fmt(result.get('iou'), '.2f')}: "
             f"A = {result['a']} (score >= {_fmt(th['a'], '.3f')}), "
             f"B = {result['b']} (score >= {_fmt(th['b'], '.3f')}); "
             f"{result['n_common_scenes']} scenes in both"]
    head = (f"{'class':<12}{'scenes':>7}  {'A mean ± sd':<16}{'B mean ± sd':<16}{'B - A':>7}  "
            f"{'95% CI (bootstrap)':<20}{'t-test p':>9}{'Wilcoxon p':>12}")
    lines += [head, "-" * len(head)]
    for name, s in result["classes"].items():
        a, b = s["a"], s["b"]
        ci = s["ci95"]
        ci_text = "-" if ci is None else f"[{ci[0]:+.3f}, {ci[1]:+.3f}]"
        lines.append(
            f"{name:<12}{s['n']:>7}  {_fmt(a['mean']) + ' ± ' + _fmt(a['sd']):<16}"
            f"{_fmt(b['mean']) + ' ± ' + _fmt(b['sd']):<16}{_fmt(s['mean_diff'], '+.3f'):>7}  "
            f"{ci_text:<20}{_fmt_p(s['t_test']['p']):>9}{_fmt_p(s['wilcoxon']['p']):>12}")
    coco = result.get("coco")
    if coco:
        lines.append("")
        for label, key in (("A", "a"), ("B", "b")):
            o = coco.get(key) or {}
            lines.append(f"COCO {label}: AP {_fmt(o.get('AP'))}  AP50 {_fmt(o.get('AP50'))}  "
                         f"AP75 {_fmt(o.get('AP75'))}")
    return "\n".join(lines)
