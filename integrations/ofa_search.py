"""HELP as the latency model of Once-for-All's evolutionary search (``ofa`` on PyPI): one call.

* :func:`search` runs either of OFA's finders (``"nas"``: ``ofa.nas.search_algorithm.EvolutionFinder``,
  ``"tutorial"``: ``ofa.tutorial.EvolutionFinder``; batched by default,
  :mod:`~help_plugin.integrations.ofa_finders`) with :class:`~help_plugin.integrations.ofa_predictor.HELPEfficiencyPredictor`
  as the efficiency predictor and :func:`~help_plugin.integrations.ofa_accuracy.accuracy_predictor` as accuracy.
* :func:`search_and_measure` also times the winner on the device and, while it misses the limit, searches
  again under a target corrected by the measured overshoot: the verified search of
  :class:`help_plugin.search.VerifiedSearch` with OFA's finder proposing the candidates.

Both compare the estimator's 95 % selection-aware latency bound with the limit by default
(:class:`help_plugin.search.LatencyConstraint`); ``confidence=None`` is HELP's rule (the mean prediction),
whose winners overshoot the limit on the device more often than not.

The parts, one module each: :mod:`~help_plugin.integrations.ofa_predictor` (OFA's efficiency-predictor
interface), :mod:`~help_plugin.integrations.ofa_accuracy` (accuracy predictor or proxy),
:mod:`~help_plugin.integrations.ofa_finders` (the batched finders); this module re-exports their names.
"""
from __future__ import annotations

import logging
import random
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..measure import Device, Measurements
from ..predictors import LatencyEstimator
from ..search import Candidate, VerifiedSearch
from ..validation import check_latencies
from .ofa_accuracy import FLOPsAccuracyProxy, OFAAccuracyPredictor, accuracy_predictor
from .ofa_finders import (
    BatchedEvolutionFinder,
    BatchedTutorialEvolutionFinder,
    _NASFinder,
    _TutorialFinder,
)
from .ofa_predictor import HELPEfficiencyPredictor, arch_key

log = logging.getLogger(__name__)

FINDERS = ("nas", "tutorial")


@dataclass
class OFASearchResult:
    """The finder's best architecture.

    ``arch``: canonical ``{"ks", "e", "d", "r"}``; ``predicted_ms``: the estimator's mean prediction;
    ``efficiency_ms``: what the finder compared with the limit (the bound at ``confidence``; ``predicted_ms``
    for ``confidence=None``);
    ``accuracy``/``accuracy_source``: the accuracy predictor's value and what it is; ``macs``: analytic
    multiply-accumulates; ``seconds``: wall time of the search; ``predictor``: the efficiency predictor's
    counters (:meth:`HELPEfficiencyPredictor.cache_info`) plus ``predict_batch_calls`` when batched.
    """

    finder: str
    latency_limit_ms: float
    confidence: float | None
    arch: dict
    predicted_ms: float
    efficiency_ms: float
    accuracy: float
    accuracy_source: str
    macs: float
    seconds: float
    predictor: dict = field(default_factory=dict)


