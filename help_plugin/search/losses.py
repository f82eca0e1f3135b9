"""Latency losses for differentiable NAS: ``L_total = L_val + lambda * LAT(alpha)``.

LA-DARTS (Xu et al., "Latency-Aware Differentiable Neural Architecture Search") adds the expected
latency of the sub-networks drawn from the architecture distribution to DARTS' validation loss, with a
learned latency predictor in place of a lookup table. Here the predictor is any
:class:`~help_plugin.LatencyEstimator` (e.g. HELP adapted to the target device with 10 + 10
measurements) and ``LAT`` is computed in one of two ways:

* ``"relaxed"``: ``estimator.predict_tensor(probs)``, the predictor evaluated on the relaxed
  (probability-weighted) encoding. One forward pass, any space with a relaxed encoding (NAS-Bench-201,
  FBNet), but only the HELPEstimator provides ``predict_tensor``. It equals the expected latency
  exactly at one-hot probabilities and is a first-order approximation in between.
* ``"exact"``: the expectation over the independent per-position distributions,
  ``E = sum_a prod_l p_l(a_l) * lat(a)``, from the estimator's predictions for *every* architecture
  of the space (computed once, then a differentiable tensor contraction). Works with any
  LatencyEstimator, for spaces small enough to enumerate: NAS-Bench-201 has 5^6 = 15,625.

The LA-DARTS paper estimates the same expectation by sampling M = 20 sub-networks; for NAS-Bench-201
the exact sum replaces that Monte-Carlo estimate.

Shapes: ``probs`` is ``[L, C]`` (one distribution, returns a scalar) or ``[n, L, C]`` (returns ``[n]``),
``L = space.arch_length``, ``C = max(space.choices)``; entries beyond ``space.choices[l]`` at position
``l`` must be 0. Latencies are in milliseconds, so ``lam`` is in 1/ms and the loss is unitless.
"""
from __future__ import annotations

import logging
import math

import numpy as np
import torch
from torch import nn

from ..predictors.base import LatencyEstimator
from ..spaces import SearchSpace

log = logging.getLogger(__name__)

MODES = ("relaxed", "exact")
#: Largest space :func:`latency_table` enumerates by default.
MAX_ENUMERATED_ARCHS = 1_000_000


def probs_from_logits(space: SearchSpace, alpha: torch.Tensor) -> torch.Tensor:
    """Softmax of architecture logits ``alpha`` ``[..., L, C]`` per position, ignoring padded choices.

    Entries beyond ``space.choices[l]`` get probability 0 (their logits are not used).
    """
    _check_shape(space, alpha, "alpha")
    mask = _choice_mask(space, alpha)
    return torch.softmax(alpha.masked_fill(~mask, float("-inf")), dim=-1)


def enumerate_archs(space: SearchSpace, max_archs: int = MAX_ENUMERATED_ARCHS) -> np.ndarray:
    """Every architecture of ``space`` as indices ``[prod(choices), L]``, the last position varying fastest."""
    total = math.prod(space.choices)
    if total > max_archs:
        raise ValueError(f"{space.name} has {total:.3g} architectures, more than max_archs={max_archs}; "
                         "the exact expectation needs them all, use mode='relaxed'")
    grids = np.meshgrid(*[np.arange(c) for c in space.choices], indexing="ij")
    return np.stack([g.reshape(-1) for g in grids], axis=1).astype(np.int64)


def latency_table(estimator: LatencyEstimator, max_archs: int = MAX_ENUMERATED_ARCHS) -> torch.Tensor:
    """Predicted latency (ms) of every architecture, as a tensor of shape ``space.choices`` (float64).

    ``table[a_1, ..., a_L]`` is ``estimator.predict`` of the architecture with indices ``a``.
    """
    space = estimator.space
    archs = enumerate_archs(space, max_archs)
    ms = np.asarray(estimator.predict(archs), dtype=np.float64)
    if ms.shape != (len(archs),) or not np.all(np.isfinite(ms)):
        raise ValueError(f"{type(estimator).__name__}.predict returned non-finite or mis-shaped latencies "
                         f"for the {len(archs)} {space.name} architectures")
    return torch.from_numpy(ms.reshape(space.choices))


