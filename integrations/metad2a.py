"""MetaD2A-style generation + HELP: pick the best generated architecture that meets a latency limit.

A generator (MetaD2A, or any other) proposes candidates with a score (an accuracy, or the
generator's own ranking); :func:`select` returns the best-scoring candidate whose predicted latency
on the target device is under the limit, for any :class:`~help_plugin.LatencyEstimator`.

HELP's own MetaD2A selection (official code, ``help.py::_nas_metad2a``) walks MetaD2A's candidates
in the generator's order, keeps the first 3 whose *predicted* latency is <= the constraint and
returns the most accurate of those 3 (``select(..., confidence=None, shortlist=3)`` here). It checks only
the prediction, so the pick can overshoot on the device (HELP's README, Table 4: pixel2, a 25.0 ms
architecture for a 22 ms limit). :func:`select` therefore compares the estimator's selection-aware
latency bound at ``confidence`` (default 0.95) with the limit (:class:`help_plugin.search.LatencyConstraint`).

:func:`load_metad2a_candidates` reads HELP's ``nasbench201/arch_generated_by_metad2a.txt``: 500
NAS-Bench-201 architectures MetaD2A generated for CIFAR-100, one ``arch_str, accuracy, score`` per
line (accuracy: the architecture's NAS-Bench-201 CIFAR-100 test accuracy in %, which HELP's code
selects on; score: MetaD2A's score, the file's order), after a first line with the generation
time in seconds.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from ..data import default_data_dir
from ..predictors import LatencyEstimator
from ..search import LatencyConstraint, NoFeasibleArchitecture

log = logging.getLogger(__name__)

#: HELP's selection rule: the first this many feasible candidates (generator order) are compared.
HELP_SHORTLIST = 3


@dataclass
class Selection:
    """The chosen candidate.

    ``arch``: as given; ``position``: its index in the candidate sequence; ``score``: its score;
    ``predicted_ms``: the estimator's prediction; ``upper_ms``: the bound compared with
    ``latency_limit_ms`` (``constraint`` says which); ``n_feasible``: how many of the ``n_candidates``
    met the limit.
    """

    arch: Any
    position: int
    score: float
    predicted_ms: float
    upper_ms: float
    latency_limit_ms: float
    constraint: str
    n_candidates: int
    n_feasible: int


@dataclass
class Candidate:
    """One line of MetaD2A's output file: NB201 ``arch`` string, ``accuracy`` (%) and MetaD2A ``score``."""

    arch: str
    accuracy: float
    score: float


def select(candidates: Iterable[tuple[Any, float]], estimator: LatencyEstimator, latency_limit_ms: float,
           confidence: float | None = 0.95, shortlist: int | None = None) -> Selection:
    """The best-scoring candidate that meets ``latency_limit_ms``.

    Args:
        candidates: ``(arch, score)`` pairs in the generator's order; ``arch`` in any form the
            estimator's space accepts, ``score`` a finite number (higher is better).
        estimator: any fitted LatencyEstimator for the target device.
        latency_limit_ms: the constraint, ms.
        confidence: a candidate meets the limit when the estimator's selection-aware latency bound at this
            confidence does (default 0.95: the pick meets the limit on the device at that rate); ``None``:
            when its mean prediction does (HELP's rule).
        shortlist: compare only the first ``shortlist`` feasible candidates in the given order
            (HELP's MetaD2A code uses 3, see :data:`HELP_SHORTLIST`); ``None``: all of them.

    Ties on score go to the earlier candidate. Raises :class:`NoFeasibleArchitecture` when no
    candidate fits, ``ValueError`` for bad arguments.
    """
    pairs = list(candidates)
    if not pairs:
        raise ValueError("no candidates to select from")
    for i, p in enumerate(pairs):
        if not isinstance(p, (tuple, list)) or len(p) != 2:
            raise TypeError(f"candidates must be (arch, score) pairs; candidate {i} is {p!r}")
    archs, scores = zip(*pairs)
    try:
        scores = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"candidate scores must be numbers, got {scores[:3]!r}...") from err
    if not np.all(np.isfinite(scores)):
        i = int(np.argmax(~np.isfinite(scores)))
        raise ValueError(f"candidate {i} has score {scores[i]!r}; scores must be finite")
    constraint = LatencyConstraint(latency_limit_ms, confidence)
    if shortlist is not None and (not isinstance(shortlist, (int, np.integer)) or shortlist < 1):
        raise ValueError(f"shortlist must be a positive int or None, got {shortlist!r}")
    ok, mean, upper = constraint.feasible(estimator, list(archs))
    feasible = np.flatnonzero(ok)
    if not len(feasible):
        best = int(np.argmin(upper))
        raise NoFeasibleArchitecture(
            f"none of {len(pairs)} candidates meets {latency_limit_ms} ms by its {constraint.describe()}: the lowest "
            f"is {upper[best]:.3f} ms ({mean[best]:.3f} ms predicted) for candidate {best}")
    compared = feasible[:shortlist] if shortlist is not None else feasible
    pick = int(compared[np.argmax(scores[compared])])
    log.info("selected candidate %d (score %.3f, %.3f ms predicted, bound %.3f ms) of %d feasible / %d",
             pick, scores[pick], mean[pick], upper[pick], len(feasible), len(pairs))
    return Selection(archs[pick], pick, float(scores[pick]), float(mean[pick]), float(upper[pick]),
                     constraint.limit_ms, constraint.describe(), len(pairs), len(feasible))


def load_metad2a_candidates(path: str | Path | None = None) -> tuple[list[Candidate], float]:
    """Read MetaD2A's generated architectures: ``(candidates in file order, generation seconds)``.

    ``path`` defaults to ``$HELP_DATA_DIR/nasbench201/arch_generated_by_metad2a.txt``.
    """
    path = Path(path) if path is not None else default_data_dir() / "nasbench201" / "arch_generated_by_metad2a.txt"
    if not path.exists():
        raise FileNotFoundError(f"no MetaD2A candidate file at {path} (HELP's data/nasbench201/; set HELP_DATA_DIR)")
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    if not lines:
        raise ValueError(f"{path} is empty")
    try:
        seconds = float(lines[0])
    except ValueError:
        raise ValueError(f"{path}: line 1 must be the generation time in seconds, got {lines[0]!r}") from None
    out = []
    for n, line in enumerate(lines[1:], start=2):
        parts = [p.strip() for p in line.split(",")]
        if len(parts) != 3:
            raise ValueError(f"{path}:{n}: expected 'arch_str, accuracy, score', got {line!r}")
        try:
            out.append(Candidate(parts[0], float(parts[1]), float(parts[2])))
        except ValueError:
            raise ValueError(f"{path}:{n}: accuracy and score must be numbers, got {line!r}") from None
    return out, seconds
