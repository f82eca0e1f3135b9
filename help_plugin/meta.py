"""Meta-learning algorithms: what is learned from the device pool, and how a new device adapts.

Two learners share one small protocol (``meta_fit``, ``adapt``, ``state``/``from_state``):

* :class:`PoolBasisLearner` (``method="help+"``, the default): a network predicts every pool
  device's latency for any architecture; a new device is a ridge combination of those
  predictions and of analytic roofline costs, fit in closed form on its reference + few-shot
  measurements (ridge strength by exact leave-one-out).
* :class:`GradientMetaLearner` (``method="help"``, ``"meta-sgd"``, ``"maml"``): the HELP paper's
  hardware-conditioned predictor with the z modulator and Meta-SGD inner loop (Sec. 3), and the
  MAML / Meta-SGD baselines as ablations of it. Inner loops use ``torch.func.functional_call``.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from dataclasses import asdict, dataclass
from typing import Callable, Sequence

import numpy as np
import torch
from scipy.stats import spearmanr
from torch.func import functional_call

from .data import LatencyDataset
from .models import HardwareConditionedNet, PoolLatencyNet, ZModulator
from .ridge import RidgeHead
from .spaces import SearchSpace
from .validation import check_reference_spread

log = logging.getLogger(__name__)

ProgressFactory = Callable[..., object]


def _progress(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


@contextlib.contextmanager
def torch_threads(n: int):
    """Run the block with ``n`` intra-op threads (restored afterwards).

    Training these small networks is fastest single-threaded: on a 2-vCPU machine, two
    threads made a 300-step run ~50x slower (98 s vs 2 s) through synchronisation overhead.
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean, std = x.mean(0), x.std(0)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def hardware_embedding(reference_ms: np.ndarray) -> np.ndarray:
    """HELP's hardware embedding: reference latencies min-max normalised to [0, 1] (Eq. 3)."""
    reference_ms = np.asarray(reference_ms, dtype=np.float64)
    check_reference_spread(reference_ms)
    return (reference_ms - reference_ms.min()) / np.ptp(reference_ms)


# ============================================================================ help+ (default)
@dataclass
class PoolBasisConfig:
    hidden: int = 128
    depth: int = 2
    steps: int = 4000
    batch_size: int = 256
    lr: float = 3e-3
    weight_decay: float = 1e-5
    ensemble: int = 3  # averaged pool networks; compare: help-nas benchmark --methods help+,help+:ensemble=1:hidden=256
    group_penalties: bool = True  # separate ridge strengths for analytic costs and pool latencies
    train_threads: int = 1
    seed: int = 0


