"""The help+ device head: Bayesian ridge regression over feature groups, every choice made by the evidence.

A device's latency, transformed by the head's link (``t = ms`` or ``t = log ms``), is modelled on its few
measurements as ``t = b + sum_g Z_g w_g + noise``: ``Z_g`` are the features of group ``g`` (the analytic costs,
the pool devices' predicted ms, ...; transformed for the link by the learner), standardised on the measured
architectures, with the prior ``w_g ~ N(0, s2 / alpha_g)``. Everything is closed form:

* each group's strength ``alpha_g``, one of :data:`ALPHAS` or *off* (a *required* group is never off), is chosen
  by maximising the REML marginal likelihood (the evidence, with ``s2`` profiled out) by a coordinate search
  started from every one-group model, with moves that scale all strengths together;
* the link, by the evidence of the measured ms (the log link's corrected by its Jacobian, ``sum log ms``);
* predictions are > 0 and finite by construction: ``exp`` for the log link; for the identity link a
  rank-preserving, continuously differentiable guard, ``t`` above ``s = guard * min(measured ms)`` and
  ``s^2 / (2 s - t)`` below it.

The evidence rather than leave-one-out error chooses the strengths: with 20 points and four or five groups the
leave-one-out choice over-fits it (issue 14: leave-one-device-out FBNet rho 0.884 against 0.917).
:func:`fit_heads` fits many heads at once, one per subset of the points (the calibrated bounds' leave-one-out
heads, every choice made again in each).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .learners.base import DeviceHead

#: Strengths a group may take (besides off).
ALPHAS = (1e-3, 1e-2, 0.1, 1.0, 10.0, 100.0)
#: The links, in the order ``log_link`` counts them.
LINKS = ("identity", "log")
#: Coordinate-search sweeps at most (the search stops at the first sweep that moves nothing).
SWEEPS = 8


@dataclass
class GroupRidgeHead(DeviceHead):
    """``t = ((x - x_mean) / x_scale) @ coef + intercept`` on the learner's features ``x`` ``[n, P]`` (all its
    groups, transformed for the link), then ms ``= exp(t)`` (log link) or the guard of ``t`` at ``floor``.

    ``strength`` ``[P]``: ``1 / alpha`` of each feature's group, 0 where the group is off (or the feature was
    constant on the measured archs), so ``coef`` is 0 there; ``precision_inv`` ``[P, P]``: the posterior
    covariance of ``coef`` over ``noise_var`` (for the predictive std).
    """

    log_link: bool
    coef: np.ndarray
    intercept: float
    x_mean: np.ndarray
    x_scale: np.ndarray
    strength: np.ndarray
    noise_var: float
    precision_inv: np.ndarray
    floor: float

    @property
    def link(self) -> str:
        return LINKS[int(self.log_link)]

    @property
    def weights(self) -> np.ndarray:
        """``[P]``: ``t = x @ weights + offset`` on the raw (unstandardised) features."""
        return self.coef / self.x_scale

    @property
    def offset(self) -> float:
        return float(self.intercept - self.x_mean @ self.weights)

    def ms(self, t):
        """The latency in ms of ``t`` (numpy or torch), > 0 and finite."""
        return positive(t, self.log_link, self.floor)

    def predict(self, x: np.ndarray, return_std: bool = False):
        """ms ``[n]`` of features ``x`` ``[n, P]`` (and the predictive std: for the log link ms times that of
        ``log ms``)."""
        t = x @ self.weights + self.offset
        mean = self.ms(t)
        if not return_std:
            return mean
        z = np.where(self.strength > 0, (x - self.x_mean) / self.x_scale, 0.0)
        std_t = np.sqrt(self.noise_var * (1.0 + np.einsum("ij,jk,ik->i", z, self.precision_inv, z)))
        return mean, (mean * std_t if self.log_link else std_t)

    def predict_torch(self, x: torch.Tensor) -> torch.Tensor:
        return self.ms(x @ torch.as_tensor(self.weights, dtype=x.dtype, device=x.device) + self.offset)

    def state(self) -> dict[str, torch.Tensor]:
        arrays = {"log_link": [float(self.log_link)], "coef": self.coef, "intercept": [self.intercept],
                  "x_mean": self.x_mean, "x_scale": self.x_scale, "strength": self.strength,
                  "noise_var": [self.noise_var], "precision_inv": self.precision_inv, "floor": [self.floor]}
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in arrays.items()}

    @staticmethod
    def spec(n_features: int) -> dict:
        """The expected ``name -> (shape, dtype)`` of :meth:`state` for ``n_features`` features."""
        p, one = (n_features,), (1,)
        shapes = {"log_link": one, "coef": p, "intercept": one, "x_mean": p, "x_scale": p, "strength": p,
                  "noise_var": one, "precision_inv": (n_features, n_features), "floor": one}
        return {k: (v, torch.float64) for k, v in shapes.items()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> "GroupRidgeHead":
        s = {k: np.asarray(v.numpy(), np.float64) for k, v in tensors.items()}
        if s["log_link"][0] not in (0.0, 1.0) or not s["floor"][0] > 0 or (s["x_scale"] <= 0).any():
            raise ValueError("the head's log_link must be 0 or 1, its floor and x_scale > 0")
        return cls(bool(s["log_link"][0]), s["coef"], float(s["intercept"][0]), s["x_mean"], s["x_scale"],
                   s["strength"], float(s["noise_var"][0]), s["precision_inv"], float(s["floor"][0]))


def positive(t, log_link: bool, floor: float | np.ndarray):
    """ms > 0 of the head's output ``t`` (numpy or torch): ``exp(t)`` (log link, capped below overflow), else
    ``t`` above ``floor`` and ``floor^2 / (2 floor - t)`` below it (same value and slope at ``floor``)."""
    xp = torch if torch.is_tensor(t) else np
    if log_link:
        return xp.exp(t.clip(max=700.0))
    if xp is np and not (t < floor).any():  # the usual case: nothing to guard
        return t
    gap = 2 * floor - t
    return xp.where(t >= floor, t, floor * floor / xp.where(gap > floor, gap, floor))


def fit_heads(x: dict[str, np.ndarray], y: np.ndarray, widths: list[int], required: list[bool],
              keep: np.ndarray | None = None, guard: float = 0.5) -> list[GroupRidgeHead]:
    """Heads on the measurements ``y`` ``[n]`` ms, one per row of ``keep`` ``[F, m]`` (the points it is fit on;
    default: all), each with its strengths and link chosen by the evidence (see the module docstring).

    ``x``: link name -> features ``[n, P]`` for that link (the candidate links); ``widths``: the features per
    group (summing to ``P``); ``required``: per group, whether it must stay on.
    """
    keep = np.arange(len(y))[None] if keep is None else np.asarray(keep)
    yk = y[keep]
    group = np.repeat(np.arange(len(widths)), widths)
    fits = []
    for link, features in x.items():
        fit = _fit_link(features[keep], np.log(yk) if link == "log" else yk, group, np.asarray(required, bool))
        if link == "log":  # the evidence of the ms themselves: the Jacobian of t = log ms
            fit["nll"] = fit["nll"] + np.log(yk).sum(1)
        fits.append((link == "log", fit))
    heads = []
    for f in range(len(keep)):
        log_link, fit = min(fits, key=lambda lf: lf[1]["nll"][f])
        heads.append(GroupRidgeHead(log_link, fit["coef"][f], float(fit["t_mean"][f]), fit["mean"][f], fit["scale"][f],
                                    fit["strength"][f], float(fit["noise_var"][f]), fit["precision_inv"][f],
                                    guard * float(yk[f].min())))
    return heads


def _fit_link(x: np.ndarray, t: np.ndarray, group: np.ndarray, required: np.ndarray) -> dict[str, np.ndarray]:
    """One link's fits of ``t`` ``[F, m]`` on ``x`` ``[F, m, P]`` (``group[p]``: the group of feature ``p``)."""
    f_count, m, _ = x.shape
    mean, sd = x.mean(1), x.std(1)
    informative = sd > 1e-12 * np.maximum(1.0, np.abs(mean))
    scale = np.where(informative, sd, 1.0)
    z = np.where(informative[:, None], (x - mean[:, None]) / scale[:, None], 0.0)
    t_mean = t.mean(1)
    tc = t - t_mean[:, None]
    gram = np.stack([np.einsum("fip,fjp->fij", z[..., group == g], z[..., group == g]) for g in range(len(required))], 1)
    alpha, nll = _search(gram, tc, required)
    inv = np.where(np.isfinite(alpha), 1.0 / alpha, 0.0)[:, group] * informative  # [F, P]
    k = np.einsum("fp,fip,fjp->fij", inv, z, z)
    a = np.linalg.inv(k + np.eye(m))
    dual = np.einsum("fij,fj->fi", a, tc)
    zd = z * inv[:, None, :]
    coef = np.einsum("fip,fi->fp", zd, dual)
    precision_inv = inv[:, :, None] * np.eye(len(group)) - np.einsum("fip,fij,fjq->fpq", zd, a, zd)
    noise_var = np.einsum("fi,fi->f", tc, dual) / max(m - 1, 1)
    return {"coef": coef, "t_mean": t_mean, "mean": mean, "scale": scale, "strength": inv, "nll": nll,
            "noise_var": noise_var, "precision_inv": precision_inv}


