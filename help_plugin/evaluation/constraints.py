"""Latency constraints on recorded devices: coverage of the calibrated bounds, adversarial picks, meta-calibration.

The protocol (used by ``benchmarks/meta_calibration.py`` and ``benchmarks/constraints.py``): a device with
recorded latencies is adapted to with its reference architectures plus ``shots`` others, random or designed
(:func:`simulate_adaptation`); every other recorded architecture is a query whose latency is known.

* Coverage of a bound: the share of queries whose latency is at most the bound.
* Adversarial picks (:func:`adversarial_picks`): for limits at percentiles of the device's recorded
  latencies, the query with the largest analytic MACs (or parameters) whose bound is under the limit,
  over *all* queries: a search at its most effective at finding where the predictor errs low. A pick
  "meets" the limit when its recorded latency does; its objective ratio is its MACs over the largest MACs
  of a query that truly meets the limit.
* Meta-calibration (:func:`coverage_curves`, :func:`hit_curves`, :func:`smallest_multiplier`): the multipliers ``c``
  of :mod:`help_plugin.predictors.calibration` learned on simulated adaptations of held-out devices,
  with every device weighted equally.
* What the coverage goals allow (:func:`exchangeable_reference`): how often an exactly valid distribution-free
  bound from the same number of measurements would meet :data:`GOAL_BANDS` and :data:`WORST_ADAPTATION_GOAL`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from ..data import LatencyDataset
from ..predictors import HELPEstimator
from ..predictors.shot_design import SELECTIONS

#: Limits of the adversarial picks: percentiles of the device's recorded latencies.
PERCENTILES = (10, 30, 50, 70, 90)
#: A recorded latency within this relative distance of a limit meets it: simulated devices (eyeriss, fpga) repeat
#: one latency for hundreds of archs, stored with float-summation noise (3.3998600000000003 and 3.399860000000001
#: ms are one value), and a limit at a percentile of the latencies often falls exactly on such a value.
LIMIT_RTOL = 1e-9
#: Objectives of the adversarial picks: the first columns of ``space.cost_features``.
OBJECTIVES = ("macs", "params")
#: Issue 13's coverage goals: confidence -> the band a device's mean coverage (over its adaptations) should lie in,
#: and the coverage every single adaptation should reach.
GOAL_BANDS = {0.9: (0.88, 0.935), 0.95: (0.93, 0.985)}
WORST_ADAPTATION_GOAL = 0.85


def objective_values(data: LatencyDataset) -> np.ndarray:
    """``[n_rows, len(OBJECTIVES)]``: analytic MACs and parameters of every row."""
    return data.space.cost_features(data.archs)[:, :len(OBJECTIVES)]


@dataclass
class Adaptation:
    """One simulated adaptation: ``measured`` rows of ``data`` (references + shots), the recorded
    ``true_ms`` of every row, the estimator's ``log_pred`` and ``log_width`` (``s * l(x)``, the unit of the
    multiplier) for every row, its ``mean_ms``/``std_ms`` (``predict(return_std=True)``; ``None``
    without a predictive std) and ``residual_scores``: its calibration's leave-out residuals in the unit of the
    multiplier (``Calibration.scores / s``, the same unit as :meth:`errors`)."""

    space: str
    device: str
    seed: int
    measured: np.ndarray
    true_ms: np.ndarray
    log_pred: np.ndarray
    log_width: np.ndarray
    mean_ms: np.ndarray | None = None
    std_ms: np.ndarray | None = None
    residual_scores: np.ndarray | None = None

    @property
    def queries(self) -> np.ndarray:
        """Rows that were not measured (where coverage and picks are evaluated)."""
        mask = np.ones(len(self.true_ms), bool)
        mask[self.measured] = False
        return np.flatnonzero(mask)

    def errors(self) -> np.ndarray:
        """Normalised log errors of the queries, ``(log y - log yhat) / (s * l(x))``: the bound covers a query
        at multiplier ``c`` iff its error is ``<= c``."""
        q = self.queries
        return (np.log(self.true_ms[q]) - self.log_pred[q]) / self.log_width[q]


def choose_shot_rows(estimator: HELPEstimator, data: LatencyDataset, rows: np.ndarray, shots: int, seed: int,
                     shot_selection: str = "random") -> np.ndarray:
    """``shots`` of ``rows`` (of ``data``) to measure for an adaptation: ``"random"``: drawn at random (``seed``);
    ``"design"``: :meth:`~help_plugin.predictors.HELPEstimator.select_shots` among a random half (``seed``) of
    them, so that seeds differ as they do in ``help-nas benchmark``."""
    rng = np.random.default_rng(seed)
    if shot_selection == "design":
        half = np.sort(rng.permutation(rows)[:len(rows) // 2])
        return half[estimator.select_shots(data.archs[half], shots)]
    if shot_selection == "random":
        return rng.choice(rows, shots, replace=False)
    raise ValueError(f"unknown shot_selection {shot_selection!r}; use one of {list(SELECTIONS)}")


def simulate_adaptation(estimator: HELPEstimator, data: LatencyDataset, device: str, seed: int, shots: int = 10,
                        with_std: bool = False, shot_selection: str = "random") -> Adaptation:
    """Adapt ``estimator`` to ``device`` on its reference rows + ``shots`` rows and predict every row of ``data``.

    ``shot_selection``: how the shots are chosen among the device's other recorded rows
    (:func:`choose_shot_rows`)."""
    lat = data.latency(device)
    rest = np.setdiff1d(np.flatnonzero(np.isfinite(lat)), data.reference_rows)
    shot_rows = choose_shot_rows(estimator, data, rest, shots, seed, shot_selection)
    estimator.adapt(lat[data.reference_rows], data.archs[shot_rows], lat[shot_rows])
    calibration = estimator.calibration()
    log_pred, log_width = calibration.log_prediction(data.archs)
    scale = calibration.scale
    residual_scores = calibration.scores / scale if scale > 0 else np.zeros_like(calibration.scores)
    mean = std = None
    if with_std:
        mean, std = estimator.predict(data.archs, return_std=True)
    return Adaptation(data.space.name, device, seed, np.concatenate([data.reference_rows, shot_rows]), lat,
                      log_pred, log_width, mean, std, residual_scores)


def coverage(a: Adaptation, log_bound: np.ndarray) -> float:
    """Share of the queries whose recorded latency is at most the bound (log ms, one per row)."""
    q = a.queries
    return float(np.mean(np.log(a.true_ms[q]) <= log_bound[q]))


def median_width(a: Adaptation, log_bound: np.ndarray) -> float:
    """Median over the queries of bound / prediction."""
    q = a.queries
    return float(np.median(np.exp(log_bound[q] - a.log_pred[q])))


def adversarial_picks(a: Adaptation, log_bounds: np.ndarray, objective: np.ndarray,
                      percentiles: Sequence[float] = PERCENTILES) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Picks of the largest ``objective`` (one value per row) among queries whose bound is under the limit.

    ``log_bounds``: ``[n_rules, n_rows]`` (one bound per rule, e.g. per multiplier) or ``[n_rows]``.
    Returns ``(met, ratio, found)``, each ``[n_rules, n_limits]``: the pick's recorded latency is under the
    limit (``True`` when nothing is feasible: nothing picked violates it), its objective over the best truly
    feasible query's (0 when nothing was picked), whether anything was feasible.
    A pick meets its limit within :data:`LIMIT_RTOL`.
    """
    log_bounds = np.atleast_2d(log_bounds)
    q = a.queries
    order = q[np.argsort(-objective[q], kind="stable")]
    bounds = log_bounds[:, order]
    true = a.true_ms[order]
    met = np.ones((len(log_bounds), len(percentiles)), bool)
    ratio = np.zeros(met.shape)
    found = np.zeros(met.shape, bool)
    for j, p in enumerate(percentiles):
        limit = np.percentile(a.true_ms[np.isfinite(a.true_ms)], p)
        meets = true <= limit * (1 + LIMIT_RTOL)
        best = objective[order][meets].max()
        ok = bounds <= np.log(limit)
        found[:, j] = ok.any(axis=1)
        first = np.argmax(ok, axis=1)
        met[found[:, j], j] = meets[first[found[:, j]]]
        ratio[found[:, j], j] = objective[order][first[found[:, j]]] / best
    return met, ratio, found


