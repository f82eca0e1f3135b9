"""help+ (the default method): the pool-basis network and a closed-form ridge head per device.

Meta-knowledge = how every pool device's latency depends on the architecture: an ensemble of small
MLPs predicts each pool device's (standardised log) latency from the space encoding. A new device is
a ridge combination of those predictions (in ms) and of the analytic roofline costs, fit in closed
form on its reference + few-shot measurements, with one ridge strength per feature group chosen by
exact leave-one-out error (:class:`~help_plugin.predictors.ridge.RidgeHead`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch

from ...spaces import COST_FEATURES
from ...validation import check_reference_spread
from ..calibration import HeldOut
from ..nets import PoolLatencyNet
from ..ridge import RidgeHead
from ..training import Standardiser, moments, progress_bar, torch_threads, train_adam
from .base import LearnerConfig, MetaLearner, sub_state

log = logging.getLogger(__name__)


@dataclass
class PoolBasisConfig(LearnerConfig):
    hidden: int = 128
    depth: int = 2
    steps: int = 4000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    ensemble: int = 3  # averaged pool networks; compare: help-nas benchmark --methods help+,help+:ensemble=1:hidden=256
    group_penalties: bool = True  # separate ridge strengths for analytic costs and pool latencies


class PoolBasisLearner(MetaLearner):
    """help+: see the module docstring. Heads are :class:`RidgeHead`; predictions have a std."""

    method = "help+"
    config_class = PoolBasisConfig
    head_class = RidgeHead
    has_std = True

    def __init__(self, space, config: PoolBasisConfig | None = None):
        super().__init__(space, config)
        self.nets: list[PoolLatencyNet] = []
        self.pool_devices: tuple[str, ...] = ()

    # -------------------------------------------------------------- meta-training
    def _meta_fit(self, data, train_devices, valid_devices, rows, progress) -> None:
        cfg = self.config
        self.pool_devices = train_devices + tuple(d for d in valid_devices if d not in train_devices)
        for d in self.pool_devices:
            data.device_index(d)
        enc = self.space.encode(data.archs[rows])
        self.encoding = Standardiser.of(enc)
        log_lat = np.log(data.select_devices(self.pool_devices).latency_ms[rows])
        mask = np.isfinite(log_lat)
        if mask.sum(0).min() < 2:
            bad = self.pool_devices[int(np.argmin(mask.sum(0)))]
            raise ValueError(f"pool device {bad!r} has fewer than 2 measured architectures")
        self.y_mean, self.y_std = moments(log_lat)
        x = self.encoding(enc)
        y = torch.tensor(np.nan_to_num((log_lat - self.y_mean) / self.y_std), dtype=torch.float32)
        m = torch.tensor(mask, dtype=torch.float32)
        self.nets = []
        bar = progress_bar(cfg.steps * cfg.ensemble, "meta-training (pool basis)", progress)
        for k in range(cfg.ensemble):
            torch.manual_seed(cfg.seed + k)
            net = PoolLatencyNet(x.shape[1], len(self.pool_devices), cfg.hidden, cfg.depth)
            gen = torch.Generator().manual_seed(cfg.seed + k)

            def loss(_):
                b = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
                return (((net(x[b]) - y[b]) ** 2) * m[b]).sum() / m[b].sum().clamp(min=1)

            final = train_adam(net.parameters(), loss, cfg.steps, cfg.lr, cfg.weight_decay, scheduler="one-cycle",
                               on_step=lambda: bar.update(1))
            self.nets.append(net.eval().requires_grad_(False))
            log.info("pool net %d/%d: final batch loss %.4f", k + 1, cfg.ensemble, final)
        bar.close()

    # -------------------------------------------------------------- features
    def pool_log_latency(self, encoding: torch.Tensor) -> torch.Tensor:
        """Predicted standardised log-latency on the pool devices, ``[n, n_pool]``."""
        x = (encoding - torch.as_tensor(self.encoding.mean)) / torch.as_tensor(self.encoding.std)
        out = self.nets[0](x)
        for net in self.nets[1:]:
            out = out + net(x)
        return out / len(self.nets)

    def basis_torch(self, encoding: torch.Tensor, costs: torch.Tensor) -> torch.Tensor:
        """Head input ``[n, 4 + n_pool]``: analytic costs and predicted pool latencies (ms)."""
        z = self.pool_log_latency(encoding)
        pool_ms = torch.exp(z * torch.as_tensor(self.y_std) + torch.as_tensor(self.y_mean))
        return torch.cat([costs, pool_ms.to(costs.dtype)], dim=1)

    def basis(self, indices: np.ndarray) -> np.ndarray:
        """Head input ``[n, 4 + n_pool]`` float64 of index rows ``[n, arch_length]``."""
        costs = self.space.cost_features(indices)
        threads = 1 if len(indices) < 4096 else torch.get_num_threads()  # small batches: threads only add overhead
        with torch.inference_mode(), torch_threads(threads):
            enc = torch.from_numpy(self.space.encode(indices, costs))
            pool_ms = self.basis_torch(enc, torch.zeros(len(enc), 0))
        return np.concatenate([costs, pool_ms.double().numpy()], axis=1)

    def pool_ms(self, indices: np.ndarray) -> np.ndarray:
        """Predicted ms on every pool device, ``[n, n_pool]`` (columns in :attr:`pool_devices` order)."""
        return self.basis(indices)[:, len(COST_FEATURES):]

    # -------------------------------------------------------------- a device
    def _groups(self, n_features: int) -> tuple[int, int] | None:
        return (len(COST_FEATURES), n_features - len(COST_FEATURES)) if self.config.group_penalties else None

    def adapt(self, reference_ms: np.ndarray, shot_idx: np.ndarray, shot_ms: np.ndarray) -> RidgeHead:
        check_reference_spread(reference_ms)
        basis = self.basis(np.concatenate([self.reference_indices, shot_idx]))
        return RidgeHead.fit(basis, np.concatenate([reference_ms, shot_ms]), groups=self._groups(basis.shape[1]))

    def predict(self, head: RidgeHead, indices: np.ndarray, return_std: bool = False):
        return head.predict(self.basis(indices), return_std=return_std)

    def leave_one_out(self, head: RidgeHead, reference_ms, shot_idx, shot_ms) -> HeldOut:
        """Any measurement can be left out (references too): the ridge head is refit in closed form
        without it, strengths chosen again; the basis of queried archs is computed once for all heads."""
        basis = self.basis(np.concatenate([self.reference_indices, shot_idx]))
        heads = RidgeHead.leave_one_out(basis, np.concatenate([reference_ms, shot_ms]), self._groups(basis.shape[1]))

        def predict(indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
            b = self.basis(indices)
            return head.predict(b), np.stack([h.predict(b) for h in heads])

        return HeldOut([np.array([i]) for i in range(len(heads))], predict)

    def predict_tensor(self, head: RidgeHead, probs: torch.Tensor) -> torch.Tensor:
        costs = self.space.relaxed_costs(probs.to(torch.float64))
        enc = self.space.relaxed_encode(probs, costs).to(torch.float32)  # the networks are float32
        return head.predict_torch(self.basis_torch(enc, costs)).to(probs.dtype)

    # -------------------------------------------------------------- persistence
    def _state(self):
        tensors = {**self.encoding.state("enc_"), "y_mean": torch.from_numpy(self.y_mean),
                   "y_std": torch.from_numpy(self.y_std)}
        for k, net in enumerate(self.nets):
            tensors.update({f"net{k}.{n}": p.detach() for n, p in net.state_dict().items()})
        return {"pool_devices": list(self.pool_devices), "n_nets": len(self.nets)}, tensors

    def _from_state(self, meta, tensors) -> None:
        self.pool_devices = tuple(meta["pool_devices"])
        self.encoding = Standardiser.from_state(tensors, "enc_")
        self.y_mean, self.y_std = tensors["y_mean"].numpy(), tensors["y_std"].numpy()
        for k in range(int(meta["n_nets"])):
            net = PoolLatencyNet(self.space.encoding_dim, len(self.pool_devices), self.config.hidden, self.config.depth)
            net.load_state_dict(sub_state(tensors, f"net{k}."))
            self.nets.append(net.eval().requires_grad_(False))