def _neg_evidence(gram: np.ndarray, tc: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """REML negative log evidence (up to a constant), ``[F, C]``, of candidate strengths ``alpha`` ``[F, C, G]``
    (``inf``: off) for the centred targets ``tc`` ``[F, m]`` and per-group Gram matrices ``gram`` ``[F, G, m, m]``."""
    m = tc.shape[1]
    inv = np.where(np.isfinite(alpha), 1.0 / alpha, 0.0)
    chol = np.linalg.cholesky(np.einsum("fcg,fgij->fcij", inv, gram) + np.eye(m))
    logdet = 2 * np.log(np.diagonal(chol, axis1=-2, axis2=-1)).sum(-1)
    rhs = np.broadcast_to(tc[:, None, :, None], chol.shape[:-1] + (1,))
    quad = (np.linalg.solve(chol, rhs) ** 2).sum((-2, -1))
    dof = max(m - 1, 1)
    return 0.5 * (dof * np.log(np.maximum(quad, 1e-300) / dof) + logdet)


def _search(gram: np.ndarray, tc: np.ndarray, required: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per fit, the strengths ``[F, G]`` of least :func:`_neg_evidence` found by coordinate search (all fits in
    lockstep: each takes the moves it would take alone), and that value ``[F]``."""
    f_count, groups = gram.shape[:2]
    finite = np.asarray(ALPHAS, np.float64)
    values = {g: finite if required[g] else np.append(finite, np.inf) for g in range(groups)}
    base = np.where(required, 1.0, np.inf)
    starts = [base] + [np.where(np.arange(groups) == g, a, base) for g in range(groups) for a in finite[::2]]
    cand = np.broadcast_to(np.array(starts), (f_count, len(starts), groups))
    scores = _neg_evidence(gram, tc, cand)
    rows = np.arange(f_count)
    pick = scores.argmin(1)
    current, best = cand[rows, pick].copy(), scores[rows, pick]
    for _ in range(SWEEPS):
        moved = np.zeros(f_count, bool)
        for g in range(groups + 1):
            if g < groups:  # group g through its values
                cand = np.repeat(current[:, None], len(values[g]), 1)
                cand[:, :, g] = values[g]
            else:  # every active strength scaled together
                cand = current[:, None] * (10.0 ** np.arange(-3, 4))[None, :, None]
                cand = np.where(np.isfinite(cand), np.clip(cand, finite[0], finite[-1]), np.inf)
            scores = _neg_evidence(gram, tc, cand)
            pick = scores.argmin(1)
            better = scores[rows, pick] < best - 1e-12
            current[better], best[better] = cand[rows[better], pick[better]], scores[rows[better], pick[better]]
            moved |= better
        if not moved.any():
            break
    return current, best
