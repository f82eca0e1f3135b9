"""Latency-constrained regularised evolution over any search space, with any LatencyEstimator."""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..predictors.base import LatencyEstimator

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    best: np.ndarray  # index vector of the winner
    best_score: float
    predicted_ms: float
    latency_limit_ms: float
    evaluated: list[tuple[np.ndarray, float, float]] = field(default_factory=list)  # (arch, score, predicted ms)


def predicted_upper_bound(estimator: LatencyEstimator, archs: Any, margin: float = 0.0,
                          fallback_rel_std: float = 0.05) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(mean, std, mean + margin * std)`` in ms, each ``[n]``.

    ``std`` is the estimator's predictive std (``predict(archs, return_std=True)``); for
    estimators without one it is ``nan`` and the bound uses ``fallback_rel_std * mean`` instead.
    """
    if not np.isfinite(margin) or margin < 0:
        raise ValueError(f"margin must be a finite number of standard deviations >= 0, got {margin!r}")
    if not np.isfinite(fallback_rel_std) or fallback_rel_std < 0:
        raise ValueError(f"fallback_rel_std must be a finite fraction >= 0, got {fallback_rel_std!r}")
    try:
        mean, std = estimator.predict(archs, return_std=True)  # predict validates archs
        spread = np.asarray(std, dtype=np.float64)
    except (TypeError, NotImplementedError):
        mean = estimator.predict(archs)
        std = np.full(len(mean), np.nan)
        spread = fallback_rel_std * np.asarray(mean, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    return mean, np.asarray(std, dtype=np.float64), mean + margin * spread


def mutate(choices: np.ndarray, parents: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Change one random position of each parent ``[n, L]`` to a different random choice."""
    children = parents.copy()
    pos = rng.integers(0, parents.shape[1], size=len(parents))
    shift = rng.integers(1, np.maximum(choices[pos], 2), size=len(parents))
    children[np.arange(len(parents)), pos] = (parents[np.arange(len(parents)), pos] + shift) % choices[pos]
    return children


class NoFeasibleArchitecture(ValueError):
    """No candidate architecture is predicted within the latency limit (or window) a search was given."""


def evolutionary_search(estimator: LatencyEstimator, objective: Callable[[np.ndarray], float], latency_limit_ms: float,
                        population: int = 30, tournament: int = 10, cycles: int = 150, margin_std: float = 1.0,
                        seed: int = 0, progress: bool = False, latency_floor_ms: float = 0.0) -> SearchResult:
    """Maximise ``objective(index_vector)`` subject to predicted latency <= ``latency_limit_ms``.

    Feasibility uses the estimator's prediction plus ``margin_std`` predictive standard deviations
    when the estimator provides them (``predict(..., return_std=True)``). Candidates are generated
    and latency-checked in batches, so rejection costs one vectorised prediction.
    ``latency_floor_ms`` also rejects candidates predicted faster than it (mean prediction): a
    search that should spend a latency budget rather than land far under it. Raises
    :class:`NoFeasibleArchitecture` when no sampled architecture falls within the window.
    """
    if not latency_floor_ms < latency_limit_ms:
        raise ValueError(f"latency_floor_ms ({latency_floor_ms!r}) must be below latency_limit_ms "
                         f"({latency_limit_ms!r})")
    from tqdm.auto import tqdm

    space = estimator.space
    rng = np.random.default_rng(seed)
    choices = np.asarray(space.choices)

    def feasible(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        mean, _, upper = predicted_upper_bound(estimator, idx, margin_std, fallback_rel_std=0.0)
        return (upper <= latency_limit_ms) & (mean >= latency_floor_ms), mean

    seen: dict[bytes, tuple[float, float]] = {}
    pop: collections.deque = collections.deque()
    result = SearchResult(np.zeros(0, np.int64), -np.inf, np.nan, latency_limit_ms)

    def evaluate(arch: np.ndarray, pred_ms: float) -> float:
        key = arch.tobytes()
        if key not in seen:
            seen[key] = (objective(arch), pred_ms)
            result.evaluated.append((arch.copy(), seen[key][0], pred_ms))
            if seen[key][0] > result.best_score:
                result.best, result.best_score, result.predicted_ms = arch.copy(), seen[key][0], pred_ms
        return seen[key][0]

    for _ in range(100):
        cand = space.sample(20 * population, int(rng.integers(1 << 31)))
        ok, pred = feasible(cand)
        for arch, ms in zip(cand[ok], pred[ok]):
            if len(pop) < population:
                pop.append((arch, evaluate(arch, ms)))
        if len(pop) >= population:
            break
    if not pop:
        raise NoFeasibleArchitecture(f"no sampled architecture is predicted within [{latency_floor_ms:.4g}, "
                                     f"{latency_limit_ms:.4g}] ms")
    for _ in tqdm(range(cycles), desc="evolution", disable=not progress, leave=False):
        picks = rng.choice(len(pop), size=min(tournament, len(pop)), replace=False)
        parent = max((pop[i] for i in picks), key=lambda p: p[1])[0]
        children = mutate(choices, np.repeat(parent[None], 32, axis=0), rng)
        ok, pred = feasible(children)
        if not ok.any():
            continue
        child, ms = children[ok][0], pred[ok][0]
        pop.append((child, evaluate(child, ms)))
        pop.popleft()
    log.info("search: %d evaluated, best score %.3f at %.2f ms predicted", len(seen), result.best_score, result.predicted_ms)
    return result