class PoolBasisLearner:
    """Meta-knowledge = how every pool device's latency depends on the architecture."""

    method = "help+"

    def __init__(self, space: SearchSpace, config: PoolBasisConfig | None = None):
        self.space = space
        self.config = config or PoolBasisConfig()
        self.nets: list[PoolLatencyNet] = []
        self.pool_devices: tuple[str, ...] = ()

    # -------------------------------------------------------------- meta-training
    def meta_fit(self, data: LatencyDataset, train_devices: Sequence[str], valid_devices: Sequence[str] = (),
                 arch_rows: np.ndarray | None = None, progress: bool = False) -> "PoolBasisLearner":
        with torch_threads(self.config.train_threads):
            return self._meta_fit(data, train_devices, valid_devices, arch_rows, progress)

    def _meta_fit(self, data, train_devices, valid_devices, arch_rows, progress) -> "PoolBasisLearner":
        cfg = self.config
        rows = np.arange(len(data)) if arch_rows is None else np.asarray(arch_rows)
        self.pool_devices = tuple(train_devices) + tuple(d for d in valid_devices if d not in train_devices)
        enc = self.space.encode(data.archs[rows])
        self.enc_mean, self.enc_std = _standardiser(enc)
        log_lat = np.log(data.select_devices(self.pool_devices).latency_ms[rows])
        mask = np.isfinite(log_lat)
        if mask.sum(0).min() < 2:
            bad = self.pool_devices[int(np.argmin(mask.sum(0)))]
            raise ValueError(f"pool device {bad!r} has fewer than 2 measured architectures")
        self.y_mean = np.nanmean(log_lat, 0).astype(np.float32)
        self.y_std = np.nanstd(log_lat, 0).astype(np.float32)
        self.y_std = np.where(self.y_std > 1e-8, self.y_std, 1.0).astype(np.float32)
        x = torch.tensor((enc - self.enc_mean) / self.enc_std)
        y = torch.tensor(np.nan_to_num((log_lat - self.y_mean) / self.y_std), dtype=torch.float32)
        m = torch.tensor(mask, dtype=torch.float32)
        self.nets = []
        bar = _progress(cfg.steps * cfg.ensemble, "meta-training (pool basis)", progress)
        for k in range(cfg.ensemble):
            torch.manual_seed(cfg.seed + k)
            net = PoolLatencyNet(x.shape[1], len(self.pool_devices), cfg.hidden, cfg.depth)
            opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
            sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=cfg.steps)
            gen = torch.Generator().manual_seed(cfg.seed + k)
            for step in range(cfg.steps):
                b = torch.randint(0, len(x), (min(cfg.batch_size, len(x)),), generator=gen)
                loss = (((net(x[b]) - y[b]) ** 2) * m[b]).sum() / m[b].sum().clamp(min=1)
                opt.zero_grad()
                loss.backward()
                opt.step()
                sched.step()
                bar.update(1)
            self.nets.append(net.eval().requires_grad_(False))
            log.info("pool net %d/%d: final batch loss %.4f", k + 1, cfg.ensemble, loss.item())
        bar.close()
        return self

    # -------------------------------------------------------------- features and adaptation
    def pool_log_latency(self, encoding: torch.Tensor) -> torch.Tensor:
        """Predicted standardised log-latency on the pool devices, ``[n, n_pool]``."""
        x = (encoding - torch.as_tensor(self.enc_mean)) / torch.as_tensor(self.enc_std)
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
        costs = self.space.cost_features(indices)
        threads = 1 if len(indices) < 4096 else torch.get_num_threads()  # small batches: threads only add overhead
        with torch.inference_mode(), torch_threads(threads):
            enc = torch.from_numpy(self.space.encode(indices, costs))
            pool_ms = self.basis_torch(enc, torch.zeros(len(enc), 0))
        return np.concatenate([costs, pool_ms.double().numpy()], axis=1)

    def adapt(self, reference_idx: np.ndarray, reference_ms: np.ndarray,
              shot_idx: np.ndarray, shot_ms: np.ndarray) -> RidgeHead:
        check_reference_spread(reference_ms)
        idx = np.concatenate([reference_idx, shot_idx])
        y = np.concatenate([reference_ms, shot_ms])
        basis = self.basis(idx)
        groups = (4, basis.shape[1] - 4) if self.config.group_penalties else None
        return RidgeHead.fit(basis, y, groups=groups)

    # -------------------------------------------------------------- persistence
    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {"enc_mean": torch.tensor(self.enc_mean), "enc_std": torch.tensor(self.enc_std),
                   "y_mean": torch.tensor(self.y_mean), "y_std": torch.tensor(self.y_std)}
        for k, net in enumerate(self.nets):
            tensors.update({f"net{k}.{n}": p.detach() for n, p in net.state_dict().items()})
        meta = {"config": asdict(self.config), "pool_devices": list(self.pool_devices), "n_nets": len(self.nets)}
        return meta, tensors

    @classmethod
    def from_state(cls, space: SearchSpace, meta: dict, tensors: dict[str, torch.Tensor]) -> "PoolBasisLearner":
        self = cls(space, PoolBasisConfig(**meta["config"]))
        self.pool_devices = tuple(meta["pool_devices"])
        for name in ("enc_mean", "enc_std", "y_mean", "y_std"):
            setattr(self, name, tensors[name].numpy())
        for k in range(int(meta["n_nets"])):
            net = PoolLatencyNet(space.encoding_dim, len(self.pool_devices), self.config.hidden, self.config.depth)
            net.load_state_dict({n[len(f"net{k}."):]: t for n, t in tensors.items() if n.startswith(f"net{k}.")})
            self.nets.append(net.eval().requires_grad_(False))
        return self


