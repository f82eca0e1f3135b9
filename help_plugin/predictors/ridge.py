"""Closed-form Bayesian ridge regression with leave-one-out choice of the ridge strength.

Used as the device-specific head: a handful of target measurements fit a linear map from a
few basis features (analytic costs, predicted pool-device latencies) to milliseconds.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
import torch

from .learners.base import DeviceHead

DEFAULT_ALPHAS = (1e-3, 3e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 30.0)


@dataclass
class RidgeHead(DeviceHead):
    """``y ~ ((x - x_mean) / x_scale) @ coef + intercept``, fit by ridge on standardised features."""

    coef: np.ndarray
    intercept: float
    x_mean: np.ndarray
    x_scale: np.ndarray
    alpha: np.ndarray  # chosen strength per feature group
    noise_var: float
    precision_inv: np.ndarray  # (Z'Z + alpha I)^-1, for predictive variance

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, alphas=DEFAULT_ALPHAS, groups: tuple[int, ...] | None = None) -> "RidgeHead":
        """Fit on ``x`` ``[n, k]`` and ``y`` ``[n]``; pick the ridge strength by exact leave-one-out error.

        ``groups`` (sizes summing to ``k``) gives each block of features its own strength, chosen
        jointly from ``alphas`` x ``alphas``...; default one strength for all.
        """
        n = len(y)
        if n < 2:
            raise ValueError(f"need at least 2 measurements to fit, got {n}")
        x_mean = x.mean(0)
        x_scale = x.std(0)
        x_scale = np.where(x_scale > 1e-12 * np.maximum(1.0, np.abs(x_mean)), x_scale, 1.0)
        z = (x - x_mean) / x_scale
        y_mean = float(y.mean())
        yc = y - y_mean
        gram = z.T @ z
        groups = groups or (z.shape[1],)
        if sum(groups) != z.shape[1]:
            raise ValueError(f"groups {groups} do not add up to {z.shape[1]} features")
        best = None
        for combo in itertools.product(alphas, repeat=len(groups)):
            a = np.repeat(combo, groups)
            inv = np.linalg.inv(gram + np.diag(a))
            hat = z @ inv @ z.T
            resid = yc - hat @ yc
            leverage = np.diag(hat) + 1.0 / n  # the intercept is fit too
            loo = float(np.mean((resid / np.maximum(1.0 - leverage, 1e-6)) ** 2))
            if best is None or loo < best[0]:
                best = (loo, combo, inv, resid)
        _, alpha, inv, resid = best
        coef = inv @ z.T @ yc
        dof = max(n - 1 - np.trace(z @ inv @ z.T), 1.0)
        noise_var = float(resid @ resid / dof)
        return cls(coef, y_mean, x_mean, x_scale, np.asarray(alpha, dtype=np.float64), noise_var, inv)

    @classmethod
    def leave_one_out(cls, x: np.ndarray, y: np.ndarray, groups: tuple[int, ...] | None = None,
                      alphas=DEFAULT_ALPHAS) -> list["RidgeHead"]:
        """The ``n`` heads :meth:`fit` on all rows but one each: standardisation and strengths chosen again
        on the other ``n - 1`` (a fixed strength's closed-form leave-one-out residuals are optimistic)."""
        return [cls.fit(x[keep], y[keep], alphas, groups) for keep in ~np.eye(len(y), dtype=bool)]

    def predict(self, x: np.ndarray, return_std: bool = False):
        z = (x - self.x_mean) / self.x_scale
        mean = z @ self.coef + self.intercept
        if not return_std:
            return mean
        var = self.noise_var * (1.0 + np.einsum("ij,jk,ik->i", z, self.precision_inv, z))
        return mean, np.sqrt(var)

    def predict_torch(self, x):
        t = lambda a: torch.as_tensor(a, dtype=x.dtype, device=x.device)  # noqa: E731
        return ((x - t(self.x_mean)) / t(self.x_scale)) @ t(self.coef) + self.intercept

    def state(self) -> dict[str, torch.Tensor]:
        arrays = {"coef": self.coef, "intercept": np.array([self.intercept]), "x_mean": self.x_mean,
                  "x_scale": self.x_scale, "alpha": np.atleast_1d(self.alpha),
                  "noise_var": np.array([self.noise_var]), "precision_inv": self.precision_inv}
        return {k: torch.from_numpy(np.ascontiguousarray(v, dtype=np.float64)) for k, v in arrays.items()}

    @classmethod
    def from_state(cls, tensors: dict[str, torch.Tensor]) -> "RidgeHead":
        s = {k: np.asarray(v.numpy(), np.float64) for k, v in tensors.items()}
        return cls(s["coef"], float(s["intercept"][0]), s["x_mean"], s["x_scale"], s["alpha"], float(s["noise_var"][0]),
                   s["precision_inv"])
