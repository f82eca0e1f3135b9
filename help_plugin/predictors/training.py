"""Training code every learned predictor shares: thread control, Adam loops, standardisation, batching."""
from __future__ import annotations

import contextlib
import math
from typing import Callable

import numpy as np
import torch
from torch import nn

from .nets import mlp

PREDICT_CHUNK = 4096  # architectures per forward pass in predict (bounds memory, stays vectorised)


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


def progress_bar(total: int, desc: str, enabled: bool):
    """A tqdm bar (silent unless ``enabled``)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, disable=not enabled, leave=False)


def moments(x: np.ndarray, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Mean and std along ``axis`` ignoring NaN (std 1 where constant), float32."""
    mean, std = np.nanmean(x, axis), np.nanstd(x, axis)
    return mean.astype(np.float32), np.where(std > 1e-8, std, 1.0).astype(np.float32)


def train_adam(params, loss_fn: Callable[[int], torch.Tensor], steps: int, lr: float,
               weight_decay: float = 0.0, scheduler: str | None = None, on_step: Callable[[], None] | None = None
               ) -> float:
    """Minimise ``loss_fn(step)`` with Adam for ``steps`` steps, single-threaded; returns the last loss.

    ``scheduler="one-cycle"`` anneals the learning rate with ``OneCycleLR`` (peak ``lr``).
    """
    params = [p for p in params if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, weight_decay=weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps) if scheduler == "one-cycle" else None
    loss = torch.zeros(())
    with torch_threads(1):
        for step in range(steps):
            loss = loss_fn(step)
            opt.zero_grad()
            loss.backward()
            opt.step()
            if sched is not None:
                sched.step()
            if on_step is not None:
                on_step()
    return float(loss.detach())


def fit_regressor(net: nn.Module, x: torch.Tensor, y: torch.Tensor, steps: int, lr: float,
                  weight_decay: float = 0.0, batch_size: int | None = None, seed: int = 0,
                  sample: str = "replacement") -> float:
    """Train ``net(x) -> y`` by MSE with Adam, full-batch or on random mini-batches of ``batch_size``.

    ``sample``: ``"replacement"`` draws batch indices with replacement, ``"permutation"`` without
    (HAT's ``random.sample``).
    """
    gen = torch.Generator().manual_seed(seed)
    full = batch_size is None or batch_size >= len(x) and sample == "replacement"

    def loss(_):
        if full:
            b = slice(None)
        elif sample == "permutation":
            b = torch.randperm(len(x), generator=gen)[:batch_size]
        else:
            b = torch.randint(0, len(x), (batch_size,), generator=gen)
        return ((net(x[b]) - y[b]) ** 2).mean()

    net.train()
    out = train_adam(net.parameters(), loss, steps, lr, weight_decay)
    net.eval()
    return out


def batched(fn: Callable[[np.ndarray], torch.Tensor], idx: np.ndarray) -> np.ndarray:
    """``fn`` on chunks of ``idx`` without gradients, concatenated as float64 ``[n]``."""
    with torch.inference_mode():
        parts = [fn(idx[i:i + PREDICT_CHUNK]) for i in range(0, len(idx), PREDICT_CHUNK)]
    return torch.cat(parts).double().numpy() if parts else np.zeros(0)


def scalar_mlp(sizes: list[int], seed: int) -> nn.Sequential:
    """``mlp(sizes)`` (last size 1) with the output flattened to ``[n]``, seeded."""
    torch.manual_seed(seed)
    return nn.Sequential(*mlp(sizes), nn.Flatten(0))


#: Scale of the smooth floor of :func:`positive_ms`, as a fraction of a device's latency scale.
FLOOR_FRACTION = 1e-3


