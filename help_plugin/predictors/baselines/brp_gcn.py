"""BRP-NAS's GCN latency predictor, trained on many samples of the target device only (no pool)."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from ...spaces import SearchSpace
from ..base import LatencyEstimator
from ...checkpoint import module_spec
from ..learners.base import sub_state
from ..training import LogTarget, batched, fit_regressor


class GCN(nn.Module):
    """``layers`` graph convolutions ``H' = relu(A_norm H W)``, mean-pooled, then a linear layer -> ``[n]``.

    ``A_norm = D^-1/2 (A + I) D^-1/2`` (Kipf & Welling) of the fixed ``adjacency`` ``[N, N]`` made
    undirected: messages flow both ways along each edge (on nasbench201 this ranked clearly better
    than the directed, row-normalised ``D^-1 (A + I)``: mean rho 0.96 vs 0.81 on three devices).
    """

    def __init__(self, in_dim: int, hidden: int, layers: int, adjacency: np.ndarray):
        super().__init__()
        a = np.maximum(adjacency, adjacency.T) + np.eye(len(adjacency))
        d = a.sum(1) ** -0.5
        self.register_buffer("adj", torch.tensor(d[:, None] * a * d[None, :], dtype=torch.float32))
        self.convs = nn.ModuleList(nn.Linear(in_dim if i == 0 else hidden, hidden) for i in range(layers))
        self.out = nn.Linear(hidden, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [n, N, F]
        for conv in self.convs:
            x = torch.relu(self.adj @ conv(x))
        return self.out(x.mean(1)).squeeze(-1)


class BRPGCNEstimator(LatencyEstimator):
    """BRP-NAS's GCN latency predictor, trained on the target device's samples only (no pool).

    "A 4-layer GCN with 600 hidden units followed by a fully connected layer" (BRP-NAS) on the
    space's architecture graph (:meth:`~help_plugin.spaces.SearchSpace.graph_adjacency`,
    :meth:`~help_plugin.spaces.SearchSpace.graph_features`); target: log-latency standardised with the
    samples' moments; mini-batch Adam for ``epochs`` epochs. Given ``default_shots = 900`` samples by
    the benchmark. ``epochs=20`` (BRP-NAS trains for hundreds) bounds the cost of the 600-unit layers on
    a CPU: ~13 s for 910 nasbench201 samples on one core, ~35 s for the 20-22-node fbnet/ofa chains.
    """

    default_shots = 900
    calibration_folds = 5  # calibrated bounds by CV+ (5 refits), not one refit per measurement

    def __init__(self, space: str | SearchSpace = "nasbench201", hidden: int = 600, layers: int = 4,
                 epochs: int = 20, lr: float = 2e-3, weight_decay: float = 5e-4, batch_size: int = 64, seed: int = 0):
        self.space = space
        self.hidden, self.layers, self.epochs, self.lr = hidden, layers, epochs, lr
        self.weight_decay, self.batch_size, self.seed = weight_decay, batch_size, seed

    def _net(self) -> GCN:
        torch.manual_seed(self.seed)
        features = self.space.graph_features(self.space.sample(1, 0))
        return GCN(features.shape[2], self.hidden, self.layers, self.space.graph_adjacency())

    def _x(self, idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(self.space.graph_features(idx))

    def fit(self, archs: Any, latencies_ms: Any) -> "BRPGCNEstimator":
        """Train on ``n >= 2`` measurements (``latencies_ms`` ``[n]`` ms)."""
        idx, ms = self._fit_inputs(archs, latencies_ms)
        x = self._x(idx)
        self.target_ = LogTarget.of(ms)
        self.net_ = self._net()
        steps = self.epochs * max(1, -(-len(ms) // self.batch_size))
        self.loss_ = fit_regressor(self.net_, x, self.target_.z(ms), steps, self.lr, self.weight_decay,
                                   self.batch_size, self.seed)
        self.n_measurements_ = len(ms)
        return self

    def predict(self, archs: Any) -> np.ndarray:
        """Predicted ms ``[n]`` (float64, > 0)."""
        self._check_fitted()
        return batched(lambda i: self.target_.ms(self.net_(self._x(i))), self.space.to_indices(archs))

    def _get_state(self):
        if not self.is_fitted:
            return {}, {}
        return {"n_measurements": self.n_measurements_}, {
            **{f"net.{k}": v for k, v in self.net_.state_dict().items()}, "target": self.target_.state()}

    def _expected_tensors(self, meta, tensors):
        return {**module_spec("net.", self.net_), "target": LogTarget.SPEC} if self.is_fitted else {}

    def _set_state(self, meta, tensors) -> None:
        if "target" in tensors:
            self.net_ = self._net()
            self.net_.load_state_dict(sub_state(tensors, "net."))
            self.net_.eval()
            self.target_ = LogTarget.from_state(tensors["target"])
            self.n_measurements_ = int(meta["n_measurements"])
