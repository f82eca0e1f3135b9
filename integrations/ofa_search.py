"""HELP as the latency model of Once-for-All's evolutionary search (``ofa`` on PyPI).

OFA ships two evolution finders, and both ask an *efficiency predictor* about one architecture at a
time inside rejection loops (``while True: draw; if efficiency <= constraint: return``):

* ``ofa.nas.search_algorithm.EvolutionFinder`` calls ``efficiency_predictor.get_efficiency(arch)``
  with ``arch = {"ks": [20], "e": [20], "d": [5], "image_size": int}``, and draws candidates with
  ``accuracy_predictor.arch_encoder`` (``random_sample_arch``, ``mutate_resolution``, ``mutate_arch``),
  scoring them with ``accuracy_predictor.predict_acc(list_of_archs)``.
* ``ofa.tutorial.EvolutionFinder`` calls ``efficiency_predictor.predict_efficiency(spec)`` with
  ``spec = {"wid": None, "ks": [20], "e": [20], "d": [5], "r": [int]}`` and scores with
  ``accuracy_predictor.predict_accuracy(list_of_specs)`` (a ``[n, 1]`` tensor).

:class:`HELPEfficiencyPredictor` answers both calls from any fitted
:class:`~help_plugin.LatencyEstimator` of the ``"ofa"`` space, in place of OFA's per-device
``LatencyTable`` / ``Mbv3LatencyModel`` lookup tables (which download their tables when constructed).
One uncached prediction costs one ``estimator.predict`` call (about 2 ms for help+ on a 2-vCPU machine,
almost all of it fixed overhead), so it caches by architecture (archs that differ only in inactive layers
share an entry) and offers :meth:`~HELPEfficiencyPredictor.predict_batch`.
:class:`BatchedEvolutionFinder` and :class:`BatchedTutorialEvolutionFinder` use that batch call: they
are OFA's finders with the three rejection loops drawing ``batch_size`` candidates (with OFA's own
sampling code) per prediction call and keeping the feasible spares for later calls with the same
parents; the candidates' distribution is unchanged, only fewer prediction calls are made.

:func:`search` runs either finder in one call; :func:`search_and_measure` also times the winner on the
device and, while it misses the limit, searches again under a target corrected by the measured overshoot.

Accuracy: :func:`accuracy_predictor` returns OFA's own accuracy predictor when its weights file is
present locally, otherwise :class:`FLOPsAccuracyProxy`, a training-free stand-in (log10 of the
subnet's multiply-accumulates). Its ``name`` says which one is in use.
"""
from __future__ import annotations

import collections
import contextlib
import logging
import math
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from help_plugin.cache import PredictionCache
from help_plugin.estimator import LatencyEstimator, NotFittedError
from help_plugin.search import predicted_upper_bound
from help_plugin.spaces import get_space
from help_plugin.spaces.ofa import RESOLUTIONS
from help_plugin.validation import check_latencies

try:
    import torch
    from ofa.nas.accuracy_predictor import MobileNetArchEncoder
    from ofa.nas.search_algorithm import EvolutionFinder as _NASFinder
    from ofa.tutorial import EvolutionFinder as _TutorialFinder
except ImportError as _err:  # pragma: no cover - exercised only without the extra
    raise ImportError(f"integrations.ofa_search needs the `ofa` package and what it imports (torchvision matching "
                      f"your torch, Pillow, gdown): pip install 'help-plugin[ofa]' ({_err})") from _err

log = logging.getLogger(__name__)

ArchKey = tuple
_SPACE = get_space("ofa")


def arch_key(arch: Any) -> ArchKey:
    """A hashable snapshot of an OFA arch dict (either finder's convention); values are validated later.

    ``(ks tuple, e tuple, d tuple, r)`` with ``r`` from ``image_size`` or ``r`` (an int or a one-element list).
    """
    try:
        r = arch["image_size"] if "image_size" in arch else arch["r"]
        if isinstance(r, (list, tuple)):
            r = r[0] if len(r) == 1 else tuple(r)
        return tuple(arch["ks"]), tuple(arch["e"]), tuple(arch["d"]), r
    except (KeyError, TypeError):
        _SPACE.parse(arch)  # raises an error that names the missing key or wrong type
        raise


