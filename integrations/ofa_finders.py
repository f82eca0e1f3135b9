"""OFA's two evolution finders with batched rejection sampling: fewer prediction calls, the same candidates.

A rejection loop ``draw until efficiency <= constraint`` returns the first feasible of i.i.d. draws.
:class:`BatchedEvolutionFinder` and :class:`BatchedTutorialEvolutionFinder` are OFA's finders whose three
rejection loops draw ``batch_size`` candidates (with OFA's own sampling code) per prediction call and keep
the feasible spares for later calls with the same parents.
"""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import numpy as np

from ..predictors.cache import LRU
from ..search import NoFeasibleArchitecture
from .ofa_predictor import arch_key

try:
    from ofa.nas.search_algorithm import EvolutionFinder as _NASFinder
    from ofa.tutorial import EvolutionFinder as _TutorialFinder
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"help_plugin.integrations.{__name__.rsplit('.', 1)[-1]} needs the `ofa` package and what it "
                      f"imports (torchvision matching your torch, Pillow, gdown): pip install 'help-plugin[ofa]' "
                      f"({_err})") from _err


class _AcceptAll:
    """Stands in for the efficiency predictor while a finder's own code draws candidates."""

    def get_efficiency(self, arch):
        return -math.inf

    predict_efficiency = get_efficiency


class _BatchedRejection:
    """Rejection sampling in batches for OFA's finders (mixin; see the module docstring).

    A rejection loop ``draw until efficiency <= constraint`` returns the first feasible of i.i.d.
    draws. Here each loop draws ``batch_size`` candidates with the finder's own sampling code, asks
    ``efficiency_predictor.predict_batch`` once, returns one feasible candidate and keeps the other
    feasible ones for the next call with the same inputs (same parents, same constraint): the same
    distribution, fewer prediction calls. Gives up with
    :class:`~help_plugin.search.NoFeasibleArchitecture` (a ``ValueError``) after ``max_draws`` candidates without a
    feasible one, where OFA's loops would spin forever.
    """

    def _setup_batching(self, batch_size: int, max_draws: int, spare_keys: int = 4096) -> None:
        if not callable(getattr(self.efficiency_predictor, "predict_batch", None)):
            raise TypeError(f"{type(self).__name__} needs an efficiency predictor with predict_batch(archs) "
                            f"(e.g. HELPEfficiencyPredictor); got {type(self.efficiency_predictor).__name__}")
        for name, v in (("batch_size", batch_size), ("max_draws", max_draws)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.batch_size, self.max_draws, self._spare_keys = int(batch_size), int(max_draws), spare_keys
        self._spares = LRU(spare_keys)
        self.predict_batch_calls = 0

    @contextlib.contextmanager
    def _drawing(self):
        predictor, self.efficiency_predictor = self.efficiency_predictor, _AcceptAll()
        try:
            yield predictor
        finally:
            self.efficiency_predictor = predictor

    def _first_feasible(self, key: tuple, constraint: float, draw: Callable[[], dict]) -> tuple[dict, float]:
        spares = self._spares.get(key)
        if spares:
            return spares.pop()
        drawn, lowest = 0, math.inf
        while drawn < self.max_draws:
            with self._drawing() as predictor:
                candidates = [draw() for _ in range(self.batch_size)]
            efficiency = predictor.predict_batch(candidates)
            self.predict_batch_calls += 1
            drawn += len(candidates)
            lowest = min(lowest, float(np.min(efficiency)))
            feasible = [(c, float(e)) for c, e in zip(candidates, efficiency) if e <= constraint]
            if feasible:
                if len(feasible) > 1:
                    self._spares[key] = feasible[1:][::-1]
                return feasible[0]
        raise NoFeasibleArchitecture(f"none of {drawn} candidates drawn meets the efficiency constraint {constraint}: "
                                     f"the lowest drawn is {lowest:.3f}")


class BatchedEvolutionFinder(_BatchedRejection, _NASFinder):
    """``ofa.nas.search_algorithm.EvolutionFinder`` with batched rejection loops.

    Same constructor and ``run_evolution_search(constraint, verbose=False, **kwargs)``, plus
    ``batch_size`` (candidates per prediction call) and ``max_draws``. ``efficiency_predictor`` must
    offer ``predict_batch`` (:class:`HELPEfficiencyPredictor` does).
    """

    def __init__(self, efficiency_predictor, accuracy_predictor, batch_size: int = 32, max_draws: int = 100_000,
                 **kwargs):
        super().__init__(efficiency_predictor, accuracy_predictor, **kwargs)
        self._setup_batching(batch_size, max_draws)

    def random_valid_sample(self, constraint):
        return self._first_feasible(("random", constraint), constraint,
                                    lambda: _NASFinder.random_valid_sample(self, constraint)[0])

    def mutate_sample(self, sample, constraint):
        return self._first_feasible(("mutate", arch_key(sample), constraint), constraint,
                                    lambda: _NASFinder.mutate_sample(self, sample, constraint)[0])

    def crossover_sample(self, sample1, sample2, constraint):
        pair = tuple(sorted((arch_key(sample1), arch_key(sample2))))  # crossover is symmetric in its parents
        return self._first_feasible(("crossover", pair, constraint), constraint,
                                    lambda: _NASFinder.crossover_sample(self, sample1, sample2, constraint)[0])


class BatchedTutorialEvolutionFinder(_BatchedRejection, _TutorialFinder):
    """``ofa.tutorial.EvolutionFinder`` with batched rejection loops.

    Same constructor plus ``batch_size`` and ``max_draws``; ``constraint_type="latency_ms"`` is
    accepted with any positive constraint (OFA's class prompts on stdin for a type outside
    ``{"flops", "note10"}`` or a value outside its range).
    """

    valid_constraint_range = {**_TutorialFinder.valid_constraint_range, "latency_ms": [0, math.inf]}

    def __init__(self, constraint_type, efficiency_constraint, efficiency_predictor, accuracy_predictor,
                 batch_size: int = 32, max_draws: int = 100_000, **kwargs):
        if constraint_type not in self.valid_constraint_range:
            raise ValueError(f"unknown constraint_type {constraint_type!r}; "
                             f"use one of {list(self.valid_constraint_range)}")
        low, high = self.valid_constraint_range[constraint_type]
        if not low <= efficiency_constraint <= high:
            raise ValueError(f"efficiency_constraint {efficiency_constraint!r} is outside [{low}, {high}] for "
                             f"{constraint_type!r}")
        super().__init__(constraint_type, efficiency_constraint, efficiency_predictor, accuracy_predictor, **kwargs)
        self._setup_batching(batch_size, max_draws)

    def random_sample(self):
        c = self.efficiency_constraint
        return self._first_feasible(("random", c), c, lambda: _TutorialFinder.random_sample(self)[0])

    def mutate_sample(self, sample):
        c = self.efficiency_constraint
        return self._first_feasible(("mutate", arch_key(sample), c), c,
                                    lambda: _TutorialFinder.mutate_sample(self, sample)[0])

    def crossover_sample(self, sample1, sample2):
        c = self.efficiency_constraint
        pair = tuple(sorted((arch_key(sample1), arch_key(sample2))))
        return self._first_feasible(("crossover", pair, c), c,
                                    lambda: _TutorialFinder.crossover_sample(self, sample1, sample2)[0])
