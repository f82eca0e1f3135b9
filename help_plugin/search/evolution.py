"""Latency-constrained regularised evolution over any search space, with any LatencyEstimator."""
from __future__ import annotations

import collections
import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from ..predictors.base import LatencyEstimator
from .constraint import LatencyConstraint

log = logging.getLogger(__name__)


@dataclass
class SearchResult:
    """``best``: the winner's index row, its ``best_score``, ``predicted_ms`` (mean) and ``bound_ms`` (what was
    compared with the limit, see ``constraint``); ``evaluated``: ``(arch, score, predicted ms, bound ms)`` of
    every candidate scored."""

    best: np.ndarray
    best_score: float
    predicted_ms: float
    bound_ms: float
    latency_limit_ms: float
    constraint: str
    evaluated: list[tuple[np.ndarray, float, float, float]] = field(default_factory=list)


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
                        population: int = 30, tournament: int = 10, cycles: int = 150, confidence: float | None = 0.95,
                        seed: int = 0, progress: bool = False,
                        latency_window_ms: tuple[float, float] | None = None) -> SearchResult:
    """Maximise ``objective(index_vector)`` over architectures that meet ``latency_limit_ms``.

    Feasibility is :class:`~help_plugin.search.LatencyConstraint`'s: the estimator's selection-aware bound at
    ``confidence`` under the limit (``None``: its mean prediction, HELP's rule). Candidates are generated
    and latency-checked in batches, so rejection costs one vectorised prediction.
    ``latency_window_ms=(low, high)`` also requires the mean prediction within it: a search that should
    spend a latency budget rather than land far under the limit. Raises :class:`NoFeasibleArchitecture`
    when no sampled architecture is feasible.
    """
    constraint = LatencyConstraint(latency_limit_ms, confidence)
    low, high = latency_window_ms or (0.0, np.inf)
    if not low < min(high, latency_limit_ms):
        raise ValueError(f"latency_window_ms {latency_window_ms!r} leaves nothing under latency_limit_ms "
                         f"({latency_limit_ms!r})")
    from tqdm.auto import tqdm

    space = estimator.space
    rng = np.random.default_rng(seed)
    choices = np.asarray(space.choices)

    def feasible(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ok, mean, bound = constraint.feasible(estimator, idx)
        return ok & (low <= mean) & (mean <= high), mean, bound

    seen: dict[bytes, float] = {}
    pop: collections.deque = collections.deque()
    result = SearchResult(np.zeros(0, np.int64), -np.inf, np.nan, np.nan, constraint.limit_ms, constraint.describe())

    def evaluate(arch: np.ndarray, pred_ms: float, bound_ms: float) -> float:
        key = arch.tobytes()
        if key not in seen:
            seen[key] = objective(arch)
            result.evaluated.append((arch.copy(), seen[key], pred_ms, bound_ms))
            if seen[key] > result.best_score:
                result.best, result.best_score = arch.copy(), seen[key]
                result.predicted_ms, result.bound_ms = pred_ms, bound_ms
        return seen[key]

    for _ in range(100):
        cand = space.sample(20 * population, int(rng.integers(1 << 31)))
        ok, pred, bound = feasible(cand)
        for arch, ms, ub in zip(cand[ok], pred[ok], bound[ok]):
            if len(pop) < population:
                pop.append((arch, evaluate(arch, ms, ub)))
        if len(pop) >= population:
            break
    if not pop:
        window = f" with a mean prediction in [{low:.4g}, {high:.4g}] ms" if latency_window_ms else ""
        raise NoFeasibleArchitecture(f"no sampled architecture meets {latency_limit_ms:.4g} ms by its "
                                     f"{constraint.describe()}{window}")
    for _ in tqdm(range(cycles), desc="evolution", disable=not progress, leave=False):
        picks = rng.choice(len(pop), size=min(tournament, len(pop)), replace=False)
        parent = max((pop[i] for i in picks), key=lambda p: p[1])[0]
        children = mutate(choices, np.repeat(parent[None], 32, axis=0), rng)
        ok, pred, bound = feasible(children)
        if not ok.any():
            continue
        i = int(np.argmax(ok))
        pop.append((children[i], evaluate(children[i], pred[i], bound[i])))
        pop.popleft()
    log.info("search: %d evaluated, best score %.3f at %.2f ms predicted (%s %.2f ms)", len(seen), result.best_score,
             result.predicted_ms, constraint.describe(), result.bound_ms)
    return result
