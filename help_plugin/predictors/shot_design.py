"""Which architectures to measure: a greedy I-optimal design on a model's features.

A device's head is a ridge regression on the model's features, so how much a set ``A`` of measured architectures
teaches it about a candidate ``c`` does not depend on the latencies: with the features standardised on the
candidates (``Z`` ``[m, P]``) and a ridge prior of strength ``a``, the predictive variance at ``c`` is proportional
to ``z_c^T M z_c``, ``M = (Z_A^T Z_A + a I)^-1``. Each greedy step adds the candidate that most reduces the mean of
that variance over all candidates (the I-optimal criterion),

    gain(x) = x^T M S M x / (1 + x^T M x),   S = Z^T Z / m,

and updates ``M`` by Sherman-Morrison. The measured architectures (the references) start ``A``.

Chosen by leave-one-device-out on the pools, never a test device (issue 14; ``benchmarks/lodo.py --selection``):
the identity-link features (MACs, params, memory, kernels, op-type costs, the pool LUTs' ms) at ``a = 1`` beat
random shots at 15 and 20 measurements on NAS-Bench-201 and FBNet. A prototype of the same validation (not kept)
found the log-link features and ``a = 0.1`` or ``10`` less good.
"""
from __future__ import annotations

import logging

import numpy as np

log = logging.getLogger(__name__)

#: The ridge prior's strength on the standardised features.
STRENGTH = 1.0
#: Candidates drawn from a space too large to enumerate (:func:`candidate_indices`).
CANDIDATES = 20_000


def candidate_indices(space, seed: int = 0, n: int = CANDIDATES) -> np.ndarray:
    """Index rows ``[m, arch_length]`` to choose shots from: every architecture of a space that can be enumerated
    (:meth:`~help_plugin.spaces.SearchSpace.every_index`), else ``n`` drawn uniformly at random with ``seed``."""
    every = space.every_index()
    return every if every is not None else space.sample(n, seed)


def greedy_design(candidates: np.ndarray, measured: np.ndarray, n: int, available: np.ndarray | None = None,
                  strength: float = STRENGTH) -> np.ndarray:
    """Positions ``[n]`` (in choice order) of the ``n`` candidates to measure next.

    Args:
        candidates: features ``[m, P]`` of the candidate architectures.
        measured: features ``[k, P]`` of the architectures already measured (``k`` may be 0).
        n: how many to choose, ``0 <= n <=`` the available candidates.
        available: ``[m]`` bool, the candidates that may be chosen (default: all); a chosen one is no longer.
        strength: the ridge prior's strength ``a``.
    """
    candidates = np.asarray(candidates, np.float64)
    available = np.ones(len(candidates), bool) if available is None else np.array(available, bool)
    if not 0 <= n <= available.sum():
        raise ValueError(f"cannot choose {n} of {int(available.sum())} available candidates")
    mean, sd = candidates.mean(0), candidates.std(0)
    informative = sd > 1e-12 * np.maximum(1.0, np.abs(mean))
    scale = np.where(informative, sd, 1.0)
    z = np.where(informative, (candidates - mean) / scale, 0.0)
    zm = np.where(informative, (np.asarray(measured, np.float64).reshape(-1, z.shape[1]) - mean) / scale, 0.0)
    m_inv = np.linalg.inv(zm.T @ zm + strength * np.eye(z.shape[1]))
    second = z.T @ z / len(z)
    chosen = []
    for _ in range(n):
        zm_inv = z @ m_inv
        gain = np.einsum("ip,pq,iq->i", zm_inv, second, zm_inv) / (1.0 + np.einsum("ip,ip->i", zm_inv, z))
        i = int(np.argmax(np.where(available, gain, -np.inf)))
        chosen.append(i)
        available[i] = False
        v = m_inv @ z[i]
        m_inv -= np.outer(v, v) / (1.0 + z[i] @ v)
    return np.array(chosen, dtype=np.int64)


#: How :func:`choose_shots` picks.
SELECTIONS = ("design", "random")


def choose_shots(estimator, n: int, seed: int = 0, selection: str = "design") -> np.ndarray:
    """``n`` architectures ``[n, arch_length]`` for ``estimator`` (a meta-trained
    :class:`~help_plugin.predictors.HELPEstimator`) to be adapted on besides its reference architectures, none of
    them a reference or a repeat.

    ``selection="design"``: :meth:`~help_plugin.predictors.HELPEstimator.select_shots` among
    :func:`candidate_indices` (``seed``) where the model can choose (help+), else drawn at random (logged);
    ``"random"``: drawn uniformly at random with ``seed``.
    """
    if selection not in SELECTIONS:
        raise ValueError(f"unknown shot selection {selection!r}; use one of {list(SELECTIONS)}")
    space = estimator.space
    if selection == "design" and estimator.selects_shots:
        candidates = candidate_indices(space, seed)
        return candidates[estimator.select_shots(candidates, n)]
    if selection == "design":
        log.info("method %r cannot choose its shots: drawing %d at random", estimator.method, n)
    return space.sample_distinct(n, seed, {space.canonical(r) for r in estimator.reference_indices})
