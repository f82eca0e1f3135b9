"""Closest pool device: the pool device whose latencies rank like the target's, mapped to it by a power law."""
from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr

from ...checkpoint import CheckpointError
from ...data import LatencyDataset
from ...spaces import SearchSpace
from ..base import LatencyEstimator, NotFittedError
from ..learners import PoolBasisConfig, PoolBasisLearner
from ..learners.base import sub_state
from ..training import check_pool

log = logging.getLogger(__name__)


class ClosestDeviceEstimator(LatencyEstimator):
    """Use the most similar pool device as a proxy for the target device.

    ``meta_fit`` trains HELP's :class:`~help_plugin.predictors.learners.PoolBasisLearner` (one network
    predicting every pool device's latency; ``pool_options`` are its ``PoolBasisConfig`` fields) as
    ``meta_model``. ``fit`` ranks the pool devices by the Spearman correlation of their predicted
    latencies with the target samples, keeps the best (``closest_device_``) and maps its predicted ms
    to the target in log space, ``log ms = a * log pool_ms + b`` by least squares: a power law, so the
    predictions are > 0 ms and, with ``a > 0``, rank as the closest device's.

    Fitted attributes: ``closest_device_``, ``closest_index_``, ``device_rho_``, ``coef_``,
    ``intercept_``, ``n_measurements_``.
    """

    def __init__(self, space: str | SearchSpace = "nasbench201", pool_options: dict | None = None,
                 meta_model: PoolBasisLearner | None = None, seed: int = 0):
        self.space = space
        self.pool_options = pool_options
        self.meta_model = meta_model
        self.seed = seed

    def meta_fit(self, data: LatencyDataset, train_devices: Sequence[str], valid_devices: Sequence[str] = (),
                 *, arch_rows: np.ndarray | None = None, progress: bool = False) -> "ClosestDeviceEstimator":
        """Train the pool network on ``data[arch_rows]`` for ``train_devices + valid_devices``."""
        config = PoolBasisConfig.from_options("closest-device", self.pool_options, groups=("mlp",), seed=self.seed)
        devices, rows = check_pool(self.space, data, train_devices, valid_devices, arch_rows)
        self.meta_model = PoolBasisLearner(self.space, config).meta_fit(data, devices, (), arch_rows=rows,
                                                                        progress=progress)
        self.__dict__.pop("n_measurements_", None)
        return self

    def _learner(self) -> PoolBasisLearner:
        if self.meta_model is None:
            raise NotFittedError("ClosestDeviceEstimator is not meta-trained; call meta_fit() first")
        return self.meta_model

    def fit(self, archs: Any, latencies_ms: Any) -> "ClosestDeviceEstimator":
        """Pick the closest pool device from ``n >= 2`` target measurements and fit the linear map."""
        learner = self._learner()
        idx, ms = self._fit_inputs(archs, latencies_ms)
        pool = learner.pool_ms(idx)
        rho = np.nan_to_num([spearmanr(pool[:, j], ms).correlation for j in range(pool.shape[1])], nan=-1.0)
        self.device_rho_ = dict(zip(learner.pool_devices, rho.tolist()))
        self.closest_index_ = int(np.argmax(rho))
        self.closest_device_ = learner.pool_devices[self.closest_index_]
        x = np.log(pool[:, self.closest_index_])
        (coef, intercept), *_ = np.linalg.lstsq(np.stack([x, np.ones_like(x)], 1), np.log(ms), rcond=None)
        self.coef_, self.intercept_ = float(coef), float(intercept)
        self.n_measurements_ = len(ms)
        log.debug("closest device %s (rho %.3f)", self.closest_device_, rho[self.closest_index_])
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64, > 0)."""
        self._check_fitted()
        pool_ms = self._learner().pool_ms(self.space.to_indices(archs))[:, self.closest_index_]
        return np.exp(self.coef_ * np.log(pool_ms) + self.intercept_)

    def _get_state(self):
        meta, tensors = {}, {}
        if self.meta_model is not None:
            learner_meta, learner_tensors = self.meta_model.state()
            meta["learner"] = learner_meta
            tensors.update({f"learner.{k}": v for k, v in learner_tensors.items()})
        if self.is_fitted:
            meta.update({"n_measurements": self.n_measurements_, "closest_index": self.closest_index_,
                         "device_rho": self.device_rho_})
            tensors["log_coef_intercept"] = torch.tensor([self.coef_, self.intercept_], dtype=torch.float64)
        return meta, tensors

    def _expected_tensors(self, meta, tensors):
        spec = {}
        if self.meta_model is not None:
            learner = self.meta_model.expected_state(sub_state(tensors, "learner."))
            spec.update({f"learner.{k}": v for k, v in learner.items()})
        if self.is_fitted:
            spec["log_coef_intercept"] = ((2,), torch.float64)
        return spec

    def _set_state(self, meta, tensors) -> None:
        if "learner" in meta:
            self.meta_model = PoolBasisLearner.from_state(self.space, meta["learner"], sub_state(tensors, "learner."))
        if "coef_intercept" in tensors:
            raise CheckpointError("this ClosestDeviceEstimator was saved by an earlier help-plugin (a linear map in ms, "
                                  "which can predict <= 0 ms); fit it again")
        if "log_coef_intercept" in tensors:
            self.coef_, self.intercept_ = tensors["log_coef_intercept"].tolist()
            self.closest_index_ = int(meta["closest_index"])
            if not 0 <= self.closest_index_ < len(self.meta_model.pool_devices):
                raise CheckpointError(f"closest_index {self.closest_index_} is not one of the "
                                      f"{len(self.meta_model.pool_devices)} pool devices")
            self.closest_device_ = self.meta_model.pool_devices[self.closest_index_]
            self.device_rho_ = dict(meta["device_rho"])
            self.n_measurements_ = int(meta["n_measurements"])
