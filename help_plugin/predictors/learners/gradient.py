"""HELP (the paper's method, Sec. 3) and its MAML / Meta-SGD ablations: gradient-based meta-learning.

The predictor is HELP's hardware-conditioned network ``f(x, h; theta)``: the hardware embedding ``h``
is the device's reference latencies min-max normalised (Eq. 3), and the z modulator ``g(h; phi)``
adapts the initial parameters to the device (``theta * z`` for weights, ``theta + z`` for biases). A
device adapts by a few inner gradient steps on its reference + few-shot measurements with Meta-SGD's
learned per-parameter learning rates (``torch.func.functional_call``). Training is episodic with
meta-validation model selection; targets are min-max normalised with the reference latencies (as in
the paper); predictions pass a smooth positive floor, so they are > 0 ms everywhere and keep their ranking.

* :class:`HELPLearner` (``"help"``): all of the above.
* :class:`MetaSGDLearner` (``"meta-sgd"``): no hardware embedding and no z modulator.
* :class:`MAMLLearner` (``"maml"``): as Meta-SGD, with a fixed inner learning rate.
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call

from ...checkpoint import module_spec
from ...validation import check_reference_spread
from ..nets import HardwareConditionedNet, ZModulator
from ..training import Standardiser, positive_ms, progress_bar
from .base import DeviceHead, LearnerConfig, MetaLearner, sub_state

log = logging.getLogger(__name__)


def hardware_embedding(reference_ms: np.ndarray) -> np.ndarray:
    """HELP's hardware embedding: reference latencies min-max normalised to [0, 1] (Eq. 3)."""
    reference_ms = np.asarray(reference_ms, dtype=np.float64)
    check_reference_spread(reference_ms)
    return (reference_ms - reference_ms.min()) / np.ptp(reference_ms)


@dataclass
class GradientMetaConfig(LearnerConfig):
    hidden: int = 100
    use_hardware: bool = True  # HELP's hardware embedding as an input
    use_z: bool = True  # HELP's z modulator of the initial parameters
    learn_lr: bool = True  # Meta-SGD's per-parameter learning rates (False: MAML)
    inner_steps: int = 5
    inner_lr: float = 1e-2
    outer_lr: float = 1e-3
    meta_batch: int = 4
    shots: int = 10
    query: int = 100
    steps: int = 1500
    validate_every: int = 250
    first_order: bool = False


@dataclass
class GradientHead(DeviceHead):
    """The adapted parameters of the network, the hardware embedding ``hw`` and the min-max scale of the
    device's reference latencies (``lo`` ms, ``span`` ms) that maps normalised outputs back to ms."""

    params: dict[str, torch.Tensor]
    hw: torch.Tensor
    lo: float
    span: float

    def state(self) -> dict[str, torch.Tensor]:
        return {**{f"params.{k}": v for k, v in self.params.items()}, "hw": self.hw,
                "lo_span": torch.tensor([self.lo, self.span], dtype=torch.float64)}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> "GradientHead":
        lo, span = tensors["lo_span"].tolist()
        return cls(sub_state(tensors, "params."), tensors["hw"], lo, span)


