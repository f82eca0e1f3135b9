"""NASLib adapter: any :class:`~help_plugin.LatencyEstimator` as a NASLib-style latency predictor and
as the latency constraint of regularized evolution.

NASLib (``automl/NASLib`` on GitHub) is not on PyPI and needs Python <= 3.9, so nothing here imports
it: the adapter follows NASLib's documented formats (read from its source, see below) and works on
any object exposing ``get_op_indices()`` / ``set_op_indices()`` like NASLib's search-space graphs.
:func:`naslib_nasbench201_space` returns NASLib's own ``NasBench201SearchSpace`` where NASLib is
installed.

Formats (``naslib/search_spaces/nasbench201/{graph,conversions}.py``, ``naslib/predictors/predictor.py``):

* a NAS-Bench-201 architecture is ``graph.get_op_indices()``: 6 ints in edge order
  ``0->1, 0->2, 0->3, 1->2, 1->3, 2->3`` with ops 0 skip_connect, 1 none, 2 nor_conv_3x3,
  3 nor_conv_1x1, 4 avg_pool_3x3 — *not* help_plugin's order; :mod:`integrations.nb201_formats`
  converts (and to/from NB201 strings and NNI sample dicts);
* a predictor has ``pre_process()``, ``fit(xtrain, ytrain, info=None)``, ``query(xtest, info=None)``
  returning an ``np.ndarray`` and ``get_data_reqs()``; NASLib's optimizers pass graphs as ``xtrain``.

FBNet: NASLib has no FBNet space. ``help_plugin.spaces.fbnet`` (HW-NAS-Bench's 22-layer FBNet space,
9 blocks per layer) is the equivalent: with an FBNet estimator the predictor and the search take
FBNet architectures as 22 block indices (HW-NAS-Bench's ``op_idx_list``), block-name strings, or
objects whose ``get_op_indices()`` returns those 22 indices.

Other spaces (OFA) pass through to the estimator's space unchanged.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass
from typing import Any, Callable, Sequence

import numpy as np

from ..measure import CallableDevice, MeasurementStore, measure_archs
from ..predictors import LatencyEstimator
from ..search import LatencyConstraint, SearchResult, evolutionary_search
from ..search.constraint import checked_confidence
from ..validation import check_latencies, check_same_length
from .nb201_formats import indices_to_naslib, naslib_to_indices

log = logging.getLogger(__name__)


def naslib_available() -> bool:
    """Whether the ``naslib`` package is importable here."""
    return importlib.util.find_spec("naslib") is not None


def naslib_nasbench201_space():
    """A fresh NASLib ``NasBench201SearchSpace`` (a template for :func:`constrained_evolution`).

    Raises ``ImportError`` where NASLib is not installed (it is GitHub-only: ``automl/NASLib``).
    """
    if not naslib_available():
        raise ImportError("NASLib is not installed; install it from https://github.com/automl/NASLib "
                          "(Python <= 3.9), or run the search on plain op_indices (search_space=None)")
    from naslib.search_spaces import NasBench201SearchSpace

    return NasBench201SearchSpace()


#: space name -> (NASLib op_indices rows -> the space's indices, one index row -> NASLib op_indices), for spaces
#: whose NASLib encoding differs from the space's own; other spaces use their own indices.
NASLIB_FORMATS = {"nasbench201": (naslib_to_indices, indices_to_naslib)}


def _identity_rows(space):
    return space.to_indices, lambda row: np.asarray(row)


def to_space_indices(space, archs: Any) -> np.ndarray:
    """NASLib-side architectures -> the estimator space's index array ``[n, arch_length]``.

    Each item may be an object with ``get_op_indices()`` (a NASLib graph), an op-index list or
    ``[n, L]`` int array (NASLib's ``op_indices``, :data:`NASLIB_FORMATS`; the space's own indices for
    other spaces, e.g. FBNet), or any form the space parses (NB201 strings, FBNet block names, OFA dicts).
    """
    from_naslib, _ = NASLIB_FORMATS.get(space.name, _identity_rows(space))
    if isinstance(archs, np.ndarray) and archs.dtype.kind in "iu" and archs.ndim == 2:
        return from_naslib(archs)
    if isinstance(archs, (str, dict)) or hasattr(archs, "get_op_indices"):
        raise TypeError(f"expected a sequence of architectures, got a single {type(archs).__name__}; wrap it in a list")
    rows = []
    for i, a in enumerate(archs):
        if hasattr(a, "get_op_indices"):
            a = a.get_op_indices()
            if a is None:
                raise ValueError(f"architecture {i}: get_op_indices() returned None (no architecture set yet)")
        if space.name in NASLIB_FORMATS and not isinstance(a, str):
            rows.append(np.asarray(from_naslib(a)).reshape(-1))
        else:
            rows.append(space.parse(a))
    if not rows:
        return np.zeros((0, space.arch_length), dtype=np.int64)
    return np.stack(rows).astype(np.int64)


def from_space_indices(space, indices: np.ndarray) -> list[int]:
    """One index vector of the space -> the NASLib-side op-index list (:data:`NASLIB_FORMATS`)."""
    _, to_naslib = NASLIB_FORMATS.get(space.name, _identity_rows(space))
    return np.asarray(to_naslib(indices)).tolist()


def _adapts_with_references(estimator: LatencyEstimator) -> bool:
    """HELP-style estimators need the target device's latencies of fixed reference architectures."""
    return hasattr(estimator, "reference_archs") and hasattr(estimator, "adapt")


