"""An MLP trained from scratch on the target device's few samples only (no pool)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ...spaces import SearchSpace
from ..base import LatencyEstimator
from ...checkpoint import module_spec
from ..learners.base import sub_state
from ..training import LogTarget, Standardiser, batched, fit_regressor, scalar_mlp


class ScratchMLPEstimator(LatencyEstimator):
    """An MLP on the standardised ``space.encode`` trained from scratch on the target samples only.

    Target: log-latency standardised with the samples' mean/std; full-batch Adam for ``epochs``
    steps with ``weight_decay``. Fitted attributes: ``net_``, ``encoding_``, ``target_``, ``loss_``,
    ``n_measurements_``.
    """

    calibration_folds = 5  # calibrated bounds by CV+ (5 refits), not one refit per measurement

    def __init__(self, space: str | SearchSpace = "nasbench201", hidden: int = 100, epochs: int = 300,
                 lr: float = 1e-3, weight_decay: float = 1e-4, seed: int = 0):
        self.space = space
        self.hidden, self.epochs, self.lr, self.weight_decay, self.seed = hidden, epochs, lr, weight_decay, seed

    def _net(self):
        return scalar_mlp([self.space.encoding_dim, self.hidden, self.hidden, 1], self.seed)

    def fit(self, archs: Any, latencies_ms: Any) -> "ScratchMLPEstimator":
        """Train on ``n >= 2`` measurements (``latencies_ms`` ``[n]`` ms)."""
        idx, ms = self._fit_inputs(archs, latencies_ms)
        self.encoding_, self.target_ = Standardiser.of(self.space.encode(idx)), LogTarget.of(ms)
        self.net_ = self._net()
        self.loss_ = fit_regressor(self.net_, self.encoding_(self.space.encode(idx)), self.target_.z(ms), self.epochs,
                                   self.lr, self.weight_decay, None, self.seed)
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64, > 0)."""
        self._check_fitted()
        return batched(lambda i: self.target_.ms(self.net_(self.encoding_(self.space.encode(i)))),
                       self.space.to_indices(archs))

    def _get_state(self):
        if not self.is_fitted:
            return {}, {}
        return {"n_measurements": self.n_measurements_}, {
            **{f"net.{k}": v for k, v in self.net_.state_dict().items()}, **self.encoding_.state("enc_"),
            "target": self.target_.state()}

    def _expected_tensors(self, meta, tensors):
        if not self.is_fitted:
            return {}
        return {**module_spec("net.", self.net_), **Standardiser.spec("enc_", self.space.encoding_dim),
                "target": LogTarget.SPEC}

    def _set_state(self, meta, tensors) -> None:
        if "target" in tensors:
            self.net_ = self._net()
            self.net_.load_state_dict(sub_state(tensors, "net."))
            self.net_.eval()
            self.encoding_ = Standardiser.from_state(tensors, "enc_")
            self.target_ = LogTarget.from_state(tensors["target"])
            self.n_measurements_ = int(meta["n_measurements"])