def search(estimator: LatencyEstimator, latency_limit_ms: float, finder: str = "nas", accuracy=None,
           population_size: int = 100, max_time_budget: int = 500, confidence: float | None = 0.95, batched: bool = True,
           batch_size: int = 32, seed: int | None = None, verbose: bool = False, **finder_kwargs) -> OFASearchResult:
    """Run one of OFA's evolution finders with ``estimator`` as the latency model.

    Args:
        estimator: any fitted LatencyEstimator of the ``ofa`` space (ms on the target device).
        latency_limit_ms: the constraint, ms.
        finder: ``"nas"`` (``ofa.nas.search_algorithm.EvolutionFinder``) or ``"tutorial"``
            (``ofa.tutorial.EvolutionFinder``; its arch manager draws resolutions 160..224 in steps of 16).
        accuracy: an accuracy predictor with both finders' interface; default :func:`accuracy_predictor`
            (the FLOPs proxy unless OFA's weights are given).
        population_size, max_time_budget: the finders' own settings (OFA's and HELP's defaults: 100, 500).
        confidence: of the selection-aware latency bound the finder compares with the limit (default 0.95;
            ``None``: the mean prediction, HELP's rule; see :class:`HELPEfficiencyPredictor`).
        batched: use :class:`BatchedEvolutionFinder` / :class:`BatchedTutorialEvolutionFinder`
            (``batch_size`` candidates per prediction call) instead of OFA's classes as they are.
        seed: seeds Python's and NumPy's global RNGs, which the finders use (restored afterwards).
        **finder_kwargs: further finder settings (``mutate_prob``, ``parent_ratio``, ...).
    """
    if finder not in FINDERS:
        raise ValueError(f"unknown finder {finder!r}; available: {FINDERS}")
    if not np.isfinite(latency_limit_ms) or latency_limit_ms <= 0:
        raise ValueError(f"latency_limit_ms must be a finite positive number of ms, got {latency_limit_ms!r}")
    predictor = HELPEfficiencyPredictor(estimator, confidence=confidence)
    accuracy = accuracy if accuracy is not None else accuracy_predictor()
    settings = {"population_size": population_size, "max_time_budget": max_time_budget, **finder_kwargs}
    states = (random.getstate(), np.random.get_state())
    if seed is not None:
        random.seed(seed)
        np.random.seed(seed)
    t0 = time.perf_counter()
    try:
        if finder == "nas":
            cls = BatchedEvolutionFinder if batched else _NASFinder
            extra = {"batch_size": batch_size} if batched else {}
            f = cls(predictor, accuracy, **extra, **settings)
            _, best = f.run_evolution_search(latency_limit_ms, verbose=verbose)
        else:
            if batched:
                f = BatchedTutorialEvolutionFinder("latency_ms", latency_limit_ms, predictor, accuracy,
                                                   batch_size=batch_size, **settings)
            else:  # OFA's class accepts only its own constraint types and ranges: set the limit afterwards
                f = _TutorialFinder("note10", 15, predictor, accuracy, **settings)
                f.set_efficiency_constraint(latency_limit_ms)
            _, best = f.run_evolution_search(verbose=verbose)
    finally:
        if seed is not None:
            random.setstate(states[0])
            np.random.set_state(states[1])
    seconds = time.perf_counter() - t0
    if best is None:
        raise ValueError(f"the finder returned no architecture (max_time_budget={max_time_budget})")
    acc, arch, efficiency = best
    space = predictor.space
    idx = space.to_indices([arch])
    stats = predictor.cache_info()
    if batched:
        stats["predict_batch_calls"] = f.predict_batch_calls
    log.info("%s finder, %.1f ms limit: %.2f ms predicted, accuracy %.4f (%s), %.1f s", finder, latency_limit_ms,
             efficiency, acc, accuracy.name if hasattr(accuracy, "name") else type(accuracy).__name__, seconds)
    return OFASearchResult(finder, float(latency_limit_ms), predictor.confidence, space.format(idx[0]),
                           float(np.asarray(estimator.predict(idx))[0]), float(efficiency), float(acc),
                           getattr(accuracy, "name", type(accuracy).__name__), float(space.flops(idx[0])), seconds,
                           stats)


@dataclass
class MeasuredSearch:
    """:func:`search_and_measure`'s outcome: the winning round's ``result``, its ``measured_ms`` on the device,
    whether that ``met`` the limit, and every round as ``{"target_ms", "arch", "predicted_ms", "bound_ms",
    "measured_ms", "session_speed", "accuracy"}`` (``bound_ms``: what the finder compared with ``target_ms``;
    ``session_speed``: the device's speed vs adaptation in the session that timed it, NaN without anchors);
    ``measurements``: architectures timed on the device (anchors and re-measurements included).
    """

    result: OFASearchResult
    measured_ms: float
    met: bool
    rounds: list = field(default_factory=list)
    measurements: int = 0


class _MeasureFn(Device):
    """A ``measure(list of arch dicts) -> ms`` function as a :class:`~help_plugin.measure.Device`."""

    chunk_size = 1

    def __init__(self, space, measure: Callable[[list], Any]):
        self.space, self._measure = space, measure

    @property
    def device_id(self) -> str:
        return "measure-function"

    def measure(self, archs: Any, progress: bool = False) -> Measurements:
        idx = self.space.to_indices(archs)
        ms = check_latencies(self._measure([self.space.format(r) for r in idx]), "measure(...)")
        if len(ms) != len(idx):
            raise ValueError(f"measure(...) returned {len(ms)} latencies for {len(idx)} architectures")
        return Measurements(ms, ms[None], float("nan"), 0.0)


