"""Which architectures meet a latency limit: one rule for every search and adapter.

A search that maximises an objective under a latency limit ends on the candidates whose prediction errs
lowest (the winner's curse), so a bound that holds for one architecture at 95 % (``rule="marginal"``,
:meth:`~help_plugin.predictors.LatencyEstimator.predict_upper`) does not hold for the one a search returns.
The default, ``rule="selection"`` at ``confidence=0.95``, compares the *selection-aware* bound with the
limit: its multiplier was meta-calibrated so that the largest network under the limit, over all recorded
architectures of held-out devices, meets it at that rate (``benchmarks/meta_calibration.py``). HELP's own
rule, the mean prediction, applies only when asked for (``confidence=None`` or ``rule="mean"``); on
HELP's test devices it meets the limit in about half of such picks (README, "Latency constraints").
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..predictors.base import LatencyEstimator
from ..predictors.calibration import check_confidence

RULES = ("selection", "marginal", "mean")


def checked_confidence(confidence: float | None) -> float | None:
    """``None`` (HELP's rule: the mean prediction) or a confidence in (0, 1); ``ValueError`` naming it otherwise."""
    return None if confidence is None else check_confidence(confidence)


def describe_rule(confidence: float | None, rule: str = "selection") -> str:
    """E.g. ``"95 % selection-aware bound"``, or ``"mean prediction (HELP's rule)"`` for ``confidence=None``."""
    if confidence is None or rule == "mean":
        return "mean prediction (HELP's rule)"
    return f"{100 * confidence:g} % {'selection-aware' if rule == 'selection' else 'marginal'} bound"


def predict_with_bound(estimator: LatencyEstimator, archs: Any, confidence: float | None = 0.95,
                       rule: str = "selection") -> tuple[np.ndarray, np.ndarray]:
    """``(prediction, bound)`` in ms ``[n]`` each: the bound is what a constraint compares with its limit (see
    :class:`LatencyConstraint`), the prediction itself for HELP's rule (``confidence=None`` or ``rule="mean"``)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if confidence is None or rule == "mean":
        mean = np.asarray(estimator.predict(archs), dtype=np.float64)
        return mean, mean
    mean, _, upper = estimator.calibration().bounds(estimator.space.to_indices(archs), confidence,
                                                    selection=rule == "selection")
    return mean, upper


def row_bound(estimator: LatencyEstimator, confidence: float | None = 0.95, rule: str = "selection"
              ) -> Callable[[Sequence[int]], tuple[float, float]]:
    """``row [arch_length] -> (prediction, bound)`` in ms, :func:`predict_with_bound` of one valid index row (array or
    list) as floats, for a search's single queries: the rule, the calibration and its multiplier are resolved here,
    once (refit the estimator: ask for a new one), then each row goes through the estimator's paths for one
    architecture where it has them (``predict_row``; help+'s held-out heads in one gather)."""
    if rule not in RULES:
        raise ValueError(f"rule must be one of {RULES}, got {rule!r}")
    if confidence is None or rule == "mean":
        def mean(row) -> tuple[float, float]:
            ms = float(estimator.predict_row(row))
            return ms, ms
        return mean
    calibration = estimator.calibration()
    if calibration.has_row_bound:
        return calibration.row_bound(confidence, selection=rule == "selection")

    def batched(row) -> tuple[float, float]:
        mean, upper = predict_with_bound(estimator, np.asarray(row)[None], confidence, rule)
        return float(mean[0]), float(upper[0])
    return batched


@dataclass(frozen=True)
class LatencyConstraint:
    """A latency limit and how an estimator's predictions are checked against it.

    Args:
        limit_ms: the limit, ms.
        confidence: the share of searches whose pick should meet the limit (default 0.95); ``None``: HELP's
            rule (the mean prediction).
        rule: ``"selection"`` (default): the selection-aware bound, for a search's feasibility check;
            ``"marginal"``: the per-architecture bound (covers ``confidence`` of the architectures, not of a
            search's picks); ``"mean"``: the prediction itself (HELP's rule; ``confidence`` is then ``None``).
    """

    limit_ms: float
    confidence: float | None = 0.95
    rule: str = "selection"

    def __post_init__(self):
        if not (isinstance(self.limit_ms, (int, float, np.number)) and np.isfinite(self.limit_ms)
                and self.limit_ms > 0):
            raise ValueError(f"the latency limit must be a finite positive number of ms, got {self.limit_ms!r}")
        if self.rule not in RULES:
            raise ValueError(f"rule must be one of {RULES}, got {self.rule!r}")
        confidence = None if self.rule == "mean" else checked_confidence(self.confidence)
        object.__setattr__(self, "limit_ms", float(self.limit_ms))
        object.__setattr__(self, "confidence", confidence)
        object.__setattr__(self, "rule", "mean" if confidence is None else self.rule)

    def feasible(self, estimator: LatencyEstimator, archs: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(meets [n] bool, predicted_ms [n], bound_ms [n])``: which architectures meet the limit, their mean
        prediction and the bound compared with the limit (the prediction itself for HELP's rule)."""
        mean, bound = predict_with_bound(estimator, archs, self.confidence, self.rule)
        return bound <= self.limit_ms, mean, bound

    def describe(self) -> str:
        """E.g. ``"95 % selection-aware bound"`` or ``"mean prediction (HELP's rule)"``."""
        return describe_rule(self.confidence, self.rule)