class NASLibLatencyPredictor:
    """A NASLib-style predictor (``fit``/``query``/``get_data_reqs``) backed by any LatencyEstimator.

    ``fit(xtrain, ytrain)`` adapts the estimator to the target device from measured latencies
    ``ytrain`` (ms) of ``xtrain`` (few shots, e.g. 10); ``query(xtest)`` returns predicted ms
    ``np.ndarray[n]``. Architectures: see :func:`to_space_indices`. ``info`` is accepted and ignored.
    It predicts latency, not accuracy: use it to filter or constrain, not as the accuracy surrogate of
    NASLib's predictor-based optimizers. To constrain, use ``feasible(x, limit_ms)``: the estimator's
    selection-aware bound at ``confidence`` under the limit (``query(x) <= limit`` is HELP's rule, the mean
    prediction, which a search's pick overshoots about half the time).

    Estimators that adapt from reference architectures (:class:`~help_plugin.HELPEstimator`:
    ``estimator.reference_archs``, usually 10) need those measured on the target device too. ``fit``
    gets them, in this order, from:

    1. ``xtrain`` itself, when it contains every reference architecture;
    2. ``reference_latencies_ms`` (``[n_reference]`` ms, in ``estimator.reference_archs`` order);
    3. ``device``: a ``help_plugin.measure`` device (``TorchEagerDevice``, ``CallableDevice``, ...)
       or a plain function ``fn(arch) -> ms`` (called with the space's canonical form, e.g. the
       NB201 string, and wrapped in ``CallableDevice``) that measures them once, cached in ``store``
       (a :class:`~help_plugin.store.MeasurementStore`) when given;

    otherwise it raises ``ValueError``. Other estimators are simply ``estimator.fit(xtrain, ytrain)``.
    The estimator must be meta-trained / constructed for the right space already, so
    ``pre_process`` has nothing to do.

    Args:
        estimator: the LatencyEstimator to wrap (its ``space`` decides how architectures are read).
        reference_latencies_ms: measured ms of ``estimator.reference_archs``, optional.
        device, store: a measurement device or function (and store) to time the reference architectures, optional.
        confidence: of the bound :meth:`feasible` compares with the limit (default 0.95; ``None``: the mean).
    """

    def __init__(self, estimator: LatencyEstimator, reference_latencies_ms: Sequence[float] | None = None,
                 device: Any = None, store: MeasurementStore | None = None, confidence: float | None = 0.95):
        if not isinstance(estimator, LatencyEstimator):
            raise TypeError(f"estimator must be a help_plugin.LatencyEstimator, got {type(estimator).__name__}")
        if device is not None and not hasattr(device, "measure"):
            if not callable(device):
                raise TypeError(f"device must be a help_plugin.measure device or a function arch -> ms, got {device!r}")
            device = CallableDevice(estimator.space, device, name=getattr(device, "__name__", None))
        if device is not None and getattr(device, "space", estimator.space).name != estimator.space.name:
            raise ValueError(f"device measures space {device.space.name!r}, the estimator predicts {estimator.space.name!r}")
        self.estimator = estimator
        self.reference_latencies_ms = (None if reference_latencies_ms is None
                                       else check_latencies(reference_latencies_ms, "reference_latencies_ms"))
        self.device = device
        self.store = store
        self.confidence = checked_confidence(confidence)
        self.ss_type = estimator.space.name
        self.hyperparams = None

    # ------------------------------------------------------------------ NASLib Predictor interface
    def set_ss_type(self, ss_type: str) -> None:
        """NASLib passes ``search_space.get_type()``; it must be the estimator's space."""
        if ss_type != self.estimator.space.name:
            raise ValueError(f"search space {ss_type!r} does not match the estimator's {self.estimator.space.name!r}")
        self.ss_type = ss_type

    def pre_process(self) -> None:
        """Nothing to do: the estimator is meta-trained before the search starts."""

    def pre_compute(self, xtrain, xtest, unlabeled=None) -> None:
        """Nothing to precompute (prediction is a batched forward pass)."""

    def get_data_reqs(self) -> dict:
        """NASLib's data-requirements dict: no learning curves, hyperparameters or unlabeled data."""
        return {"requires_partial_lc": False, "metric": None, "requires_hyperparameters": False,
                "hyperparams": {}, "unlabeled": False, "unlabeled_factor": 0}

    def set_hyperparams(self, hyperparams) -> None:
        self.hyperparams = hyperparams

    def get_hyperparams(self):
        return self.hyperparams

    def reset_hyperparams(self) -> None:
        self.hyperparams = None

    def get_hpo_wrapper(self) -> bool:
        """No cross-validated HPO: adaptation picks its own regularisation."""
        return False

    def fit(self, xtrain: Any, ytrain: Any, info=None) -> "NASLibLatencyPredictor":
        """Adapt to the target device from ``ytrain`` ms of ``xtrain`` (``[n]``); returns ``self``."""
        space = self.estimator.space
        idx = to_space_indices(space, xtrain)
        ms = check_latencies(ytrain, "ytrain")
        check_same_length(idx, ms, "xtrain", "ytrain")
        if not _adapts_with_references(self.estimator) or self._has_all_references(idx):
            self.estimator.fit(idx, ms)
        else:
            self.estimator.adapt(self._reference_ms(), idx, ms)
        log.info("adapted %s on %d measurements", type(self.estimator).__name__, self.estimator.n_measurements)
        return self

    def query(self, xtest: Any, info=None) -> np.ndarray:
        """Predicted latency in ms of each architecture, ``np.ndarray[n]``."""
        return self.estimator.predict(to_space_indices(self.estimator.space, xtest))

    def feasible(self, xtest: Any, latency_limit_ms: float) -> np.ndarray:
        """Which architectures meet ``latency_limit_ms``, ``bool [n]`` (:class:`~help_plugin.search.LatencyConstraint`
        at ``confidence``)."""
        constraint = LatencyConstraint(latency_limit_ms, self.confidence)
        return constraint.feasible(self.estimator, to_space_indices(self.estimator.space, xtest))[0]

    # ------------------------------------------------------------------ reference architectures
    def _has_all_references(self, idx: np.ndarray) -> bool:
        space = self.estimator.space
        keys = {space.canonical(r) for r in idx}
        return all(space.canonical(r) in keys for r in self.estimator.reference_indices)

    def _reference_ms(self) -> np.ndarray:
        refs = self.estimator.reference_archs
        if self.reference_latencies_ms is None:
            if self.device is None:
                raise ValueError(
                    f"{type(self.estimator).__name__} adapts from the target device's latencies of its "
                    f"{len(refs)} reference architectures (estimator.reference_archs): include them in xtrain, "
                    "or pass reference_latencies_ms=... or device=... to NASLibLatencyPredictor")
            self.reference_latencies_ms, _ = measure_archs(self.device, refs, store=self.store)
        if len(self.reference_latencies_ms) != len(refs):
            raise ValueError(f"reference_latencies_ms has {len(self.reference_latencies_ms)} values for "
                             f"{len(refs)} reference architectures")
        return self.reference_latencies_ms


