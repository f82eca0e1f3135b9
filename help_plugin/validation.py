"""Boundary checks shared by every estimator: latencies, lengths, sample counts."""
from __future__ import annotations

import numpy as np


def check_latencies(values, name: str = "latencies_ms") -> np.ndarray:
    """Return ``values`` as a 1-D float64 array of finite, strictly positive milliseconds.

    Raises ``ValueError`` naming the first bad value and its position.
    """
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"{name} must be numbers (ms), got {values!r}") from err
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 0 else arr
        if arr.ndim != 1:
            raise ValueError(f"{name} must be one-dimensional, got shape {list(arr.shape)}")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r} is not a finite positive latency in ms")
    return arr


def check_same_length(a, b, name_a: str, name_b: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{name_a} has {len(a)} entries but {name_b} has {len(b)}")


def check_reference_spread(reference_ms: np.ndarray) -> None:
    """The hardware embedding min-max normalises the reference latencies: they must not all be equal."""
    if np.ptp(reference_ms) <= 0:
        raise ValueError(
            f"all {len(reference_ms)} reference latencies are equal ({reference_ms[0]!r} ms); "
            "the hardware embedding needs distinct values (check the measurement)"
        )
