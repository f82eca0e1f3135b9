"""Accuracy metrics of latency predictions against measurements."""
from __future__ import annotations

import numpy as np


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two ``[n]`` arrays."""
    from scipy.stats import spearmanr

    return float(spearmanr(a, b).correlation)


def metrics(pred_ms: np.ndarray, true_ms: np.ndarray) -> dict[str, float]:
    """Spearman rho, Kendall tau and MAPE (%) of predictions ``[n]`` against measurements ``[n]`` (ms)."""
    from scipy.stats import kendalltau

    pred_ms, true_ms = np.asarray(pred_ms, np.float64), np.asarray(true_ms, np.float64)
    return {"spearman": spearman(pred_ms, true_ms),
            "kendall": float(kendalltau(pred_ms, true_ms).correlation),
            "mape": float(np.mean(np.abs(pred_ms - true_ms) / true_ms) * 100.0)}