def by_device(adaptations: Sequence[Adaptation]) -> dict[tuple[str, str], list[Adaptation]]:
    """``(space, device) -> its adaptations``, in first-seen order."""
    groups: dict[tuple[str, str], list[Adaptation]] = {}
    for a in adaptations:
        groups.setdefault((a.space, a.device), []).append(a)
    return groups


def coverage_curves(adaptations: Sequence[Adaptation], grid: np.ndarray) -> dict[tuple[str, str], np.ndarray]:
    """``(space, device) -> [len(grid)]``: the share of queries the bound ``log yhat + c * s * l(x)`` covers at each
    multiplier ``c`` of ``grid``, averaged over the device's adaptations."""
    return {key: np.mean([np.searchsorted(np.sort(a.errors()), grid, side="right") / len(a.queries) for a in group],
                         axis=0)
            for key, group in by_device(adaptations).items()}


def hit_curves(adaptations: Sequence[Adaptation], objectives: dict[str, np.ndarray], grid: np.ndarray,
               percentiles: Sequence[float] = PERCENTILES) -> dict[tuple[str, str], np.ndarray]:
    """``(space, device) -> [len(grid)]``: the share of adversarial picks (both objectives, every limit, every
    adaptation of the device) meeting their limit at bound ``log yhat + c * s * l(x)`` for each ``c`` of
    ``grid`` (``objectives[space]``: :func:`objective_values` of that space's data)."""
    return {(space, device): np.concatenate([
        adversarial_picks(a, a.log_pred + grid[:, None] * a.log_width, objectives[space][:, k], percentiles)[0]
        for a in group for k in range(len(OBJECTIVES))], axis=1).mean(axis=1)
        for (space, device), group in by_device(adaptations).items()}