def search_and_measure(estimator: LatencyEstimator, measure: Callable[[list], Any], latency_limit_ms: float,
                       rounds: int = 3, confidence: float | None = 0.95, anchors: Any = None, final_sessions: int = 0,
                       **search_kwargs) -> MeasuredSearch:
    """Search, time the winner on the device, and while it misses the limit, search again under a tighter target.

    A finder that maximises accuracy under the *mean prediction* (HELP's rule) ends where the predictor errs
    low, so its winner tends to overshoot on the device by a few per cent, whatever the predictor's average
    accuracy; the selection-aware bound (the default) makes that rare, and timing closes the rest.
    After a miss the next search's target is ``limit * predicted / measured`` (the winner's
    measured/predicted ratio taken as the bias where the search converges; it also absorbs a device
    that got slower since adaptation). Each round costs one device measurement. This is
    :class:`help_plugin.search.VerifiedSearch` with OFA's finder proposing one candidate per round and no
    target band (``budget_use=None``, ``guard=0``); by default without anchors or re-measurement. On a
    shared machine, whose speed moves between sessions, pass ``anchors="references"`` and
    ``final_sessions=3``: the winner is then timed with the reference archs, whose speed tells a slow
    session from a miss, and the verdict is the median of 3 fresh sessions (see ``VerifiedSearch``).

    Args:
        estimator: a fitted LatencyEstimator of the ``ofa`` space (not modified).
        measure: ``measure(list of arch dicts) -> latencies in ms`` on the device, e.g.
            ``lambda a: device.measure(a).latency_ms`` for a :class:`~help_plugin.measure.TorchEagerDevice`.
        latency_limit_ms: the constraint, ms.
        rounds: at most this many winners are timed.
        confidence: of the latency bound each round's finder compares with its target (see :func:`search`).
        anchors: ``None`` (default: each winner is timed alone), ``"references"`` (the estimator's reference
            archs and the latencies it was adapted with) or ``(archs, latency_ms)``: timed with every winner.
        final_sessions: re-measure the winner in this many fresh sessions and report their median (default 0:
            its round's measurement stands).
        **search_kwargs: passed to :func:`search` (finder, accuracy, population_size, seed, ...).
    """
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    results: dict[str, OFASearchResult] = {}

    def propose(est, window_ms: tuple, constraint) -> list[Candidate]:  # the window is (0, limit): no band
        result = search(est, constraint.limit_ms, confidence=constraint.confidence, **search_kwargs)
        idx = est.space.to_indices([result.arch])[0]
        results[est.space.canonical(idx)] = result
        return [Candidate(idx, result.accuracy, result.predicted_ms, result.efficiency_ms)]

    verified = VerifiedSearch(estimator, _MeasureFn(estimator.space, measure), propose, objective="accuracy",
                              verify_top=1, guard=0.0, budget_use=None, anchors=anchors, retries=rounds - 1,
                              final_sessions=final_sessions, refit=False, confidence=confidence)
    outcome = verified.run(latency_limit_ms)
    history = [{"target_ms": h["window_ms"][1], "arch": h["arch"], "predicted_ms": h["predicted_ms"],
                "bound_ms": h["bound_ms"],
                "measured_ms": h["measured_ms"], "session_speed": h["session_speed"], "accuracy": h["score"]}
               for h in outcome.history]
    for h in history:
        log.info("target %.2f ms: %.2f ms predicted, %.2f ms measured (limit %.2f ms)", h["target_ms"],
                 h["predicted_ms"], h["measured_ms"], latency_limit_ms)
    winner = results[estimator.space.canonical(np.asarray(outcome.arch_indices))]
    return MeasuredSearch(winner, outcome.measured_ms, outcome.constraint_met, history, outcome.measurements)


__all__ = ["HELPEfficiencyPredictor", "FLOPsAccuracyProxy", "OFAAccuracyPredictor", "accuracy_predictor",
           "BatchedEvolutionFinder", "BatchedTutorialEvolutionFinder", "OFASearchResult", "search",
           "MeasuredSearch", "search_and_measure", "arch_key", "FINDERS"]