def positive_ms(ms: torch.Tensor, scale_ms: float) -> torch.Tensor:
    """Predicted ``ms`` mapped strictly increasingly onto ``(0, inf)``: ``(x + sqrt(x^2 + 4 e^2)) / 2``.

    The smooth floor of the predictors that are linear in ms (whose extrapolation can cross 0 far from
    the measured architectures), with ``e`` the power of two nearest ``FLOOR_FRACTION * scale_ms``
    (``scale_ms``: a latency the device really has, e.g. its fastest reference; a power of two, so that
    the two branches below meet exactly at 0). Increasing (strictly, up to float rounding), so the
    ranking is kept; a prediction ``x >= scale_ms`` moves by a relative ``(e / x)^2 <= 2e-6``; ``x <= 0``
    maps into ``(0, e]``. Computed without cancellation on either side of 0, differentiable everywhere.
    """
    e = 2.0 ** round(math.log2(FLOOR_FRACTION * float(scale_ms)))
    below, above = ms.clamp(max=0), ms.clamp(min=0)
    low = 2 * e * e / (torch.sqrt(below * below + 4 * e * e) - below)
    return torch.where(ms < 0, low, (above + torch.sqrt(above * above + 4 * e * e)) / 2)


class LogTarget:
    """Standardised log-latency ``z = (log ms - mean) / std`` with the given samples' moments."""

    #: Shape and dtype of :meth:`state` (for checkpoint validation).
    SPEC = ((2,), torch.float64)

    def __init__(self, mean: float, std: float):
        self.mean, self.std = float(mean), float(std)

    @classmethod
    def of(cls, ms: np.ndarray) -> "LogTarget":
        log_ms = np.log(ms)
        return cls(log_ms.mean(), max(log_ms.std(), 1e-8))

    def z(self, ms: np.ndarray) -> torch.Tensor:
        return torch.tensor((np.log(ms) - self.mean) / self.std, dtype=torch.float32)

    def ms(self, z: torch.Tensor) -> torch.Tensor:
        return torch.exp(z.double() * self.std + self.mean)

    def state(self) -> torch.Tensor:
        return torch.tensor([self.mean, self.std], dtype=torch.float64)

    @classmethod
    def from_state(cls, t: torch.Tensor) -> "LogTarget":
        mean, std = t.tolist()
        return cls(mean, std)


class Standardiser:
    """``(x - mean) / std`` with moments fixed on the data it was fit on (float32)."""

    def __init__(self, mean: np.ndarray, std: np.ndarray):
        self.mean, self.std = np.asarray(mean, np.float32), np.asarray(std, np.float32)

    @classmethod
    def of(cls, x: np.ndarray) -> "Standardiser":
        return cls(*moments(x))

    def __call__(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(((x - self.mean) / self.std).astype(np.float32))

    def state(self, prefix: str) -> dict[str, torch.Tensor]:
        return {f"{prefix}mean": torch.from_numpy(self.mean), f"{prefix}std": torch.from_numpy(self.std)}

    @classmethod
    def from_state(cls, tensors: dict, prefix: str) -> "Standardiser":
        return cls(tensors[f"{prefix}mean"].numpy(), tensors[f"{prefix}std"].numpy())

    @staticmethod
    def spec(prefix: str, dim: int) -> dict:
        """The expected ``name -> (shape, dtype)`` of :meth:`state` for ``dim`` features."""
        return {f"{prefix}mean": ((dim,), torch.float32), f"{prefix}std": ((dim,), torch.float32)}


def check_pool(space, data, train_devices, valid_devices, arch_rows) -> tuple[tuple[str, ...], np.ndarray]:
    """(pool devices = train + valid, meta-training rows) for a ``meta_fit``, validated."""
    if data.space.name != space.name:
        raise ValueError(f"data is for space {data.space.name!r}, estimator for {space.name!r}")
    devices = tuple(train_devices) + tuple(d for d in valid_devices if d not in train_devices)
    if not devices:
        raise ValueError("meta_fit needs at least one pool device")
    for d in devices:
        data.device_index(d)
    rows = np.arange(len(data)) if arch_rows is None else np.asarray(arch_rows, dtype=np.int64)
    if len(rows) < 2:
        raise ValueError(f"meta_fit needs at least 2 architecture rows, got {len(rows)}")
    return devices, rows