# ============================================================================ HELP paper / MAML / Meta-SGD
@dataclass
class GradientMetaConfig:
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
    train_threads: int = 1
    seed: int = 0


class GradientMetaLearner:
    """HELP (Sec. 3 of the paper) and its MAML / Meta-SGD ablations.

    Targets are min-max normalised with the device's reference latencies, as the hardware
    embedding is; the support set of a task is its reference architectures plus ``shots``
    random ones, the query set ``query`` others from the meta-training architectures.
    """

    def __init__(self, space: SearchSpace, config: GradientMetaConfig | None = None, method: str = "help"):
        self.space = space
        self.config = config or GradientMetaConfig()
        self.method = method
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

    def _encode(self, indices: np.ndarray) -> torch.Tensor:
        enc = self.space.encode(indices)
        return torch.from_numpy((enc - self.enc_mean) / self.enc_std)

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

    def meta_fit(self, data: LatencyDataset, train_devices: Sequence[str], valid_devices: Sequence[str] = (),
                 arch_rows: np.ndarray | None = None, progress: bool = False) -> "GradientMetaLearner":
        with torch_threads(self.config.train_threads):
            return self._meta_fit(data, train_devices, valid_devices, arch_rows, progress)

    def _meta_fit(self, data, train_devices, valid_devices, arch_rows, progress) -> "GradientMetaLearner":
        cfg = self.config
        rows = np.arange(len(data)) if arch_rows is None else np.asarray(arch_rows)
        ref = data.reference_rows
        if len(ref) < 2:
            raise ValueError("meta-training needs the reference architectures of the data set")
        self.reference_archs = data.archs[ref]
        rows = np.setdiff1d(rows, ref)
        enc = self.space.encode(data.archs)
        self.enc_mean, self.enc_std = _standardiser(enc[rows])
        x_all = torch.from_numpy((enc - self.enc_mean) / self.enc_std)
        self._build(len(ref))
        params = list(self.net.parameters()) + list(self.log_lr.parameters())
        if self.modulator is not None:
            params += list(self.modulator.parameters())
        opt = torch.optim.Adam([p for p in params if p.requires_grad], lr=cfg.outer_lr)
        rng = np.random.default_rng(cfg.seed)
        tasks = {}
        for d in train_devices:
            lat = data.latency(d)
            ok = rows[np.isfinite(lat[rows])]
            tasks[d] = (lat, ok, hardware_embedding(lat[ref]))
        best, best_score = None, -np.inf
        bar = _progress(cfg.steps, f"meta-training ({self.method})", progress)
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
                    best_score, best = score, self._snapshot()
        bar.close()
        if best is not None:
            self._restore(best)
        return self

    def _snapshot(self):
        mods = [self.net, self.log_lr] + ([self.modulator] if self.modulator is not None else [])
        return [copy.deepcopy(m.state_dict()) for m in mods]

    def _restore(self, snap):
        mods = [self.net, self.log_lr] + ([self.modulator] if self.modulator is not None else [])
        for m, s in zip(mods, snap):
            m.load_state_dict(s)

    def _validate(self, data, devices, rows, n_eval: int = 500) -> float:
        rng = np.random.default_rng(12345)
        scores = []
        for d in devices:
            lat = data.latency(d)
            ok = rows[np.isfinite(lat[rows])]
            pick = rng.choice(ok, size=min(self.config.shots + n_eval, len(ok)), replace=False)
            shots, ev = pick[:self.config.shots], pick[self.config.shots:]
            ref = data.reference_rows
            state = self.adapt(data.archs[ref], lat[ref], data.archs[shots], lat[shots])
            scores.append(spearmanr(self.predict(state, data.archs[ev]), lat[ev]).correlation)
        return float(np.mean(scores))

    def adapt(self, reference_idx, reference_ms, shot_idx, shot_ms) -> dict:
        hw = torch.tensor(hardware_embedding(reference_ms), dtype=torch.float32)
        lo, span = float(np.min(reference_ms)), float(np.ptp(reference_ms))
        idx = np.concatenate([reference_idx, shot_idx])
        y = torch.tensor((np.concatenate([reference_ms, shot_ms]) - lo) / span, dtype=torch.float32)
        with torch_threads(self.config.train_threads):
            params = self._adapted_params(self._encode(idx), y, hw, create_graph=False)
        return {"params": {n: p.detach() for n, p in params.items()}, "hw": hw, "lo": lo, "span": span}

    def predict_torch(self, state: dict, encoding: torch.Tensor) -> torch.Tensor:
        x = (encoding - torch.as_tensor(self.enc_mean)) / torch.as_tensor(self.enc_std)
        return functional_call(self.net, state["params"], (x, state["hw"])) * state["span"] + state["lo"]

    def predict(self, state: dict, indices: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return self.predict_torch(state, torch.from_numpy(self.space.encode(indices))).double().numpy()

    def state(self) -> tuple[dict, dict[str, torch.Tensor]]:
        tensors = {"enc_mean": torch.tensor(self.enc_mean), "enc_std": torch.tensor(self.enc_std)}
        tensors.update({f"net.{n}": p.detach() for n, p in self.net.state_dict().items()})
        tensors.update({f"log_lr.{n}": p.detach() for n, p in self.log_lr.state_dict().items()})
        if self.modulator is not None:
            tensors.update({f"z.{n}": p.detach() for n, p in self.modulator.state_dict().items()})
        return {"config": asdict(self.config), "method": self.method, "n_reference": self.net_n_ref()}, tensors

    def net_n_ref(self) -> int:
        return int(self.modulator.encoder[0].in_features) if self.modulator is not None else (
            int(self.net.hardware_encoder[0].in_features) if self.config.use_hardware else 10)

    @classmethod
    def from_state(cls, space: SearchSpace, meta: dict, tensors: dict[str, torch.Tensor]) -> "GradientMetaLearner":
        self = cls(space, GradientMetaConfig(**meta["config"]), meta["method"])
        self._build(int(meta["n_reference"]))
        self.enc_mean, self.enc_std = tensors["enc_mean"].numpy(), tensors["enc_std"].numpy()
        sub = lambda p: {n[len(p):]: t for n, t in tensors.items() if n.startswith(p)}  # noqa: E731
        self.net.load_state_dict(sub("net."))
        self.log_lr.load_state_dict(sub("log_lr."))
        if self.modulator is not None:
            self.modulator.load_state_dict(sub("z."))
        return self


#: method name -> (learner class, config overrides)
METHODS = {
    "help+": (PoolBasisLearner, {}),
    "help": (GradientMetaLearner, {}),
    "meta-sgd": (GradientMetaLearner, {"use_hardware": False, "use_z": False}),
    "maml": (GradientMetaLearner, {"use_hardware": False, "use_z": False, "learn_lr": False}),
}


def make_learner(method: str, space: SearchSpace, **overrides):
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; available: {sorted(METHODS)}")
    cls, preset = METHODS[method]
    cfg_cls = PoolBasisConfig if cls is PoolBasisLearner else GradientMetaConfig
    unknown = set(overrides) - set(cfg_cls.__dataclass_fields__)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method {method!r}")
    cfg = cfg_cls(**{**preset, **overrides})
    return cls(space, cfg) if cls is PoolBasisLearner else cls(space, cfg, method)