class HELPEfficiencyPredictor:
    """OFA's efficiency-predictor interface, answered by any fitted LatencyEstimator of the ``ofa`` space.

    Args:
        estimator: a fitted :class:`~help_plugin.LatencyEstimator` (e.g. an adapted
            ``HELPEstimator.pretrained("ofa")``), predicting the target device's latency in ms.
        margin: safety margin in predictive standard deviations: the efficiency the finder compares
            with its constraint is ``mean + margin * std`` (``estimator.predict(..., return_std=True)``,
            or ``fallback_rel_std * mean`` for estimators without a std). ``0``: the prediction itself,
            as HELP's OFA code does.
        fallback_rel_std: assumed relative std for estimators without a predictive std.
        cache_size: architectures remembered (least recently used are dropped; ~1 kB each).

    ``get_efficiency(arch)`` / ``predict_efficiency(spec)`` return a float in ms;
    ``predict_batch(archs)`` returns ``np.ndarray[n]`` ms. Counters: ``queries`` (architectures
    asked about, one per single call, n per batch), ``hits`` (answered from the cache),
    ``estimator_calls`` and ``estimator_archs`` (work done by the estimator).
    """

    def __init__(self, estimator: LatencyEstimator, margin: float = 0.0, fallback_rel_std: float = 0.05,
                 cache_size: int = 100_000):
        space = getattr(estimator, "space", None)
        if getattr(space, "name", None) != "ofa" or not callable(getattr(estimator, "predict", None)):
            raise ValueError(f"HELPEfficiencyPredictor needs a LatencyEstimator for the 'ofa' space; got "
                             f"{type(estimator).__name__} for space {getattr(space, 'name', space)!r}")
        if not getattr(estimator, "is_fitted", True):
            raise NotFittedError(f"{type(estimator).__name__} is not adapted to a device yet; call fit()/adapt() "
                                 "before searching with it")
        if not np.isfinite(margin) or margin < 0:
            raise ValueError(f"margin must be a finite number of standard deviations >= 0, got {margin!r}")
        if not np.isfinite(fallback_rel_std) or fallback_rel_std < 0:
            raise ValueError(f"fallback_rel_std must be a finite fraction >= 0, got {fallback_rel_std!r}")
        self.estimator, self.space = estimator, space
        self.margin, self.fallback_rel_std = float(margin), float(fallback_rel_std)
        # keyed by the active layers' choices (help_plugin.cache), behind a fast path keyed by arch_key
        self._cache = PredictionCache(space, self._estimate, cache_size)
        self.cache_size = self._cache.size
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget every cached prediction and reset the counters."""
        self._by_key: collections.OrderedDict = collections.OrderedDict()  # arch_key -> ms (fast path)
        self._cache.clear()
        self.queries = self._fast_hits = 0

    @property
    def hits(self) -> int:
        return self._fast_hits + self._cache.hits

    @property
    def estimator_calls(self) -> int:
        return self._cache.calls

    @property
    def estimator_archs(self) -> int:
        return self._cache.archs

    def cache_info(self) -> dict:
        """``{"queries", "hits", "hit_rate", "estimator_calls", "estimator_archs", "size"}``."""
        return {"queries": self.queries, "hits": self.hits,
                "hit_rate": self.hits / self.queries if self.queries else 0.0,
                "estimator_calls": self.estimator_calls, "estimator_archs": self.estimator_archs,
                "size": len(self._cache)}

    # ------------------------------------------------------------------ OFA's two call conventions
    def get_efficiency(self, arch_dict: dict) -> float:
        """``ofa.nas.search_algorithm.EvolutionFinder``'s call: ms of ``{"ks", "e", "d", "image_size"}``."""
        self.queries += 1
        key = arch_key(arch_dict)
        ms = self._by_key.get(key)
        if ms is not None:
            self._fast_hits += 1
            self._by_key.move_to_end(key)
            return ms
        return float(self._predict([arch_dict], [key])[0])

    def predict_efficiency(self, spec: dict) -> float:
        """``ofa.tutorial.EvolutionFinder``'s call: ms of ``{"ks", "e", "d", "r": [int]}``."""
        return self.get_efficiency(spec)

    def predict_batch(self, archs: Sequence[dict]) -> np.ndarray:
        """ms of many architectures at once, ``[n]``: one estimator call for all uncached ones."""
        archs = list(archs)
        self.queries += len(archs)
        return self._predict(archs, [arch_key(a) for a in archs])

    # ------------------------------------------------------------------ internals
    def _estimate(self, idx: np.ndarray) -> np.ndarray:
        if self.margin == 0:
            return self.estimator.predict(idx)
        return predicted_upper_bound(self.estimator, idx, self.margin, self.fallback_rel_std)[2]

    def _predict(self, archs: list, keys: list) -> np.ndarray:
        out = np.empty(len(archs))
        todo = []
        for i, key in enumerate(keys):
            ms = self._by_key.get(key)
            if ms is None:
                todo.append(i)
            else:
                out[i] = ms
                self._by_key.move_to_end(key)
                self._fast_hits += 1
        if todo:
            out[todo] = self._cache(self.space.to_indices([archs[i] for i in todo]))  # validates
            for i in todo:
                self._by_key[keys[i]] = float(out[i])
                if len(self._by_key) > self._cache.size:
                    self._by_key.popitem(last=False)
        return out


