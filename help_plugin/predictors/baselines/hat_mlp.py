"""HAT's own latency predictor (``latency_predictor.py`` of Hardware-Aware Transformers): the baseline HELP
replaces for the ``hat`` space."""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ...spaces import SearchSpace
from ...spaces.hat import (
    DECODER_LAYERS,
    EMBED_DIMS,
    ENCODER_LAYERS,
    ENDE_ATTN,
    FFN_DIMS,
    HEADS,
)
from ..base import LatencyEstimator
from ...checkpoint import module_spec
from ..learners.base import sub_state
from ..training import batched, fit_regressor, positive_ms, scalar_mlp

#: HAT's default ``--feature-norm`` (latency_predictor.py and every WMT config).
HAT_FEATURE_NORM = (640.0, 6.0, 2048.0, 6.0, 640.0, 6.0, 2048.0, 6.0, 6.0, 2.0)
#: Names of HAT's 10 features (utils.get_feature_info).
HAT_FEATURES = ("encoder_embed_dim", "encoder_layer_num", "encoder_ffn_embed_dim_avg",
                "encoder_self_attention_heads_avg", "decoder_embed_dim", "decoder_layer_num",
                "decoder_ffn_embed_dim_avg", "decoder_self_attention_heads_avg",
                "decoder_ende_attention_heads_avg", "decoder_arbitrary_ende_attn_avg")


def hat_features(archs: Any, space: str | SearchSpace = "hat") -> np.ndarray:
    """HAT's 10 latency-predictor features of each architecture, ``[n, 10]`` float64 (not normalised).

    ``archs``: HAT configs (or anything the ``hat`` space accepts) or an index array ``[n, 40]``.
    Means run over active layers; the arbitrary attention -1/1/2 counts as 1/2/3 attended layers.
    """
    from ...spaces import get_space

    space = get_space(space)
    idx = space.canonical_indices(space.to_indices(archs))
    n_dec = np.asarray(DECODER_LAYERS, dtype=np.float64)[idx[:, 15]]
    on = np.arange(6)[None, :] < n_dec[:, None]

    def mean(values, pos, mask=None):
        v = np.asarray(values, dtype=np.float64)[idx[:, pos:pos + 6]]
        return v.mean(1) if mask is None else (v * mask).sum(1) / mask.sum(1)

    attended = np.where(np.asarray(ENDE_ATTN) == -1, 1, np.asarray(ENDE_ATTN) + 1)
    return np.stack([
        np.asarray(EMBED_DIMS, dtype=np.float64)[idx[:, 0]], np.asarray(ENCODER_LAYERS, dtype=np.float64)[idx[:, 1]],
        mean(FFN_DIMS, 2), mean(HEADS, 8),
        np.asarray(EMBED_DIMS, dtype=np.float64)[idx[:, 14]], n_dec,
        mean(FFN_DIMS, 16, on), mean(HEADS, 22, on), mean(HEADS, 28, on), mean(attended, 34, on)], axis=1)


class HATMLPEstimator(LatencyEstimator):
    """HAT's latency predictor (``latency_predictor.py``) as a LatencyEstimator: the baseline.

    Features: :func:`hat_features` divided by ``feature_norm``; target: ms / ``lat_norm``; an MLP
    ``10 -> hidden_dim -> (hidden_layer_num x hidden_dim) -> 1`` with ReLU, trained with Adam
    (``lr``) and MSE for ``train_steps`` steps on random batches of ``bsz`` — HAT's defaults.
    ``lat_norm=None`` uses the largest training latency (HAT sets 200-300 ms by hand per device).
    HAT trains on 80 % of ~2,000 measurements; here ``fit`` uses every measurement it is given. HAT's
    MLP is unconstrained and can extrapolate to <= 0 ms far from the data: its output passes the smooth
    positive floor :func:`~help_plugin.predictors.training.positive_ms` at 1/1000 of the fastest
    training latency (the ranking is kept; predictions above that latency move by a relative <= 2e-6).
    Fitted attributes: ``net_``, ``lat_norm_`` (ms), ``min_ms_`` (the fastest training latency),
    ``n_measurements_``.
    """

    calibration_folds = 5  # calibrated bounds by CV+ (5 refits), not one refit per measurement

    def __init__(self, space: str | SearchSpace = "hat", feature_norm: Sequence[float] = HAT_FEATURE_NORM,
                 lat_norm: float | None = None, hidden_dim: int = 400, hidden_layer_num: int = 3,
                 train_steps: int = 5000, bsz: int = 128, lr: float = 1e-5, seed: int = 0):
        self.space = space
        self.feature_norm = feature_norm
        self.lat_norm = lat_norm
        self.hidden_dim, self.hidden_layer_num, self.train_steps, self.bsz, self.lr, self.seed = (
            hidden_dim, hidden_layer_num, train_steps, bsz, lr, seed)

    def _check_params(self) -> np.ndarray:
        if self.space.name != "hat":
            raise ValueError(f"HATMLPEstimator predicts HAT's 'hat' space, not {self.space.name!r}")
        norm = np.asarray(self.feature_norm, dtype=np.float64)
        if norm.shape != (len(HAT_FEATURES),) or not (norm > 0).all():
            raise ValueError(f"feature_norm must be {len(HAT_FEATURES)} positive numbers, got {list(self.feature_norm)}")
        if self.lat_norm is not None and not self.lat_norm > 0:
            raise ValueError(f"lat_norm must be a positive latency in ms, got {self.lat_norm!r}")
        return norm

    def _x(self, idx: np.ndarray) -> torch.Tensor:
        return torch.tensor(hat_features(idx, self.space) / np.asarray(self.feature_norm, np.float64),
                            dtype=torch.float32)

    def _net(self):
        return scalar_mlp([len(HAT_FEATURES)] + [self.hidden_dim] * (self.hidden_layer_num + 1) + [1], self.seed)

    def fit(self, archs: Any, latencies_ms: Any) -> "HATMLPEstimator":
        """Train on ``n >= 2`` measurements (``latencies_ms`` ``[n]`` ms)."""
        self._check_params()
        idx, ms = self._fit_inputs(archs, latencies_ms)
        self.lat_norm_ = float(self.lat_norm or ms.max())
        self.min_ms_ = float(ms.min())
        self.net_ = self._net()
        fit_regressor(self.net_, self._x(idx), torch.tensor(ms / self.lat_norm_, dtype=torch.float32),
                      self.train_steps, self.lr, batch_size=self.bsz, seed=self.seed, sample="permutation")
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64, > 0)."""
        self._check_fitted()
        return batched(lambda i: positive_ms(self.net_(self._x(i)).double() * self.lat_norm_, self.min_ms_),
                       self.space.to_indices(archs))

    def _get_state(self):
        if not self.is_fitted:
            return {}, {}
        return {"n_measurements": self.n_measurements_, "lat_norm_ms": self.lat_norm_, "min_ms": self.min_ms_}, {
            f"net.{k}": v for k, v in self.net_.state_dict().items()}

    def _expected_tensors(self, meta, tensors):
        return module_spec("net.", self.net_) if self.is_fitted else {}

    def _set_state(self, meta, tensors) -> None:
        if "n_measurements" in meta:
            self.net_ = self._net()
            self.net_.load_state_dict(sub_state(tensors, "net."))
            self.net_.eval()
            self.lat_norm_ = float(meta["lat_norm_ms"])
            self.min_ms_ = float(meta.get("min_ms", self.lat_norm_))  # absent before predictions were floored
            self.n_measurements_ = int(meta["n_measurements"])
