"""Calibrated latency bounds from an estimator's own adaptation measurements, in log space.

Latency errors are relative, so everything is in log ms. From models fit without some of the ``n``
measurements (:class:`HeldOut`: one left out each, a jackknife, or a fold each, CV+):

* ``r_i = log y_i - log yhat_-i(x_i)``: the held-out residual of measurement ``i``;
* ``sd(x)``: the standard deviation over the held-out models of ``log yhat_k(x)``, how much the fit moves
  at ``x`` when a measurement is left out; ``l(x) = sd(x) / median_i sd(x_i)`` (1 = as at a measured arch).
  Architectures unlike the measured ones (a search's favourite hiding place) get a large ``l(x)``;
* ``s = mean_i |r_i| / l(x_i)``: the scale (a mean absolute value, more robust to one bad point than an rms);
* ``upper(x) = yhat(x) * exp(c * s * l(x))``, ``lower(x) = yhat(x) * exp(-c * s * l(x))``.

The multiplier ``c`` comes from :class:`MetaCalibration`: constants learned by leave-one-device-out on
the pool devices (``benchmarks/meta_calibration.py``) for the marginal bound and, one per space, for the
*selection-aware* bound a search's feasibility check uses (a search picks the candidates whose error is
most favourable; never below the marginal one). Without constants (a model of other settings, a baseline)
``c`` is the finite-sample normal rule :func:`t_multiplier`, for both.
"""
from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Callable, Sequence

import numpy as np

#: log-space spread below which the per-architecture normaliser is uninformative (``l(x) = 1``).
_TINY_SPREAD = 1e-9


def check_confidence(confidence: float) -> float:
    """``confidence`` as a float in (0, 1); ``ValueError`` naming it otherwise."""
    try:
        value = float(confidence)
    except (TypeError, ValueError):
        raise TypeError(f"confidence must be a number in (0, 1), got {confidence!r}") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"confidence must be in (0, 1) (e.g. 0.95), got {confidence!r}")
    return value


def t_multiplier(confidence: float, n: int) -> float:
    """The multiplier without meta-calibration: a one-sided normal prediction bound from ``n`` residuals.

    ``t_{n-1}(confidence) * sqrt(1 + 1/n) * sqrt(pi/2)``: Student's t for a scale estimated from ``n``
    points, the ``1/n`` for the error of the fit itself, and ``sqrt(pi/2)`` because the scale ``s`` is a
    mean absolute residual (``E|r| = sd * sqrt(2/pi)`` for normal errors). 2.2 at ``n = 20``, 0.95.
    """
    from scipy.stats import t

    return float(t.ppf(confidence, max(n - 1, 1)) * math.sqrt(1.0 + 1.0 / n) * math.sqrt(math.pi / 2))


def _z(confidence) -> np.ndarray:
    return np.array([NormalDist().inv_cdf(float(q)) for q in np.atleast_1d(confidence)])


@dataclass
class MetaCalibration:
    """Multipliers learned on the pool devices (see ``benchmarks/meta_calibration.py``).

    ``confidences``: the grid; ``marginal[k]``: the smallest ``c`` whose bound covered ``confidences[k]``
    of the held-out devices' architectures (devices weighted equally); ``selection[k]``: the smallest ``c``
    from which the adversarial picks (the largest network under a limit) met the limit in
    ``confidences[k]`` of cases (``None`` where not learned). Other confidences are interpolated linearly
    in normal-quantile units (and extrapolated from the end points). ``measurements``: the adaptation size
    the constants were learned at; ``info``: how they were derived; ``designed``: the constants learned for
    shots chosen by :meth:`~help_plugin.predictors.HELPEstimator.select_shots` (``None``: these serve both).
    """

    confidences: list[float]
    marginal: list[float]
    selection: list[float | None]
    measurements: int
    info: dict = field(default_factory=dict)
    designed: "MetaCalibration | None" = None

    def __post_init__(self):
        if not (len(self.confidences) == len(self.marginal) == len(self.selection) >= 2):
            raise ValueError(f"a MetaCalibration needs >= 2 confidences with one marginal and one selection value "
                             f"each, got {len(self.confidences)}, {len(self.marginal)}, {len(self.selection)}")

    @staticmethod
    def _interpolate(confidences: Sequence[float], values: Sequence[float], confidence: float) -> float:
        z, v, zq = _z(confidences), np.asarray(values, np.float64), float(_z(confidence)[0])
        k = int(np.clip(np.searchsorted(z, zq) - 1, 0, len(z) - 2))  # the segment (or the end one)
        return float(v[k] + (v[k + 1] - v[k]) * (zq - z[k]) / (z[k + 1] - z[k]))

    def multiplier(self, confidence: float, selection: bool = False) -> float:
        """``c`` at ``confidence``; ``selection=True``: the selection-aware one (never below the marginal)."""
        marginal = self._interpolate(self.confidences, self.marginal, confidence)
        if not selection:
            return marginal
        learned = [(q, c) for q, c in zip(self.confidences, self.selection) if c is not None]
        if len(learned) < 2:
            return marginal
        return max(marginal, self._interpolate(*zip(*learned), confidence))

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MetaCalibration":
        designed = cls.from_dict(d["designed"]) if d.get("designed") else None
        return cls(list(d["confidences"]), list(d["marginal"]), list(d["selection"]), int(d["measurements"]),
                   dict(d.get("info", {})), designed)

    def for_shots(self, shot_selection: str) -> "MetaCalibration":
        """The constants for an adaptation whose shots were chosen by ``shot_selection`` (``"random"`` or
        ``"design"``)."""
        return self.designed if shot_selection == "design" and self.designed is not None else self


