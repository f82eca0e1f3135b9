"""Latency-constrained search on a real device, checked by measurement: :class:`VerifiedSearch`.

One implementation serves ``help-nas search``, the demo and the OFA adapter
(:func:`help_plugin.integrations.ofa_search.search_and_measure`): what proposes candidates is a
parameter (regularised evolution with a training-free proxy here, OFA's evolution finder there); the
measuring, calibrating, retrying and re-measuring are shared.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ..predictors import LatencyEstimator
from ..validation import check_latencies, check_same_length
from .constraint import LatencyConstraint, checked_confidence
from .evolution import NoFeasibleArchitecture

log = logging.getLogger(__name__)


@dataclass
class Candidate:
    """An architecture a proposer returned: index row ``arch``, its objective ``score`` (higher is
    better), ``predicted_ms`` (the estimator's mean, in adaptation-time ms) and ``bound_ms`` (what the
    proposer compared with the constraint's limit: its bound, the mean for HELP's rule)."""

    arch: np.ndarray
    score: float
    predicted_ms: float
    bound_ms: float


#: ``propose(estimator, window_ms, constraint) -> candidates``: search among architectures whose mean prediction
#: lies in ``window_ms`` ``(low, high)`` and which meet ``constraint`` (a
#: :class:`~help_plugin.search.LatencyConstraint`: bound under its limit), all in adaptation-time ms.
Proposer = Callable[[LatencyEstimator, tuple, LatencyConstraint], Sequence[Candidate]]


@dataclass
class VerifiedSearchResult:
    """The outcome of :meth:`VerifiedSearch.run`.

    Attributes (the keys of :meth:`to_dict`, which adds ``attempts``: the number of search windows):
        latency_limit_ms: the limit.
        confidence, constraint: the confidence of the proposer's constraint (``None``: HELP's rule, the mean
            prediction) and its description (:meth:`~help_plugin.search.LatencyConstraint.describe`).
        arch: the winner in the space's canonical form; ``arch_indices``: its index row.
        objective: what the proposer maximised (its ``name``) and the winner's ``score``.
        predicted_ms: the winner's predicted latency (adaptation-time ms); ``bound_ms``: its bound that the
            proposer compared with the attempt's limit (``search_limits_ms``; adaptation-time ms).
        verify_ms: its measured latency when it was verified (raw).
        measured_ms: the median of its fresh re-measurements (``final_sessions`` sessions).
        constraint_met: ``measured_ms <= latency_limit_ms``.
        within_band: ``measured_ms`` lies in ``target_band_ms``.
        target_band_ms: ``(low, high)`` measured latency the search aimed for.
        search_windows_ms: the window of each attempt's mean predictions (``(low, high)``, adaptation-time ms).
        search_limits_ms: each attempt's limit for the bound (the limit at the device's speed, adaptation-time ms).
        calibration_speed: the device's speed vs adaptation before the search (anchors re-timed; NaN
            without anchors); ``device_speed``: its typical speed over the search; ``final_speed``: its
            speed while the winner was re-measured (1.0 = as at adaptation, 1.1 = 10 % slower).
        final_sessions: re-measurement sessions run (some may have been replaced for load spikes).
        measurements: architectures timed on the device (anchors included).
        evaluated: candidates the proposer scored; ``search_seconds``: time spent proposing.
        history: every verified candidate, in order: ``{"attempt", "window_ms", "arch", "score",
            "predicted_ms", "bound_ms", "measured_ms", "session_speed"}`` (``measured_ms`` raw,
            ``session_speed`` the device's speed in the session that measured it, NaN without anchors,
            ``window_ms`` the attempt's window of mean predictions).
        candidates: ``(predicted_ms, bound_ms, score)`` of every proposed candidate (for plots; in
            :meth:`to_dict` only with ``candidates=True``).
    """

    latency_limit_ms: float
    confidence: float | None
    constraint: str
    arch: Any
    arch_indices: list[int]
    objective: str
    score: float
    predicted_ms: float
    bound_ms: float
    verify_ms: float
    measured_ms: float
    constraint_met: bool
    within_band: bool
    target_band_ms: tuple[float, float]
    search_windows_ms: list[tuple[float, float]]
    search_limits_ms: list[float]
    calibration_speed: float
    device_speed: float
    final_speed: float
    final_sessions: int
    measurements: int
    evaluated: int
    search_seconds: float
    history: list[dict] = field(default_factory=list, repr=False)
    candidates: list[tuple[float, float, float]] = field(default_factory=list, repr=False)

    @property
    def attempts(self) -> int:
        return len(self.search_windows_ms)

    def verdict(self) -> str:
        """One line: met or missed, by how much, under which constraint."""
        gap = self.latency_limit_ms - self.measured_ms
        how = (f"{gap:.2f} ms ({100 * gap / self.latency_limit_ms:.1f} %) under" if self.constraint_met else
               f"{-gap:.2f} ms ({-100 * gap / self.latency_limit_ms:.1f} %) over")
        return (f"limit {self.latency_limit_ms:.2f} ms {'met' if self.constraint_met else 'MISSED'}: measured "
                f"{self.measured_ms:.2f} ms, {how} the limit{', in the target band' if self.within_band else ''}; "
                f"proposed with a {self.constraint} of {self.bound_ms:.2f} ms (predicted {self.predicted_ms:.2f} ms), "
                f"{self.attempts} attempt(s), {self.measurements} measurements")

    def table(self) -> str:
        """A short Markdown table of the winner and how it was found."""
        low, high = self.target_band_ms
        rows = [("limit", f"{self.latency_limit_ms:.2f} ms"), ("target band (measured)", f"{low:.2f}-{high:.2f} ms"),
                ("constraint", self.constraint), ("predicted / bound", f"{self.predicted_ms:.2f} / {self.bound_ms:.2f} ms"),
                ("verified / re-measured", f"{self.verify_ms:.2f} / {self.measured_ms:.2f} ms "
                                           f"({self.final_sessions} sessions)"),
                ("device speed vs adaptation: before / typical / at re-measure",
                 f"{self.calibration_speed:.2f}x / {self.device_speed:.2f}x / {self.final_speed:.2f}x"),
                ("attempts; candidates scored; measurements", f"{self.attempts}; {self.evaluated}; {self.measurements}"),
                (self.objective, f"{self.score:.4g}"), ("architecture", str(self.arch))]
        return "\n".join(["| | |", "|---|---|"] + [f"| {k} | {v} |" for k, v in rows])

    def to_dict(self, candidates: bool = False) -> dict:
        out = asdict(self)
        if not candidates:
            out.pop("candidates")
        out["attempts"] = self.attempts
        return out


class VerifiedSearch:
    """Search under a latency limit on a real device and check the winner by measurement.

    The aim is a winner whose measured latency lies in the *target band*
    ``[budget_use * (1 + guard) * limit, (1 - guard) * limit]`` ms: under the limit by at least
    ``guard`` (a fraction, room for re-measurement noise) and not wasting the budget (at least
    ``budget_use`` of it, with the same room). ``budget_use=None`` or ``0`` drops the lower end.

    0. Calibration: the ``anchors`` are timed with every measuring session on ``device``; the
       ratio of their latency now to that at adaptation (median over anchors) is the device's
       *speed* in that session, and the median over sessions so far its *typical speed*. Predictions
       are in the units of the adaptation measurements, so a device that has since become slower or
       faster (load on a shared machine, thermal state, another power mode) is met where it is: the
       search works in predicted ms divided by the typical speed, unless that is within
       ``calibration_tolerance`` of 1 (taken for timing noise; 10 anchors re-timed on a quiet 2-vCPU VM
       scatter by about +-2.5 %).
    1. ``propose(estimator, window_ms, constraint)`` searches architectures *predicted* within the target band
       divided by that speed (mean prediction) that also meet the limit divided by that speed under
       :class:`~help_plugin.search.LatencyConstraint` at ``confidence`` (the selection-aware bound; ``None``:
       the mean prediction, HELP's rule), so that the candidates meet the limit at that confidence before any
       is measured. Measurement closes the rest.
    2. The ``verify_top`` best-scoring candidates not measured before are measured on ``device``
       (interleaved with the anchors) and brought to the typical speed (times typical / session
       speed, so a load spike during one session cancels out); each is judged by the larger of that
       figure and its raw one (the typical speed lags a device that has slowed down for good, and a
       candidate measured over the band is not taken for one inside it). The best-scoring one judged
       within the target band wins. When none is, the search runs again (up to ``retries`` times) with the
       predictor re-adapted on these measurements too (on a copy, when the estimator keeps its
       adaptation data, see :meth:`~help_plugin.predictors.HELPEstimator.partial_fit`) -- without anchors
       or re-adaptation, with the speed set to the candidates' median measured / predicted ratio
       instead. After the last attempt the candidate of any attempt judged closest under the band's
       top wins (the one that spends most of the budget), else the fastest.
    3. The winner is re-measured afresh in ``final_sessions`` measuring sessions (each with the
       anchors; ``0``: its verification measurement stands), and the median of those raw figures is ``measured_ms``, so the selection in step 2
       does not bias it and one session's noise does not decide it. A session whose anchors run more
       than ``remeasure_tolerance`` off the typical speed (over every session so far, these included: a
       device that slowed down for good is met where it is now) is replaced by another, up to ``remeasure``
       times; the sessions whose anchors are closest to the typical speed count (chosen by the anchors
       alone, never by the winner's own figures).

    Args:
        estimator: a fitted LatencyEstimator for ``device`` (not modified).
        device: a :class:`~help_plugin.measure.Device` of the estimator's space.
        propose: see :data:`Proposer`; ``objective`` names what it maximises.
        anchors: ``(archs, latency_ms)`` measured on ``device`` when ``estimator`` was adapted;
            ``"references"`` (default) takes a HELPEstimator's reference archs and the latencies it was
            adapted with (when it has them); ``None`` skips calibration (``*_speed`` fields are NaN).
        refit: re-adapt (a copy of) the estimator on verified candidates before a retry, when it can.
        confidence: of the proposer's constraint (default 0.95; ``None``: HELP's rule, the mean prediction).
    """

    def __init__(self, estimator: LatencyEstimator, device, propose: Proposer, objective: str = "score",
                 verify_top: int = 4, guard: float = 0.03, budget_use: float | None = 0.9,
                 anchors: tuple[Any, Any] | str | None = "references", calibration_tolerance: float = 0.05,
                 retries: int = 2, final_sessions: int = 3, remeasure: int = 3, remeasure_tolerance: float = 0.03,
                 refit: bool = True, confidence: float | None = 0.95):
        if not 0 <= guard < 1:
            raise ValueError(f"guard must be a fraction in [0, 1), got {guard!r}")
        if final_sessions < 0 or remeasure < 0 or retries < 0 or verify_top < 1:
            raise ValueError(f"need final_sessions >= 0, verify_top >= 1, retries >= 0 and remeasure >= 0; got "
                             f"{final_sessions!r}, {verify_top!r}, {retries!r}, {remeasure!r}")
        if budget_use is not None and not 0 <= budget_use < 1:
            raise ValueError(f"budget_use must be a fraction in [0, 1) of the limit, got {budget_use!r}")
        self.estimator, self.device, self.propose, self.objective = estimator, device, propose, objective
        self.verify_top, self.guard, self.budget_use, self.retries = verify_top, guard, budget_use, retries
        self.calibration_tolerance, self.final_sessions = calibration_tolerance, final_sessions
        self.remeasure, self.remeasure_tolerance, self.refit = remeasure, remeasure_tolerance, refit
        self.confidence = checked_confidence(confidence)
        self.anchors = self._anchors(anchors)

    def _anchors(self, anchors):
        est = self.estimator
        if isinstance(anchors, str):
            if anchors != "references":
                raise ValueError(f"anchors must be (archs, latency_ms), 'references' or None, not {anchors!r}")
            ref_ms = getattr(est, "reference_latencies_ms_", None)
            return None if ref_ms is None else (np.asarray(est.reference_indices), np.asarray(ref_ms))
        if anchors is None:
            return None
        archs, ms = est.space.to_indices(anchors[0]), check_latencies(anchors[1], "anchor latency_ms")
        check_same_length(archs, ms, "anchor archs", "anchor latency_ms")
        return archs, ms

    # -------------------------------------------------------------- measuring sessions
    def _timed(self, archs: np.ndarray) -> tuple[np.ndarray, float]:
        """Measured ms of ``archs`` in one session and that session's speed (NaN without anchors)."""
        self._n_measured += len(archs) + (0 if self.anchors is None else len(self.anchors[0]))
        if self.anchors is None:
            return self.device.measure(archs).latency_ms, float("nan")
        ms = self.device.measure(np.concatenate([archs, self.anchors[0]])).latency_ms
        self._speeds.append(float(np.median(ms[len(archs):] / self.anchors[1])))
        return ms[:len(archs)], self._speeds[-1]

    def _typical_speed(self) -> float:
        return float(np.median(self._speeds)) if self._speeds else float("nan")

    def _speed_from_anchors(self) -> float:
        typical = self._typical_speed()
        return typical if abs(typical - 1) > self.calibration_tolerance else 1.0

    # -------------------------------------------------------------- the search
    def run(self, latency_limit_ms: float) -> VerifiedSearchResult:
        """Search under ``latency_limit_ms`` (ms, on the device as it is now) and verify; see the class docstring."""
        if not np.isfinite(latency_limit_ms) or latency_limit_ms <= 0:
            raise ValueError(f"latency_limit_ms must be a finite positive number of ms, got {latency_limit_ms!r}")
        est, space = self.estimator, self.estimator.space
        band = ((self.budget_use or 0.0) * (1 + self.guard) * latency_limit_ms, (1 - self.guard) * latency_limit_ms)
        if not band[0] < band[1]:
            raise ValueError(f"budget_use={self.budget_use!r} with guard={self.guard!r} leaves no target band under the "
                             "limit: budget_use * (1 + guard) must be below 1 - guard")
        self._n_measured, self._speeds = 0, []
        empty = np.zeros((0, space.arch_length), np.int64)
        calibration = float("nan") if self.anchors is None else self._timed(empty)[1]
        speed = self._speed_from_anchors()
        if speed != 1:
            log.info("the device runs %.0f %% %s than when the estimator was adapted (anchor archs re-timed): "
                     "searching within %.2f-%.2f ms of adaptation-time latency", 100 * abs(speed - 1),
                     "slower" if speed > 1 else "faster", band[0] / speed, band[1] / speed)
        windows, limits, search_s = [], [], 0.0
        verified: list[tuple[Candidate, float, float]] = []  # (candidate, raw ms, judged ms)
        proposed: list[Candidate] = []
        searcher = est  # re-adapted (on a copy) with the verified candidates before a retry, when it can be
        refit = self.refit and getattr(est, "shot_latencies_ms_", None) is not None and hasattr(est, "partial_fit")
        history: list[dict] = []
        for attempt in range(self.retries + 1):
            windows.append((band[0] / speed, band[1] / speed))
            limits.append(latency_limit_ms / speed)
            constraint = LatencyConstraint(limits[-1], self.confidence)
            t0 = time.perf_counter()
            try:
                found = list(self.propose(searcher, windows[-1], constraint))
            except NoFeasibleArchitecture:
                found = None
                if windows[-1][0] > 0:
                    log.warning("no architecture is predicted within %.2f-%.2f ms that meets %.2f ms by its %s: "
                                "searching under the limit alone", *windows[-1], limits[-1], constraint.describe())
                    windows[-1] = (0.0, windows[-1][1])
                    try:
                        found = list(self.propose(searcher, windows[-1], constraint))
                    except NoFeasibleArchitecture:
                        pass
                if found is None:
                    if not verified:
                        raise
                    log.warning("no architecture meets %.2f ms by its %s after %d measured attempt(s): the winner "
                                "is chosen among the candidates measured so far", limits[-1], constraint.describe(),
                                attempt)
                    break
            search_s += time.perf_counter() - t0
            proposed += found
            checked = {space.canonical(v[0].arch) for v in verified}
            ranked = [c for c in sorted(found, key=lambda c: -c.score)
                      if space.canonical(c.arch) not in checked][:self.verify_top]
            if not ranked:
                break  # every candidate of this attempt was measured before
            ranked_archs = np.stack([c.arch for c in ranked])
            raw_ms, session_speed = self._timed(ranked_archs)
            typical_ms = raw_ms if self.anchors is None else raw_ms * self._typical_speed() / session_speed
            # judged by the larger figure: bringing a session to the typical speed cancels a spike, but after a few
            # sessions the typical speed lags a device that slowed down for good, and then only the raw figure
            # tells; a measurement over the band in its own session is never taken for one inside it
            judged_ms = np.maximum(raw_ms, typical_ms)
            verified += [(c, float(raw), float(judged)) for c, raw, judged in zip(ranked, raw_ms, judged_ms)]
            history += [{"attempt": attempt + 1, "window_ms": windows[-1], "arch": space.format(c.arch),
                         "score": float(c.score), "predicted_ms": float(c.predicted_ms), "bound_ms": float(c.bound_ms),
                         "measured_ms": float(raw), "session_speed": session_speed} for c, raw in zip(ranked, raw_ms)]
            if ((band[0] <= judged_ms) & (judged_ms <= band[1])).any() or attempt == self.retries:
                break
            if self.anchors is not None and refit:  # the anchors tell the device's speed, the predictor the rest
                speed, adaptation_ms = self._speed_from_anchors(), raw_ms / session_speed
            else:  # the candidates' error near this limit is the best estimate
                speed = float(np.median(typical_ms / np.array([c.predicted_ms for c in ranked])))
                adaptation_ms = typical_ms / speed
            if refit:
                searcher = (copy.deepcopy(est) if searcher is est else searcher).partial_fit(ranked_archs,
                                                                                             adaptation_ms)
            log.info("no candidate measured within %.2f-%.2f ms (%.2f-%.2f ms): searching again%s at %.2fx the "
                     "predicted latency", *band, float(judged_ms.min()), float(judged_ms.max()),
                     f" with the predictor re-adapted on {searcher.n_measurements} measurements" if refit else "",
                     speed)
        if not verified:
            raise NoFeasibleArchitecture("the search proposed no candidate to verify")
        verified.sort(key=lambda v: -v[0].score)
        winner, verify_ms, _ = (
            next((v for v in verified if band[0] <= v[2] <= band[1]), None)
            or max((v for v in verified if v[2] <= band[1]), key=lambda v: v[2], default=None)
            or min(verified, key=lambda v: v[2]))
        if self.final_sessions:
            measured, final_speed, sessions = self._remeasure(winner.arch)
        else:
            measured, final_speed, sessions = verify_ms, self._typical_speed(), 0
        return VerifiedSearchResult(
            latency_limit_ms=float(latency_limit_ms), confidence=self.confidence,
            constraint=LatencyConstraint(latency_limit_ms, self.confidence).describe(), arch=space.format(winner.arch),
            arch_indices=[int(i) for i in winner.arch], objective=self.objective, score=float(winner.score),
            predicted_ms=float(winner.predicted_ms), bound_ms=float(winner.bound_ms), verify_ms=float(verify_ms),
            measured_ms=measured,
            constraint_met=bool(measured <= latency_limit_ms), within_band=bool(band[0] <= measured <= band[1]),
            target_band_ms=band, search_windows_ms=windows, search_limits_ms=limits, calibration_speed=calibration,
            device_speed=self._typical_speed(), final_speed=final_speed, final_sessions=sessions,
            measurements=self._n_measured, evaluated=len(proposed), search_seconds=search_s, history=history,
            candidates=[(float(c.predicted_ms), float(c.bound_ms), float(c.score)) for c in proposed])

    def _remeasure(self, arch: np.ndarray) -> tuple[float, float, int]:
        """Step 3: ``(median re-measured ms, median session speed, sessions run)``."""
        search_speed = self._typical_speed()
        finals = []  # (measured ms, session speed)

        def off(final: tuple) -> float:  # how far its anchors ran from the typical speed of every session so far
            return abs(final[1] / self._typical_speed() - 1)  # NaN without anchors: every session counts

        def steady(final: tuple) -> bool:
            return not off(final) > self.remeasure_tolerance

        while sum(map(steady, finals)) < self.final_sessions and len(finals) < self.final_sessions + self.remeasure:
            measured_ms, session_speed = self._timed(arch[None])
            finals.append((float(measured_ms[0]), session_speed))
            if not steady(finals[-1]):
                log.info("the anchors re-timed with the winner ran %.0f %% off the device's typical speed: "
                         "measuring again", 100 * off(finals[-1]))
        counted = sorted(finals, key=lambda f: 0.0 if np.isnan(off(f)) else off(f))[:self.final_sessions]
        measured, speed = (float(np.median([f[i] for f in counted])) for i in (0, 1))
        if abs(speed / search_speed - 1) > 0.1:
            log.warning("the device's speed was %.0f %% off its typical speed during the search while the winner was "
                        "re-measured (anchor archs re-timed): the re-measured latency is shifted by that much",
                        100 * abs(speed / search_speed - 1))
        return measured, speed, len(finals)


def evolution_proposer(objective: Callable[[np.ndarray], float], cycles: int = 60, seed: int = 0,
                       progress: bool = False) -> Proposer:
    """Regularised evolution (:func:`~help_plugin.search.evolution.evolutionary_search`) maximising
    ``objective(index_row)`` over architectures within the window (see :data:`Proposer`)."""
    from .evolution import evolutionary_search

    def propose(estimator: LatencyEstimator, window_ms: tuple, constraint: LatencyConstraint) -> list[Candidate]:
        found = evolutionary_search(estimator, objective, constraint.limit_ms, cycles=cycles,
                                    confidence=constraint.confidence, seed=seed, progress=progress,
                                    latency_window_ms=window_ms)
        return [Candidate(arch, score, ms, bound) for arch, score, ms, bound in found.evaluated]

    return propose


def synflow_proposer(space, cycles: int = 60, seed: int = 0, progress: bool = False) -> Proposer:
    """:func:`evolution_proposer` maximising SynFlow (training-free; each arch scored once across attempts)."""
    from .proxies import synflow_score

    scores: dict[str, float] = {}

    def proxy(arch: np.ndarray) -> float:
        key = space.canonical(arch)
        if key not in scores:
            scores[key] = synflow_score(space, arch)
        return scores[key]

    return evolution_proposer(proxy, cycles=cycles, seed=seed, progress=progress)


SYNFLOW = "SynFlow (training-free, no data)"
