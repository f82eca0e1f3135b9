"""Latency predictions remembered per architecture, for searches that ask about the same ones repeatedly."""
from __future__ import annotations

import collections
import math
import struct
from typing import Callable

import numpy as np

from ..spaces import SearchSpace


class LRU:
    """A bounded mapping that forgets its least recently used entry beyond ``size`` entries."""

    def __init__(self, size: int):
        if not isinstance(size, (int, np.integer)) or isinstance(size, bool) or size < 1:
            raise ValueError(f"cache size must be a positive int, got {size!r}")
        self.size = int(size)
        self._items: collections.OrderedDict = collections.OrderedDict()

    def get(self, key, default=None):
        """The value of ``key`` (now the most recently used), else ``default``."""
        try:
            self._items.move_to_end(key)
        except KeyError:
            return default
        return self._items[key]

    def __setitem__(self, key, value) -> None:
        self._items[key] = value
        self._items.move_to_end(key)
        if len(self._items) > self.size:
            self._items.popitem(last=False)

    def __contains__(self, key) -> bool:
        return key in self._items

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        self._items.clear()


class PredictionCache:
    """A bounded LRU cache of predicted latencies (ms) in front of ``predict_fn``.

    Keys are the rows of ``space.canonical_indices`` (architectures that build the same network share
    one entry). Calling the cache with index rows ``[n, arch_length]`` returns ``[n]`` ms; the
    uncached ones are predicted in a single ``predict_fn(canonical rows [m, arch_length]) -> [m]``
    call, and a non-finite prediction raises an error naming the architecture.

    Counters: ``queries`` (rows asked about), ``hits`` (answered from the cache), ``calls`` and
    ``archs`` (work done by ``predict_fn``).
    """

    def __init__(self, space: SearchSpace, predict_fn: Callable[[np.ndarray], np.ndarray], size: int = 100_000):
        self.space, self.predict_fn = space, predict_fn
        self._row_key = struct.Struct(f"{space.arch_length}q").pack  # a list's key: its int64 row's bytes
        self._ms = LRU(size)
        self.size = self._ms.size
        self.clear()

    def clear(self) -> None:
        """Forget every prediction and reset the counters."""
        self._ms.clear()
        self.queries = self.hits = self.calls = self.archs = 0

    def __len__(self) -> int:
        return len(self._ms)

    def one(self, row, predict_one: Callable[[list], float]) -> float:
        """ms of one valid index row ``[arch_length]`` (array or list, e.g. ``space.parse_row(arch)``), cached like
        :meth:`__call__`'s; an uncached one is predicted by ``predict_one(canonical row, a list [arch_length])
        -> ms``, the cheaper path for a search's single queries."""
        canon = self.space.canonical_row(row)
        key = self._row_key(*canon)  # == np.int64 row.tobytes(), __call__'s key
        self.queries += 1
        ms = self._ms.get(key)
        if ms is not None:
            self.hits += 1
            return ms
        ms = float(predict_one(canon))
        self.calls += 1
        self.archs += 1
        if not math.isfinite(ms):
            raise ValueError(f"the estimator predicted {ms} ms for {self.space.format(np.asarray(canon))}")
        self._ms[key] = ms
        return ms

    def __call__(self, indices: np.ndarray) -> np.ndarray:
        canon = np.ascontiguousarray(self.space.canonical_indices(indices), dtype=np.int64)
        out = np.empty(len(canon))
        missing: dict[bytes, list[int]] = {}
        for i, row in enumerate(canon):
            key = row.tobytes()
            ms = self._ms.get(key)
            if ms is None:
                missing.setdefault(key, []).append(i)
            else:
                out[i] = ms
                self.hits += 1
        self.queries += len(canon)
        if missing:
            rows = [positions[0] for positions in missing.values()]
            pred = np.asarray(self.predict_fn(canon[rows]), dtype=np.float64)
            self.calls += 1
            self.archs += len(rows)
            bad = np.flatnonzero(~np.isfinite(pred))
            if len(bad):
                raise ValueError(f"the estimator predicted {float(pred[bad[0]])} ms for "
                                 f"{self.space.format(canon[rows[bad[0]]])}")
            for (key, positions), ms in zip(missing.items(), pred):
                out[positions] = ms
                self._ms[key] = float(ms)
        return out