# ============================================================================ accuracy
class _AccuracyAdapter:
    """Both finders' accuracy interface over one scoring function of index rows ``[n, 46]``.

    ``arch_encoder`` is OFA's ``MobileNetArchEncoder`` over this space (``ofa.nas``'s finder draws
    candidates with it), ``predict_acc(archs) -> torch.Tensor[n]`` (``ofa.nas``),
    ``predict_accuracy(specs) -> torch.Tensor[n, 1]`` (``ofa.tutorial``). ``name`` says what the
    numbers are.
    """

    name = ""

    def __init__(self, image_size_list: Sequence[int] = RESOLUTIONS):
        self.space = _SPACE
        bad = [r for r in image_size_list if r not in RESOLUTIONS]
        if bad or not len(image_size_list):
            raise ValueError(f"image_size_list must hold resolutions of 128, 132, ..., 224; "
                             f"got {list(image_size_list)}")
        self.arch_encoder = MobileNetArchEncoder(image_size_list=[int(r) for r in image_size_list], ks_list=[3, 5, 7],
                                                 expand_list=[3, 4, 6], depth_list=[2, 3, 4])

    def score(self, archs: Any) -> np.ndarray:
        """``[n]`` float64, higher is better."""
        raise NotImplementedError

    def predict_acc(self, arch_dict_list: Sequence[dict]) -> torch.Tensor:
        return torch.as_tensor(self.score(list(arch_dict_list)), dtype=torch.float32)

    def predict_accuracy(self, population: Sequence[dict]) -> torch.Tensor:
        return self.predict_acc(population)[:, None]


class FLOPsAccuracyProxy(_AccuracyAdapter):
    """Training-free accuracy stand-in: ``log10(MACs)`` of the subnet (the space's analytic count).

    Not an accuracy: a monotone compute score. On OFA's MobileNetV3 space ImageNet accuracy rises
    with MACs (HELP's Table 5 reports 76.0, 76.8 and 77.9 % for its 230M, 268M and 346M-MAC subnets),
    so under a latency limit the search spends the budget on compute the device runs fastest. It
    costs microseconds per arch; SynFlow (``help_plugin.proxies.synflow_score``) costs ~0.6 s per
    224-px subnet on one CPU core, too slow for the tens of thousands of candidates a search scores.
    """

    name = "proxy: log10(MACs), training-free (OFA's accuracy predictor needs its weights file)"

    def score(self, archs: Any) -> np.ndarray:
        return np.log10(self.space.cost_features(self.space.to_indices(archs))[:, 0])