def smallest_multiplier(curves: Sequence[np.ndarray], grid: np.ndarray, confidence: float) -> float | None:
    """The smallest ``c`` of ``grid`` from which the mean of ``curves`` (devices weighted equally) stays
    ``>= confidence``; ``None`` where no ``c`` of the grid gets there."""
    holds = np.logical_and.accumulate((np.mean(curves, axis=0) >= confidence)[::-1])[::-1]
    return float(grid[np.argmax(holds)]) if holds.any() else None


@dataclass
class CoverageReference:
    """What split conformal with ``measurements`` residual scores exchangeable with the queries would reach at
    ``confidence``: its bound is the ``k``-th smallest score, ``k = ceil((measurements + 1) * confidence)``, and its
    coverage on one adaptation (over infinitely many queries) is Beta(k, measurements + 1 - k) distributed, with
    ``mean`` and ``sd``. ``p_adaptation_at_worst_goal``: P(one adaptation covers >= :data:`WORST_ADAPTATION_GOAL`);
    ``p_all_adaptations_at_worst_goal``: that all ``devices * seeds`` do; ``p_device_in_band``: P(a device's mean over
    ``seeds`` adaptations lies in :data:`GOAL_BANDS` ``[confidence]``); ``p_all_devices_in_band``: that all
    ``devices`` do."""

    confidence: float
    measurements: int
    k: int
    mean: float
    sd: float
    p_adaptation_at_worst_goal: float
    p_all_adaptations_at_worst_goal: float
    p_device_in_band: float
    p_all_devices_in_band: float


def exchangeable_reference(measurements: int, seeds: int, devices: int, draws: int = 200_000,
                           seed: int = 0) -> list[CoverageReference]:
    """:class:`CoverageReference` at each confidence of :data:`GOAL_BANDS`: how often the most favourable bound
    learned from a device's own ``measurements`` (exactly valid, distribution-free: split conformal, every
    measurement exchangeable with the queries, no fixed reference archs) meets issue 13's coverage goals, with
    ``seeds`` adaptations on each of ``devices`` devices. The band probability is estimated from ``draws`` simulated
    devices (``seed``); the rest is exact. ``ValueError`` where ``measurements`` give no finite bound."""
    from scipy.stats import beta

    rng = np.random.default_rng(seed)
    out = []
    for confidence, (lo, hi) in GOAL_BANDS.items():
        k = math.ceil((measurements + 1) * confidence)
        if k > measurements:
            raise ValueError(f"{measurements} measurements give no finite split-conformal bound at {confidence:g}")
        dist = beta(k, measurements + 1 - k)
        one = float(dist.sf(WORST_ADAPTATION_GOAL))
        means = dist.rvs(size=(draws, seeds), random_state=rng).mean(axis=1)
        in_band = float(np.mean((means >= lo) & (means <= hi)))
        out.append(CoverageReference(confidence, measurements, k, float(dist.mean()), float(dist.std()), one,
                                     one ** (devices * seeds), in_band, in_band ** devices))
    return out