#: Where the shipped models' constants live, keyed by method, then space (written by
#: ``benchmarks/meta_calibration.py``).
SHIPPED_CONSTANTS = "calibration.json"


def shipped_constants(directory, learner) -> MetaCalibration | None:
    """The constants ``benchmarks/meta_calibration.py`` derived for models of ``learner``'s method and space
    meta-trained with its settings (the marginal multipliers shared over the spaces, the selection-aware ones the
    space's own), else ``None`` (they would not apply). They were learned from models meta-trained
    on pools other than the shipped one (each pool device left out in turn), so they belong to the method and its
    settings, not to one pool: a model the user meta-trains with the same
    :meth:`~help_plugin.predictors.learners.LearnerConfig.learned_settings` (any seed; help+'s MLP settings where
    its groups leave the MLPs out) on their own pool of a space with constants gets them too."""
    path = directory / SHIPPED_CONSTANTS
    if not path.exists():
        return None
    entry = json.loads(path.read_text()).get(learner.method, {}).get(learner.space.name)
    if entry is None:
        return None
    derived_for = type(learner.config)(**entry["info"]["config"])
    if derived_for.learned_settings(learner.space) != learner.config.learned_settings(learner.space):
        return None
    return MetaCalibration.from_dict(entry)


@dataclass
class HeldOut:
    """Models of one device fit without some of its measurements.

    ``rows[k]``: the positions (in the fit data) of the measurements model ``k`` did not see (one each for a
    jackknife, a fold each for CV+); ``predict(indices [m, L]) -> (ms of the fitted model [m], ms of each
    held-out model [K, m])``, both at once so that shared work (help+'s basis) is done once.
    ``predict_one(row) -> (ms of the fitted model, log ms of each held-out model [K])``: the same for one valid
    index row ``[L]`` (the held-out ones in log ms, what a bound needs), where the models have a faster path for
    one (``None``: they do not; :meth:`Calibration.row_bound` is then unavailable).
    """

    rows: list[np.ndarray]
    predict: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
    predict_one: Callable[[np.ndarray], tuple[float, np.ndarray]] | None = None