class OFAAccuracyPredictor(_AccuracyAdapter):
    """OFA's trained accuracy predictor, loaded safely (``weights_only``) from a local file.

    Two checkpoint formats exist: ``ofa.tutorial``'s ``acc_predictor.pth`` (an ``nn.Sequential`` on a
    128-d feature whose resolution one-hot has 8 slots, 112..224 in steps of 16; other resolutions
    fall in the slot below) and ``ofa.nas.accuracy_predictor.AccuracyPredictor``'s (``layers.*`` and
    ``base_acc``; the feature has one slot per resolution of ``image_size_list``, by default all 25
    of this space). Predictions are ImageNet top-1 as OFA's predictor gives them (a fraction).
    """

    def __init__(self, path: str | Path, image_size_list: Sequence[int] | None = None):
        state = torch.load(Path(path), map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state:
            state = state["state_dict"]
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ValueError(f"{path} is not a state dict of tensors (OFA accuracy-predictor checkpoint)")
        if "layers.0.0.weight" in state:
            from ofa.nas.accuracy_predictor import AccuracyPredictor

            n_res = state["layers.0.0.weight"].shape[1] - 120
            sizes = list(image_size_list) if image_size_list is not None else list(RESOLUTIONS)
            if len(sizes) != n_res:
                raise ValueError(f"{path} encodes {n_res} resolutions; pass image_size_list with that many "
                                 f"(got {len(sizes)})")
            super().__init__(sizes)
            self.model = AccuracyPredictor(self.arch_encoder, device="cpu")
            self.kind = "ofa.nas.accuracy_predictor.AccuracyPredictor"
        elif "0.weight" in state and tuple(state["0.weight"].shape) == (400, 128):
            from ofa.tutorial.accuracy_predictor import AccuracyPredictor

            super().__init__(image_size_list if image_size_list is not None else RESOLUTIONS)
            self.model = AccuracyPredictor(pretrained=False, device="cpu")
            self.kind = "ofa.tutorial.AccuracyPredictor"
        else:
            raise ValueError(f"{path} is neither OFA accuracy-predictor format (keys {sorted(state)[:4]} ...)")
        target = self.model.model if self.kind.startswith("ofa.tutorial") else self.model
        target.load_state_dict(state)
        target.eval()
        self.name = f"OFA accuracy predictor ({self.kind}, {Path(path).name})"

    @torch.no_grad()
    def score(self, archs: Any) -> np.ndarray:
        configs = [self.space.format(r) for r in self.space.to_indices(archs)]
        if self.kind.startswith("ofa.tutorial"):
            out = self.model.predict_accuracy([{**c, "r": [c["r"]]} for c in configs])
        else:
            out = self.model.predict_acc([{"ks": c["ks"], "e": c["e"], "d": c["d"], "image_size": c["r"]}
                                          for c in configs])
        return out.reshape(-1).double().numpy()


def accuracy_predictor(path: str | Path | None = None,
                       image_size_list: Sequence[int] | None = None) -> _AccuracyAdapter:
    """OFA's accuracy predictor if ``path`` is an existing weights file, else :class:`FLOPsAccuracyProxy`."""
    if path is not None and Path(path).is_file():
        return OFAAccuracyPredictor(path, image_size_list)
    if path is not None:
        log.warning("OFA accuracy-predictor weights %s not found; using the training-free FLOPs proxy", path)
    return FLOPsAccuracyProxy(image_size_list if image_size_list is not None else RESOLUTIONS)


# ============================================================================ batched finders
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
    distribution, fewer prediction calls. Gives up with ``RuntimeError`` after ``max_draws``
    candidates without a feasible one, where OFA's loops would spin forever.
    """

    def _setup_batching(self, batch_size: int, max_draws: int, spare_keys: int = 4096) -> None:
        if not callable(getattr(self.efficiency_predictor, "predict_batch", None)):
            raise TypeError(f"{type(self).__name__} needs an efficiency predictor with predict_batch(archs) "
                            f"(e.g. HELPEfficiencyPredictor); got {type(self.efficiency_predictor).__name__}")
        for name, v in (("batch_size", batch_size), ("max_draws", max_draws)):
            if not isinstance(v, (int, np.integer)) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.batch_size, self.max_draws, self._spare_keys = int(batch_size), int(max_draws), spare_keys
        self._spares: collections.OrderedDict = collections.OrderedDict()
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
            self._spares.move_to_end(key)
            return spares.pop()
        drawn = 0
        while drawn < self.max_draws:
            with self._drawing() as predictor:
                candidates = [draw() for _ in range(self.batch_size)]
            efficiency = predictor.predict_batch(candidates)
            self.predict_batch_calls += 1
            drawn += len(candidates)
            feasible = [(c, float(e)) for c, e in zip(candidates, efficiency) if e <= constraint]
            if feasible:
                if len(feasible) > 1:
                    self._spares[key] = feasible[1:][::-1]
                    if len(self._spares) > self._spare_keys:
                        self._spares.popitem(last=False)
                return feasible[0]
        raise RuntimeError(f"none of {drawn} candidates drawn meets the efficiency constraint {constraint}")


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


# ============================================================================ one call
FINDERS = ("nas", "tutorial")


@dataclass
class OFASearchResult:
    """The finder's best architecture.

    ``arch``: canonical ``{"ks", "e", "d", "r"}``; ``predicted_ms``: the estimator's mean prediction;
    ``efficiency_ms``: what the finder compared with the limit (``predicted_ms`` plus the margin);
    ``accuracy``/``accuracy_source``: the accuracy predictor's value and what it is; ``macs``: analytic
    multiply-accumulates; ``seconds``: wall time of the search; ``predictor``: the efficiency predictor's
    counters (:meth:`HELPEfficiencyPredictor.cache_info`) plus ``predict_batch_calls`` when batched.
    """

    finder: str
    latency_limit_ms: float
    arch: dict
    predicted_ms: float
    efficiency_ms: float
    accuracy: float
    accuracy_source: str
    macs: float
    seconds: float
    predictor: dict = field(default_factory=dict)


def search(estimator: LatencyEstimator, latency_limit_ms: float, finder: str = "nas", accuracy=None,
           population_size: int = 100, max_time_budget: int = 500, margin: float = 0.0, batched: bool = True,
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
        margin: safety margin in predictive std (see :class:`HELPEfficiencyPredictor`).
        batched: use :class:`BatchedEvolutionFinder` / :class:`BatchedTutorialEvolutionFinder`
            (``batch_size`` candidates per prediction call) instead of OFA's classes as they are.
        seed: seeds Python's and NumPy's global RNGs, which the finders use (restored afterwards).
        **finder_kwargs: further finder settings (``mutate_prob``, ``parent_ratio``, ...).
    """
    if finder not in FINDERS:
        raise ValueError(f"unknown finder {finder!r}; available: {FINDERS}")
    if not np.isfinite(latency_limit_ms) or latency_limit_ms <= 0:
        raise ValueError(f"latency_limit_ms must be a finite positive number of ms, got {latency_limit_ms!r}")
    predictor = HELPEfficiencyPredictor(estimator, margin=margin)
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
    return OFASearchResult(finder, float(latency_limit_ms), space.format(idx[0]),
                           float(np.asarray(estimator.predict(idx))[0]), float(efficiency), float(acc),
                           getattr(accuracy, "name", type(accuracy).__name__), float(space.flops(idx[0])), seconds,
                           stats)


@dataclass
class MeasuredSearch:
    """:func:`search_and_measure`'s outcome: the last round's ``result``, its ``measured_ms`` on the device,
    whether that ``met`` the limit, and every round as ``{"target_ms", "arch", "predicted_ms", "measured_ms",
    "accuracy"}``.
    """

    result: OFASearchResult
    measured_ms: float
    met: bool
    rounds: list = field(default_factory=list)


def search_and_measure(estimator: LatencyEstimator, measure: Callable[[list], Any], latency_limit_ms: float,
                       rounds: int = 3, **search_kwargs) -> MeasuredSearch:
    """Search, time the winner on the device, and while it misses the limit, search again under a tighter target.

    A finder that maximises accuracy under a *predicted* limit ends where the predictor errs low, so
    its winner tends to overshoot on the device by a few per cent, whatever the predictor's average
    accuracy. After a miss the next search's target is ``efficiency * limit / measured`` (the winner's
    measured/predicted ratio taken as the bias where the search converges; it also absorbs a device
    that got slower since adaptation). Each round costs one device measurement.

    Args:
        estimator: a fitted LatencyEstimator of the ``ofa`` space (not modified).
        measure: ``measure(list of arch dicts) -> latencies in ms`` on the device, e.g.
            ``lambda a: device.measure(a).latency_ms`` for a :class:`~help_plugin.measure.LocalTorchDevice`.
        latency_limit_ms: the constraint, ms.
        rounds: at most this many winners are timed.
        **search_kwargs: passed to :func:`search` (finder, accuracy, population_size, margin, seed, ...).
    """
    if not isinstance(rounds, (int, np.integer)) or rounds < 1:
        raise ValueError(f"rounds must be a positive int, got {rounds!r}")
    target, history = float(latency_limit_ms), []
    for i in range(rounds):
        result = search(estimator, target, **search_kwargs)
        measured = float(check_latencies(measure([result.arch]), "measure(...)")[0])
        history.append({"target_ms": target, "arch": result.arch, "predicted_ms": result.predicted_ms,
                        "measured_ms": measured, "accuracy": result.accuracy})
        log.info("round %d: target %.2f ms, %.2f ms predicted, %.2f ms measured (limit %.2f ms)", i + 1, target,
                 result.predicted_ms, measured, latency_limit_ms)
        if measured <= latency_limit_ms:
            break
        target = result.efficiency_ms * latency_limit_ms / measured
    return MeasuredSearch(result, measured, measured <= latency_limit_ms, history)


__all__ = ["HELPEfficiencyPredictor", "FLOPsAccuracyProxy", "OFAAccuracyPredictor", "accuracy_predictor",
           "BatchedEvolutionFinder", "BatchedTutorialEvolutionFinder", "OFASearchResult", "search",
           "MeasuredSearch", "search_and_measure", "arch_key", "FINDERS"]
