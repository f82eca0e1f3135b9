"""The one interface every integration accepts: :class:`LatencyEstimator`."""
from __future__ import annotations

import abc
from pathlib import Path
from typing import Any

import numpy as np

from .spaces import SearchSpace


class NotFittedError(RuntimeError):
    """Raised when ``predict`` is called before the estimator was adapted/fitted."""


class LatencyEstimator(abc.ABC):
    """Predicts the latency (ms) of architectures of one search space on one device.

    The contract (scikit-learn-like):

    * the constructor only stores parameters;
    * :meth:`fit` learns from measurements of the target device — ``archs`` (any form the space
      accepts, or an index array ``[n, arch_length]``) and ``latencies_ms`` (``[n]``, finite, > 0);
    * :meth:`predict` returns ``np.ndarray[float64]`` of shape ``[n]`` in milliseconds;
    * :meth:`save` / :meth:`load` round-trip the fitted estimator through a safe file format.

    ``space`` is the :class:`~help_plugin.spaces.SearchSpace` instance, ``n_measurements`` the
    number of target-device measurements the fitted estimator consumed (for cost accounting).
    """

    space: SearchSpace

    @abc.abstractmethod
    def fit(self, archs: Any, latencies_ms: Any) -> "LatencyEstimator":
        """Adapt to the target device from measured ``(arch, latency_ms)`` pairs; returns ``self``."""

    @abc.abstractmethod
    def predict(self, archs: Any) -> np.ndarray:
        """Predicted latency in ms, ``[n]``."""

    def predict_one(self, arch: Any) -> float:
        """Latency in ms of a single architecture."""
        return float(self.predict([arch])[0])

    @property
    def n_measurements(self) -> int:
        return int(getattr(self, "n_measurements_", 0))

    @property
    def is_fitted(self) -> bool:
        return getattr(self, "n_measurements_", None) is not None

    def _check_fitted(self) -> None:
        if not self.is_fitted:
            raise NotFittedError(f"{type(self).__name__} is not adapted to a device yet; call fit()/adapt() first")

    def save(self, path: str | Path) -> None:  # pragma: no cover - overridden where supported
        raise NotImplementedError(f"{type(self).__name__} cannot be saved")

    @classmethod
    def load(cls, path: str | Path) -> "LatencyEstimator":  # pragma: no cover
        raise NotImplementedError(f"{cls.__name__} cannot be loaded")