def exact_expected_latency(probs: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """``sum_a prod_l probs[:, l, a_l] * table[a]`` for ``probs`` ``[n, L, C]`` and ``table`` ``[c_1..c_L]``.

    Returns ``[n]`` ms, differentiable with respect to ``probs``.
    """
    choices = tuple(table.shape)
    n, length = probs.shape[0], probs.shape[1]
    if length != len(choices):
        raise ValueError(f"probs has {length} positions, the latency table {len(choices)}")
    out = table.to(probs.dtype).unsqueeze(0)  # [1, c_1..c_L]
    for pos in reversed(range(length)):  # contract the last position each time: [n, c_1..c_pos]
        p = probs[:, pos, :choices[pos]].reshape(n, *([1] * pos), choices[pos])
        out = (out * p).sum(-1)
    return out


def latency_loss(estimator: LatencyEstimator, probs: torch.Tensor, lam: float = 1.0,
                 table: torch.Tensor | None = None) -> torch.Tensor:
    """``lam * LAT(probs)``: the exact expectation when a :func:`latency_table` is given, else the relaxed one.

    ``probs`` ``[L, C]`` gives a scalar; ``[n, L, C]`` gives the mean over the ``n`` distributions.
    """
    return lam * expected_latency(estimator, probs, table).mean()


def expected_latency(estimator: LatencyEstimator, probs: torch.Tensor,
                     table: torch.Tensor | None = None) -> torch.Tensor:
    """Expected latency in ms: scalar for ``probs`` ``[L, C]``, ``[n]`` for ``[n, L, C]``.

    With ``table`` (from :func:`latency_table`) the exact expectation, else ``estimator.predict_tensor``.
    """
    space = estimator.space
    _check_shape(space, probs, "probs")
    _check_probs(space, probs)
    batch = probs if probs.dim() == 3 else probs.unsqueeze(0)
    if table is not None:
        out = exact_expected_latency(batch, table)
    else:
        if not callable(getattr(estimator, "predict_tensor", None)):
            raise TypeError(f"{type(estimator).__name__} has no predict_tensor; pass a latency_table "
                            "(mode='exact') to use it in a differentiable loss")
        out = estimator.predict_tensor(batch.to("cpu")).to(batch.device)
    return out if probs.dim() == 3 else out[0]


class ExpectedLatencyLoss(nn.Module):
    """LA-DARTS' latency term ``lam * LAT(alpha)`` as a reusable loss module.

    Args:
        estimator: a fitted :class:`~help_plugin.LatencyEstimator` of the space being searched.
        lam: the balancing coefficient lambda, in 1/ms (``L_total = L_val + lam * LAT``).
        mode: ``"exact"`` (expectation over all architectures; any estimator, enumerable spaces) or
            ``"relaxed"`` (``estimator.predict_tensor``; NAS-Bench-201 and FBNet with HELPEstimator).
            Default: ``"exact"`` when the space has at most ``max_archs`` architectures, else ``"relaxed"``.
        from_logits: ``forward`` takes architecture logits ``alpha`` (softmax per position is applied)
            instead of probabilities.

    In ``"exact"`` mode the predictions are taken once, at construction: build a new loss after
    re-adapting the estimator.

    ``forward(x)`` with ``x`` ``[L, C]`` or ``[n, L, C]`` returns the scalar loss (mean over ``n``);
    :meth:`expected_latency` returns the latency itself in ms.
    """

    def __init__(self, estimator: LatencyEstimator, lam: float = 1.0, mode: str | None = None,
                 from_logits: bool = False, max_archs: int = MAX_ENUMERATED_ARCHS):
        super().__init__()
        if not estimator.is_fitted:
            raise ValueError(f"{type(estimator).__name__} is not fitted to a device; adapt it before building the loss")
        if mode is None:
            mode = "exact" if math.prod(estimator.space.choices) <= max_archs else "relaxed"
        if mode not in MODES:
            raise ValueError(f"unknown mode {mode!r}; expected one of {MODES}")
        if not math.isfinite(lam):
            raise ValueError(f"lam must be finite, got {lam!r}")
        if mode == "relaxed" and not estimator.space.differentiable:
            raise ValueError(f"{estimator.space.name} has no relaxed encoding; mode='relaxed' is unavailable")
        self.estimator = estimator
        self.lam = float(lam)
        self.mode = mode
        self.from_logits = from_logits
        table = latency_table(estimator, max_archs) if mode == "exact" else None
        self.register_buffer("table", table, persistent=False)

    def probs(self, x: torch.Tensor) -> torch.Tensor:
        return probs_from_logits(self.estimator.space, x) if self.from_logits else x

    def expected_latency(self, x: torch.Tensor) -> torch.Tensor:
        """Expected latency in ms of the distribution(s) ``x`` (scalar or ``[n]``)."""
        return expected_latency(self.estimator, self.probs(x), self.table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.lam * self.expected_latency(x).mean()

    def extra_repr(self) -> str:
        return f"space={self.estimator.space.name}, lam={self.lam}, mode={self.mode!r}, from_logits={self.from_logits}"


def _choice_mask(space: SearchSpace, x: torch.Tensor) -> torch.Tensor:
    """``[L, C]`` bool: which entries are real choices."""
    c = x.shape[-1]
    return torch.arange(c, device=x.device)[None, :] < torch.as_tensor(space.choices, device=x.device)[:, None]


def _check_shape(space: SearchSpace, x: torch.Tensor, name: str) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    want = (space.arch_length, max(space.choices))
    if x.dim() not in (2, 3) or tuple(x.shape[-2:]) != want:
        raise ValueError(f"{space.name}: {name} must have shape [{want[0]}, {want[1]}] or [n, {want[0]}, {want[1]}], "
                         f"got {list(x.shape)}")


def _check_probs(space: SearchSpace, probs: torch.Tensor, tol: float = 1e-4) -> None:
    with torch.no_grad():
        p = probs.detach().reshape(-1, *probs.shape[-2:])
        if not torch.isfinite(p).all() or (p < -tol).any():
            raise ValueError(f"{space.name}: probabilities must be finite and non-negative")
        if (p.masked_fill(_choice_mask(space, p), 0.0).abs() > tol).any():
            raise ValueError(f"{space.name}: probabilities beyond a position's number of choices must be 0")
        sums = p.sum(-1)
        bad = (sums - 1).abs() > tol
        if bad.any():
            row, pos = map(int, torch.nonzero(bad)[0])
            raise ValueError(f"{space.name}: probabilities at position {pos} (distribution {row}) sum to "
                             f"{float(sums[row, pos]):.6f}, not 1")
