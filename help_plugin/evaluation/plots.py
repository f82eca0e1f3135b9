"""Figures people would rather look at than tables (needs matplotlib: ``pip install help-plugin[plot]``)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as err:  # pragma: no cover
        raise ImportError("plots need matplotlib: pip install 'help-plugin[plot]'") from err
    return plt


def _save(plt, fig, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return Path(path)


def sample_efficiency(summary: dict, path: str | Path, title: str = "") -> Path:
    """Mean Spearman rho vs. number of target measurements, one line per method."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for method, per_k in summary.items():
        ks = sorted(k for k in per_k if isinstance(k, int))
        if not ks:
            continue
        xs = [per_k[k]["measurements"] for k in ks]
        mean = np.array([per_k[k]["mean"]["spearman"][0] for k in ks])
        std = np.array([per_k[k]["mean"]["spearman"][1] for k in ks])
        ax.errorbar(xs, mean, yerr=std, marker="o", capsize=3, label=method)
    ax.set_xscale("log")
    ax.set_xlabel("target-device measurements (incl. reference archs)")
    ax.set_ylabel("Spearman rho (mean over test devices)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def predicted_vs_measured(pred_ms, true_ms, path: str | Path, title: str = "") -> Path:
    """Scatter of predicted against measured latency with the y = x line."""
    from .metrics import spearman

    plt = _plt()
    pred_ms, true_ms = np.asarray(pred_ms), np.asarray(true_ms)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(true_ms, pred_ms, s=8, alpha=0.6)
    lo, hi = float(min(pred_ms.min(), true_ms.min())), float(max(pred_ms.max(), true_ms.max()))
    ax.plot([lo, hi], [lo, hi], "k--", lw=1)
    ax.set_xlabel("measured latency (ms)")
    ax.set_ylabel("predicted latency (ms)")
    ax.set_title(f"{title}  rho={spearman(pred_ms, true_ms):.3f}".strip())
    return _save(plt, fig, path)


def coverage_vs_nominal(curves: dict, path: str | Path) -> Path:
    """Coverage of upper bounds against their nominal confidence, one line per rule, with y = x.

    ``curves``: ``{"nominal": [q], rule: [coverage at each q]}`` (``benchmarks/constraints.py``).
    """
    plt = _plt()
    q = np.asarray(curves["nominal"])
    fig, ax = plt.subplots(figsize=(4.5, 4))
    ax.plot(q, q, "k--", lw=1, label="nominal")
    for rule, cov in curves.items():
        if rule != "nominal":
            ax.plot(q, cov, marker="o", ms=4, label=rule)
    ax.set_xlabel("nominal confidence of the upper bound")
    ax.set_ylabel("coverage (mean over test devices)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def hit_rate_vs_limit(curves: dict, path: str | Path, target: float = 0.95) -> Path:
    """Share of adversarial picks meeting the limit against the limit's percentile, one line per rule.

    ``curves``: ``{"percentiles": [p], rule: [share at each p]}`` (``benchmarks/constraints.py``).
    """
    plt = _plt()
    pct = np.asarray(curves["percentiles"])
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.axhline(target, color="k", ls="--", lw=1, label=f"{100 * target:g} %")
    for rule, hit in curves.items():
        if rule != "percentiles":
            ax.plot(pct, hit, marker="o", ms=4, label=rule)
    ax.set_xlabel("latency limit (percentile of the device's recorded latencies)")
    ax.set_ylabel("picks meeting the limit (mean over test devices)")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(plt, fig, path)


def pareto(search, path: str | Path) -> Path:
    """Search candidates: predicted latency (and the bound the search compared with its window) vs. objective
    score, the limit, the target band the winner's measured latency should land in, and the winner:
    predicted, its bound, re-measured.

    ``search``: a :class:`~help_plugin.search.VerifiedSearchResult`.
    """
    plt = _plt()
    ms, bound, score = np.array(search.candidates).T
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.scatter(ms, score, s=10, alpha=0.5, label="candidates (predicted)")
    if search.confidence is not None:
        ax.scatter(bound, score, s=6, alpha=0.3, marker="|", c="C1", label=f"their {search.constraint}")
    ax.axvline(search.latency_limit_ms, color="r", ls="--", lw=1, label="latency limit")
    lo, hi = search.target_band_ms
    ax.axvspan(lo, hi, color="g", alpha=0.1, label="target band (measured)")
    ax.errorbar([search.predicted_ms], [search.score], xerr=[[0.0], [search.bound_ms - search.predicted_ms]],
                fmt="*", ms=12, c="k", capsize=4, label="winner, predicted (bar: its bound)")
    ax.scatter([search.measured_ms], [search.score], marker="x", s=80, c="g", label="winner, re-measured")
    ax.set_xlabel("latency (ms)")
    ax.set_ylabel(search.objective.split(" ")[0] + " score")
    ax.legend(fontsize=7)
    return _save(plt, fig, path)
