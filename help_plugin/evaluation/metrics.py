"""Accuracy metrics of latency predictions against measurements."""
from __future__ import annotations

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two ``[n]`` arrays."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).correlation)


#: Archs faster than this percentile of the scored latencies are left out of ``mape_above_floor``.
MAPE_FLOOR_PERCENTILE = 10


def metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """Accuracy of predictions ``[n]`` against measurements ``[n]`` (ms).

    ``spearman``, ``kendall``: rank correlations. ``mape``: mean absolute percentage error (%).
    ``within_10pct``: share (%) of archs predicted within +-10 % of their latency (the metric nn-Meter
    and LitePred report). ``mape_above_floor``: MAPE (%) over the archs at or above the
    :data:`MAPE_FLOOR_PERCENTILE`-th percentile of the measured latencies (near-zero latencies, e.g. on
    raspi4/eyeriss/fpga, inflate the plain MAPE without saying much).
    """
    from scipy.stats import kendalltau

    pred_ms, true_ms = np.asarray(pred_ms, np.float64), np.asarray(true_ms, np.float64)
    rel = np.abs(pred_ms - true_ms) / true_ms
    above = true_ms >= np.percentile(true_ms, MAPE_FLOOR_PERCENTILE)
    return {"spearman": spearman(pred_ms, true_ms),
            "kendall": float(kendalltau(pred_ms, true_ms).correlation),
            "mape": float(np.mean(rel) * 100.0),
            "within_10pct": float(np.mean(rel <= 0.1) * 100.0),
            "mape_above_floor": float(np.mean(rel[above]) * 100.0)}


def data_ceiling(feature_sets: list[np.ndarray], true_ms: np.ndarray, seed: int = 0) -> float:
    """What the device's own data allows: Spearman of a linear fit on half of the archs, scored on the other half.

    ``feature_sets``: one or more ``[n, k]`` arrays (e.g. the space's one-hot encoding and log analytic costs,
    with and without pairwise products), ``true_ms`` ``[n]``. Each fit is least squares (a tiny ridge for
    stability) on log latency and on latency; the best of them is the ceiling. With thousands of archs, a linear fit of the one-hot encoding recovers additive
    devices exactly (HW-NAS-Bench builds fpga, raspi4, eyeriss and pixel3 from per-block tables); devices
    that record whole milliseconds cap it below 1.
    """
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(true_ms))
    fit, score = order[: len(order) // 2], order[len(order) // 2:]
    best = -1.0
    for features in feature_sets:
        x = np.concatenate([features, np.ones((len(features), 1))], axis=1)
        a = x[fit]
        gram = a.T @ a + 1e-6 * np.eye(a.shape[1])
        for y in (np.log(true_ms), true_ms):
            coef = np.linalg.solve(gram, a.T @ y[fit])
            best = max(best, spearman(x[score] @ coef, true_ms[score]))
    return float(best)