@dataclass
class NASLibSearchResult:
    """Outcome of :func:`constrained_evolution`.

    ``best``: the winner as the objective saw it (a NASLib graph, or an op-index list);
    ``best_op_indices``: its op indices (NASLib order for NAS-Bench-201); ``predicted_ms``: its
    predicted latency; ``search``: the underlying :class:`help_plugin.search.SearchResult`.
    """

    best: Any
    best_op_indices: list[int]
    best_score: float
    predicted_ms: float
    latency_limit_ms: float
    search: SearchResult


def constrained_evolution(estimator: LatencyEstimator, objective: Callable[[Any], float], latency_limit_ms: float,
                          search_space: Any = None, population: int = 30, sample_size: int = 10, cycles: int = 150,
                          confidence: float | None = 0.95, seed: int = 0) -> NASLibSearchResult:
    """Regularized evolution (NASLib's ``RegularizedEvolution`` rules) under a predicted-latency limit.

    Maximises ``objective(arch)`` over architectures whose selection-aware latency bound at ``confidence``
    (:class:`~help_plugin.search.LatencyConstraint`; ``None``: the mean prediction, HELP's rule) is at most
    ``latency_limit_ms``. The loop is
    :func:`help_plugin.search.evolutionary_search`: random feasible population of ``population``,
    then ``cycles`` times a tournament of ``sample_size``, a one-op mutation of the winner, and the
    oldest member retired; infeasible children are rejected before ``objective`` is called.

    ``arch`` given to ``objective``: with ``search_space`` (a NASLib search-space object exposing
    ``clone()`` and ``set_op_indices()``, e.g. :func:`naslib_nasbench201_space`), a fresh clone with
    the op indices set — so ``objective`` can be ``lambda g: g.query(Metric.VAL_ACCURACY, ...)``;
    without it, the op-index list (NASLib order for NAS-Bench-201, the space's order for FBNet).
    """
    space = estimator.space
    if search_space is not None:
        for attr in ("clone", "set_op_indices"):
            if not callable(getattr(search_space, attr, None)):
                raise TypeError(f"search_space must expose {attr}() like NASLib's search spaces; "
                                f"{type(search_space).__name__} does not")
        get_type = getattr(search_space, "get_type", None)
        if callable(get_type) and get_type() != space.name:
            raise ValueError(f"search_space is {get_type()!r}, the estimator predicts {space.name!r}")

    def materialise(indices: np.ndarray) -> Any:
        ops = from_space_indices(space, indices)
        if search_space is None:
            return ops
        graph = search_space.clone()
        graph.set_op_indices(ops)
        return graph

    def score(indices: np.ndarray) -> float:
        value = float(objective(materialise(indices)))
        if not np.isfinite(value):
            raise ValueError(f"objective returned {value!r} for op_indices {from_space_indices(space, indices)}")
        return value

    res = evolutionary_search(estimator, score, latency_limit_ms, population=population, tournament=sample_size,
                              cycles=cycles, confidence=confidence, seed=seed)
    return NASLibSearchResult(materialise(res.best), from_space_indices(space, res.best), res.best_score,
                              float(res.predicted_ms), float(latency_limit_ms), res)
