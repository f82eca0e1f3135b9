"""The one interface every integration accepts: :class:`LatencyEstimator`.

The contract follows scikit-learn's estimators (``sklearn/base.py``):

* the constructor only stores its explicit parameters, as given (no validation, no conversion);
  :meth:`~LatencyEstimator.get_params` / :meth:`~LatencyEstimator.set_params` read and write them, so
  ``sklearn.base.clone(est)`` gives an unfitted copy with the same parameters;
* :meth:`~LatencyEstimator.fit` learns from measurements of the target device, validates its inputs and
  sets the fitted attributes, whose names end in ``_``;
* :meth:`~LatencyEstimator.predict` returns ``np.ndarray[float64]`` of shape ``[n]`` in milliseconds and
  raises :class:`NotFittedError` before ``fit``; :meth:`~LatencyEstimator.predict_upper` and
  :meth:`~LatencyEstimator.predict_interval` give calibrated bounds (:mod:`help_plugin.predictors.calibration`);
* :meth:`~LatencyEstimator.save` / :meth:`~LatencyEstimator.load` round-trip the estimator (parameters,
  search-space settings and fitted state) through a safetensors checkpoint, never pickle.

Estimators that learn from a device pool first (HELP, closest-device, TL-ET) take the meta-trained
model as their ``meta_model`` parameter, which ``meta_fit`` sets; a clone keeps it, so clone-then-fit
works without meta-training again.
"""
from __future__ import annotations

import abc
import inspect
import logging
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from ..checkpoint import CheckpointError, check_tensors, load_checkpoint, rebuilding, save_checkpoint
from ..errors import HelpPluginError
from ..spaces import SearchSpace, get_space
from ..validation import check_latencies, check_same_length
from .calibration import Calibration, HeldOut, MetaCalibration, check_confidence

log = logging.getLogger(__name__)


class NotFittedError(HelpPluginError, RuntimeError):
    """Raised when ``predict`` is called before the estimator was adapted/fitted."""


#: checkpoint ``kind`` -> estimator class; every concrete estimator registers itself.
ESTIMATOR_KINDS: dict[str, type["LatencyEstimator"]] = {}


