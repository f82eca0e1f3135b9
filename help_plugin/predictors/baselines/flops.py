"""The analytic baseline: latency a power law of the space's multiply-accumulate count."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...checkpoint import CheckpointError
from ...spaces import SearchSpace
from ..base import LatencyEstimator


class FLOPsEstimator(LatencyEstimator):
    """ms = exp(b) * FLOPs ** a: ``log ms = a * log FLOPs + b`` fit by least squares on the target samples.

    FLOPs are the space's analytic multiply-accumulate count (``space.cost_features(idx)[:, 0]``,
    > 0 for every architecture: the stem and head are always there), so with ``a > 0`` the predicted
    ranking is the FLOPs ranking, and every prediction is a positive, finite latency. (A straight line
    ``a * FLOPs + b`` ranks the same but its intercept can make small architectures cost <= 0 ms.)

    Fitted attributes: ``coef_`` (the exponent ``a``), ``intercept_`` (``b``, log ms at one MAC),
    ``n_measurements_``.
    """

    def __init__(self, space: str | SearchSpace = "nasbench201"):
        self.space = space

    def _log_flops(self, idx: np.ndarray) -> np.ndarray:
        flops = self.space.cost_features(idx)[:, 0]
        if not (flops > 0).all():
            i = int(np.argmin(flops > 0))
            raise ValueError(f"{self.space.name}: architecture {self.space.canonical(idx[i])!r} has {flops[i]!r} "
                             "FLOPs; the power law needs > 0")
        return np.log(flops)

    def fit(self, archs: Any, latencies_ms: Any) -> "FLOPsEstimator":
        """``archs``: ``n >= 2`` architectures; ``latencies_ms``: ``[n]`` ms."""
        idx, ms = self._fit_inputs(archs, latencies_ms)
        log_flops = self._log_flops(idx)
        design = np.stack([log_flops, np.ones_like(log_flops)], axis=1)
        (coef, intercept), *_ = np.linalg.lstsq(design, np.log(ms), rcond=None)
        self.coef_, self.intercept_ = float(coef), float(intercept)
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64, > 0)."""
        self._check_fitted()
        return np.exp(self.coef_ * self._log_flops(self.space.to_indices(archs)) + self.intercept_)

    def _get_state(self):
        if not self.is_fitted:
            return {}, {}
        return {"n_measurements": self.n_measurements_}, {
            "log_coef_intercept": torch.tensor([self.coef_, self.intercept_], dtype=torch.float64)}

    def _expected_tensors(self, meta, tensors):
        return {"log_coef_intercept": ((2,), torch.float64)} if self.is_fitted else {}

    def _set_state(self, meta, tensors) -> None:
        if "coef_intercept" in tensors:
            raise CheckpointError("this FLOPsEstimator was saved by an earlier help-plugin (a linear fit in ms, which "
                                  "can predict <= 0 ms); fit it again")
        if "log_coef_intercept" in tensors:
            self.coef_, self.intercept_ = tensors["log_coef_intercept"].tolist()
            self.n_measurements_ = int(meta["n_measurements"])