class GradientMetaLearner(MetaLearner):
    """The shared code of :class:`HELPLearner`, :class:`MetaSGDLearner` and :class:`MAMLLearner`.

    The support set of a meta-training task is its reference architectures plus ``shots`` random
    ones, the query set ``query`` others from the meta-training architectures.
    """

    config_class = GradientMetaConfig
    head_class = GradientHead
    #: Config fields this method fixes (its ablation of HELP).
    preset: ClassVar[dict] = {}

    def __init__(self, space, config: GradientMetaConfig | None = None):
        super().__init__(space, config if config is not None else GradientMetaConfig(**self.preset))
        self.net: HardwareConditionedNet | None = None

    def _build(self, n_ref: int) -> None:
        cfg = self.config
        torch.manual_seed(cfg.seed)
        self.net = HardwareConditionedNet(self.space.encoding_dim, n_ref, cfg.hidden, cfg.use_hardware)
        self.modulator = ZModulator(self.net, n_ref, cfg.hidden) if cfg.use_z else None
        self.log_lr = torch.nn.ParameterDict({
            n.replace(".", "/"): torch.nn.Parameter(torch.full_like(p, float(np.log(cfg.inner_lr))),
                                                    requires_grad=cfg.learn_lr)
            for n, p in self.net.named_parameters()})

    def _modules(self) -> list[torch.nn.Module]:
        return [self.net, self.log_lr] + ([self.modulator] if self.modulator is not None else [])

    def _adapted_params(self, x_s, y_s, hw, create_graph: bool) -> dict[str, torch.Tensor]:
        params = dict(self.net.named_parameters())
        if self.modulator is not None:
            params = self.modulator(params, hw)
        for _ in range(self.config.inner_steps):
            loss = ((functional_call(self.net, params, (x_s, hw)) - y_s) ** 2).mean()
            grads = torch.autograd.grad(loss, list(params.values()), create_graph=create_graph)
            params = {n: p - torch.exp(self.log_lr[n.replace(".", "/")]) * g
                      for (n, p), g in zip(params.items(), grads)}
        return params

    # -------------------------------------------------------------- meta-training
    def _meta_fit(self, data, train_devices, valid_devices, rows, progress) -> None:
        cfg = self.config
        ref = data.reference_rows
        rows = np.setdiff1d(rows, ref)
        for d in train_devices + valid_devices:
            data.device_index(d)
        enc = data.space.encode(data.archs)
        self.encoding = Standardiser.of(enc[rows])
        x_all = self.encoding(enc)
        self._build(len(ref))
        params = [p for m in self._modules() for p in m.parameters()]
        opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=cfg.outer_lr)
        rng = np.random.default_rng(cfg.seed)
        tasks = {}
        for d in train_devices:
            lat = data.latency(d)
            ok = rows[np.isfinite(lat[rows])]
            tasks[d] = (lat, ok, hardware_embedding(lat[ref]))
        best, best_score = None, -np.inf
        bar = progress_bar(cfg.steps, f"meta-training ({self.method})", progress)
        for step in range(1, cfg.steps + 1):
            opt.zero_grad()
            total = 0.0
            for d in rng.choice(list(tasks), size=cfg.meta_batch):
                lat, ok, hw = tasks[d]
                lo, span = lat[ref].min(), np.ptp(lat[ref])
                pick = rng.choice(ok, size=cfg.shots + cfg.query, replace=False)
                s_rows = np.concatenate([ref, pick[:cfg.shots]])
                q_rows = pick[cfg.shots:]
                hw_t = torch.tensor(hw, dtype=torch.float32)
                y_s = torch.tensor((lat[s_rows] - lo) / span, dtype=torch.float32)
                y_q = torch.tensor((lat[q_rows] - lo) / span, dtype=torch.float32)
                adapted = self._adapted_params(x_all[s_rows], y_s, hw_t, create_graph=not cfg.first_order)
                loss = ((functional_call(self.net, adapted, (x_all[q_rows], hw_t)) - y_q) ** 2).mean()
                (loss / cfg.meta_batch).backward()
                total += loss.item()
            opt.step()
            bar.update(1)
            if valid_devices and (step % cfg.validate_every == 0 or step == cfg.steps):
                score = self._validate(data, valid_devices, rows)
                log.info("%s step %d: train loss %.4f, valid rho %.4f", self.method, step, total / cfg.meta_batch, score)
                if score > best_score:
                    best_score, best = score, [copy.deepcopy(m.state_dict()) for m in self._modules()]
        bar.close()
        if best is not None:
            for m, s in zip(self._modules(), best):
                m.load_state_dict(s)

    def _validate(self, data, devices, rows, n_eval: int = 500) -> float:
        rng = np.random.default_rng(12345)
        scores = []
        for d in devices:
            lat = data.latency(d)
            ok = rows[np.isfinite(lat[rows])]
            pick = rng.choice(ok, size=min(self.config.shots + n_eval, len(ok)), replace=False)
            shots, ev = pick[:self.config.shots], pick[self.config.shots:]
            head = self.adapt(lat[data.reference_rows], data.archs[shots], lat[shots])
            scores.append(spearmanr(self.predict(head, data.archs[ev]), lat[ev]).correlation)
        return float(np.mean(scores))

    # -------------------------------------------------------------- a device
    def adapt(self, reference_ms, shot_idx, shot_ms) -> GradientHead:
        from ..training import torch_threads

        hw = torch.tensor(hardware_embedding(reference_ms), dtype=torch.float32)
        lo, span = float(np.min(reference_ms)), float(np.ptp(reference_ms))
        idx = np.concatenate([self.reference_indices, shot_idx])
        y = torch.tensor((np.concatenate([reference_ms, shot_ms]) - lo) / span, dtype=torch.float32)
        with torch_threads(self.config.train_threads):
            params = self._adapted_params(self.encoding(self.space.encode(idx)), y, hw, create_graph=False)
        return GradientHead({n: p.detach() for n, p in params.items()}, hw, lo, span)

    def _forward(self, head: GradientHead, encoding: torch.Tensor) -> torch.Tensor:
        """ms (float64): the normalised output scaled back with the reference min-max, then the smooth
        positive floor (:func:`~help_plugin.predictors.training.positive_ms` at 1/1000 of the fastest
        reference): the paper's linear targets extrapolate below 0 ms on near-zero-latency devices."""
        x = (encoding - torch.as_tensor(self.encoding.mean)) / torch.as_tensor(self.encoding.std)
        return positive_ms(functional_call(self.net, head.params, (x, head.hw)).double() * head.span + head.lo, head.lo)

    def predict(self, head: GradientHead, indices: np.ndarray, return_std: bool = False):
        if return_std:
            raise NotImplementedError(f"method {self.method!r} has no predictive uncertainty")
        with torch.no_grad():
            return self._forward(head, torch.from_numpy(self.space.encode(indices))).numpy()

    def predict_tensor(self, head: GradientHead, probs: torch.Tensor) -> torch.Tensor:
        costs = self.space.relaxed_costs(probs.to(torch.float64))
        enc = self.space.relaxed_encode(probs, costs).to(torch.float32)
        return self._forward(head, enc).to(probs.dtype)

    # -------------------------------------------------------------- persistence
    def _state(self):
        tensors = {**self.encoding.state("enc_"), **{f"net.{n}": p.detach() for n, p in self.net.state_dict().items()},
                   **{f"log_lr.{n}": p.detach() for n, p in self.log_lr.state_dict().items()}}
        if self.modulator is not None:
            tensors.update({f"z.{n}": p.detach() for n, p in self.modulator.state_dict().items()})
        return {}, tensors

    def _expected_state(self):
        spec = {**Standardiser.spec("enc_", self.space.encoding_dim), **module_spec("net.", self.net),
                **module_spec("log_lr.", self.log_lr)}
        if self.modulator is not None:
            spec.update(module_spec("z.", self.modulator))
        return spec

    def _from_state(self, meta, tensors) -> None:
        self._build(len(self.reference_indices))
        self.encoding = Standardiser.from_state(tensors, "enc_")
        self.net.load_state_dict(sub_state(tensors, "net."))
        self.log_lr.load_state_dict(sub_state(tensors, "log_lr."))
        if self.modulator is not None:
            self.modulator.load_state_dict(sub_state(tensors, "z."))


class HELPLearner(GradientMetaLearner):
    """HELP: hardware embedding, z modulator, Meta-SGD inner loop."""

    method = "help"


class MetaSGDLearner(GradientMetaLearner):
    """Meta-SGD: learned per-parameter inner learning rates, no hardware conditioning."""

    method = "meta-sgd"
    preset = {"use_hardware": False, "use_z": False}


class MAMLLearner(GradientMetaLearner):
    """MAML: a fixed inner learning rate, no hardware conditioning."""

    method = "maml"
    preset = {"use_hardware": False, "use_z": False, "learn_lr": False}
