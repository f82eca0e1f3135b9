"""OFA's efficiency-predictor interface answered by any fitted LatencyEstimator of the ``ofa`` space.

Both of OFA's evolution finders ask an *efficiency predictor* about one architecture at a time inside
rejection loops: ``ofa.nas.search_algorithm.EvolutionFinder`` calls ``get_efficiency(arch)`` with
``{"ks", "e", "d", "image_size"}``, ``ofa.tutorial.EvolutionFinder`` calls ``predict_efficiency(spec)``
with ``{"wid": None, "ks", "e", "d", "r": [int]}``. :class:`HELPEfficiencyPredictor` answers both, in
place of OFA's per-device ``LatencyTable`` / ``Mbv3LatencyModel`` lookup tables (which download their
tables when constructed), caches by architecture (archs that differ only in inactive layers share an
entry) and offers :meth:`~HELPEfficiencyPredictor.predict_batch` for the batched finders
(:mod:`help_plugin.integrations.ofa_finders`). The efficiency a finder compares with its constraint is the
estimator's 95 % selection-aware latency bound by default (:class:`help_plugin.search.LatencyConstraint`),
HELP's mean prediction only with ``confidence=None``. Nothing here imports the ``ofa`` package.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..predictors import LatencyEstimator, NotFittedError
from ..predictors.cache import LRU, PredictionCache
from ..search.constraint import checked_confidence, predict_with_bound, row_bound
from ..spaces import get_space

_SPACE = get_space("ofa")

def arch_key(arch: Any) -> bytes:
    """A hashable snapshot of an OFA arch dict (either finder's convention): the bytes of its 20 ks, 20 e, 5 d values
    and its resolution (``r``, an int or a one-element list, else ``image_size``); bytes, whose hash Python keeps,
    because a search looks the same key up several times. Values are validated later; an arch with keys other
    than these four (and ``"wid": None``), or whose values are not bytes (floats), gets the key of its parsed
    form, and one that does not parse raises the parse's error (an unknown key, ``r`` and ``image_size`` that
    disagree)."""
    # {ks, e, d, r} or {ks, e, d, image_size}, and the tutorial's "wid": None beside them; others are parsed
    if isinstance(arch, dict) and len(arch) - (arch.get("wid", 0) is None) == 4:
        try:
            ks, e, d = arch["ks"], arch["e"], arch["d"]
            r = arch["r"] if "r" in arch else arch["image_size"]
            if type(r) is list and len(r) == 1:
                r = r[0]
            if len(ks) == 20 and len(e) == 20 and len(d) == 5:  # the lengths make the bytes unambiguous
                return bytes((*ks, *e, *d, r))
        except (KeyError, TypeError, ValueError):
            pass
    form = _SPACE.format(_SPACE.parse_row(arch))  # raises an error that names the missing key or the bad value
    return bytes((*form["ks"], *form["e"], *form["d"], form["r"]))


class HELPEfficiencyPredictor:
    """OFA's efficiency-predictor interface, answered by any fitted LatencyEstimator of the ``ofa`` space.

    Args:
        estimator: a fitted :class:`~help_plugin.LatencyEstimator` (e.g. an adapted
            ``HELPEstimator.pretrained("ofa")``), predicting the target device's latency in ms.
        confidence: the efficiency the finder compares with its constraint is the estimator's selection-aware
            latency bound at this confidence (default 0.95: the finder's winner meets the constraint on the
            device at that rate); ``None``: the mean prediction, as HELP's OFA code does.
        cache_size: architectures remembered (least recently used are dropped; ~1 kB each).

    ``get_efficiency(arch)`` / ``predict_efficiency(spec)`` return a float in ms (the bound);
    ``predict_batch(archs)`` returns ``np.ndarray[n]`` ms. Counters: ``queries`` (architectures
    asked about, one per single call, n per batch), ``hits`` (answered from the cache),
    ``estimator_calls`` and ``estimator_archs`` (work done by the estimator).
    """

    def __init__(self, estimator: LatencyEstimator, confidence: float | None = 0.95, cache_size: int = 100_000):
        space = getattr(estimator, "space", None)
        if getattr(space, "name", None) != "ofa" or not callable(getattr(estimator, "predict", None)):
            raise ValueError(f"HELPEfficiencyPredictor needs a LatencyEstimator for the 'ofa' space; got "
                             f"{type(estimator).__name__} for space {getattr(space, 'name', space)!r}")
        if not getattr(estimator, "is_fitted", True):
            raise NotFittedError(f"{type(estimator).__name__} is not adapted to a device yet; call fit()/adapt() "
                                 "before searching with it")
        self.estimator, self.space = estimator, space
        self.confidence = checked_confidence(confidence)
        # keyed by the active layers' choices (help_plugin.cache), behind a fast path keyed by arch_key
        self._cache = PredictionCache(space, self._estimate, cache_size)
        self.cache_size = self._cache.size
        self.clear_cache()

    def clear_cache(self) -> None:
        """Forget every cached prediction and reset the counters (call it after refitting the estimator)."""
        self._by_key = LRU(self._cache.size)  # arch_key -> ms (fast path)
        self._cache.clear()
        self._row_bound = None  # row -> (mean, efficiency), resolved on the first uncached query
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
            return ms
        ms = self._cache.one(self.space.parse_row(arch_dict), self._estimate_one)  # validates
        self._by_key[key] = ms
        return ms

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
        return predict_with_bound(self.estimator, idx, self.confidence)[1]

    def _estimate_one(self, row: list) -> float:
        if self._row_bound is None:
            self._row_bound = row_bound(self.estimator, self.confidence)
        return self._row_bound(row)[1]

    def _predict(self, archs: list, keys: list) -> np.ndarray:
        out = np.empty(len(archs))
        todo = []
        for i, key in enumerate(keys):
            ms = self._by_key.get(key)
            if ms is None:
                todo.append(i)
            else:
                out[i] = ms
                self._fast_hits += 1
        if todo:
            out[todo] = self._cache(self.space.to_indices([archs[i] for i in todo]))  # validates
            for i in todo:
                self._by_key[keys[i]] = float(out[i])
        return out
