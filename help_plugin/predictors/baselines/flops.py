"""The analytic baseline: latency linear in the space's multiply-accumulate count."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ...spaces import SearchSpace
from ..base import LatencyEstimator


class FLOPsEstimator(LatencyEstimator):
    """ms = a * FLOPs + b, fit by least squares on the target samples.

    FLOPs are the space's analytic multiply-accumulate count (``space.cost_features(idx)[:, 0]``),
    so with ``a > 0`` the predicted ranking is the FLOPs ranking. No device pool, no
    clipping: a negative intercept can give non-positive ms for tiny architectures.

    Fitted attributes: ``coef_`` (ms per MAC), ``intercept_`` (ms), ``n_measurements_``.
    """

    def __init__(self, space: str | SearchSpace = "nasbench201"):
        self.space = space

    def fit(self, archs: Any, latencies_ms: Any) -> "FLOPsEstimator":
        """``archs``: ``n >= 2`` architectures; ``latencies_ms``: ``[n]`` ms."""
        idx, ms = self._fit_inputs(archs, latencies_ms)
        flops = self.space.cost_features(idx)[:, 0]
        design = np.stack([flops, np.ones_like(flops)], axis=1)
        (coef, intercept), *_ = np.linalg.lstsq(design, ms, rcond=None)
        self.coef_, self.intercept_ = float(coef), float(intercept)
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64)."""
        self._check_fitted()
        return self.coef_ * self.space.cost_features(self.space.to_indices(archs))[:, 0] + self.intercept_

    def _get_state(self):
        if not self.is_fitted:
            return {}, {}
        return {"n_measurements": self.n_measurements_}, {
            "coef_intercept": torch.tensor([self.coef_, self.intercept_], dtype=torch.float64)}

    def _set_state(self, meta, tensors) -> None:
        if "coef_intercept" in tensors:
            self.coef_, self.intercept_ = tensors["coef_intercept"].tolist()
            self.n_measurements_ = int(meta["n_measurements"])