class Calibration:
    """The bounds of one fitted estimator, computed once from its fit data (see the module docstring).

    ``held_out``: its :class:`HeldOut` models; ``indices``/``latencies_ms``: the fit data ``[n]``;
    ``constants``: a :class:`MetaCalibration`, or ``None`` for :func:`t_multiplier`.
    Attributes: ``residuals`` (log, one per measurement left out somewhere), ``scores`` (each residual over
    ``l(x_i)`` of its architecture: the bound covers measurement ``i`` left out at ``c`` iff
    ``scores[i] <= c * s``), ``scale`` (``s``, their mean absolute value), ``floor_ms`` (predictions below it
    count as it: a linear model can predict <= 0 ms).
    """

    def __init__(self, held_out: HeldOut, indices: np.ndarray, latencies_ms: np.ndarray,
                 constants: MetaCalibration | None):
        rows = np.concatenate(held_out.rows) if held_out.rows else np.zeros(0, np.int64)
        if len(held_out.rows) < 2 or len(rows) < 3:
            raise ValueError(f"calibrated bounds need at least 3 measurements that can be left out, in at least 2 "
                             f"held-out models; got {len(rows)} in {len(held_out.rows)}")
        self.held_out, self.constants = held_out, constants
        self._multipliers: dict = {}
        self._row_bounds: dict = {}
        self.floor_ms = 1e-3 * float(np.min(latencies_ms))
        self._log_floor = math.log(self.floor_ms)
        _, fold_ms = held_out.predict(indices)
        fold_log = self._log(fold_ms)
        own = np.concatenate([fold_log[k, r] for k, r in enumerate(held_out.rows)])
        self.residuals = np.log(latencies_ms[rows]) - own
        spread = fold_log[:, rows].std(axis=0)
        median = float(np.median(spread))
        self._reference_spread = median if median > _TINY_SPREAD else None
        self.scores = self.residuals / self._normaliser(spread)
        self.scale = float(np.mean(np.abs(self.scores)))

    def _log(self, ms: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(ms, self.floor_ms))

    def _normaliser(self, spread: np.ndarray) -> np.ndarray:
        if self._reference_spread is None:
            return np.ones_like(spread)
        return np.maximum(spread, _TINY_SPREAD) / self._reference_spread

    def multiplier(self, confidence: float, selection: bool = False) -> float:
        """``c`` at ``confidence`` (see :class:`MetaCalibration`; :func:`t_multiplier` without constants)."""
        key = (check_confidence(confidence), bool(selection))
        if key not in self._multipliers:  # a search asks for the same one, once per candidate
            self._multipliers[key] = (t_multiplier(key[0], len(self.residuals)) if self.constants is None
                                      else self.constants.multiplier(*key))
        return self._multipliers[key]

    def _predict(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ms, fold_ms = self.held_out.predict(indices)
        return ms, self._log(ms), self.scale * self._normaliser(self._log(fold_ms).std(axis=0))

    def log_prediction(self, indices: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(log yhat(x), s * l(x))`` ``[m]`` each: the prediction and the unit the multiplier multiplies."""
        return self._predict(indices)[1:]

    @property
    def has_row_bound(self) -> bool:
        """Whether :meth:`row_bound` is available (the held-out models have a path for one architecture)."""
        return self.held_out.predict_one is not None

    def row_bound(self, confidence: float, selection: bool = False) -> Callable[[Sequence[int]], tuple[float, float]]:
        """``row [L] -> (prediction, upper)`` in ms of one valid index row (array or list), the bound one-sided at
        ``confidence``: :meth:`bounds`' values to float rounding, at a fraction of its fixed cost (a search's single
        queries; the multiplier and the constants are resolved here, once per confidence). Needs
        :attr:`has_row_bound`."""
        predict_one = self.held_out.predict_one
        if predict_one is None:
            raise ValueError("these held-out models have no path for one architecture: use bounds()")
        key = (check_confidence(confidence), bool(selection))
        if key in self._row_bounds:
            return self._row_bounds[key]
        # upper = exp(log yhat + c * s * l(x)), l(x) = max(sd, tiny) / reference spread (1 without one)
        width = self.multiplier(confidence, selection) * self.scale
        per_spread = None if self._reference_spread is None else width / self._reference_spread
        floor_ms, log_floor = self.floor_ms, self._log_floor

        def bound(row) -> tuple[float, float]:
            ms, fold_log = predict_one(row)
            fold_log = np.maximum(fold_log, log_floor)  # _log() of the held-out models' ms
            fold_log -= np.add.reduce(fold_log) / len(fold_log)
            unit = width if per_spread is None else per_spread * max(
                math.sqrt(fold_log @ fold_log / len(fold_log)), _TINY_SPREAD)  # np.std, without its fixed cost
            return ms, math.exp(math.log(max(ms, floor_ms)) + unit)

        self._row_bounds[key] = bound
        return bound

    def bounds(self, indices: np.ndarray, confidence: float, selection: bool = False
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(prediction, lower, upper)`` in ms ``[m]`` each, the bounds one-sided at ``confidence``."""
        c = self.multiplier(confidence, selection)
        ms, log_ms, width = self._predict(indices)
        return ms, np.exp(log_ms - c * width), np.exp(log_ms + c * width)