class LatencyEstimator(abc.ABC):
    """Predicts the latency (ms) of architectures of one search space on one device.

    ``space`` (a parameter of every estimator) is a space name or a
    :class:`~help_plugin.spaces.SearchSpace` instance; the attribute reads as the resolved instance.
    ``archs`` are given in any form the space accepts, or as an index array ``[n, arch_length]``;
    ``latencies_ms`` are ``[n]`` finite, > 0. ``n_measurements`` is the number of target-device
    measurements the fitted estimator consumed (for cost accounting).

    Calibrated bounds (:meth:`predict_upper`, :meth:`predict_interval`) come from models refit without
    some of the fit measurements: by default through the public API (a copy with the same parameters
    fit on the other measurements: a jackknife, or CV+ with ``calibration_folds`` folds for estimators
    slow to fit), computed on first use and kept until the next ``fit``. ``fit_indices_`` and
    ``fit_latencies_ms_`` keep the fit data for that (and go into checkpoints).
    """

    #: Target-device measurements (besides the reference architectures) a benchmark gives this estimator.
    default_shots: ClassVar[int] = 10
    #: Refits of the default calibration: ``None`` leaves out one measurement each (n refits), ``K`` a fold each.
    calibration_folds: ClassVar[int | None] = None
    #: Fitted attribute whose presence means "fitted".
    _fitted_marker: ClassVar[str] = "n_measurements_"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if not inspect.isabstract(cls):
            ESTIMATOR_KINDS[cls.__name__] = cls

    # ------------------------------------------------------------------ parameters
    @property
    def space(self) -> SearchSpace:
        """The search space, resolved from the ``space`` parameter (once; a new value resolves again)."""
        cached = self.__dict__.get("_space_resolved")
        if cached is None or cached[0] is not self._space:
            cached = (self._space, get_space(self._space))
            self.__dict__["_space_resolved"] = cached
        return cached[1]

    @space.setter
    def space(self, value: str | SearchSpace) -> None:
        self._space = value

    @classmethod
    def _param_names(cls) -> list[str]:
        sig = inspect.signature(cls.__init__)
        for p in sig.parameters.values():
            if p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                raise TypeError(f"{cls.__name__}.__init__ must take explicit parameters, not *{p.name}")
        return [n for n in sig.parameters if n != "self"]

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters, as stored (``space`` as given: a name or a SearchSpace)."""
        return {n: (self._space if n == "space" else getattr(self, n)) for n in self._param_names()}

    def set_params(self, **params) -> "LatencyEstimator":
        """Set constructor parameters (validated when the estimator is next fitted); returns ``self``."""
        valid = self._param_names()
        for name, value in params.items():
            if name not in valid:
                raise ValueError(f"invalid parameter {name!r} for {type(self).__name__}; valid parameters: {valid}")
            setattr(self, name, value)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items()
                         if k != "meta_model" and v is not None)
        state = "fitted" if self.is_fitted else "not fitted"
        return f"{type(self).__name__}({args}) [{state}]"

    # ------------------------------------------------------------------ fit / predict
    @abc.abstractmethod
    def fit(self, archs: Any, latencies_ms: Any) -> "LatencyEstimator":
        """Adapt to the target device from measured ``(arch, latency_ms)`` pairs; returns ``self``."""

    @abc.abstractmethod
    def predict(self, archs: Any) -> np.ndarray:
        """Predicted latency in ms, ``[n]``."""

    def predict_one(self, arch: Any) -> float:
        """Latency in ms of a single architecture."""
        return float(self.predict([arch])[0])

    def predict_row(self, row: np.ndarray) -> float:
        """Latency in ms of one index row ``[arch_length]`` (array or list) already checked valid (e.g. by
        :meth:`~help_plugin.spaces.SearchSpace.parse_row`): a search's single query, without validating it again
        where the estimator has a faster path (help+)."""
        return float(self.predict(np.asarray(row)[None])[0])

    @property
    def n_measurements(self) -> int:
        return int(getattr(self, "n_measurements_", None) or 0)

    @property
    def is_fitted(self) -> bool:
        return getattr(self, self._fitted_marker, None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not adapted to a device yet; call fit()/adapt() first")

    def _fit_inputs(self, archs: Any, latencies_ms: Any, min_n: int = 2) -> tuple[np.ndarray, np.ndarray]:
        """Validated ``(indices [n, arch_length] int64, latencies [n] float64 ms)`` for ``fit``, kept as
        ``fit_indices_`` / ``fit_latencies_ms_`` (the calibration of the previous fit is dropped)."""
        idx = self.space.to_indices(archs)
        ms = check_latencies(latencies_ms)
        check_same_length(idx, ms, "archs", "latencies_ms")
        if len(ms) < min_n:
            raise ValueError(f"{type(self).__name__}.fit needs at least {min_n} measurements, got {len(ms)}")
        self._forget_calibration()
        self.fit_indices_, self.fit_latencies_ms_ = idx, ms
        return idx, ms

    # ------------------------------------------------------------------ calibrated bounds
    def predict_upper(self, archs: Any, confidence: float = 0.95, selection: bool = False) -> np.ndarray:
        """Upper bound in ms ``[n]`` on each architecture's latency at ``confidence`` (one-sided).

        ``selection=True``: the selection-aware bound, for deciding which candidates of a search meet a limit
        (a search picks the ones whose error is most favourable; see :class:`help_plugin.search.LatencyConstraint`).
        """
        return self.calibration().bounds(self.space.to_indices(archs), confidence, selection)[2]

    def predict_interval(self, archs: Any, confidence: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """``(lower, upper)`` ms ``[n]`` each: a central interval, each end a one-sided bound at
        ``(1 + confidence) / 2``."""
        _, lower, upper = self.calibration().bounds(self.space.to_indices(archs), (1 + check_confidence(confidence)) / 2)
        return lower, upper

    def calibration(self) -> Calibration:
        """The leave-out calibration of the fitted estimator (computed on first use, kept until the next fit)."""
        self._check_fitted()
        cal = self.__dict__.get("_calibration")
        if cal is None:
            held_out, indices, latencies_ms = self._held_out()
            cal = self.__dict__["_calibration"] = Calibration(held_out, indices, latencies_ms,
                                                              self._calibration_constants())
        return cal

    def _forget_calibration(self) -> None:
        self.__dict__.pop("_calibration", None)

    def _held_out(self) -> tuple[HeldOut, np.ndarray, np.ndarray]:
        """``(held-out models, fit indices, fit ms)``: copies with the same parameters fit without one
        measurement each (or, with ``calibration_folds = K``, without one of K folds each)."""
        idx, ms = getattr(self, "fit_indices_", None), getattr(self, "fit_latencies_ms_", None)
        if ms is None:
            raise ValueError(f"this {type(self).__name__} does not keep its fit data (a checkpoint of an older "
                             "version): fit it again for calibrated bounds")
        n, k = len(ms), self.calibration_folds
        fold = np.arange(n) if k is None or k >= n else np.random.default_rng(0).permutation(n) % k
        rows = [np.flatnonzero(fold == f) for f in range(fold.max() + 1)]
        log.info("calibrating %s: %d refits on %d measurements", type(self).__name__, len(rows), n)
        models = [type(self)(**self.get_params()).fit(idx[fold != f], ms[fold != f]) for f in range(len(rows))]
        return HeldOut(rows, lambda q: (self.predict(q), np.stack([m.predict(q) for m in models]))), idx, ms

    def _calibration_constants(self) -> MetaCalibration | None:
        """Meta-calibration constants for this estimator, ``None`` (the t-rule) unless it has some."""
        return None

    # ------------------------------------------------------------------ persistence
    def save(self, path: str | Path) -> None:
        """Write a safetensors checkpoint: parameters, the space's settings and the fitted state."""
        params = {k: v for k, v in self.get_params().items() if k not in ("space", "meta_model")}
        meta = {"kind": type(self).__name__, "params": params,
                "space": {"name": self.space.name, "params": self.space.get_params()}}
        state_meta, tensors = self._get_state()
        meta.update(state_meta)
        if self.is_fitted and getattr(self, "fit_latencies_ms_", None) is not None:
            tensors = {**tensors, "fit.indices": torch.from_numpy(np.asarray(self.fit_indices_, np.int64)),
                       "fit.latencies_ms": torch.from_numpy(np.asarray(self.fit_latencies_ms_, np.float64))}
        save_checkpoint(path, meta, tensors)

    @classmethod
    def load(cls, path: str | Path) -> "LatencyEstimator":
        """Read a checkpoint written by :meth:`save` (``LatencyEstimator.load`` reads any estimator's)."""
        meta, tensors = load_checkpoint(path)
        kind = meta.get("kind")
        target = ESTIMATOR_KINDS.get(kind) if isinstance(kind, str) else None
        if target is None or not issubclass(target, cls):
            raise CheckpointError(f"{path} holds a {kind!r}, not a {cls.__name__}")
        with rebuilding(path, kind):
            space_meta = meta["space"]
            space = get_space(space_meta["name"], **space_meta.get("params", {}))
            est = target(space=space, **meta.get("params", {}))
            est._restore(path, meta, tensors)
        return est

    def _restore(self, path, meta: dict, tensors: dict) -> None:
        """:meth:`_set_state` and the fit data (for the calibration), then a :class:`CheckpointError` unless
        ``tensors`` are what :meth:`_expected_tensors` declares."""
        fit = {k: tensors[k] for k in ("fit.indices", "fit.latencies_ms") if k in tensors}
        own = {k: v for k, v in tensors.items() if k not in fit}
        self._set_state(meta, own)
        if fit:
            self.fit_indices_ = fit["fit.indices"].numpy()
            self.space.check_indices(self.fit_indices_)
            self.fit_latencies_ms_ = check_latencies(fit["fit.latencies_ms"].numpy(), "fit.latencies_ms")
            check_same_length(self.fit_indices_, self.fit_latencies_ms_, "fit.indices", "fit.latencies_ms")
        expected = self._expected_tensors(meta, own)
        if expected is not None:
            check_tensors(path, own, expected)

    def _get_state(self) -> tuple[dict, dict]:
        """``(JSON-able meta, tensors)`` of what ``fit``/``meta_fit`` learned (empty if nothing yet)."""
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    def _set_state(self, meta: dict, tensors: dict) -> None:
        """Inverse of :meth:`_get_state` on a freshly constructed estimator."""
        raise NotImplementedError(f"{type(self).__name__} cannot be loaded")

    def _expected_tensors(self, meta: dict, tensors: dict) -> dict | None:
        """The tensors a checkpoint of this estimator must hold, ``name -> (shape, dtype)`` (``None``: a tensor
        whose shape is not declared), built from the parameters, the space and ``meta`` after :meth:`_set_state`
        (modules built from parameters give their own shapes). ``None``: nothing declared."""
        return None
